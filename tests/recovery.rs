//! Recovery when something went wrong beyond a kill: a staging folder lost between a commit
//! and its publish, and a second state on the same output. Truth is the simulator's record.

mod util;

use std::collections::BTreeSet;

use util::{sim_config, Env, Run};

/// A run killed right after its second commit, then `_staging/` lost (an expired lifecycle
/// rule, a cleaned disk). The next run names the loss (portal, day, rows) and goes on, exit 0;
/// the lost sessions are no longer recorded as archived, so `verify --repair` writes them, and
/// the archive ends exact. Before, every run and repair stopped on the missing file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_staging_folder_is_a_named_loss_and_the_portal_goes_on() {
    let env = Env::new(sim_config(1, 3000, 0)).await;
    let args = ["run", "--flush-rows", "300"];
    let crashed = env.run_crashing(&args, "after_commit:2").await;
    assert_eq!(crashed.code, 134, "{}", crashed.stderr);
    std::fs::remove_dir_all(env.archive().join("_staging")).unwrap();
    let before = env.archived().len();

    let summary = env.dir.path().join("summary.json");
    let s = format!("--summary-json={}", summary.display());
    let r = env.run(&["run", "--flush-rows", "300", &s]).await;
    r.ok();
    // One named loss per file of the lost flush (one file per day), each with its day and rows.
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let lost = doc["portals"][0]["lost_files"].as_array().unwrap();
    assert!(!lost.is_empty(), "{doc}");
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("a committed file was lost"))
        .collect();
    assert_eq!(warnings.len(), lost.len(), "{}", r.stderr);
    let mut rows = 0;
    for (w, l) in warnings.iter().zip(lost) {
        let (date, n) = (l["date"].as_str().unwrap(), l["rows"].as_i64().unwrap());
        assert!(w.contains(&env.portal(0)), "{w}");
        assert!(w.contains(date) && w.contains(&format!("rows={n}")), "{w}");
        assert_eq!(l["unrecorded"], l["rows"], "{doc}");
        rows += n;
    }
    assert!(env.archived().len() > before, "the portal did not go on");
    // Exactly those rows are missing, none twice.
    let archived = env.archived();
    let ids: BTreeSet<_> = archived.iter().map(|r| r.session_id.clone()).collect();
    assert_eq!(ids.len(), archived.len(), "duplicates");
    assert_eq!(env.expected().len() - ids.len(), rows as usize);

    env.run(&["verify", "--repair"]).await.ok();
    env.assert_exact();
    env.run(&["run"]).await.ok();
    env.assert_exact();
}

/// A second state on the same output (a changed shard count in a rolling deploy, a duplicated
/// job) starting a portal the first state has just begun: the first state's claim stops it
/// before its recovery could delete the first state's committed, unpublished files, and before
/// it writes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_state_never_touches_a_portal_another_state_claimed() {
    let env = Env::new(sim_config(1, 1500, 0)).await;
    let first = util::spawn_stopped(
        env.cmd(&["run", "--flush-rows", "300"]),
        "after_commit:1:stop",
    )
    .await;
    let staged = || util::files_below(&env.archive().join("_staging"));
    let staged_before = staged();
    assert!(!staged_before.is_empty(), "nothing staged");

    let other_state = env.dir.path().join("other.db");
    let mut c = tokio::process::Command::new(util::BIN);
    c.arg("--state")
        .arg(&other_state)
        .arg("--output")
        .arg(env.archive())
        .arg("run");
    for (k, v) in util::aws_env(&env.sim.endpoint_url()) {
        c.env(k, v);
    }
    c.env_remove("ARCHIVER_FAILPOINT");
    let r = Run::from(c.output().await.unwrap());
    r.code(1);
    assert!(
        r.last_line().contains("has claimed this portal"),
        "{}",
        r.stderr
    );
    assert_eq!(
        staged(),
        staged_before,
        "the second state touched staged files"
    );
    assert!(
        util::parquet_files(&env.archive().join("sessions")).is_empty(),
        "the second state published files"
    );

    util::resume(first, None).await.ok();
    env.assert_exact();
}
