//! `archiver verify`: the real binary against the simulator. A clean archive verifies (exit 0);
//! a deleted, duplicated or altered file is found and counted (exit 3); sessions past the
//! service's retention are counted, not flagged; manifests catch altered, deleted and
//! unlisted files; `--repair` (also killed mid-way and rerun, also on S3) leaves the archive
//! exactly equal to the simulator's record.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use archiver::model::{Session, SessionStatus};
use serde_json::Value;

use util::{sim_config, Env, Run};

const DAY_MS: i64 = 86_400_000;

/// `verify --json` (plus `extra`): the exit code and the report.
async fn verify(env: &Env, extra: &[&str]) -> (i32, BTreeMap<String, Value>, Run) {
    let mut args = vec!["verify", "--json"];
    args.extend_from_slice(extra);
    let r = env.run(&args).await;
    assert!(r.code == 0 || r.code == 3, "exit {}: {}", r.code, r.stderr);
    let v: Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout));
    assert_eq!(v["ok"].as_bool().unwrap(), r.code == 0, "{}", r.stdout);
    let portals = v["portals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["portal_id"].as_str().unwrap().to_string(), p.clone()))
        .collect();
    (r.code, portals, r)
}

/// `code`, but 0 when verify found nothing but the integrity walk's `unreferenced manifest`
/// for the manifests this file writes by hand (`teststate-*`, as an archiver that wrote a
/// session twice would have): no digest lists them. Anything else found keeps the code.
fn but_hand_written(code: i32, r: &Run) -> i32 {
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let portals_ok = v["portals"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["ok"] == true);
    let found = v["integrity"]["findings"].as_array().unwrap();
    let hand_written = found.iter().all(|f| {
        f["kind"] == "unreferenced_manifest"
            && f["object"].as_str().unwrap().contains("/teststate-")
    });
    match code == 3 && portals_ok && hand_written && !found.is_empty() {
        true => 0,
        false => code,
    }
}

fn n(p: &Value, field: &str) -> u64 {
    p[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {p}"))
}

/// The `.parquet` files of one portal, sorted.
fn files_of(env: &Env, portal: &str) -> Vec<PathBuf> {
    util::parquet_files(
        &env.archive()
            .join("sessions")
            .join(format!("portal_id={portal}")),
    )
}

/// Rows of one file, from its footer.
fn rows_in(file: &Path) -> usize {
    let f = std::fs::File::open(file).unwrap();
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    b.metadata().file_metadata().num_rows() as usize
}

/// A file of a partition other than the newest (whose day may still receive sessions).
fn an_old_file(env: &Env, portal: &str, skip: usize) -> PathBuf {
    let files = files_of(env, portal);
    files[files.len() / 3 + skip].clone()
}

/// Rewrite a file with the crate's own encoder, changing its rows with `change`.
fn rewrite(file: &Path, change: impl Fn(&mut Session)) {
    let root = file.ancestors().nth(4).unwrap();
    let rows: Vec<Session> = util::read_dataset(root)
        .into_iter()
        .filter(|r| r.file == file)
        .map(|r| {
            let mut s = Session {
                portal_arn: r.portal_arn.as_str().into(),
                session_id: r.session_id,
                username: r.username,
                status: if r.status == "Active" {
                    SessionStatus::Active
                } else {
                    SessionStatus::Terminated
                },
                start_ms: r.start_ms,
                end_ms: r.end_ms,
                client_ips: r.client_ips,
            };
            change(&mut s);
            s
        })
        .collect();
    assert!(!rows.is_empty());
    let bytes = archiver::encode::encode(&rows, archiver::clock::now_ms()).unwrap();
    std::fs::write(file, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_archive_verifies_with_the_services_counts() {
    let env = Env::new(sim_config(2, 1500, 4)).await;
    env.run(&["run", "--flush-rows", "400"]).await.ok();
    let (code, portals, _) = verify(&env, &[]).await;
    assert_eq!(code, 0);
    assert_eq!(portals.len(), 2);
    let listable = env.sim.listable();
    let expected = env.expected();
    for (id, p) in &portals {
        let listed = listable.iter().filter(|s| &s.portal_id == id).count() as u64;
        let active = listable
            .iter()
            .filter(|s| &s.portal_id == id && s.status == "Active")
            .count() as u64;
        let archived = expected.values().filter(|s| &s.portal_id == id).count() as u64;
        assert_eq!(n(p, "listed"), listed, "{p}");
        assert_eq!(n(p, "active"), active, "{p}");
        assert_eq!(n(p, "archived"), archived, "{p}");
        for f in ["missing", "duplicated", "differing", "expired", "extra"] {
            assert_eq!(n(p, f), 0, "{f}: {p}");
        }
        assert_eq!(n(p, "files"), files_of(&env, id).len() as u64);
        assert_eq!(p["ok"], Value::Bool(true));
        // The archiver's own manifests describe every file.
        let m = &p["manifest"];
        assert_eq!(m["checked"], Value::Bool(true), "{p}");
        assert_eq!(n(m, "live_files"), files_of(&env, id).len() as u64, "{p}");
        for problem in ["altered", "deleted", "unlisted", "errors"] {
            assert_eq!(m[problem], serde_json::json!([]), "{problem}: {p}");
        }
        assert!(p.get("repaired").is_none());
    }
    // The text report: a header, one row per portal, a verdict.
    let r = env.run(&["verify"]).await;
    r.ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("PORTAL"), "{}", r.stdout);
    assert!(lines[0].contains("MISSING") && lines[0].contains("EXPIRED"));
    assert_eq!(lines.len(), 5, "{}", r.stdout);
    assert!(lines[3].starts_with("verified 2 portals: the archive matches"));
    assert!(lines[4].starts_with("integrity: intact: "), "{}", r.stdout);
    // One portal only; an unknown portal cannot be verified (exit 1, one line).
    let one = env.portal(1);
    let (code, portals, _) = verify(&env, &["--portal-id", &one]).await;
    assert_eq!((code, portals.len()), (0, 1));
    let r = env
        .run(&[
            "verify",
            "--portal-id",
            "00000000-0000-4000-8000-000000000000",
        ])
        .await;
    r.code(1);
    assert!(
        r.stderr.contains("00000000-0000-4000-8000-000000000000"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_file_is_missing_and_repair_writes_it_once() {
    let env = Env::new(sim_config(2, 1500, 4)).await;
    env.run(&["run", "--flush-rows", "400"]).await.ok();
    let portal = env.portal(0);
    let file = an_old_file(&env, &portal, 0);
    let lost = rows_in(&file) as u64;
    std::fs::remove_file(&file).unwrap();
    let (code, portals, _) = verify(&env, &[]).await;
    assert_eq!(code, 3);
    assert_eq!(n(&portals[&portal], "missing"), lost);
    assert_eq!(portals[&portal]["ok"], Value::Bool(false));
    assert_eq!(portals[&env.portal(1)]["ok"], Value::Bool(true));
    let r = env.run(&["verify"]).await;
    r.code(3);
    assert!(
        r.stderr
            .contains("differs from the service in 1 of 2 portals"),
        "{}",
        r.stderr
    );

    let (code, portals, r) = verify(&env, &["--repair"]).await;
    assert_eq!(code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(n(&portals[&portal]["repaired"], "written"), lost);
    // Its day is still listed whole: a manifest records the lost file as replaced.
    assert_eq!(n(&portals[&portal]["repaired"], "lost_files"), 1);
    env.assert_exact();
    assert_eq!(verify(&env, &[]).await.0, 0);
    // The state knows the rewritten sessions: later runs write nothing twice.
    for p in env.sim.portal_ids() {
        env.sim.add_sessions(&p, 60, 2);
    }
    env.sim.end_active(None, 6);
    env.run(&["run"]).await.ok();
    env.assert_exact();
    assert_eq!(verify(&env, &[]).await.0, 0);
}

/// Verify takes the run lock: a run publishing meanwhile would show as differences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_waits_for_no_run_it_refuses_while_one_holds_the_lock() {
    let env = Env::new(sim_config(1, 300, 0)).await;
    env.run(&["run"]).await.ok();
    let held = archiver::state::lock::acquire(&env.state(), "run").unwrap();
    let r = env.run(&["verify"]).await;
    r.code(75);
    assert!(r.stderr.contains("holds the lock"), "{}", r.stderr);
    drop(held);
    env.run(&["verify"]).await.ok();
}

/// A lost file from the oldest day the service lists may have held sessions that aged out:
/// repair writes what is still listed, but the file stays reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_file_from_a_day_no_longer_listed_whole_stays_reported() {
    let env = Env::new(sim_config(1, 1500, 4)).await;
    env.run(&["run", "--flush-rows", "400"]).await.ok();
    let portal = env.portal(0);
    let oldest = files_of(&env, &portal)[0].clone();
    std::fs::remove_file(&oldest).unwrap();
    let (code, portals, r) = verify(&env, &["--repair"]).await;
    assert_eq!(code, 3, "{}", r.stdout);
    let p = &portals[&portal];
    assert_eq!(n(p, "missing"), 0, "{p}");
    assert_eq!(n(&p["repaired"], "lost_files"), 0, "{p}");
    let rel = oldest
        .strip_prefix(env.archive())
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(p["manifest"]["deleted"], serde_json::json!([rel]), "{p}");
    env.assert_exact();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_file_is_counted_and_repair_keeps_one_row_each() {
    let env = Env::new(sim_config(1, 1500, 4)).await;
    env.run(&["run", "--flush-rows", "400"]).await.ok();
    let portal = env.portal(0);
    let file = an_old_file(&env, &portal, 0);
    let copied = rows_in(&file) as u64;
    let copy = file.with_file_name("part-copy-0000000001.parquet");
    std::fs::copy(&file, &copy).unwrap();
    let (code, portals, _) = verify(&env, &[]).await;
    assert_eq!(code, 3);
    let p = &portals[&portal];
    assert_eq!(n(p, "duplicated"), copied);
    assert_eq!(
        n(p, "missing") + n(p, "differing") + n(p, "extra"),
        0,
        "{p}"
    );
    // A copy that no manifest records is not rewritten into the archive: repair refuses the
    // partition, naming the file, and leaves it as it is.
    let r = env.run(&["verify", "--repair"]).await;
    r.code(1);
    assert!(
        r.last_line()
            .contains(&format!("{}: in no manifest", rel_of(&env, &copy))),
        "{}",
        r.stderr
    );
    assert!(copy.exists() && file.exists());
    // Recorded by a manifest (as an archiver that wrote a session twice would have), the
    // duplicated rows are removed.
    write_manifest(&env, &portal, 1, std::slice::from_ref(&copy), &[]);

    let (code, portals, r) = verify(&env, &["--repair"]).await;
    assert_eq!(but_hand_written(code, &r), 0, "{}", r.stdout);
    let rep = &portals[&portal]["repaired"];
    assert_eq!(n(rep, "partitions_rewritten"), 1);
    assert_eq!(n(rep, "rows_removed"), copied);
    env.assert_exact();
    // Its manifest proves the rewrite: the inputs, and the duplicated rows it removed.
    let dir = env
        .archive()
        .join("_manifest")
        .join(format!("portal_id={portal}"));
    let rewrites: Vec<Value> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .filter(|m: &Value| m["kind"] == "compaction")
        .collect();
    assert_eq!(rewrites.len(), 1);
    assert_eq!(rewrites[0]["removed_rows"].as_u64(), Some(copied));
    assert!(rewrites[0]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["path"] == rel_of(&env, &copy)));
    env.sim.add_sessions(&portal, 50, 0);
    env.sim.end_active(None, 4);
    env.run(&["run"]).await.ok();
    env.assert_exact();
    let (code, _, r) = verify(&env, &[]).await;
    assert_eq!(but_hand_written(code, &r), 0, "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_end_time_differs_and_repair_does_not_hide_it() {
    let env = Env::new(sim_config(1, 1000, 4)).await;
    env.run(&["run"]).await.ok();
    let portal = env.portal(0);
    let file = an_old_file(&env, &portal, 0);
    let first = std::cell::Cell::new(true);
    rewrite(&file, |s| {
        if first.replace(false) {
            s.end_ms = s.end_ms.map(|e| e + 1000);
        }
    });
    let (code, portals, _) = verify(&env, &[]).await;
    assert_eq!(code, 3);
    let p = &portals[&portal];
    assert_eq!(n(p, "differing"), 1, "{p}");
    assert_eq!(
        n(p, "missing") + n(p, "duplicated") + n(p, "extra"),
        0,
        "{p}"
    );
    // A repair writes and deduplicates; it never rewrites values: still a difference.
    let (code, portals, _) = verify(&env, &["--repair"]).await;
    assert_eq!(code, 3);
    assert_eq!(n(&portals[&portal], "differing"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_past_the_services_retention_are_expired_not_flagged() {
    let env = Env::new(sim_config(1, 1500, 4)).await;
    env.run(&["run"]).await.ok();
    let archived_before = env.archived().len() as u64;
    // 20 days on, sessions older than 15 days are no longer listed.
    env.sim.advance_clock(20 * DAY_MS);
    let cutoff = env.sim.retention_cutoff_ms();
    let gone = env
        .sim
        .record()
        .iter()
        .filter(|s| s.status == "Terminated" && s.start_time_ms < cutoff)
        .count() as u64;
    assert!(gone > 100, "only {gone} sessions expired");
    let (code, portals, _) = verify(&env, &[]).await;
    assert_eq!(code, 0);
    let p = &portals[&env.portal(0)];
    assert_eq!(n(p, "expired"), gone, "{p}");
    assert_eq!(n(p, "archived"), archived_before);
    assert_eq!(n(p, "missing") + n(p, "extra"), 0, "{p}");
    let r = env.run(&["verify"]).await;
    r.ok();
    assert!(
        r.stdout
            .contains(&format!("({gone} rows expired from the service, kept)")),
        "{}",
        r.stdout
    );
}

/// Manifests for every file of a portal, written as the archiver's manifest writer would.
fn write_manifest(env: &Env, portal: &str, seq: u64, files: &[PathBuf], replaces: &[String]) {
    let entries: Vec<Value> = files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).unwrap();
            serde_json::json!({
                "path": f.strip_prefix(env.archive()).unwrap().to_string_lossy(),
                "rows": rows_in(f),
                "bytes": bytes.len(),
                "sha256": archiver::sink::manifest::sha256_hex(&bytes),
            })
        })
        .collect();
    let m = serde_json::json!({
        "version": 1,
        "portal_id": portal,
        "state_id": "teststate",
        "seq": seq,
        "kind": if replaces.is_empty() { "flush" } else { "compaction" },
        "files": entries,
        "replaces": replaces,
    });
    let dir = env
        .archive()
        .join("_manifest")
        .join(format!("portal_id={portal}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("teststate-{seq:010}.json")),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_catch_altered_deleted_and_unlisted_files() {
    let env = Env::new(sim_config(2, 1200, 4)).await;
    env.run(&["run", "--flush-rows", "400"]).await.ok();
    let (with, without) = (env.portal(0), env.portal(1));
    let files = files_of(&env, &with);
    // The archiver's manifests: every file checked, none a problem.
    let (code, portals, _) = verify(&env, &[]).await;
    assert_eq!(code, 0, "{:?}", portals[&with]);
    let m = &portals[&with]["manifest"];
    assert_eq!(m["checked"], Value::Bool(true));
    assert_eq!(n(m, "live_files"), files.len() as u64);
    // A portal without manifests: the file check against them is skipped, and said so; but
    // the digest lists the manifests deleted, and nothing vouches for the files any more.
    std::fs::remove_dir_all(
        env.archive()
            .join("_manifest")
            .join(format!("portal_id={without}")),
    )
    .unwrap();
    let r = env.run(&["verify"]).await;
    r.code(3);
    assert!(
        r.stdout.contains("no manifest (not checked)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("missing manifest _manifest/portal_id={without}/")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("unreferenced file sessions/portal_id={without}/")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("{} ok", files.len())),
        "{}",
        r.stdout
    );

    // Alter one file (same rows, other bytes), delete another, copy a third under a new name.
    let altered = &files[2];
    rewrite(altered, |_| {});
    let deleted = &files[4];
    std::fs::remove_file(deleted).unwrap();
    let copy = files[6].with_file_name("part-copy-0000000001.parquet");
    std::fs::copy(&files[6], &copy).unwrap();
    let rel = |p: &Path| {
        p.strip_prefix(env.archive())
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let (code, portals, _) = verify(&env, &[]).await;
    assert_eq!(code, 3);
    let m = &portals[&with]["manifest"];
    assert_eq!(m["altered"], serde_json::json!([rel(altered)]), "{m}");
    assert_eq!(m["deleted"], serde_json::json!([rel(deleted)]), "{m}");
    assert_eq!(m["unlisted"], serde_json::json!([rel(&copy)]), "{m}");
    let p = &portals[&with];
    assert_eq!(
        n(p, "differing"),
        0,
        "the altered file holds the same values: {p}"
    );
    let r = env.run(&["verify"]).await;
    r.code(3);
    assert!(
        r.stdout.contains("1 altered, 1 deleted, 1 unlisted"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("{with}: deleted: {}", rel(deleted))),
        "{}",
        r.stdout
    );

    // A manifest that cannot be read is a problem too; one that replaces a file makes it unlisted.
    std::fs::remove_file(&copy).unwrap();
    let dir = env
        .archive()
        .join("_manifest")
        .join(format!("portal_id={without}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x-0000000001.json"), b"{not json").unwrap();
    let (_, portals, _) = verify(&env, &[]).await;
    assert_eq!(
        portals[&without]["manifest"]["errors"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(portals[&without]["ok"], Value::Bool(false));
    write_manifest(&env, &with, 3, &[], &[rel(&files[0])]);
    let (_, portals, _) = verify(&env, &[]).await;
    assert_eq!(
        portals[&with]["manifest"]["unlisted"],
        serde_json::json!([rel(&files[0])])
    );
}

/// An archive with a lost file in one partition and a copied file in another.
async fn damaged() -> Env {
    let env = Env::new(sim_config(1, 1000, 3)).await;
    env.run(&["run", "--flush-rows", "300"]).await.ok();
    let portal = env.portal(0);
    let files = files_of(&env, &portal);
    let (a, b) = (&files[files.len() / 4], &files[files.len() / 2]);
    assert_ne!(a.parent(), b.parent());
    std::fs::remove_file(a).unwrap();
    // A copy recorded by a manifest (one without a manifest is not repaired: see
    // a_duplicated_file_is_counted_and_repair_keeps_one_row_each).
    let copy = b.with_file_name("part-copy-0000000001.parquet");
    std::fs::copy(b, &copy).unwrap();
    write_manifest(&env, &portal, 1, &[copy], &[]);
    env
}

fn rel_of(env: &Env, f: &std::path::Path) -> String {
    f.strip_prefix(env.archive())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_killed_at_each_step_then_rerun_is_exact() {
    for point in [
        "repair_after_stage:1",
        "repair_after_local_commit:1",
        "repair_after_commit:1",
        "after_publish:1",
        "repair_after_stage:2",
        "repair_after_commit:2",
        "repair_after_replace:1",
    ] {
        let env = damaged().await;
        let crashed = env.run_crashing(&["verify", "--repair"], point).await;
        assert_eq!(crashed.code, 134, "{point}: {}", crashed.stderr);
        let (code, _, r) = verify(&env, &["--repair"]).await;
        assert_eq!(but_hand_written(code, &r), 0, "{point}: {}", r.stdout);
        env.assert_exact();
        let (code, _, r) = verify(&env, &[]).await;
        assert_eq!(but_hand_written(code, &r), 0, "{point}: {}", r.stdout);
        let staging = util::parquet_files(&env.archive().join("_staging"));
        assert!(staging.is_empty(), "{point}: {staging:?}");
        env.sim.add_sessions(&env.portal(0), 30, 0);
        env.sim.end_active(None, 3);
        env.run(&["run"]).await.ok();
        env.assert_exact();
    }
}

/// `verify --repair` while a backfill is unfinished writes the sessions the backfill has not
/// reached yet; the resumed backfill must not write them again. Killed at each step of the
/// repair too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_during_an_unfinished_backfill_is_never_written_again() {
    for repair_kill in [None, Some("repair_after_commit:1"), Some("after_publish:1")] {
        let env = Env::new(sim_config(1, 3000, 0)).await;
        let crashed = env
            .run_crashing(&["run", "--flush-rows", "300"], "after_commit:4")
            .await;
        assert_eq!(crashed.code, 134, "{}", crashed.stderr);
        let archived = env.archived().len();
        assert!(archived > 0 && archived < 3000, "{archived} archived");
        if let Some(point) = repair_kill {
            let r = env.run_crashing(&["verify", "--repair"], point).await;
            assert_eq!(r.code, 134, "{point}: {}", r.stderr);
        }
        let (code, _, r) = verify(&env, &["--repair"]).await;
        assert_eq!(code, 0, "{repair_kill:?}: {}", r.stdout);
        env.assert_exact();
        // The backfill resumes from its checkpoint, below what repair wrote.
        let r = env.run(&["run", "--flush-rows", "300"]).await;
        r.ok();
        env.assert_exact();
        assert_eq!(verify(&env, &[]).await.0, 0, "{repair_kill:?}");
    }
}

/// SIGTERM stops `verify --repair` before its next page: exit 1 with "interrupted", what it
/// wrote is committed, the run history says so, and the next `verify --repair` finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_stops_cleanly_on_sigterm() {
    let env = damaged().await;
    let child = util::spawn_stopped(
        env.cmd(&["verify", "--repair", "--flush-rows", "100"]),
        "repair_after_commit:1:stop",
    )
    .await;
    let r = util::resume(child, Some("TERM")).await;
    r.code(1);
    assert!(r.last_line().contains("interrupted"), "{}", r.stderr);
    let status = env.run(&["status", "--json"]).await;
    let doc: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(doc["last_run"]["outcome"], "interrupted", "{doc}");
    let (code, _, r) = verify(&env, &["--repair"]).await;
    assert_eq!(but_hand_written(code, &r), 0, "{}", r.stdout);
    env.assert_exact();
}

/// A mistyped `--state` is refused in one line (exit 1), and nothing is created there: no
/// state file, no lock file, no folder. `--new-state` verifies with a new state on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_a_missing_state_unless_told_it_is_new() {
    let env = Env::new(sim_config(1, 200, 0)).await;
    env.run(&["run"]).await.ok();
    let typo = env.dir.path().join("typo").join("stat.db");
    let state = typo.to_str().unwrap();
    let at_typo = |args: &[&str]| {
        let mut c = tokio::process::Command::new(util::BIN);
        c.arg("--state")
            .arg(state)
            .arg("--output")
            .arg(env.archive());
        c.args(args);
        for (k, v) in util::aws_env(&env.sim.endpoint_url()) {
            c.env(k, v);
        }
        c.env_remove("ARCHIVER_FAILPOINT").kill_on_drop(true);
        async move { Run::from(c.output().await.unwrap()) }
    };
    for args in [vec!["verify"], vec!["verify", "--repair"]] {
        let r = at_typo(&args).await;
        r.code(1);
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
        assert!(
            r.last_line().contains(&format!("no state at {state}")),
            "{}",
            r.stderr
        );
        assert!(!env.dir.path().join("typo").exists(), "{args:?} created it");
    }
    // On purpose: a new state verifies the archive (its files are another state's, which
    // verify reads all the same).
    at_typo(&["verify", "--new-state"]).await.ok();
    assert!(typo.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_repair_an_s3_output() {
    use util::s3 as s3u;
    let env = Env::new(sim_config(1, 800, 3)).await;
    let moto = s3u::Moto::start().await;
    let c = s3u::client(&moto.endpoint);
    s3u::create_bucket(&c, "audit").await;
    let run = |args: &'static [&'static str]| s3_run(&env, &moto.endpoint, args);
    run(&["run", "--flush-rows", "300"]).await.ok();
    run(&["verify"]).await.ok();
    let keys: Vec<String> = s3u::keys(&c, "audit")
        .await
        .into_iter()
        .filter(|k| k.ends_with(".parquet"))
        .collect();
    let victim = &keys[keys.len() / 2];
    let dir = env.dir.path().join("one");
    std::fs::create_dir_all(&dir).unwrap();
    let local = dir.join("f.parquet");
    std::fs::write(&local, s3u::get(&c, "audit", victim).await).unwrap();
    let lost = rows_in(&local);
    c.delete_object()
        .bucket("audit")
        .key(victim)
        .send()
        .await
        .unwrap();
    let r = run(&["verify", "--json"]).await;
    r.code(3);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(n(&v["portals"][0], "missing"), lost as u64);
    run(&["verify", "--repair"]).await.ok();
    run(&["verify"]).await.ok();
    let down = env.dir.path().join("downloaded");
    s3u::download(&c, "audit", "ws", &down).await;
    util::assert_exact(&util::read_dataset(&down), &env.expected());
}

/// The binary with this env's simulator and state, writing to `s3://audit/ws` on moto.
async fn s3_run(env: &Env, s3: &str, args: &[&str]) -> Run {
    let mut c = tokio::process::Command::new(util::BIN);
    c.arg("--state")
        .arg(env.state())
        .arg("--output")
        .arg("s3://audit/ws")
        .args(args);
    for (k, v) in util::aws_env(&env.sim.endpoint_url()) {
        c.env(k, v);
    }
    c.env("AWS_ENDPOINT_URL_S3", s3)
        .env_remove("ARCHIVER_FAILPOINT");
    c.kill_on_drop(true);
    Run::from(c.output().await.unwrap())
}
