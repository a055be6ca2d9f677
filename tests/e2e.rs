//! End to end: the real binary against the simulator on 127.0.0.1, the archive read back with
//! parquet's reader and compared with the simulator's own record.

mod util;

use util::{sim_config, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_archives_every_ended_session_once_and_keeps_active_ones_pending() {
    let env = Env::new(sim_config(1, 1500, 12)).await;
    let p = env.portal(0);
    env.run(&["backfill", "--portal-id", &p, "--flush-rows", "400"])
        .await
        .ok();
    env.assert_exact();
    assert_eq!(env.expected().len(), 1500 - 12);
    // Usernames and client IPs: no file of the archive is readable by others.
    let files = util::files_below(&env.archive());
    assert!(files.len() >= 8, "{} files", files.len());
    for path in files {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "{} is {mode:o}", path.display());
    }

    // Pending: the status reports the 12 active sessions.
    let st = env.run(&["status", "--json"]).await;
    st.ok();
    let doc: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(doc["portals"][0]["pending"], 12, "{}", st.stdout);
    assert_eq!(doc["portals"][0]["backfill_done"], true);

    // Rerun: cheap and adds nothing.
    let files_before = util::parquet_files(&env.archive().join("sessions"));
    env.sim.reset_stats();
    env.run(&["backfill", "--portal-id", &p]).await.ok();
    assert_eq!(
        util::parquet_files(&env.archive().join("sessions")),
        files_before
    );
    let calls = env.sim.stats().list_sessions_calls;
    assert!(
        calls <= 2,
        "a rerun on an archived portal made {calls} ListSessions calls"
    );
    env.assert_exact();

    // --restart lists everything again, still without duplicates.
    env.sim.reset_stats();
    env.run(&["backfill", "--portal-id", &p, "--restart"])
        .await
        .ok();
    assert!(env.sim.stats().list_sessions_calls >= 15);
    env.assert_exact();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_sessions_are_written_once_they_end() {
    let env = Env::new(sim_config(2, 300, 10)).await;
    env.run(&["run"]).await.ok();
    env.assert_exact();
    let ended = env.sim.end_active(None, 7);
    assert_eq!(ended.len(), 7);
    for p in env.sim.portal_ids() {
        env.sim.add_sessions(&p, 30, 4);
    }
    env.run(&["run"]).await.ok();
    env.assert_exact();
    let ids: std::collections::BTreeSet<String> =
        env.archived().into_iter().map(|r| r.session_id).collect();
    for id in &ended {
        assert!(ids.contains(id), "ended session {id} not archived");
    }
    // Everything ends: all of it is archived, nothing pending.
    env.sim.end_active(None, usize::MAX);
    env.run(&["run"]).await.ok();
    env.assert_exact();
    let st = env.run(&["status", "--json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    for p in doc["portals"].as_array().unwrap() {
        assert_eq!(p["pending"], 0, "{}", st.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_cost_follows_what_changed_not_history() {
    let env = Env::new(sim_config(1, 20_000, 5)).await;
    let p = env.portal(0);
    env.sim.reset_stats();
    env.run(&["run"]).await.ok();
    let full = env.sim.stats().list_sessions_calls;
    assert!(
        full >= 200,
        "a full listing of 20,000 took only {full} calls"
    );
    env.sim.add_sessions(&p, 200, 5);
    env.sim.end_active(Some(&p), 5);
    env.sim.reset_stats();
    env.run(&["run"]).await.ok();
    let incremental = env.sim.stats().list_sessions_calls;
    env.assert_exact();
    assert!(
        incremental * 4 < full,
        "incremental pass made {incremental} calls, a full listing {full}"
    );
    eprintln!("full listing: {full} calls; incremental after 200 new: {incremental} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_discovers_every_portal() {
    let env = Env::new(sim_config(3, 120, 2)).await;
    env.run(&["run", "--concurrency", "2"]).await.ok();
    env.assert_exact();
    let portals: std::collections::BTreeSet<String> =
        env.archived().into_iter().map(|r| r.portal_id).collect();
    assert_eq!(portals.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_portal_fails_with_its_id_named() {
    let env = Env::new(sim_config(1, 50, 0)).await;
    let missing = "00000000-0000-4000-8000-000000000000";
    let r = env.run(&["backfill", "--portal-id", missing]).await;
    r.code(1);
    assert!(r.stderr.contains(missing), "{}", r.stderr);
    assert_eq!(
        r.stderr
            .lines()
            .filter(|l| l.contains("archiver: error"))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_portal_id_is_refused_before_any_call() {
    let env = Env::new(sim_config(1, 50, 0)).await;
    for bad in [
        "abc",
        "../../etc/passwd-0000-0000-0000-000000",
        "0a1b2c3d-0000-4000-8000-123456789abc0",
    ] {
        let r = env.run(&["backfill", "--portal-id", bad]).await;
        r.code(2);
        assert!(r.stderr.contains("invalid portal id"), "{}", r.stderr);
    }
    let s = env.sim.stats();
    assert_eq!(
        s.list_sessions_calls + s.list_portals_calls + s.get_session_calls,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_foreign_state_is_refused_and_left_untouched() {
    let env = Env::new(sim_config(1, 50, 0)).await;
    let p = env.portal(0);
    let junk = b"SQLite format 3\0 but then garbage ".repeat(300);
    std::fs::write(env.state(), &junk).unwrap();
    let r = env.run(&["backfill", "--portal-id", &p]).await;
    r.code(1);
    assert!(r.stderr.contains("not an archiver state"), "{}", r.stderr);
    assert_eq!(std::fs::read(env.state()).unwrap(), junk);
    assert_eq!(env.sim.stats().list_sessions_calls, 0);
    assert!(util::parquet_files(&env.archive()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_output_fails_before_fetching() {
    let env = Env::new(sim_config(1, 50, 0)).await;
    let p = env.portal(0);
    let file = env.dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    for out in [file.clone(), file.join("below-a-file")] {
        let mut c = env.cmd(&["backfill", "--portal-id", &p]);
        c.arg("--output").arg(&out);
        let r = util::Run::from(c.output().await.unwrap());
        r.code(1);
        assert!(r.stderr.contains(&*file.to_string_lossy()), "{}", r.stderr);
    }
    assert_eq!(env.sim.stats().list_sessions_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_refuses_a_second_run_with_exit_75() {
    let env = Env::new(sim_config(1, 50, 0)).await;
    let p = env.portal(0);
    let held = archiver::state::lock::acquire(&env.state(), "run").unwrap();
    let r = env.run(&["backfill", "--portal-id", &p]).await;
    r.code(75);
    assert!(r.stderr.contains("holds the lock"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("pid {}", std::process::id())),
        "{}",
        r.stderr
    );
    drop(held);
    env.run(&["backfill", "--portal-id", &p]).await.ok();
    env.assert_exact();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_options_work_before_or_after_the_subcommand_and_from_env() {
    let env = Env::new(sim_config(1, 80, 0)).await;
    let p = env.portal(0);
    // After the subcommand, from a separate state/output given by env.
    let state = env.dir.path().join("other.db");
    let mut c = tokio::process::Command::new(util::BIN);
    c.args(["backfill", "--portal-id", &p, "--flush-rows", "30"])
        .env("ARCHIVER_STATE", &state)
        .env("ARCHIVER_OUTPUT", env.archive());
    for (k, v) in util::aws_env(&env.sim.endpoint_url()) {
        c.env(k, v);
    }
    util::Run::from(c.output().await.unwrap()).ok();
    assert!(state.exists());
    env.assert_exact();
    // 80 sessions at 30 rows a flush (pages of 30): three flushes, each a checkpoint.
    let mut c = tokio::process::Command::new(util::BIN);
    c.args(["status", "--json", "--state"]).arg(&state);
    let st = util::Run::from(c.output().await.unwrap());
    st.ok();
    let doc: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(doc["portals"][0]["flushes"], 3, "{}", st.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_with_their_own_states_cover_every_portal_exactly_once() {
    let env = Env::new(sim_config(7, 150, 2)).await;
    let state = env.dir.path().join("state-{shard}.db");
    // Shard 0 by flag; 1 as a Kubernetes Indexed Job; 2 as an AWS Batch array job.
    let how: [(&str, Option<(&str, &str)>); 3] = [
        ("--shard=0/3", None),
        ("--shard-count=3", Some(("JOB_COMPLETION_INDEX", "1"))),
        ("--shard-count=3", Some(("AWS_BATCH_JOB_ARRAY_INDEX", "2"))),
    ];
    for (flag, index_env) in how {
        let mut c = env.cmd(&["run", flag]);
        c.arg("--state").arg(&state);
        if let Some((k, v)) = index_env {
            c.env(k, v);
        }
        util::Run::from(c.output().await.unwrap()).ok();
    }
    for i in 0..3 {
        assert!(env.dir.path().join(format!("state-{i}.db")).exists());
    }
    env.assert_exact();
    // Each portal's files come from one state (the state id is in every file name).
    let mut writers: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for f in util::parquet_files(&env.archive().join("sessions")) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let state_id = name.split('-').nth(1).unwrap().to_string();
        let portal = f.parent().unwrap().parent().unwrap().file_name().unwrap();
        writers
            .entry(portal.to_string_lossy().into_owned())
            .or_default()
            .insert(state_id);
    }
    assert_eq!(writers.len(), 7);
    assert!(writers.values().all(|w| w.len() == 1), "{writers:?}");
    let distinct: std::collections::BTreeSet<_> = writers.values().flatten().collect();
    assert!(
        distinct.len() >= 2,
        "the split put every portal in one shard"
    );
    // A shard index out of range is a usage error.
    let r = env.run(&["run", "--shard", "3/3"]).await;
    r.code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_ips_every_row_carries_the_addresses_get_session_returns() {
    let env = Env::new(sim_config(2, 250, 4)).await;
    env.run(&["run", "--with-client-ips", "--flush-rows", "100"])
        .await
        .ok();
    env.assert_exact();
    let record: std::collections::BTreeMap<String, Vec<String>> = env
        .sim
        .record()
        .into_iter()
        .map(|s| (s.session_id, s.client_ip_addresses))
        .collect();
    let rows = env.archived();
    for r in &rows {
        assert_eq!(
            r.client_ips.as_ref(),
            Some(&record[&r.session_id]),
            "{}",
            r.session_id
        );
    }
    assert!(rows
        .iter()
        .any(|r| r.client_ips.as_ref().is_some_and(|l| !l.is_empty())));
    // One GetSession per session written.
    assert_eq!(env.sim.stats().get_session_calls, rows.len() as u64);

    // Without the flag: the column is there, null, and no GetSession call is made.
    env.sim.end_active(None, usize::MAX);
    env.sim.reset_stats();
    env.run(&["run"]).await.ok();
    env.assert_exact();
    assert_eq!(env.sim.stats().get_session_calls, 0);
    let nulls = env
        .archived()
        .into_iter()
        .filter(|r| r.client_ips.is_none())
        .count();
    assert_eq!(
        nulls, 8,
        "the 8 sessions ended since were written without IPs"
    );
}
