//! The integrity walk, end to end: an archive written by the real binary against the
//! simulator, with digests signed by keys `openssl genpkey` made, then damaged one way at a
//! time (a file, a manifest, all manifests, a digest deleted or one byte altered, a digest
//! signed by another key). Each must make `verify --offline` exit 3 naming the object damaged
//! and what vouched for it; the intact archive exits 0. The signatures the walk accepts are
//! checked again with `openssl dgst -verify`, not only with archiver's code. Also: online
//! `verify` after the service forgot every session, and one archive on S3 (moto).

mod util;

use std::path::{Path, PathBuf};

use serde_json::Value;
use util::s3::{self as s3u, Moto};
use util::{aws_env, sim_config, Env, Run, BIN};

const DAY_MS: i64 = 86_400_000;

use util::openssl;

/// A P-256 private key and its public key, made by openssl: `(key.pem, pub.pem)`.
fn keypair(dir: &Path, name: &str) -> (String, String) {
    let key = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let (k, p) = (s(&key), s(&public));
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &k,
    ]);
    openssl(&["pkey", "-in", &k, "-pubout", "-out", &p]);
    (k, p)
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// `path` relative to `root`, with `/`.
fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// `archiver --output OUTPUT verify --offline --json EXTRA`, with no state and no service
/// (the endpoints point nowhere: any call would fail): the exit code and the integrity report.
async fn offline(output: &Path, extra: &[&str]) -> (i32, Value, Run) {
    let mut c = tokio::process::Command::new(BIN);
    c.arg("--output")
        .arg(output)
        .args(["verify", "--offline", "--json"])
        .args(extra);
    for (k, v) in aws_env("http://127.0.0.1:9") {
        c.env(k, v);
    }
    c.env_remove("ARCHIVER_FAILPOINT");
    let r = Run::from(c.output().await.unwrap());
    report(r)
}

fn report(r: Run) -> (i32, Value, Run) {
    assert!(r.code == 0 || r.code == 3, "exit {}: {}", r.code, r.stderr);
    let v: Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout));
    assert_eq!(v["ok"].as_bool().unwrap(), r.code == 0, "{}", r.stdout);
    (r.code, v["integrity"].clone(), r)
}

/// The findings of a report: `(kind, object, vouched_by)`.
fn findings(i: &Value) -> Vec<(String, String, String)> {
    i["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["object"].as_str().unwrap().to_string(),
                f["vouched_by"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `kind` was found for `object`, vouched for by `by` ("" for none).
#[track_caller]
fn has(i: &Value, kind: &str, object: &str, by: &str) {
    let f = findings(i);
    assert!(
        f.contains(&(kind.into(), object.into(), by.into())),
        "no {kind} {object} (by {by:?}) in {f:#?}"
    );
}

/// Every file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = util::files_below(dir);
    out.sort();
    out
}

/// A fresh copy of the archive to damage.
fn copy_of(src: &Path, dst: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dst);
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success());
    dst.to_path_buf()
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

/// The manifest (relative key) that records file `rel_file` in `archive`.
fn manifest_of(archive: &Path, rel_file: &str) -> String {
    for m in files_under(&archive.join("_manifest")) {
        let v: Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
        if v["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == rel_file)
        {
            return rel(archive, &m);
        }
    }
    panic!("no manifest records {rel_file}");
}

/// Digest `seq` of the archive's one state: its relative key.
fn digest(archive: &Path, seq: usize) -> String {
    let all = files_under(&archive.join("_digest"));
    let d = &all[seq - 1];
    let key = rel(archive, d);
    assert!(key.ends_with(&format!("{seq:010}.json")), "{key}");
    key
}

/// Check a digest's signature with openssl and the public key (independently of archiver):
/// the body is the first line, without its newline; the signature is base64 DER (ECDSA).
fn openssl_verifies(dir: &Path, digest_file: &Path, public: &str) -> bool {
    let bytes = std::fs::read(digest_file).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (body, sig_line) = text.split_once('\n').unwrap();
    let sig: Value = serde_json::from_str(sig_line.trim_end()).unwrap();
    let body_file = dir.join("body.bin");
    let sig_file = dir.join("sig.b64");
    let der_file = dir.join("sig.der");
    std::fs::write(&body_file, body).unwrap();
    std::fs::write(
        &sig_file,
        format!("{}\n", sig["signature"].as_str().unwrap()),
    )
    .unwrap();
    openssl(&[
        "base64",
        "-d",
        "-A",
        "-in",
        &s(&sig_file),
        "-out",
        &s(&der_file),
    ]);
    std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify", public, "-signature"])
        .arg(&der_file)
        .arg(&body_file)
        .output()
        .unwrap()
        .status
        .success()
}

/// Every way of damaging an archive is found by `verify --offline`, named with what vouched
/// for the object; the intact archive, signed, verifies with openssl and with the walk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_damage_is_found_offline_by_name() {
    let env = Env::new(sim_config(2, 600, 2)).await;
    let (key, public) = keypair(env.dir.path(), "k1");
    let (other, _) = keypair(env.dir.path(), "k2");
    env.run(&["run", "--flush-rows", "150", "--sign-key", &key])
        .await
        .ok();
    env.sim.add_sessions(&env.portal(0), 60, 0);
    env.run(&["run", "--sign-key", &key]).await.ok();
    env.run(&["run", "--sign-key", &key]).await.ok();
    let a = env.archive();
    assert_eq!(files_under(&a.join("_digest")).len(), 3);

    // Intact: every signature checks, with the walk and with openssl.
    let (code, i, _) = offline(&a, &["--public-key", &public]).await;
    assert_eq!(code, 0, "{i:#}");
    assert_eq!(i["signatures"], "checked");
    assert_eq!(i["digests"], 3);
    let manifests = files_under(&a.join("_manifest"));
    let files = util::parquet_files(&a.join("sessions"));
    assert_eq!(i["manifests"], manifests.len() as u64);
    assert_eq!(i["files"], files.len() as u64);
    for d in files_under(&a.join("_digest")) {
        assert!(openssl_verifies(env.dir.path(), &d, &public), "{d:?}");
    }
    // Without the key: signatures not checked, said so, not a finding.
    let (code, i, _) = offline(&a, &[]).await;
    assert_eq!(code, 0);
    assert_eq!(i["signatures"], "not checked (give --public-key)");
    let r = env.run(&["verify", "--offline"]).await;
    r.ok();
    assert!(
        r.stdout.contains("integrity: intact: 3 digests"),
        "{}",
        r.stdout
    );

    let scratch = env.dir.path().join("damaged");
    let file = files[1].clone();
    let file_key = rel(&a, &file);
    let its_manifest = manifest_of(&a, &file_key);

    // A file deleted.
    let c = copy_of(&a, &scratch);
    std::fs::remove_file(c.join(&file_key)).unwrap();
    let (code, i, r) = offline(&c, &[]).await;
    assert_eq!(code, 3);
    has(&i, "missing_file", &file_key, &its_manifest);
    assert_eq!(findings(&i).len(), 1, "{i:#}");
    assert!(
        r.stderr.contains(&format!(
            "missing file {file_key} (recorded by {its_manifest})"
        )),
        "{}",
        r.stderr
    );

    // One byte of a file altered.
    let c = copy_of(&a, &scratch);
    let len = std::fs::metadata(c.join(&file_key)).unwrap().len() as usize;
    flip_byte(&c.join(&file_key), len / 2);
    let (code, i, _) = offline(&c, &[]).await;
    assert_eq!(code, 3);
    has(&i, "altered_file", &file_key, &its_manifest);

    // A file copied in under a new name.
    let c = copy_of(&a, &scratch);
    let stray = file_key.replace(".parquet", "-copy.parquet");
    std::fs::copy(c.join(&file_key), c.join(&stray)).unwrap();
    let (code, i, _) = offline(&c, &[]).await;
    assert_eq!(code, 3);
    has(&i, "unreferenced_file", &stray, "");

    // The first digest lists the first run's manifests.
    let first = digest(&a, 1);
    let body: Value = serde_json::from_str(
        std::fs::read_to_string(a.join(&first))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let listed_by_first: Vec<String> = body["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap().to_string())
        .collect();
    assert!(listed_by_first.contains(&its_manifest), "{body}");

    // A manifest deleted: missing, and its files no longer vouched for.
    let c = copy_of(&a, &scratch);
    std::fs::remove_file(c.join(&its_manifest)).unwrap();
    let (code, i, _) = offline(&c, &[]).await;
    assert_eq!(code, 3);
    has(&i, "missing_manifest", &its_manifest, &first);
    has(&i, "unreferenced_file", &file_key, "");

    // One byte of a manifest altered.
    let c = copy_of(&a, &scratch);
    flip_byte(&c.join(&its_manifest), 3);
    let (code, i, _) = offline(&c, &[]).await;
    assert_eq!(code, 3);
    has(&i, "altered_manifest", &its_manifest, &first);

    // Every manifest deleted: each one named.
    let c = copy_of(&a, &scratch);
    std::fs::remove_dir_all(c.join("_manifest")).unwrap();
    let (code, i, _) = offline(&c, &[]).await;
    assert_eq!(code, 3);
    let missing: Vec<String> = findings(&i)
        .into_iter()
        .filter(|f| f.0 == "missing_manifest")
        .map(|f| f.1)
        .collect();
    let mut want: Vec<String> = manifests.iter().map(|m| rel(&a, m)).collect();
    want.sort();
    assert_eq!(missing, want);

    // The middle digest deleted, then altered by one byte.
    let (second, third) = (digest(&a, 2), digest(&a, 3));
    let c = copy_of(&a, &scratch);
    std::fs::remove_file(c.join(&second)).unwrap();
    let (code, i, _) = offline(&c, &["--public-key", &public]).await;
    assert_eq!(code, 3);
    has(&i, "missing_digest", &second, &third);
    let c = copy_of(&a, &scratch);
    let len = std::fs::metadata(c.join(&second)).unwrap().len() as usize;
    flip_byte(&c.join(&second), len / 3);
    let (code, i, _) = offline(&c, &[]).await;
    assert_eq!(code, 3);
    has(&i, "altered_digest", &second, &third);

    // The newest digest altered (one byte of its body): its signature no longer checks, with
    // the walk and with openssl.
    let c = copy_of(&a, &scratch);
    let text = std::fs::read_to_string(c.join(&third)).unwrap();
    std::fs::write(c.join(&third), text.replacen("\"run\"", "\"rum\"", 1)).unwrap();
    assert!(!openssl_verifies(env.dir.path(), &c.join(&third), &public));
    let (code, i, _) = offline(&c, &["--public-key", &public]).await;
    assert_eq!(code, 3);
    has(&i, "bad_signature", &third, "");

    // The newest digest deleted: the chain below it is intact, so only its age tells; with
    // --max-age the newest left is stale (online, the state also knows: see below).
    let c = copy_of(&a, &scratch);
    std::fs::remove_file(c.join(&third)).unwrap();
    let (code, _, _) = offline(&c, &["--public-key", &public, "--max-age", "1h"]).await;
    assert_eq!(code, 0);
    let (code, i, _) = offline(&c, &["--public-key", &public, "--max-age", "1ms"]).await;
    assert_eq!(code, 3);
    has(&i, "stale_digest", &second, "");
    // Online, the state knows digest 3 was written.
    std::fs::rename(a.join(&third), env.dir.path().join("d3")).unwrap();
    let r = env.run(&["verify", "--json"]).await;
    let (code, i, _) = report(r);
    assert_eq!(code, 3);
    has(&i, "newest_digest_missing", &third, "");
    std::fs::rename(env.dir.path().join("d3"), a.join(&third)).unwrap();

    // A digest signed by another key.
    env.run(&["run", "--sign-key", &other]).await.ok();
    let fourth = digest(&a, 4);
    assert!(!openssl_verifies(env.dir.path(), &a.join(&fourth), &public));
    let (code, i, r) = offline(&a, &["--public-key", &public]).await;
    assert_eq!(code, 3);
    has(&i, "bad_signature", &fourth, "");
    assert!(r.stdout.contains("signed by another key"), "{}", r.stdout);
    assert_eq!(findings(&i).len(), 1, "{i:#}");

    // Every digest deleted.
    std::fs::remove_dir_all(a.join("_digest")).unwrap();
    let (code, i, _) = offline(&a, &[]).await;
    assert_eq!(code, 3);
    has(&i, "no_digest", "", "");
}

/// Once the service has forgotten every session, online `verify` still finds a file deleted
/// together with the manifest that listed it (before digests it exited 0: "expired").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_service_forgot_the_sessions_a_deleted_file_and_manifest_are_found() {
    let env = Env::new(sim_config(1, 600, 0)).await;
    env.run(&["run", "--flush-rows", "150"]).await.ok();
    env.sim.advance_clock(60 * DAY_MS);
    let a = env.archive();
    let r = env.run(&["verify", "--json"]).await;
    let (code, i, _) = report(r);
    assert_eq!(code, 0, "{i:#}");
    let files = util::parquet_files(&a.join("sessions"));
    let file_key = rel(&a, &files[0]);
    let m = manifest_of(&a, &file_key);
    let v: Value = serde_json::from_slice(&std::fs::read(a.join(&m)).unwrap()).unwrap();
    for f in v["files"].as_array().unwrap() {
        std::fs::remove_file(a.join(f["path"].as_str().unwrap())).unwrap();
    }
    std::fs::remove_file(a.join(&m)).unwrap();
    let r = env.run(&["verify", "--json"]).await;
    let (code, i, r) = report(r);
    assert_eq!(code, 3, "{}", r.stdout);
    has(&i, "missing_manifest", &m, &digest(&a, 1));
    let r = env.run(&["verify"]).await;
    r.code(3);
    assert!(
        r.stdout.contains(&format!("missing manifest {m}")),
        "{}",
        r.stdout
    );
}

/// On S3: an intact archive verifies offline; a manifest deleted is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_a_deleted_manifest_is_found_offline() {
    let env = Env::new(sim_config(1, 500, 0)).await;
    let moto = Moto::start().await;
    let c = s3u::client(&moto.endpoint);
    s3u::create_bucket(&c, "archive-bucket").await;
    s3u::create_bucket(&c, "proof-bucket").await;
    let cmd = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("--state")
            .arg(env.state())
            .arg("--output")
            .arg("s3://archive-bucket/arch")
            .arg("--digests")
            .arg("s3://proof-bucket/proof")
            .args(args);
        for (k, v) in aws_env(&env.sim.endpoint_url()) {
            cmd.env(k, v);
        }
        cmd.env("AWS_ENDPOINT_URL_S3", &moto.endpoint);
        cmd.env_remove("ARCHIVER_FAILPOINT");
        cmd.kill_on_drop(true);
        async move { Run::from(cmd.output().await.unwrap()) }
    };
    cmd(&["run", "--flush-rows", "150"]).await.ok();
    let (code, i, _) = report(cmd(&["verify", "--offline", "--json"]).await);
    assert_eq!(code, 0, "{i:#}");
    assert_eq!(i["digests"], 1);
    let manifest = s3u::keys(&c, "archive-bucket")
        .await
        .into_iter()
        .find(|k| k.starts_with("arch/_manifest/"))
        .unwrap();
    c.delete_object()
        .bucket("archive-bucket")
        .key(&manifest)
        .send()
        .await
        .unwrap();
    let (code, i, _) = report(cmd(&["verify", "--offline", "--json"]).await);
    assert_eq!(code, 3);
    let key = manifest.strip_prefix("arch/").unwrap();
    let f = findings(&i);
    assert!(
        f.iter()
            .any(|(k, o, by)| k == "missing_manifest" && o == key && by.starts_with("_digest/")),
        "{f:#?}"
    );
}

/// A compacted archive verifies intact offline: the compaction's manifest replaces its
/// inputs, which are gone, and its digest lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_archive_is_intact_and_its_inputs_are_not_missing() {
    let env = Env::new(sim_config(1, 600, 0)).await;
    env.run(&["run", "--flush-rows", "100"]).await.ok();
    let before = util::parquet_files(&env.archive().join("sessions")).len();
    env.run(&["compact", "--older-than", "1d"]).await.ok();
    let after = util::parquet_files(&env.archive().join("sessions")).len();
    assert!(after < before, "{before} files, then {after}");
    let (code, i, _) = offline(&env.archive(), &[]).await;
    assert_eq!(code, 0, "{i:#}");
    assert_eq!(i["digests"], 2);
    assert_eq!(i["files"], after as u64);
    // An input file put back after compaction replaced it: nothing vouches for it.
    let a = env.archive();
    let compacted = files_under(&a.join("_manifest"))
        .into_iter()
        .map(|m| serde_json::from_slice::<Value>(&std::fs::read(m).unwrap()).unwrap())
        .find(|m| m["kind"] == "compaction")
        .unwrap();
    let input = compacted["replaces"][0].as_str().unwrap().to_string();
    let live = compacted["files"][0]["path"].as_str().unwrap().to_string();
    std::fs::copy(a.join(&live), a.join(&input)).unwrap();
    let (code, i, _) = offline(&a, &[]).await;
    assert_eq!(code, 3);
    has(&i, "unreferenced_file", &input, "");
}

/// KMS keys (moto's KMS, real signatures): `verify` checks the digests with the public key of
/// `--sign-key` (GetPublicKey), or offline with that key's PEM made by openssl from the DER
/// the test fetched itself; a digest signed by another KMS key is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_signed_digests_verify_with_the_kms_key_or_its_pem_offline() {
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    let moto = Moto::start().await;
    let kms = util::kms::client(&moto.endpoint, "us-east-1");
    let mut arns = Vec::new();
    for spec in [KeySpec::Rsa2048, KeySpec::EccNistP256] {
        arns.push(util::kms::create_key(&kms, KeyUsageType::SignVerify, spec).await);
    }
    let (rsa, ec) = (&arns[0], &arns[1]);
    let env = Env::new(sim_config(1, 300, 0)).await;
    let with_kms = |args: &[&str]| {
        let mut c = env.cmd(args);
        c.env("AWS_ENDPOINT_URL_KMS", &moto.endpoint);
        async move { Run::from(c.output().await.unwrap()) }
    };
    with_kms(&["--sign-key", rsa, "run", "--flush-rows", "100"])
        .await
        .ok();
    env.sim.add_sessions(&env.portal(0), 20, 0);
    with_kms(&["--sign-key", rsa, "run"]).await.ok();
    let a = env.archive();
    let body = std::fs::read_to_string(a.join(digest(&a, 2))).unwrap();
    assert!(body.contains("RSASSA_PSS_SHA_256"), "{body}");

    // Online and offline with the KMS key.
    let (code, i, _) = report(with_kms(&["--sign-key", rsa, "verify", "--json"]).await);
    assert_eq!(
        (code, i["signatures"].as_str()),
        (0, Some("checked")),
        "{i:#}"
    );
    let (code, i, _) =
        report(with_kms(&["--sign-key", rsa, "verify", "--offline", "--json"]).await);
    assert_eq!(
        (code, i["signatures"].as_str()),
        (0, Some("checked")),
        "{i:#}"
    );
    // Offline with its PEM: no AWS endpoint at all.
    let der = kms.get_public_key().key_id(rsa).send().await.unwrap();
    let der_file = env.dir.path().join("rsa.der");
    std::fs::write(&der_file, der.public_key().unwrap().as_ref()).unwrap();
    let pem = s(&env.dir.path().join("rsa.pem"));
    openssl(&[
        "pkey",
        "-pubin",
        "-inform",
        "DER",
        "-in",
        &s(&der_file),
        "-out",
        &pem,
    ]);
    let (code, i, _) = offline(&a, &["--public-key", &pem]).await;
    assert_eq!(
        (code, i["signatures"].as_str()),
        (0, Some("checked")),
        "{i:#}"
    );

    // A digest signed by another KMS key.
    with_kms(&["--sign-key", ec, "run"]).await.ok();
    let third = digest(&a, 3);
    let (code, i, _) = offline(&a, &["--public-key", &pem]).await;
    assert_eq!(code, 3);
    has(&i, "bad_signature", &third, "");
    assert_eq!(findings(&i).len(), 1, "{i:#}");
    let (code, i, _) = report(with_kms(&["--sign-key", rsa, "verify", "--json"]).await);
    assert_eq!(code, 3);
    has(&i, "bad_signature", &third, "");
}

/// Digests in another folder (`--digests`): verify reads them there; the output alone has
/// none, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_kept_elsewhere_are_read_there() {
    let env = Env::new(sim_config(1, 300, 0)).await;
    let proof = env.dir.path().join("proof");
    let d = s(&proof);
    env.run(&["--digests", &d, "run", "--flush-rows", "100"])
        .await
        .ok();
    let (code, i, _) = offline(&env.archive(), &["--digests", &d]).await;
    assert_eq!(code, 0, "{i:#}");
    assert_eq!(i["digests"], 1);
    let (code, i, _) = report(env.run(&["--digests", &d, "verify", "--json"]).await);
    assert_eq!(code, 0, "{i:#}");
    let (code, i, _) = offline(&env.archive(), &[]).await;
    assert_eq!(code, 3);
    has(&i, "no_digest", "", "");
    // Offline, no state is needed, opened or created.
    let nowhere = env.dir.path().join("no-state.db");
    let mut c = tokio::process::Command::new(BIN);
    c.arg("--state")
        .arg(&nowhere)
        .arg("--output")
        .arg(env.archive());
    c.args(["--digests", &d, "verify", "--offline"]);
    for (k, v) in aws_env("http://127.0.0.1:9") {
        c.env(k, v);
    }
    Run::from(c.output().await.unwrap()).ok();
    assert!(!nowhere.exists() && !env.dir.path().join("no-state.db.lock").exists());
    // A digest moved to another seq: the seqs skipped are missing, and it is not where it
    // claims to be.
    let first = proof
        .join("_digest")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let d1 = first.join("0000000001.json");
    std::fs::rename(&d1, first.join("0000000004.json")).unwrap();
    let (code, i, _) = offline(&env.archive(), &["--digests", &d]).await;
    assert_eq!(code, 3);
    let mut kinds: Vec<String> = findings(&i).into_iter().map(|f| f.0).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["altered_digest", "broken_link", "missing_digest"],
        "{i:#}"
    );
    let moved = rel(&proof, &first.join("0000000004.json"));
    has(&i, "altered_digest", &moved, "");
}

/// Rewriting an unsigned chain to hide an altered compacted file (its manifest's SHA-256 and
/// size fixed, the newest digest's record of that manifest fixed) is still found offline: the
/// compaction's rows digest is recomputed from the file's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_file_altered_with_its_manifest_and_digest_rewritten_is_found_offline() {
    let env = Env::new(sim_config(1, 600, 0)).await;
    env.run(&["run", "--flush-rows", "100"]).await.ok();
    env.run(&["compact", "--older-than", "1d"]).await.ok();
    let a = env.archive();
    let (manifest_path, manifest) = files_under(&a.join("_manifest"))
        .into_iter()
        .map(|m| {
            let v = serde_json::from_slice::<Value>(&std::fs::read(&m).unwrap()).unwrap();
            (m, v)
        })
        .find(|(_, m)| m["kind"] == "compaction")
        .unwrap();
    let output = a.join(manifest["files"][0]["path"].as_str().unwrap());
    let old_file = std::fs::read(&output).unwrap();
    // One username changed, by pyarrow.
    util::pyarrow(util::CHANGE_A_USERNAME, &[&output]);
    let new_file = std::fs::read(&output).unwrap();
    let sha = |b: &[u8]| archiver::sink::manifest::sha256_hex(b);
    // The manifest made to vouch for the new bytes.
    let old_manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let new_manifest = old_manifest
        .replace(&sha(&old_file), &sha(&new_file))
        .replace(
            &format!("\"bytes\":{}", old_file.len()),
            &format!("\"bytes\":{}", new_file.len()),
        );
    assert_ne!(new_manifest, old_manifest);
    std::fs::write(&manifest_path, &new_manifest).unwrap();
    // The newest digest (the compaction's, unsigned) made to vouch for the new manifest.
    let newest = digest(&a, 2);
    let digest_path = a.join(&newest);
    let old_digest = std::fs::read_to_string(&digest_path).unwrap();
    let new_digest =
        old_digest.replace(&sha(old_manifest.as_bytes()), &sha(new_manifest.as_bytes()));
    assert_ne!(new_digest, old_digest);
    std::fs::write(&digest_path, new_digest).unwrap();

    let (code, i, _) = offline(&a, &[]).await;
    assert_eq!(code, 3, "{i:#}");
    let key = rel(&a, &manifest_path);
    has(&i, "unproved_compaction", &key, "");
    assert_eq!(findings(&i).len(), 1, "{i:#}");
}
