//! Digests: every `run`, `backfill`, `compact` (and `verify --repair`) ends with one digest of
//! its state, chained to the one before; killed at any step, the next command leaves a chain
//! without gaps that lists every manifest exactly once. The chain is checked here with our own
//! reading of the files and SHA-256 computed with the `sha2` crate, never archiver's code.

mod util;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};
use util::s3::{self as s3u, Moto};
use util::{aws_env, sim_config, Env, BIN};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `path` relative to `root`, with `/`.
fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Check the one chain under `digest_root` against the manifests under `output`: seqs 1..n
/// without gaps, each digest's `previous` the SHA-256 of the file before it, every manifest
/// listed exactly once with its SHA-256. Returns the digests' bodies and files, in order.
#[track_caller]
fn check_chain(digest_root: &Path, output: &Path) -> Vec<(Value, Vec<u8>)> {
    let states: Vec<_> = std::fs::read_dir(digest_root.join("_digest"))
        .expect("a _digest folder")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(states.len(), 1, "one state's chain: {states:?}");
    let state_id = states[0].strip_prefix("state_id=").expect("state_id=…");
    let files = util::files_below(&digest_root.join("_digest").join(&states[0]));
    let mut out: Vec<(Value, Vec<u8>)> = Vec::new();
    let mut listed = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(
            f.file_name().unwrap().to_string_lossy(),
            format!("{seq:010}.json"),
            "digests are numbered 1..n without gaps: {files:?}"
        );
        let bytes = std::fs::read(f).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        let lines: Vec<&str> = text.strip_suffix('\n').unwrap().split('\n').collect();
        assert_eq!(lines.len(), 2, "{text}");
        let body: Value = serde_json::from_str(lines[0]).unwrap();
        let sig: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(sig, serde_json::json!({ "signature": null }), "unsigned");
        assert_eq!(body["version"], 1);
        assert_eq!(body["seq"], seq);
        assert_eq!(body["state_id"], state_id);
        assert!(body["signing"].is_null());
        assert_eq!(body["range"]["to"], body["created_at"]);
        match out.last() {
            None => {
                assert!(body["previous"].is_null(), "{body}");
                assert_eq!(body["chain_start"], true);
            }
            Some((prev, prev_bytes)) => {
                assert_eq!(body["chain_start"], false);
                let p = &body["previous"];
                assert_eq!(
                    p["key"],
                    format!("_digest/state_id={state_id}/{:010}.json", seq - 1)
                );
                assert_eq!(p["sha256"], sha256_hex(prev_bytes), "digest {seq}'s link");
                assert!(p["signature"].is_null());
                assert_eq!(body["range"]["from"], prev["created_at"]);
            }
        }
        for m in body["manifests"].as_array().unwrap() {
            let key = m["key"].as_str().unwrap();
            let file = std::fs::read(output.join(key))
                .unwrap_or_else(|e| panic!("manifest {key} listed by digest {seq}: {e}"));
            assert_eq!(m["sha256"], sha256_hex(&file), "manifest {key}");
            listed.push(key.to_string());
        }
        out.push((body, bytes));
    }
    assert!(!out.is_empty(), "no digest");
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "a manifest listed twice");
    let manifest_dir = output.join("_manifest");
    let on_disk: BTreeSet<String> = util::files_below(&manifest_dir)
        .iter()
        .map(|p| format!("_manifest/{}", rel(&manifest_dir, p)))
        .collect();
    let unique: BTreeSet<String> = listed.into_iter().collect();
    assert_eq!(unique, on_disk, "every manifest listed by a digest");
    out
}

fn manifests_of(body: &Value) -> usize {
    body["manifests"].as_array().unwrap().len()
}

/// `(portal, pass, outcome, rows)` of a digest's portals.
fn passes(body: &Value) -> Vec<(String, String, String, u64)> {
    body["portals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["portal_id"].as_str().unwrap().to_string(),
                p["pass"].as_str().unwrap().to_string(),
                p["outcome"].as_str().unwrap().to_string(),
                p["rows"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_command_writes_one_digest_chained_to_the_one_before() {
    let env = Env::new(sim_config(2, 1500, 4)).await;
    let r = env.run(&["run", "--flush-rows", "120"]).await;
    r.ok();
    let chain = check_chain(&env.archive(), &env.archive());
    assert_eq!(chain.len(), 1);
    let first = &chain[0].0;
    assert_eq!(first["command"], "run");
    assert!(manifests_of(first) >= 10, "{first}");
    assert!(
        r.stderr.contains(&format!(
            "digest {} written: {} manifests",
            format_args!(
                "_digest/state_id={}/0000000001.json",
                first["state_id"].as_str().unwrap()
            ),
            manifests_of(first)
        )),
        "{}",
        r.stderr
    );
    let p = passes(first);
    assert_eq!(p.len(), 2);
    assert!(p
        .iter()
        .all(|(_, pass, outcome, _)| pass == "backfill" && outcome == "ok"));
    let rows: u64 = p.iter().map(|x| x.3).sum();
    assert_eq!(rows as usize, env.archived().len());
    assert!(first["portals"][0]["watermark_ms"].is_i64());

    // A run that wrote nothing still writes a digest: a deleted newest one is a silence.
    env.run(&["run"]).await.ok();
    let chain = check_chain(&env.archive(), &env.archive());
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1].0["command"], "run");
    assert_eq!(manifests_of(&chain[1].0), 0);
    assert!(passes(&chain[1].0)
        .iter()
        .all(|(_, pass, outcome, rows)| pass == "incremental" && outcome == "ok" && *rows == 0));

    for p in env.sim.portal_ids() {
        env.sim.add_sessions(&p, 200, 2);
    }
    env.sim.end_active(None, 4);
    env.run(&["run", "--flush-rows", "120"]).await.ok();
    let chain = check_chain(&env.archive(), &env.archive());
    assert_eq!(chain.len(), 3);
    assert!(manifests_of(&chain[2].0) >= 2);

    env.run(&["compact", "--older-than", "0s"]).await.ok();
    let chain = check_chain(&env.archive(), &env.archive());
    assert_eq!(chain.len(), 4);
    let compact = &chain[3].0;
    assert_eq!(compact["command"], "compact");
    assert!(manifests_of(compact) >= 5, "{compact}");
    assert!(passes(compact)
        .iter()
        .all(|(_, pass, outcome, _)| pass == "compaction" && outcome == "ok"));
    env.assert_exact();

    let status = env.run(&["status", "--json"]).await;
    status.ok();
    let s: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(s["digest"]["seq"], 4);
    assert_eq!(s["digest"]["written"], true);
    assert_eq!(s["digest"]["signed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_each_step_the_next_command_leaves_a_chain_without_gaps() {
    // (failpoint, whether the killed command's digest was stored before the kill)
    for (point, stored) in [
        ("after_commit:2", false),
        ("manifest_before_record:2", false),
        ("digest_stored_locally:1", true),
        ("digest_stored:1", true),
        ("digest_written:1", true),
    ] {
        let env = Env::new(sim_config(1, 800, 4)).await;
        let p = env.portal(0);
        let crashed = env
            .run_crashing(
                &["backfill", "--portal-id", &p, "--flush-rows", "120"],
                point,
            )
            .await;
        assert_eq!(crashed.code, 134, "{point}: {}", crashed.stderr);
        let first = env.archive().join("_digest");
        let before = util::files_below(&first);
        if point == "digest_written:1" {
            assert_eq!(before.len(), 1, "{point}");
        } else {
            assert!(before.is_empty(), "{point}: {before:?}");
        }
        if stored {
            let s = env.run(&["status", "--json"]).await;
            let s: Value = serde_json::from_str(&s.ok().stdout).unwrap();
            assert_eq!(s["digest"]["seq"], 1, "{point}");
            // Stored; not yet recorded as written, even when the kill came after the write.
            assert_eq!(s["digest"]["written"], false, "{point}");
        }
        let kept = before.first().map(|f| std::fs::read(f).unwrap());
        env.run(&["run", "--flush-rows", "120"]).await.ok();
        env.run(&["run"]).await.ok();
        let chain = check_chain(&env.archive(), &env.archive());
        env.assert_exact();
        // A stored digest is written as it was stored, by the next command, before its own.
        let commands: Vec<&str> = chain
            .iter()
            .map(|(b, _)| b["command"].as_str().unwrap())
            .collect();
        if stored {
            assert_eq!(commands, ["backfill", "run", "run"], "{point}");
        } else {
            assert_eq!(commands, ["run", "run"], "{point}");
            assert!(
                manifests_of(&chain[0].0) >= 3,
                "{point}: the killed backfill's manifests"
            );
        }
        if let Some(kept) = kept {
            assert_eq!(chain[0].1, kept, "{point}: digest 1 rewritten");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_killed_before_its_digest_is_listed_by_the_next_command() {
    for point in ["compact_after_manifest:2", "digest_stored:1"] {
        let env = Env::new(sim_config(1, 1200, 4)).await;
        let p = env.portal(0);
        env.run(&["backfill", "--portal-id", &p, "--flush-rows", "100"])
            .await
            .ok();
        let crashed = env
            .run_crashing(&["compact", "--older-than", "0s"], point)
            .await;
        assert_eq!(crashed.code, 134, "{point}: {}", crashed.stderr);
        env.run(&["compact", "--older-than", "0s"]).await.ok();
        let chain = check_chain(&env.archive(), &env.archive());
        let commands: Vec<&str> = chain
            .iter()
            .map(|(b, _)| b["command"].as_str().unwrap())
            .collect();
        match point {
            "digest_stored:1" => assert_eq!(commands, ["backfill", "compact", "compact"]),
            _ => assert_eq!(commands, ["backfill", "compact"]),
        }
        env.assert_exact();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_older_than_digests_starts_its_chain_with_every_manifest() {
    let env = Env::new(sim_config(2, 900, 4)).await;
    env.run(&["run", "--flush-rows", "120"]).await.ok();
    // What a state from before digests looks like after its migration: no manifest recorded,
    // no digest, and marked as having archived.
    std::fs::remove_dir_all(env.archive().join("_digest")).unwrap();
    let db = rusqlite::Connection::open(env.state()).unwrap();
    db.execute_batch(
        "DELETE FROM manifests; DELETE FROM digests;
         INSERT INTO meta (key, value) VALUES ('digest_import', '1');",
    )
    .unwrap();
    drop(db);
    env.run(&["run"]).await.ok();
    let chain = check_chain(&env.archive(), &env.archive());
    assert_eq!(chain.len(), 1);
    assert!(manifests_of(&chain[0].0) >= 8);
    env.run(&["run"]).await.ok();
    assert_eq!(check_chain(&env.archive(), &env.archive()).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_elsewhere_keep_the_output_free_of_them() {
    let env = Env::new(sim_config(1, 600, 2)).await;
    let proof = env.dir.path().join("proof");
    let d = proof.to_str().unwrap();
    env.run(&["run", "--digests", d, "--flush-rows", "150"])
        .await
        .ok();
    env.run(&["run", "--digests", d]).await.ok();
    assert!(!env.archive().join("_digest").exists());
    assert_eq!(check_chain(&proof, &env.archive()).len(), 2);
    // Never inside the dataset.
    for inside in ["sessions", "sessions/x", "./sessions/"] {
        let at = format!("{}/{inside}", env.archive().display());
        let r = env.run(&["run", "--digests", &at]).await;
        r.code(2);
        assert!(r.last_line().contains("--digests"), "{}", r.stderr);
    }
}

/// On S3, with the state in S3 too (the container set-up): killed once the digest is stored
/// in the local copy of the state only (never uploaded: the next run builds digest 2 afresh),
/// and once it is stored in the uploaded state (the next run writes it first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_digests_go_to_another_bucket() {
    let env = Env::new(sim_config(1, 700, 3)).await;
    let moto = Moto::start().await;
    let c = s3u::client(&moto.endpoint);
    s3u::create_bucket(&c, "archive-bucket").await;
    s3u::create_bucket(&c, "proof-bucket").await;
    let run = |args: &[&str], failpoint: Option<&str>| {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("--state")
            .arg("s3://archive-bucket/state/archiver.db")
            .arg("--output")
            .arg("s3://archive-bucket/arch")
            .arg("--digests")
            .arg("s3://proof-bucket/proof")
            .args(args);
        for (k, v) in aws_env(&env.sim.endpoint_url()) {
            cmd.env(k, v);
        }
        cmd.env("AWS_ENDPOINT_URL_S3", &moto.endpoint);
        cmd.env("TMPDIR", env.dir.path());
        match failpoint {
            Some(f) => cmd.env("ARCHIVER_FAILPOINT", f),
            None => cmd.env_remove("ARCHIVER_FAILPOINT"),
        };
        cmd.kill_on_drop(true);
        async move { util::Run::from(cmd.output().await.unwrap()) }
    };
    run(&["run", "--flush-rows", "150"], None).await.ok();
    for point in ["digest_stored_locally:1", "digest_stored:1"] {
        env.sim.add_sessions(&env.portal(0), 40, 0);
        let r = run(&["run"], Some(point)).await;
        assert_eq!(r.code, 134, "{point}: {}", r.stderr);
        // The killed run's lease, expired (what waiting out its TTL would do).
        let lease_key = "state/archiver.db.lease";
        let mut lease: Value =
            serde_json::from_slice(&s3u::get(&c, "archive-bucket", lease_key).await).unwrap();
        lease["expires_ms"] = serde_json::json!(1);
        s3u::put(
            &c,
            "archive-bucket",
            lease_key,
            serde_json::to_vec(&lease).unwrap(),
        )
        .await;
        run(&["run"], None).await.ok();
    }
    let keys = s3u::keys(&c, "archive-bucket").await;
    assert!(!keys.iter().any(|k| k.contains("_digest")), "{keys:?}");
    let out = env.dir.path().join("out");
    let proof = env.dir.path().join("proofs");
    s3u::download(&c, "archive-bucket", "arch", &out).await;
    s3u::download(&c, "proof-bucket", "proof", &proof).await;
    let chain = check_chain(&proof, &out);
    let commands: Vec<&str> = chain
        .iter()
        .map(|(b, _)| b["command"].as_str().unwrap())
        .collect();
    // run; (killed before its upload) run; (killed after) run, run.
    assert_eq!(commands, ["run", "run", "run", "run"]);
    assert!(manifests_of(&chain[0].0) >= 4);
    assert!(
        manifests_of(&chain[1].0) >= 1,
        "the first killed run's manifests"
    );
    assert!(
        manifests_of(&chain[2].0) >= 1,
        "the second killed run's manifests"
    );
    let archived = util::read_dataset(&out);
    util::assert_exact(&archived, &env.expected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_key_that_cannot_sign_fails_the_command_before_it_archives() {
    let env = Env::new(sim_config(1, 200, 0)).await;
    let missing = env.dir.path().join("no-such-key.pem");
    let r = env
        .run(&["run", "--sign-key", missing.to_str().unwrap()])
        .await;
    r.code(1);
    assert!(r.last_line().contains("--sign-key"), "{}", r.stderr);
    assert!(
        parquet_free(&env.archive()),
        "archived before the key was checked"
    );
    assert!(!env.archive().join("_digest").exists());
    assert_eq!(env.sim.stats().list_sessions_calls, 0);
}

fn parquet_free(archive: &Path) -> bool {
    util::parquet_files(&archive.join("sessions")).is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_repair_writes_a_digest_of_what_it_wrote_and_verify_none() {
    let env = Env::new(sim_config(1, 600, 0)).await;
    env.run(&["run", "--flush-rows", "150"]).await.ok();
    // A file lost: repair writes its sessions again, in a new flush with a manifest.
    let lost = util::parquet_files(&env.archive().join("sessions"))
        .into_iter()
        .next()
        .unwrap();
    std::fs::remove_file(&lost).unwrap();
    env.run(&["verify"]).await.code(3);
    assert_eq!(check_chain(&env.archive(), &env.archive()).len(), 1);
    // Its exit code is verify's business (the manifest still names the lost file); the
    // digest is written either way.
    env.run(&["verify", "--repair"]).await;
    env.assert_exact();
    let chain = check_chain(&env.archive(), &env.archive());
    assert_eq!(chain.len(), 2);
    let repair = &chain[1].0;
    assert_eq!(repair["command"], "verify --repair");
    assert!(manifests_of(repair) >= 1, "{repair}");
    let p = passes(repair);
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].1.as_str(), p[0].2.as_str()), ("repair", "ok"));
    assert!(p[0].3 > 0, "{repair}");
}
