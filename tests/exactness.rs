//! Exact whatever the service's `nextToken` means (a key, or an offset into the current
//! listing) and however its retention moves: sessions age out of the listing during a pass and
//! between runs, new ones arrive mid-pass, tokens expire, runs are killed. Nothing still listed
//! is skipped and nothing is written twice; what the job could not reach is reported.
//!
//! The truth is the simulator's own record: what it lists now, and what it ever listed.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use archiver_simulator::{Faults, SimClock, SimConfig, SimSession, TokenMode};
use util::{sim_config, Env};

const MODES: [TokenMode; 2] = [TokenMode::Keyset, TokenMode::Offset];
const DAY_MS: i64 = 86_400_000;

/// 4,000 sessions over 40 days, of which the service keeps 35; one simulated day passes every
/// 2 wall seconds, so sessions age out of the listing while a pass pages through it.
fn ageing(mode: TokenMode) -> SimConfig {
    SimConfig {
        token_mode: mode,
        clock: SimClock::Wall {
            scale: DAY_MS as f64 / 2000.0,
        },
        history_days: 40,
        retention_days: 35,
        now_ms: archiver::clock::now_ms() - 10 * DAY_MS,
        ..sim_config(1, 4000, 5)
    }
}

/// Every terminated session the service lists now is archived exactly once, with the
/// service's values; every archived row is a terminated session the service listed at some
/// point (one that aged out after it was archived is expected).
fn assert_exact_over_time(env: &Env) {
    let rows = env.archived();
    let ever: BTreeMap<String, SimSession> = env
        .sim
        .ever_listable()
        .into_iter()
        .map(|s| (s.session_id.clone(), s))
        .collect();
    let mut seen = BTreeSet::new();
    for r in &rows {
        assert!(
            seen.insert(r.session_id.clone()),
            "{} archived twice",
            r.session_id
        );
        let s = ever
            .get(&r.session_id)
            .unwrap_or_else(|| panic!("{} was never listed", r.session_id));
        assert_eq!(s.status, "Terminated", "{}", r.session_id);
        assert_eq!((r.start_ms, r.end_ms), (s.start_time_ms, s.end_time_ms));
        assert_eq!(r.username, s.username, "{}", r.session_id);
    }
    let listed_now: Vec<SimSession> = env
        .sim
        .listable()
        .into_iter()
        .filter(|s| s.status == "Terminated")
        .collect();
    let missing: Vec<&str> = listed_now
        .iter()
        .filter(|s| !seen.contains(&s.session_id))
        .map(|s| s.session_id.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "{} sessions still listed are not archived (of {} listed, {} rows), e.g. {:?}",
        missing.len(),
        listed_now.len(),
        rows.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Run `args` while, every 100 ms, new sessions start (some stay active) and the oldest active
/// ones end; `expire` also expires every pagination token twice.
async fn run_with_activity(env: &Env, args: &[&str], expire: bool) -> util::Run {
    let portal = env.portal(0);
    let activity = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            env.sim.add_sessions(&portal, 3, 1);
            env.sim.end_active(Some(&portal), 1);
            if expire && (i == 4 || i == 9) {
                env.sim.expire_tokens();
            }
        }
    };
    tokio::select! {
        r = env.run(args) => r,
        _ = activity => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_while_sessions_age_out_and_arrive_skips_nothing_still_listed() {
    for mode in MODES {
        let env = Env::new(ageing(mode)).await;
        env.sim.set_faults(Faults {
            latency_ms: 15,
            ..Faults::default()
        });
        let before = env.sim.listable().len();
        run_with_activity(&env, &["--flush-rows", "500", "run"], false)
            .await
            .ok();
        assert!(
            env.sim.listable().len() < before + 30 * 3,
            "{mode:?}: sessions must have aged out during the pass"
        );
        // The next run's incremental pass brings in what started during the backfill.
        env.sim.set_faults(Faults::default());
        env.run(&["run"]).await.ok();
        assert_exact_over_time(&env);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backfill_resumed_after_sessions_aged_out_skips_nothing_still_listed() {
    for mode in MODES {
        let env = Env::new(ageing(mode)).await;
        env.sim.set_faults(Faults {
            latency_ms: 10,
            ..Faults::default()
        });
        // Killed after the 12th page (two flushes of 500 committed), then three days pass.
        let r = env
            .run_crashing(&["--flush-rows", "500", "run"], "after_page:12")
            .await;
        assert_ne!(r.code, 0, "{mode:?}: the failpoint must kill the run");
        env.sim.advance_clock(3 * DAY_MS);
        env.sim.add_sessions(&env.portal(0), 40, 4);
        run_with_activity(&env, &["--flush-rows", "500", "run"], false)
            .await
            .ok();
        env.sim.set_faults(Faults::default());
        env.run(&["run"]).await.ok();
        assert_exact_over_time(&env);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_with_expiring_tokens_and_ageing_stay_exact() {
    for mode in MODES {
        let env = Env::new(ageing(mode)).await;
        env.run(&["run"]).await.ok();
        for _ in 0..3 {
            env.sim.add_sessions(&env.portal(0), 400, 3);
            env.sim.end_active(None, 3);
            env.sim.set_faults(Faults {
                latency_ms: 15,
                ..Faults::default()
            });
            run_with_activity(&env, &["--flush-rows", "300", "run"], true)
                .await
                .ok();
            env.sim.set_faults(Faults::default());
            env.run(&["run"]).await.ok();
            assert_exact_over_time(&env);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_did_not_run_longer_than_the_service_keeps_sessions_reports_the_gap() {
    let env = Env::new(SimConfig {
        now_ms: archiver::clock::now_ms() - 41 * DAY_MS,
        ..sim_config(1, 500, 0)
    })
    .await;
    env.run(&["run"]).await.ok();
    let watermark = env
        .sim
        .listable()
        .iter()
        .map(|s| s.start_time_ms)
        .max()
        .unwrap();
    // Forty days without a run: everything archived ages out, new sessions start.
    env.sim.advance_clock(40 * DAY_MS);
    let new = env.sim.add_sessions(&env.portal(0), 50, 0);
    let oldest_new = env
        .sim
        .listable()
        .iter()
        .map(|s| s.start_time_ms)
        .min()
        .unwrap();
    let summary = env.dir.path().join("summary.json");
    let metrics = env.dir.path().join("metrics.prom");
    let r = env
        .run(&[
            "--summary-json",
            summary.to_str().unwrap(),
            "--metrics-file",
            metrics.to_str().unwrap(),
            "run",
        ])
        .await;
    r.ok();
    assert!(
        r.stderr.contains("no longer lists sessions this old"),
        "{}",
        r.stderr
    );
    assert_eq!(new.len(), 50);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let gap = &doc["portals"][0]["gap"];
    assert_eq!(gap["from_ms"], watermark, "{doc}");
    assert_eq!(gap["to_ms"], oldest_new, "{doc}");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let want = format!(
        "archiver_portal_gap_seconds{{portal_id=\"{}\"}} {}",
        env.portal(0),
        (oldest_new - watermark) as f64 / 1000.0
    );
    assert!(text.lines().any(|l| l == want), "{want} not in\n{text}");
    let st = env.run(&["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert!(status["portals"][0]["gap"]["seconds"].as_f64().unwrap() > 39.0 * 86_400.0);
    // Reported once: the next run finds the archive covered up to its new watermark.
    let r = env
        .run(&["--metrics-file", metrics.to_str().unwrap(), "run"])
        .await;
    r.ok();
    assert!(
        !r.stderr.contains("no longer lists sessions this old"),
        "{}",
        r.stderr
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains(&format!(
            "archiver_portal_gap_seconds{{portal_id=\"{}\"}} 0",
            env.portal(0)
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_starting_in_the_future_do_not_move_the_watermark() {
    // The service's clock runs a day ahead of this machine's: half its sessions start in the
    // future.
    let now = archiver::clock::now_ms();
    let env = Env::new(SimConfig {
        now_ms: now + DAY_MS,
        history_days: 2,
        ..sim_config(1, 300, 0)
    })
    .await;
    let r = env.run(&["run"]).await;
    r.ok();
    assert!(r.stderr.contains("starts in the future"), "{}", r.stderr);
    env.assert_exact();
    let st = env.run(&["status", "--json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let watermark = doc["portals"][0]["watermark"].as_str().unwrap().to_string();
    let limit = archiver::clock::rfc3339(archiver::clock::now_ms() + 5 * 60_000);
    assert!(watermark <= limit, "watermark {watermark} is past {limit}");
}
