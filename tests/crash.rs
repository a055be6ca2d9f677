//! Crash safety: the real binary killed at exact lines (failpoints abort the process like
//! `kill -9`) and at random moments with SIGKILL, then resumed. After every resume the archive
//! equals the simulator's record, no `.parquet` name is partial, and little is fetched twice.

mod util;

use std::time::Duration;

use archiver_simulator::{Faults, SimConfig, TokenMode};
use util::{sim_config, Env};

const SESSIONS: usize = 2000;
const FLUSH_ROWS: &str = "300"; // pages of 100: a flush every 3 pages
const PAGES_PER_FLUSH: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_each_step_of_a_flush_then_resumed_is_exact_and_refetches_one_flush_at_most() {
    for point in [
        "after_page:5",
        "after_stage:2",
        "after_commit:2",
        "after_publish:3",
    ] {
        let env = Env::new(sim_config(1, SESSIONS, 10)).await;
        let p = env.portal(0);
        let full_pages = (SESSIONS as u64).div_ceil(100);
        let crashed = env
            .run_crashing(
                &["backfill", "--portal-id", &p, "--flush-rows", FLUSH_ROWS],
                point,
            )
            .await;
        assert_eq!(
            crashed.code, 134,
            "{point}: expected an abort\n{}",
            crashed.stderr
        );
        // Whatever is published is complete and committed: readable, no duplicates.
        let partial = env.archived();
        let ids: std::collections::BTreeSet<_> = partial.iter().map(|r| &r.session_id).collect();
        assert_eq!(
            ids.len(),
            partial.len(),
            "{point}: duplicates after the crash"
        );

        env.run(&["backfill", "--portal-id", &p, "--flush-rows", FLUSH_ROWS])
            .await
            .ok();
        env.assert_exact();
        // Every page once, one flush of pages again, and the one page of the incremental pass
        // that follows a resumed pass (for what started since the pass began).
        let calls = env.sim.stats().list_sessions_calls;
        assert!(
            calls <= full_pages + PAGES_PER_FLUSH + 1,
            "{point}: {calls} ListSessions calls in all for {full_pages} pages"
        );
        assert!(
            std::fs::read_dir(env.archive().join("_staging"))
                .map(|d| d
                    .flatten()
                    .all(|e| std::fs::read_dir(e.path()).unwrap().next().is_none()))
                .unwrap_or(true),
            "{point}: staging left behind"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_an_incremental_pass_then_resumed_is_exact() {
    let env = Env::new(sim_config(1, 1000, 8)).await;
    let p = env.portal(0);
    env.run(&["run"]).await.ok();
    env.sim.add_sessions(&p, 700, 6);
    env.sim.end_active(Some(&p), 8);
    let crashed = env
        .run_crashing(&["run", "--flush-rows", "200"], "after_commit:2")
        .await;
    assert_eq!(crashed.code, 134, "{}", crashed.stderr);
    env.run(&["run", "--flush-rows", "200"]).await.ok();
    env.assert_exact();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_on_resume_restarts_the_pass_without_duplicates() {
    let env = Env::new(sim_config(1, SESSIONS, 10)).await;
    let p = env.portal(0);
    let crashed = env
        .run_crashing(
            &["backfill", "--portal-id", &p, "--flush-rows", FLUSH_ROWS],
            "after_commit:3",
        )
        .await;
    assert_eq!(crashed.code, 134, "{}", crashed.stderr);
    env.sim.expire_tokens();
    let r = env
        .run(&["backfill", "--portal-id", &p, "--flush-rows", FLUSH_ROWS])
        .await;
    r.ok();
    assert!(
        r.stderr.contains("rejected the saved pagination token"),
        "no warning about the token:\n{}",
        r.stderr
    );
    env.assert_exact();
}

/// Regression: a run that finished an incremental pass left by a killed run stopped there,
/// leaving sessions that started after that pass began for the next night.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_an_interrupted_incremental_pass_also_archives_what_started_since() {
    let env = Env::new(sim_config(1, 600, 4)).await;
    let p = env.portal(0);
    env.run(&["run"]).await.ok();
    env.sim.add_sessions(&p, 500, 2);
    let crashed = env
        .run_crashing(&["run", "--flush-rows", "100"], "after_commit:1")
        .await;
    assert_eq!(crashed.code, 134, "{}", crashed.stderr);
    let later = env.sim.add_sessions(&p, 120, 0);
    env.run(&["run", "--flush-rows", "100"]).await.ok();
    env.assert_exact();
    let ids: std::collections::BTreeSet<String> =
        env.archived().into_iter().map(|r| r.session_id).collect();
    assert!(later.iter().all(|id| ids.contains(id)));
}

/// A seeded loop of real SIGKILLs at random moments across a backfill and incremental runs
/// with activity between them. Each round: activity, then one or two runs killed at a random
/// moment (each leaving only complete files and no duplicate), then a run to the end, after
/// which the archive must equal the simulator's record of ended sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sigkills_across_backfill_and_incremental_runs_lose_and_duplicate_nothing() {
    // Under both token semantics the simulator offers: keys, and offsets into the listing.
    for (seed, token_mode) in [
        (0x5eed_1234u64, TokenMode::Keyset),
        (0xdeca_fbad, TokenMode::Offset),
        (42, TokenMode::Offset),
    ] {
        random_sigkills(seed, token_mode).await;
    }
}

async fn random_sigkills(seed: u64, token_mode: TokenMode) {
    let env = Env::new(SimConfig {
        token_mode,
        ..sim_config(2, 2500, 10)
    })
    .await;
    env.sim.set_faults(Faults {
        latency_ms: 15,
        ..Faults::default()
    });
    let mut state = seed;
    let mut rand = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut kills = 0;
    for round in 0..8 {
        if round > 0 {
            for p in env.sim.portal_ids() {
                env.sim.add_sessions(&p, 300 + rand(300) as usize, 3);
            }
            env.sim.end_active(None, 5);
        }
        for attempt in 0..2 {
            let mut child = env.cmd(&["run", "--flush-rows", "150"]).spawn().unwrap();
            let wait = Duration::from_millis(10 + rand(if round == 0 { 600 } else { 120 }));
            if tokio::time::timeout(wait, child.wait()).await.is_err() {
                child.start_kill().unwrap();
                child.wait().await.unwrap();
                kills += 1;
            }
            // After a kill: every published file is complete, and no session is there twice.
            let rows = env.archived();
            let ids: std::collections::BTreeSet<_> = rows.iter().map(|r| &r.session_id).collect();
            assert_eq!(
                ids.len(),
                rows.len(),
                "seed {seed:x} round {round} attempt {attempt}: duplicates"
            );
        }
        env.run(&["run"]).await.ok();
        env.assert_exact();
    }
    assert!(kills >= 6, "seed {seed:x}: only {kills} kills landed");
    eprintln!("seed {seed:x}: {kills} SIGKILLs in 8 rounds; archive exact after every round");
}
