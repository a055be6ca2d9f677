//! `archiver compact`: partitions rewritten into one file each, exactly once, under kills.

mod util;

use std::collections::BTreeMap;
use std::time::Duration;

use archiver::commands::compact::old_enough;
use util::{sim_config, Env};

/// Files per (portal, date) partition.
fn layout(env: &Env) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for f in util::parquet_files(&env.archive().join("sessions")) {
        let date = f
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let portal = f.parent().unwrap().parent().unwrap().file_name().unwrap();
        *m.entry((portal.to_string_lossy().into_owned(), date))
            .or_default() += 1;
    }
    m
}

/// An archive with many small files: small flushes, then activity and another run.
async fn fragmented() -> Env {
    let env = Env::new(sim_config(2, 1500, 4)).await;
    env.run(&["run", "--flush-rows", "120"]).await.ok();
    for p in env.sim.portal_ids() {
        env.sim.add_sessions(&p, 200, 2);
    }
    env.sim.end_active(None, 4);
    env.run(&["run", "--flush-rows", "120"]).await.ok();
    env.assert_exact();
    env
}

fn date_of(partition: &str) -> &str {
    partition.strip_prefix("start_date=").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_leaves_one_file_per_old_partition_and_every_row_once() {
    let env = fragmented().await;
    let before = layout(&env);
    assert!(
        before.values().filter(|&&n| n >= 2).count() >= 10,
        "{before:?}"
    );
    let r = env.run(&["compact", "--older-than", "0s"]).await;
    r.ok();
    assert!(
        r.stdout
            .contains("readers could see old and new files together for at most"),
        "{}",
        r.stdout
    );
    env.assert_exact();
    let now = archiver::clock::now_ms();
    let after = layout(&env);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (k, n) in &after {
        if old_enough(date_of(&k.1), Duration::ZERO, now) {
            assert_eq!(*n, 1, "{k:?}");
        } else {
            assert_eq!(*n, before[k], "a recent partition was touched: {k:?}");
        }
    }
    // A second compaction has nothing to do; a run afterwards still archives exactly.
    env.run(&["compact", "--older-than", "0s"]).await.ok();
    assert_eq!(layout(&env), after);
    for p in env.sim.portal_ids() {
        env.sim.add_sessions(&p, 50, 0);
    }
    env.run(&["run"]).await.ok();
    env.assert_exact();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_than_leaves_recent_partitions_alone() {
    let env = fragmented().await;
    let before = layout(&env);
    env.run(&["compact", "--older-than", "7d"]).await.ok();
    let now = archiver::clock::now_ms();
    let after = layout(&env);
    let mut compacted = 0;
    for (k, n) in &after {
        if old_enough(date_of(&k.1), Duration::from_secs(7 * 86_400), now) {
            assert_eq!(*n, 1, "{k:?}");
            compacted += usize::from(before[k] > 1);
        } else {
            assert_eq!(*n, before[k], "{k:?} is younger than 7 days");
        }
    }
    assert!(
        compacted >= 5,
        "only {compacted} partitions were old and fragmented"
    );
    env.assert_exact();
    let r = env.run(&["compact", "--older-than", "soon"]).await;
    r.code(2);
    assert!(
        r.last_line()
            .ends_with("a number and a unit (s, m, h, d, w, ...), or several added up, e.g. 36h, 1.5d or 1d 12h"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_killed_at_each_step_is_finished_by_the_next_compaction_or_run() {
    for (point, then) in [
        ("compact_after_stage:3", "compact"),
        ("compact_after_commit:3", "compact"),
        ("compact_mid_replace:3", "compact"),
        ("compact_after_replace:3", "compact"),
        ("compact_after_forget:2", "compact"),
        ("compact_after_forget:1", "run"),
        ("compact_mid_replace:1", "run"),
        ("compact_after_commit:2", "run"),
    ] {
        let env = fragmented().await;
        let crashed = env
            .run_crashing(&["compact", "--older-than", "0s"], point)
            .await;
        assert_eq!(crashed.code, 134, "{point}: {}", crashed.stderr);
        // Every file under its final name is complete; rows may be there twice only in the
        // instant between a publish and its deletes, which the kill has frozen.
        let rows = env.archived();
        let distinct: std::collections::BTreeSet<_> = rows.iter().map(|r| &r.session_id).collect();
        assert!(distinct.len() <= rows.len());
        let mut args = vec![then];
        if then == "compact" {
            args.extend(["--older-than", "0s"]);
        }
        env.run(&args).await.ok();
        env.assert_exact();
        if then == "compact" {
            let now = archiver::clock::now_ms();
            for (k, n) in layout(&env) {
                if old_enough(date_of(&k.1), Duration::ZERO, now) {
                    assert_eq!(n, 1, "{point}: {k:?}");
                }
            }
        }
        let staging = env.archive().join("_staging");
        let left: Vec<_> = walk(&staging);
        assert!(left.is_empty(), "{point}: staging left: {left:?}");
        // Every compaction manifest, written by the compaction or by the recovery that
        // finished it, carries its proof, and verify checks it.
        let mut proved = 0;
        for f in walk(&env.archive().join("_manifest")) {
            let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
            if m["kind"] == "compaction" {
                assert!(m["rows_sha256"].is_string(), "{point}: {f:?}: {m}");
                assert_eq!(
                    m["inputs"].as_array().map(Vec::len),
                    m["replaces"].as_array().map(Vec::len),
                    "{point}: {f:?}"
                );
                proved += 1;
            }
        }
        assert!(proved > 0, "{point}");
        let v = env.run(&["verify", "--json"]).await;
        v.ok();
        let doc: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
        let checked: u64 = doc["portals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["manifest"]["compactions_proved"].as_u64().unwrap())
            .sum();
        assert_eq!(checked, proved, "{point}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// SIGTERM stops a compaction between two partitions: exit 1 with "interrupted", recorded so in
/// the run history, every row once, and the next compaction finishes the work (the lock was
/// released).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_stops_cleanly_on_sigterm() {
    let env = fragmented().await;
    let args = ["compact", "--older-than", "0s"];
    let child = util::spawn_stopped(env.cmd(&args), "compact_after_forget:2:stop").await;
    let r = util::resume(child, Some("TERM")).await;
    r.code(1);
    assert!(r.last_line().contains("interrupted"), "{}", r.stderr);
    env.assert_exact();
    let several = layout(&env).values().filter(|&&n| n >= 2).count();
    assert!(several > 0, "the compaction did not stop early");
    let status = env.run(&["status", "--json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(doc["last_run"]["outcome"], "interrupted", "{doc}");
    env.run(&args).await.ok();
    env.assert_exact();
    let now = archiver::clock::now_ms();
    for (k, n) in layout(&env) {
        if old_enough(date_of(&k.1), Duration::ZERO, now) {
            assert_eq!(n, 1, "{k:?}");
        }
    }
}
