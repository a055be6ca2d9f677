//! Known portals never vanish silently: a portal the state or the archive knows and that
//! discovery no longer returns (here deleted from the simulator) is named by every `run` (a
//! warning, `--summary-json`, a metric, `status`), only by the shard that owns it, and
//! `verify` checks its files against its manifests and says it is unlisted. A `verify` that
//! finds no portal at all exits 1.

mod util;

use std::path::{Path, PathBuf};

use serde_json::Value;
use util::{sim_config, Env, Run};

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The binary with this env's simulator and output, but the state at `state`.
async fn with_state(env: &Env, state: &Path, args: &[&str]) -> Run {
    let mut c = tokio::process::Command::new(util::BIN);
    c.arg("--state")
        .arg(state)
        .arg("--output")
        .arg(env.archive())
        .args(args);
    for (k, v) in util::aws_env(&env.sim.endpoint_url()) {
        c.env(k, v);
    }
    c.env_remove("ARCHIVER_FAILPOINT").kill_on_drop(true);
    Run::from(c.output().await.unwrap())
}

/// The `.parquet` files of one portal, sorted.
fn files_of(env: &Env, portal: &str) -> Vec<PathBuf> {
    util::parquet_files(
        &env.archive()
            .join("sessions")
            .join(format!("portal_id={portal}")),
    )
}

/// `verify --json` (plus `extra`): the exit code and the report.
async fn verify(env: &Env, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["verify", "--json"];
    args.extend_from_slice(extra);
    let r = env.run(&args).await;
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", r.stdout, r.stderr));
    (r.code, v)
}

/// Write a file again with the crate's own encoder: the same rows, other bytes (a new
/// `archived_at`).
fn rewrite(file: &Path) {
    use archiver::model::{Session, SessionStatus};
    let root = file.ancestors().nth(4).unwrap();
    let rows: Vec<Session> = util::read_dataset(root)
        .into_iter()
        .filter(|r| r.file == file)
        .map(|r| Session {
            portal_arn: r.portal_arn.as_str().into(),
            session_id: r.session_id,
            username: r.username,
            status: match r.status.as_str() {
                "Active" => SessionStatus::Active,
                _ => SessionStatus::Terminated,
            },
            start_ms: r.start_ms,
            end_ms: r.end_ms,
            client_ips: r.client_ips,
        })
        .collect();
    assert!(!rows.is_empty());
    std::thread::sleep(std::time::Duration::from_millis(5));
    let bytes = archiver::encode::encode(&rows, archiver::clock::now_ms()).unwrap();
    assert_ne!(bytes, std::fs::read(file).unwrap());
    std::fs::write(file, bytes).unwrap();
}

/// The warning lines naming `portal` as no longer listed.
fn unlisted_warnings<'a>(r: &'a Run, portal: &str) -> Vec<&'a str> {
    r.stderr
        .lines()
        .filter(|l| l.contains("no longer listed") && l.contains(portal))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_portal_is_named_by_every_run_in_the_summary_metrics_and_status() {
    let env = Env::new(sim_config(2, 300, 2)).await;
    let summary = env.dir.path().join("summary.json");
    let metrics = env.dir.path().join("archiver.prom");
    let (s, m) = (
        format!("--summary-json={}", summary.display()),
        format!("--metrics-file={}", metrics.display()),
    );
    // A mistyped --portal-id of an earlier run leaves a state row without files or ARN: it
    // was never a portal, and is never reported as one.
    let typo = "00000000-0000-4000-8000-000000000000";
    env.run(&["run", "--portal-id", typo]).await.code(1);
    let r = env.run(&["run", &s, &m]).await;
    r.ok();
    assert!(unlisted_warnings(&r, typo).is_empty(), "{}", r.stderr);
    assert_eq!(json(&summary)["unlisted_portals"], serde_json::json!([]));
    let (kept, gone) = (env.portal(0), env.portal(1));
    let files = files_of(&env, &gone);
    assert!(!files.is_empty());

    assert!(env.sim.delete_portal(&gone));
    for _ in 0..2 {
        // Every run names it, and succeeds: the service may have deleted it on purpose.
        let r = env.run(&["run", &s, &m]).await;
        r.ok();
        assert_eq!(unlisted_warnings(&r, &gone).len(), 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("regions us-east-1"),
            "where it looked: {}",
            r.stderr
        );
        let doc = json(&summary);
        assert_eq!(doc["outcome"], "ok");
        assert_eq!(doc["unlisted_portals"], serde_json::json!([gone]));
        assert_eq!(doc["totals"]["unlisted"], 1);
        assert_eq!(doc["totals"]["portals"], 1, "{doc}");
        let text = std::fs::read_to_string(&metrics).unwrap();
        let unlisted = |p: &str| {
            metric(
                &text,
                &format!("archiver_portal_unlisted{{portal_id=\"{p}\"}}"),
            )
        };
        assert_eq!(unlisted(&gone), Some(1.0), "{text}");
        assert_eq!(unlisted(&kept), Some(0.0), "{text}");
        assert_eq!(unlisted(typo), None, "{text}");
        assert_eq!(files_of(&env, &gone), files, "its archive is left as it is");
    }

    // status names it, from the state's run history.
    let r = env.run(&["status"]).await;
    r.ok();
    let line = format!("portal {gone}: not listed by the service in run #");
    assert!(r.stdout.contains(&line), "{}", r.stdout);
    assert!(!r.stdout.contains(&format!("portal {kept}: not listed")));
    let r = env.run(&["status", "--json"]).await;
    r.ok();
    let st: Value = serde_json::from_str(&r.stdout).unwrap();
    let ids: Vec<&str> = st["unlisted_portals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["portal_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [gone.as_str()]);
    let row = st["portals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["portal_id"] == gone.as_str())
        .unwrap();
    assert_eq!(row["last_run"]["outcome"], "unlisted", "{row}");

    // With --portal-id only the named portals are in scope: nothing about the others, and
    // status still shows what the last run that looked found.
    let r = env.run(&["run", "--portal-id", &kept, &s]).await;
    r.ok();
    assert!(unlisted_warnings(&r, &gone).is_empty(), "{}", r.stderr);
    assert_eq!(json(&summary)["unlisted_portals"], serde_json::json!([]));
    assert!(env.run(&["status"]).await.stdout.contains(&line));

    // A state that never knew it: the archive does. (The run fails, as ever, on the listed
    // portal, whose files another state wrote.)
    let other = env.dir.path().join("other.db");
    let r = with_state(&env, &other, &["run", &s]).await;
    r.code(1);
    assert_eq!(unlisted_warnings(&r, &gone).len(), 1, "{}", r.stderr);
    assert_eq!(
        json(&summary)["unlisted_portals"],
        serde_json::json!([gone])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_portal_is_named_only_by_the_shard_that_owns_it() {
    let env = Env::new(sim_config(4, 100, 0)).await;
    let state = |i: usize| env.dir.path().join(format!("state-{i}.db"));
    for i in 0..2 {
        with_state(&env, &state(i), &["run", "--shard", &format!("{i}/2")])
            .await
            .ok();
    }
    // The shard of a portal: the one whose state archived it.
    let gone = env.portal(0);
    let owner =
        (0..2)
            .find(|&i| {
                let r = std::process::Command::new(util::BIN)
                    .args(["--state", state(i).to_str().unwrap(), "status", "--json"])
                    .output()
                    .unwrap();
                let st: Value = serde_json::from_slice(&r.stdout).unwrap();
                st["portals"].as_array().unwrap().iter().any(|p| {
                    p["portal_id"] == gone.as_str() && p["rows_written"].as_i64() > Some(0)
                })
            })
            .unwrap();
    assert!(env.sim.delete_portal(&gone));
    for i in 0..2 {
        let r = with_state(&env, &state(i), &["run", "--shard", &format!("{i}/2")]).await;
        r.ok();
        let named = unlisted_warnings(&r, &gone).len();
        assert_eq!(named, usize::from(i == owner), "shard {i}: {}", r.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_an_unlisted_portals_files_against_its_manifests() {
    let env = Env::new(sim_config(2, 600, 2)).await;
    env.run(&["run", "--flush-rows", "200"]).await.ok();
    let (kept, gone) = (env.portal(0), env.portal(1));
    let files = files_of(&env, &gone);
    let rows = env
        .archived()
        .iter()
        .filter(|r| r.portal_id == gone)
        .count() as u64;
    assert!(env.sim.delete_portal(&gone));

    let portal = |v: &Value, id: &str| -> Value {
        v["portals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["portal_id"] == id)
            .unwrap_or_else(|| panic!("{id} not verified: {v}"))
            .clone()
    };
    let (code, v) = verify(&env, &[]).await;
    assert_eq!(code, 0, "{v}");
    let p = portal(&v, &gone);
    assert_eq!(p["unlisted"], true, "{p}");
    assert_eq!(p["ok"], true, "{p}");
    assert_eq!(p["files"], files.len() as u64, "{p}");
    assert_eq!(p["archived"], rows, "{p}");
    assert_eq!(
        p["expired"], rows,
        "no listing: every row is the archive's alone"
    );
    assert_eq!(p["listed"], 0);
    assert_eq!(p["manifest"]["checked"], true, "{p}");
    assert_eq!(p["manifest"]["live_files"], files.len() as u64, "{p}");
    assert_eq!(portal(&v, &kept)["unlisted"], false);

    let r = env.run(&["verify"]).await;
    r.ok();
    assert!(
        r.stdout.contains(&format!(
            "{gone}: no longer listed by the service: the archive is its only record ({rows} rows)"
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("1 no longer listed by the service, checked against their manifests"),
        "{}",
        r.stdout
    );

    // One file altered (same rows, written again: other bytes): verify still catches it.
    let altered = &files[files.len() / 2];
    rewrite(altered);
    let rel = altered
        .strip_prefix(env.archive())
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let (code, v) = verify(&env, &[]).await;
    assert_eq!(code, 3, "{v}");
    let p = portal(&v, &gone);
    assert_eq!(p["ok"], false);
    assert_eq!(p["manifest"]["altered"], serde_json::json!([rel]), "{p}");
    assert_eq!(portal(&v, &kept)["ok"], true);
    // Also when named, also by --repair (which has no listing to repair it from), also with
    // a state that never knew it (the archive does).
    let (code, v) = verify(&env, &["--portal-id", &gone]).await;
    assert_eq!(code, 3);
    assert_eq!(v["portals"].as_array().unwrap().len(), 1);
    assert_eq!(portal(&v, &gone)["unlisted"], true);
    let (code, v) = verify(&env, &["--repair"]).await;
    assert_eq!(code, 3, "{v}");
    assert_eq!(
        portal(&v, &gone)["manifest"]["altered"],
        serde_json::json!([rel])
    );
    let other = env.dir.path().join("other.db");
    let r = with_state(&env, &other, &["verify", "--new-state", "--json"]).await;
    r.code(3);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(portal(&v, &gone)["unlisted"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_that_finds_no_portal_anywhere_fails() {
    let env = Env::new(sim_config(1, 50, 0)).await;
    assert!(env.sim.delete_portal(&env.portal(0)));
    let r = env.run(&["verify", "--new-state"]).await;
    r.code(1);
    assert!(
        r.last_line()
            .starts_with("archiver: error: no portal to verify")
            && r.last_line().contains("regions us-east-1"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "", "no report");
}
