//! The sink suite: the same checks against local disk and against a real S3-compatible server
//! (moto's, from PyPI, started on 127.0.0.1), with the state local or in S3. Then what is
//! S3's own: faults between the archiver and S3 (503 SlowDown, 500, connections cut in the
//! middle of an upload), multipart uploads, a missing bucket, the lease (held → exit 75,
//! expired → taken over, lost → the run stops), encryption and storage-class headers, shards
//! and regions.
//!
//! Truth is always the simulator's record; the archive is read back with parquet's reader
//! (S3 objects are downloaded first).

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use archiver_simulator::{Faults, SimConfig};
use util::s3::{self as s3u, FaultProxy, Moto, S3Server, Server};
use util::{aws_env, sim_config, Env, Run, BIN};

const BUCKET: &str = "archive-bucket";
const PREFIX: &str = "team/archive";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    /// Local output and local state.
    Local,
    /// S3 output, local state.
    S3Output,
    /// S3 output and S3 state (the container set-up).
    S3Both,
}

/// A simulator, maybe an S3 server (and a proxy in front of it), and how the binary is pointed
/// at them.
struct T {
    env: Env,
    backend: Backend,
    /// Which S3-compatible server (for S3 backends).
    server: Server,
    /// Kept for its lifetime: dropping it stops the server.
    _server: Option<S3Server>,
    proxy: Option<FaultProxy>,
    s3: Option<aws_sdk_s3::Client>,
    /// `--state` for S3 state (may contain `{shard}`).
    state_key: String,
}

impl T {
    async fn new(backend: Backend, sim: SimConfig) -> T {
        T::new_on(Server::Moto, backend, sim)
            .await
            .expect("moto always starts")
    }

    /// On a given S3-compatible server. `None` if it is not installed (outside CI: skipped).
    async fn new_on(server: Server, backend: Backend, sim: SimConfig) -> Option<T> {
        let (running, proxy, s3) = if backend == Backend::Local {
            (None, None, None)
        } else {
            let running = S3Server::start(server).await?;
            let proxy = FaultProxy::start(running.endpoint()).await;
            let c = s3u::client(running.endpoint());
            s3u::create_bucket(&c, BUCKET).await;
            (Some(running), Some(proxy), Some(c))
        };
        let env = Env::new(sim).await;
        Some(T {
            env,
            backend,
            server,
            _server: running,
            proxy,
            s3,
            state_key: "team/state/archiver.db".into(),
        })
    }

    fn state_arg(&self) -> String {
        match self.backend {
            Backend::S3Both => format!("s3://{BUCKET}/{}", self.state_key),
            _ => self.env.state().to_string_lossy().into_owned(),
        }
    }

    fn output_arg(&self) -> String {
        match self.backend {
            Backend::Local => self.env.archive().to_string_lossy().into_owned(),
            _ => format!("s3://{BUCKET}/{PREFIX}"),
        }
    }

    fn cmd(&self, args: &[&str]) -> tokio::process::Command {
        self.cmd_at(&self.state_arg(), &self.output_arg(), args)
    }

    fn cmd_at(&self, state: &str, output: &str, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(BIN);
        c.arg("--state")
            .arg(state)
            .arg("--output")
            .arg(output)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in aws_env(&self.env.sim.endpoint_url()) {
            c.env(k, v);
        }
        if let Some(p) = &self.proxy {
            c.env("AWS_ENDPOINT_URL_S3", &p.endpoint);
        }
        c.env_remove("ARCHIVER_FAILPOINT");
        c.env("TMPDIR", self.env.dir.path());
        c.kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().await.unwrap())
    }

    async fn run_crashing(&self, args: &[&str], failpoint: &str) -> Run {
        let mut c = self.cmd(args);
        c.env("ARCHIVER_FAILPOINT", failpoint);
        Run::from(c.output().await.unwrap())
    }

    fn client(&self) -> &aws_sdk_s3::Client {
        self.s3.as_ref().expect("an S3 backend")
    }

    /// The archive's rows, read back (downloaded first for S3).
    async fn archived(&self) -> Vec<util::Row> {
        match self.backend {
            Backend::Local => self.env.archived(),
            _ => {
                let dir = self.env.dir.path().join("downloaded");
                s3u::download(self.client(), BUCKET, PREFIX, &dir).await;
                util::read_dataset(&dir)
            }
        }
    }

    async fn assert_exact(&self) {
        util::assert_exact(&self.archived().await, &self.env.expected());
    }

    /// Nothing is left staged, no object outside the layout, no upload in progress, and the
    /// manifests describe exactly the published files.
    async fn assert_clean(&self) {
        self.assert_manifests(true).await;
        if self.backend == Backend::Local {
            let staged = self.env.archive().join("_staging");
            let left: Vec<_> = walk(&staged);
            assert!(left.is_empty(), "staged files left: {left:?}");
            return;
        }
        let keys = s3u::keys(self.client(), BUCKET).await;
        for k in &keys {
            let ok = (k.starts_with(&format!("{PREFIX}/sessions/portal_id="))
                && k.ends_with(".parquet"))
                || (k.starts_with(&format!("{PREFIX}/_manifest/portal_id="))
                    && k.ends_with(".json"))
                || (k.starts_with(&format!("{PREFIX}/_claim/portal_id=")) && k.ends_with(".json"))
                || (k.starts_with(&format!("{PREFIX}/_digest/state_id=")) && k.ends_with(".json"))
                || k.starts_with("team/state/");
            assert!(ok, "unexpected object {k}");
        }
        if self.server.lists_uploads() {
            assert!(s3u::uploads(self.client(), BUCKET).await.is_empty());
        }
    }

    /// The published files (`sessions/`) and manifests (`_manifest/`) of the output, by key
    /// relative to the output: their bytes.
    async fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let root = match self.backend {
            Backend::Local => self.env.archive(),
            _ => {
                let dir = self.env.dir.path().join("downloaded");
                s3u::download(self.client(), BUCKET, PREFIX, &dir).await;
                dir
            }
        };
        walk(&root)
            .into_iter()
            .map(|p| {
                let rel = p
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                (rel, p)
            })
            .filter(|(rel, _)| rel.starts_with("sessions/") || rel.starts_with("_manifest/"))
            .map(|(rel, p)| (rel, std::fs::read(p).unwrap()))
            .collect()
    }

    /// Every published `.parquet` is listed in a manifest with its rows (from its own Parquet
    /// footer), size and SHA-256 (of its bytes); with `complete`, every live manifest entry
    /// (listed, never replaced) is published too.
    async fn assert_manifests(&self, complete: bool) {
        check_manifests(&self.files().await, complete);
    }
}

fn check_manifests(files: &BTreeMap<String, Vec<u8>>, complete: bool) {
    use sha2::Digest;
    let mut listed: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut replaced = BTreeSet::new();
    for (key, bytes) in files.iter().filter(|(k, _)| k.starts_with("_manifest/")) {
        let m: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(m["version"], 1, "{key}");
        let name = format!(
            "_manifest/portal_id={}/{}-{:010}.json",
            m["portal_id"].as_str().unwrap(),
            m["state_id"].as_str().unwrap(),
            m["seq"].as_i64().unwrap()
        );
        assert_eq!(key, &name, "manifest named after its content");
        let replaces: Vec<String> = m["replaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let kind = if replaces.is_empty() {
            "flush"
        } else {
            "compaction"
        };
        assert_eq!(m["kind"], kind, "{key}");
        for f in m["files"].as_array().unwrap() {
            let path = f["path"].as_str().unwrap().to_string();
            assert!(
                listed.insert(path.clone(), f.clone()).is_none(),
                "{path} listed twice"
            );
        }
        replaced.extend(replaces);
    }
    let live: BTreeSet<&String> = listed.keys().filter(|p| !replaced.contains(*p)).collect();
    let present: BTreeSet<&String> = files
        .keys()
        .filter(|k| k.starts_with("sessions/") && k.ends_with(".parquet"))
        .collect();
    if complete {
        assert!(!present.is_empty(), "no published file");
        assert_eq!(
            present, live,
            "published files vs. the manifests' live files"
        );
    } else {
        // A compaction killed before its publish: the files it replaces are still there.
        let unlisted: Vec<_> = present
            .iter()
            .filter(|p| !listed.contains_key(**p))
            .collect();
        assert!(
            unlisted.is_empty(),
            "published but not in a manifest: {unlisted:?}"
        );
    }
    for path in present {
        let (bytes, entry) = (&files[path], &listed[path]);
        let sha: String = sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(entry["sha256"], sha, "{path}");
        assert_eq!(entry["bytes"], bytes.len(), "{path}");
        let reader =
            parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(bytes.clone()))
                .unwrap();
        use parquet::file::reader::FileReader;
        assert_eq!(
            entry["rows"],
            reader.metadata().file_metadata().num_rows(),
            "{path}"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

async fn backfill_activity_incremental(server: Server, backend: Backend) {
    let Some(t) = T::new_on(server, backend, sim_config(3, 1500, 6)).await else {
        return;
    };
    t.run(&["run", "--flush-rows", "400"]).await.ok();
    t.assert_exact().await;
    t.env.sim.end_active(None, usize::MAX);
    for p in t.env.sim.portal_ids() {
        t.env.sim.add_sessions(&p, 120, 4);
    }
    t.env.sim.reset_stats();
    t.run(&["run", "--flush-rows", "400"]).await.ok();
    t.assert_exact().await;
    // Incremental: a few pages per portal, not the whole history again.
    let calls = t.env.sim.stats().list_sessions_calls;
    assert!(
        calls <= 3 * 4,
        "incremental run made {calls} ListSessions calls"
    );
    t.assert_clean().await;
    if backend == Backend::S3Both {
        // The state is in S3, the lease released, and nothing of the state is on local disk.
        let keys = s3u::keys(t.client(), BUCKET).await;
        assert!(
            keys.contains(&"team/state/archiver.db".to_string()),
            "{keys:?}"
        );
        let lease: serde_json::Value = serde_json::from_slice(
            &s3u::get(t.client(), BUCKET, "team/state/archiver.db.lease").await,
        )
        .unwrap();
        assert_eq!(lease["expires_ms"], 0, "lease not released: {lease}");
        assert!(!t.env.state().exists());
        let status = t.run(&["status", "--json"]).await;
        status.ok();
        let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        assert_eq!(v["portals"].as_array().unwrap().len(), 3, "{v}");
        let etag = |c: aws_sdk_s3::Client| async move {
            c.head_object()
                .bucket(BUCKET)
                .key("team/state/archiver.db")
                .send()
                .await
                .unwrap()
                .e_tag()
                .map(str::to_string)
        };
        let before = etag(t.client().clone()).await;
        let dry = t.run(&["run", "--dry-run"]).await;
        dry.ok();
        assert_eq!(
            dry.stdout.matches("incremental pass").count(),
            3,
            "{}",
            dry.stdout
        );
        assert_eq!(
            etag(t.client().clone()).await,
            before,
            "--dry-run wrote the state"
        );
    }
}

/// On S3 (output and state): a compaction, and a repair, killed at each of their steps, then
/// run again: every row once, nothing left staged, the manifests describe the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_repair_killed_at_each_step_on_s3_are_finished_by_the_next() {
    let compact = ["compact", "--older-than", "2d"];
    let repair = ["verify", "--repair"];
    for (args, point) in [
        (&compact[..], "compact_after_stage:2"),
        (&compact[..], "compact_after_commit:2"),
        (&compact[..], "compact_after_manifest:2"),
        (&compact[..], "compact_mid_replace:2"),
        (&compact[..], "compact_after_replace:2"),
        (&compact[..], "compact_after_forget:2"),
        (&repair[..], "repair_after_stage:1"),
        (&repair[..], "repair_after_commit:1"),
        (&repair[..], "repair_after_manifest:1"),
        (&repair[..], "repair_after_replace:1"),
    ] {
        let t = T::new(Backend::S3Both, sim_config(1, 1200, 0)).await;
        t.run(&["run", "--flush-rows", "200"]).await.ok();
        if args[0] == "verify" {
            // A file lost and another copied: something to write, and duplicates to remove.
            let files: Vec<String> = s3u::keys(t.client(), BUCKET)
                .await
                .into_iter()
                .filter(|k| k.ends_with(".parquet"))
                .collect();
            let (lost, copied) = (&files[files.len() / 4], &files[files.len() / 2]);
            t.client()
                .delete_object()
                .bucket(BUCKET)
                .key(lost)
                .send()
                .await
                .unwrap();
            let copy = copied.replace(".parquet", "-copy.parquet");
            let bytes = s3u::get(t.client(), BUCKET, copied).await;
            // Recorded by a manifest: a copy in none is refused by repair (tests/verify.rs).
            put_flush_manifest(&t, &copy, &bytes).await;
            s3u::put(t.client(), BUCKET, &copy, bytes).await;
        }
        let crashed = t.run_crashing(args, point).await;
        assert_eq!(crashed.code, 134, "{point}: {}", crashed.stderr);
        expire_lease(&t).await;
        if args[0] == "compact" {
            t.run(args).await.ok();
            t.assert_exact().await;
            t.assert_clean().await;
            t.run(&["verify"]).await.ok();
        } else {
            ok_but_hand_written(&t.run(&["verify", "--repair", "--json"]).await, point);
            t.assert_exact().await;
            ok_but_hand_written(&t.run(&["verify", "--json"]).await, point);
        }
    }
}

/// `verify --json` found nothing but the integrity walk's `unreferenced manifest` for the
/// manifest [`put_flush_manifest`] writes by hand: no digest lists it.
#[track_caller]
fn ok_but_hand_written(r: &util::Run, point: &str) {
    assert!(r.code == 0 || r.code == 3, "{point}: {}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let portals = v["portals"].as_array().unwrap();
    assert!(portals.iter().all(|p| p["ok"] == true), "{point}: {v:#}");
    let found = v["integrity"]["findings"].as_array().unwrap();
    assert!(
        found.iter().all(|f| f["kind"] == "unreferenced_manifest"
            && f["object"].as_str().unwrap().contains("/teststate-")),
        "{point}: {v:#}"
    );
}

/// A manifest of a flush of a state `teststate` recording the file `key` with `bytes`.
async fn put_flush_manifest(t: &T, key: &str, bytes: &[u8]) {
    use parquet::file::reader::FileReader;
    let portal = key
        .split('/')
        .find_map(|s| s.strip_prefix("portal_id="))
        .unwrap();
    let reader =
        parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(bytes.to_vec()))
            .unwrap();
    let path = key.strip_prefix(&format!("{PREFIX}/")).unwrap();
    let m = serde_json::json!({
        "version": 1, "portal_id": portal, "state_id": "teststate", "seq": 1, "kind": "flush",
        "files": [{
            "path": path,
            "rows": reader.metadata().file_metadata().num_rows(),
            "bytes": bytes.len(),
            "sha256": archiver::sink::manifest::sha256_hex(bytes),
        }],
        "replaces": [],
    });
    let mkey = format!("{PREFIX}/_manifest/portal_id={portal}/teststate-0000000001.json");
    s3u::put(t.client(), BUCKET, &mkey, serde_json::to_vec(&m).unwrap()).await;
}

/// On S3: compaction refuses an input altered since its manifest, naming it, and leaves the
/// archive as it was; once it is put back, the compaction manifests' proofs verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_on_s3_refuses_an_altered_input_and_proves_the_rest() {
    let t = T::new(Backend::S3Both, sim_config(1, 1200, 0)).await;
    t.run(&["run", "--flush-rows", "200"]).await.ok();
    let files: Vec<String> = s3u::keys(t.client(), BUCKET)
        .await
        .into_iter()
        .filter(|k| k.ends_with(".parquet"))
        .collect();
    // A file of the oldest partition with several, one byte flipped: compacted first, so
    // nothing at all changes.
    let dir = |k: &String| k.rsplit_once('/').unwrap().0.to_string();
    let victim = files
        .windows(2)
        .find(|w| dir(&w[0]) == dir(&w[1]))
        .map(|w| &w[0])
        .unwrap();
    let pristine = s3u::get(t.client(), BUCKET, victim).await;
    let mut bytes = pristine.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    s3u::put(t.client(), BUCKET, victim, bytes).await;
    let before = t.files().await;
    let r = t.run(&["compact", "--older-than", "2d"]).await;
    r.code(1);
    let rel = victim.strip_prefix(&format!("{PREFIX}/")).unwrap();
    assert!(r.last_line().contains(rel), "{}", r.stderr);
    let after = t.files().await;
    assert_eq!(before, after, "the archive changed");
    s3u::put(t.client(), BUCKET, victim, pristine).await;
    t.run(&["compact", "--older-than", "2d"]).await.ok();
    t.assert_exact().await;
    let v = t.run(&["verify", "--json"]).await;
    v.ok();
    let doc: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
    let proved = doc["portals"][0]["manifest"]["compactions_proved"]
        .as_u64()
        .unwrap();
    assert!(proved > 0, "{doc}");
}

/// `compact` on an S3 archive (and state): one file per old partition, every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_on_s3_is_exact() {
    let t = T::new(Backend::S3Both, sim_config(2, 1200, 0)).await;
    t.run(&["run", "--flush-rows", "200"]).await.ok();
    let parquet = |keys: Vec<String>| keys.into_iter().filter(|k| k.ends_with(".parquet")).count();
    let before = parquet(s3u::keys(t.client(), BUCKET).await);
    let r = t.run(&["compact", "--older-than", "2d"]).await;
    r.ok();
    let after = parquet(s3u::keys(t.client(), BUCKET).await);
    assert!(
        after < before,
        "{before} files before, {after} after\n{}",
        r.stdout
    );
    t.assert_exact().await;
    t.assert_clean().await;
    // Every old partition is one file now.
    let rows = t.archived().await;
    let mut per_partition: std::collections::BTreeMap<_, std::collections::BTreeSet<_>> =
        Default::default();
    for r in &rows {
        per_partition
            .entry((r.portal_id.clone(), r.start_date.clone()))
            .or_default()
            .insert(r.file.clone());
    }
    let multi = per_partition
        .iter()
        .filter(|((_, d), files)| files.len() > 1 && d.as_str() < "2026-11-24")
        .count();
    assert_eq!(multi, 0, "old partitions left with several files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_local() {
    backfill_activity_incremental(Server::Moto, Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_s3_output() {
    backfill_activity_incremental(Server::Moto, Backend::S3Output).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_s3_output_and_state() {
    backfill_activity_incremental(Server::Moto, Backend::S3Both).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_s3_output_s3s_fs() {
    backfill_activity_incremental(Server::S3sFs, Backend::S3Output).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_s3_output_and_state_s3s_fs() {
    backfill_activity_incremental(Server::S3sFs, Backend::S3Both).await;
}

/// Killed (abort, like `kill -9`) at each step of a flush, then resumed; then SIGKILLed at
/// random moments. Exact after every resume, no duplicate after any kill.
///
/// On s3s-fs, one portal and no random `SIGKILL`s: s3s-fs writes an object's checksum after
/// its body, so a client killed in the middle of a PUT can leave the state object with a stale
/// checksum (every later download then fails its checksum check, refusing the state rather
/// than trusting it). With one portal, no state upload is in flight when a failpoint aborts.
async fn killed_then_resumed(server: Server, backend: Backend) {
    let portals = if server == Server::S3sFs { 1 } else { 2 };
    let Some(t) = T::new_on(server, backend, sim_config(portals, 1200, 4)).await else {
        return;
    };
    let args = ["run", "--flush-rows", "200"];
    for point in [
        "after_stage:2",
        "after_local_commit:2",
        "after_commit:3",
        "after_manifest:2",
        "after_publish:2",
    ] {
        let r = t.run_crashing(&args, point).await;
        assert_eq!(
            r.code, 134,
            "{point}: the failpoint did not fire\n{}",
            r.stderr
        );
        if backend == Backend::S3Both {
            // The killed run's lease would block the next run until it expires.
            expire_lease(&t).await;
        }
        let rows = t.archived().await;
        let ids: std::collections::BTreeSet<_> = rows.iter().map(|r| &r.session_id).collect();
        assert_eq!(ids.len(), rows.len(), "{point}: duplicates after the kill");
        // Even now, every published file is in a manifest.
        t.assert_manifests(false).await;
        for p in t.env.sim.portal_ids() {
            t.env.sim.add_sessions(&p, 150, 2);
        }
    }
    if server == Server::S3sFs {
        t.run(&args).await.ok();
        t.assert_exact().await;
        t.assert_clean().await;
        return;
    }
    t.env.sim.set_faults(Faults {
        latency_ms: 10,
        ..Faults::default()
    });
    let mut kills = 0;
    for (i, wait_ms) in [150u64, 400, 60, 250, 700].into_iter().enumerate() {
        for p in t.env.sim.portal_ids() {
            t.env.sim.add_sessions(&p, 200, 2);
        }
        t.env.sim.end_active(None, 2);
        let log = t.env.dir.path().join(format!("run-{i}.stderr"));
        let mut child = t
            .cmd(&args)
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(wait_ms), child.wait())
            .await
            .is_err()
        {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
            kills += 1;
            if backend == Backend::S3Both {
                expire_lease(&t).await;
            }
        } else {
            assert_eq!(
                child.wait().await.unwrap().code(),
                Some(0),
                "run {i} failed\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let rows = t.archived().await;
        let ids: std::collections::BTreeSet<_> = rows.iter().map(|r| &r.session_id).collect();
        assert_eq!(ids.len(), rows.len(), "kill {i}: duplicates");
    }
    assert!(kills >= 3, "only {kills} SIGKILLs landed");
    t.env.sim.set_faults(Faults::default());
    t.run(&args).await.ok();
    t.assert_exact().await;
    t.assert_clean().await;
}

/// Rewrite the lease object as expired (what waiting out the TTL would do).
async fn expire_lease(t: &T) {
    let key = format!("{}.lease", t.state_key);
    let mut lease: serde_json::Value =
        serde_json::from_slice(&s3u::get(t.client(), BUCKET, &key).await).unwrap();
    lease["expires_ms"] = serde_json::json!(1);
    s3u::put(
        t.client(),
        BUCKET,
        &key,
        serde_json::to_vec(&lease).unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_then_resumed_local() {
    killed_then_resumed(Server::Moto, Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_then_resumed_s3_output() {
    killed_then_resumed(Server::Moto, Backend::S3Output).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_then_resumed_s3_output_and_state() {
    killed_then_resumed(Server::Moto, Backend::S3Both).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_then_resumed_s3_output_and_state_s3s_fs() {
    killed_then_resumed(Server::S3sFs, Backend::S3Both).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_slowdowns_errors_and_cut_uploads_are_retried_and_leave_no_partial_object() {
    let t = T::new(Backend::S3Both, sim_config(2, 600, 3)).await;
    {
        let mut f = t.proxy.as_ref().unwrap().faults();
        f.slow_down_every = 7;
        f.internal_every = 13;
        f.cut_put_every = 5;
    }
    t.run(&["run", "--flush-rows", "300", "--max-attempts", "10"])
        .await
        .ok();
    let (slowed, internal, cut) = {
        let f = t.proxy.as_ref().unwrap().faults();
        (f.slowed, f.internal, f.cut)
    };
    assert!(
        slowed >= 20 && internal >= 10 && cut >= 10,
        "faults injected: {slowed} SlowDown, {internal} 500, {cut} cut uploads"
    );
    // Every object is whole: each .parquet reads back, and the rows are exact.
    t.assert_exact().await;
    t.assert_clean().await;
    eprintln!("injected {slowed} SlowDown, {internal} InternalError, {cut} cut uploads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_fails_before_any_page_is_fetched() {
    let t = T::new(Backend::S3Output, sim_config(2, 300, 0)).await;
    let mut c = t.cmd_at(&t.state_arg(), "s3://no-such-bucket/x", &["run"]);
    let r = Run::from(c.output().await.unwrap());
    r.code(1);
    let last = r.last_line();
    assert!(last.contains("no-such-bucket"), "{}", r.stderr);
    assert!(last.contains("does not exist"), "{}", r.stderr);
    let s = t.env.sim.stats();
    assert_eq!(s.list_portals_calls + s.list_sessions_calls, 0);
    // The same for a state in a missing bucket.
    let mut c = t.cmd_at("s3://no-such-state-bucket/s.db", &t.output_arg(), &["run"]);
    let r = Run::from(c.output().await.unwrap());
    r.code(1);
    assert!(
        r.last_line().contains("no-such-state-bucket"),
        "{}",
        r.stderr
    );
    assert_eq!(t.env.sim.stats().list_sessions_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_exits_75_and_an_expired_one_is_taken_over() {
    held_and_expired_lease(Server::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_exits_75_and_an_expired_one_is_taken_over_s3s_fs() {
    held_and_expired_lease(Server::S3sFs).await;
}

async fn held_and_expired_lease(server: Server) {
    let Some(t) = T::new_on(server, Backend::S3Both, sim_config(2, 600, 2)).await else {
        return;
    };
    t.run(&["run"]).await.ok();
    let key = format!("{}.lease", t.state_key);
    let future = archiver::clock::now_ms() + 3_600_000;
    let held = serde_json::json!({
        "holder": "pid 4242 on other-host", "command": "run",
        "since_ms": future - 4_000_000, "expires_ms": future, "writer": "x"
    });
    s3u::put(t.client(), BUCKET, &key, serde_json::to_vec(&held).unwrap()).await;
    let r = t.run(&["run"]).await;
    r.code(75);
    assert!(r.stderr.contains("pid 4242 on other-host"), "{}", r.stderr);
    // Two real processes: the second is refused while the first runs.
    t.env.sim.set_faults(Faults {
        latency_ms: 40,
        ..Faults::default()
    });
    expire_lease(&t).await;
    for p in t.env.sim.portal_ids() {
        t.env.sim.add_sessions(&p, 400, 0);
    }
    let first = t.cmd(&["run", "--flush-rows", "100"]).spawn().unwrap();
    // Wait until the first holds the lease.
    for _ in 0..200 {
        let l: serde_json::Value =
            serde_json::from_slice(&s3u::get(t.client(), BUCKET, &key).await).unwrap();
        if l["expires_ms"].as_i64().unwrap() > archiver::clock::now_ms() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let second = t.run(&["run"]).await;
    second.code(75);
    let first = Run::from(first.wait_with_output().await.unwrap());
    first.ok();
    t.env.sim.set_faults(Faults::default());
    // Expired (a crashed holder): taken over with a warning, and the run is exact.
    let past = serde_json::json!({
        "holder": "pid 1 on crashed-host", "command": "run",
        "since_ms": 1, "expires_ms": 2, "writer": "y"
    });
    s3u::put(t.client(), BUCKET, &key, serde_json::to_vec(&past).unwrap()).await;
    let r = t.run(&["run"]).await;
    r.ok();
    assert!(
        r.stderr.contains("taking over an expired lease"),
        "{}",
        r.stderr
    );
    t.assert_exact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_state_was_taken_over_stops_without_publishing_more() {
    let t = T::new(Backend::S3Both, sim_config(1, 3000, 0)).await;
    t.env.sim.set_faults(Faults {
        latency_ms: 30,
        ..Faults::default()
    });
    let run = t.cmd(&["run", "--flush-rows", "100"]).spawn().unwrap();
    // Once the state has been uploaded a few times, another run "takes over": it rewrites the
    // state object (same content, new ETag) as a successor would after its first commit.
    let state = t.state_key.clone();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 {
        if let Ok(h) = t
            .client()
            .head_object()
            .bucket(BUCKET)
            .key(&state)
            .send()
            .await
        {
            seen.insert(h.e_tag().unwrap().to_string());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The successor's first commit: its own run row (new bytes, so a new ETag).
    let copy = t.env.dir.path().join("successor.db");
    std::fs::write(&copy, s3u::get(t.client(), BUCKET, &state).await).unwrap();
    {
        let db = rusqlite::Connection::open(&copy).unwrap();
        db.execute_batch("PRAGMA journal_mode=DELETE; INSERT INTO runs (command, pid, started_at, outcome) VALUES ('run', 1, 1, 'ok');")
            .unwrap();
    }
    s3u::put(t.client(), BUCKET, &state, std::fs::read(&copy).unwrap()).await;
    let files_at_takeover = s3u::keys(t.client(), BUCKET).await.len();
    let r = Run::from(
        tokio::time::timeout(Duration::from_secs(60), run.wait_with_output())
            .await
            .unwrap()
            .unwrap(),
    );
    r.code(1);
    assert!(r.stderr.contains("changed by another run"), "{}", r.stderr);
    // At most the flush in flight was published after the takeover; none after the refusal.
    let files_after = s3u::keys(t.client(), BUCKET).await.len();
    assert!(
        files_after <= files_at_takeover + 2,
        "{files_at_takeover} → {files_after}"
    );
    t.env.sim.set_faults(Faults::default());
    expire_lease(&t).await;
    t.run(&["run"]).await.ok();
    t.assert_exact().await;
}

/// Start the binary with a failpoint that stops it (`<point>:<n>:stop`); returns once the
/// process is stopped.
async fn spawn_stopped(t: &T, args: &[&str], failpoint: &str) -> tokio::process::Child {
    util::spawn_stopped(t.cmd(args), failpoint).await
}

/// Resume a stopped process and wait for it to end.
async fn resume(child: tokio::process::Child) -> Run {
    util::resume(child, None).await
}

/// Every published file with its ETag: what a stale holder must not add to or overwrite.
async fn published(t: &T) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut pages = t
        .client()
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(format!("{PREFIX}/sessions/"))
        .into_paginator()
        .send();
    while let Some(p) = pages.next().await {
        for o in p.unwrap().contents() {
            out.insert(
                o.key().unwrap().to_string(),
                o.e_tag().unwrap_or_default().to_string(),
            );
        }
    }
    out
}

async fn state_etag(t: &T) -> String {
    t.client()
        .head_object()
        .bucket(BUCKET)
        .key(&t.state_key)
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_string()
}

/// A holder paused at `point` (between staging a flush and uploading its commit) while its
/// lease expires; a successor takes over. With `successor_pauses`, the holder resumes while the
/// successor is stopped right after its recovery dropped the holder's staged files (the
/// moment the successor's claim on the state protects); otherwise once the successor has
/// finished. Either way the holder exits 1 and publishes nothing, and the archive ends exact.
async fn paused_holder_taken_over(server: Server, point: &str, successor_pauses: bool) {
    let Some(t) = T::new_on(server, Backend::S3Both, sim_config(2, 1200, 4)).await else {
        return;
    };
    // One portal at a time: when the holder stops itself, no other portal's flush is in
    // flight (a flush committed and saved before the takeover may still be published by its
    // holder, harmlessly, which would blur what this test checks).
    let args = ["run", "--flush-rows", "200", "--concurrency", "1"];
    let holder = spawn_stopped(&t, &args, &format!("{point}:2:stop")).await;
    // What waiting out the TTL would do, while the holder is paused.
    expire_lease(&t).await;
    let successor = if successor_pauses {
        // One portal at a time: stopped after the first portal's recovery, it has no request
        // in flight that could land while it is stopped.
        let one = ["run", "--flush-rows", "200", "--concurrency", "1"];
        Some(spawn_stopped(&t, &one, "after_recover:1:stop").await)
    } else {
        let r = t.run(&args).await;
        r.ok();
        assert!(
            r.stderr.contains("taking over an expired lease"),
            "{}",
            r.stderr
        );
        None
    };
    let files = published(&t).await;
    let r = resume(holder).await;
    assert_eq!(
        r.code, 1,
        "{point}: the stale holder did not fail\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("changed by another run") || r.stderr.contains("lost the lease"),
        "{point}: {}",
        r.stderr
    );
    assert_eq!(
        published(&t).await,
        files,
        "{point}: the stale holder published or overwrote files"
    );
    if let Some(successor) = successor {
        let r = resume(successor).await;
        assert_eq!(r.code, 0, "{point}: the successor failed\n{}", r.stderr);
    }
    t.run(&args).await.ok();
    t.assert_exact().await;
    t.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_paused_after_stage_is_taken_over_and_publishes_nothing() {
    paused_holder_taken_over(Server::Moto, "after_stage", false).await;
    paused_holder_taken_over(Server::Moto, "after_stage", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_paused_after_local_commit_is_taken_over_and_publishes_nothing() {
    paused_holder_taken_over(Server::Moto, "after_local_commit", false).await;
    paused_holder_taken_over(Server::Moto, "after_local_commit", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_taken_over_publishes_nothing_s3s_fs() {
    paused_holder_taken_over(Server::S3sFs, "after_local_commit", true).await;
}

/// A holder paused at `point` until its lease is within the margin of its expiry (a sixth of
/// the TTL, at least 5 s) stops on resuming: exit 1, no state upload, nothing published. No
/// one took the lease over; the next run finishes the work.
async fn holder_near_expiry_stops(point: &str) {
    let t = T::new(Backend::S3Both, sim_config(2, 1200, 4)).await;
    let args = ["run", "--flush-rows", "200", "--lease-ttl", "30s"];
    let holder = spawn_stopped(&t, &args, &format!("{point}:2:stop")).await;
    let key = format!("{}.lease", t.state_key);
    let lease: serde_json::Value =
        serde_json::from_slice(&s3u::get(t.client(), BUCKET, &key).await).unwrap();
    let expires = lease["expires_ms"].as_i64().unwrap();
    let wait = expires - 5_000 + 500 - archiver::clock::now_ms();
    assert!(wait > 0, "{lease}");
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    let (state, files) = (state_etag(&t).await, published(&t).await);
    let r = resume(holder).await;
    assert_eq!(r.code, 1, "{point}: {}", r.stderr);
    assert!(
        r.stderr.contains("without a renewal"),
        "{point}: {}",
        r.stderr
    );
    assert_eq!(
        state_etag(&t).await,
        state,
        "{point}: the state was uploaded"
    );
    assert_eq!(published(&t).await, files, "{point}: files were published");
    expire_lease(&t).await;
    t.run(&args).await.ok();
    t.assert_exact().await;
    t.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_near_lease_expiry_does_not_commit() {
    holder_near_expiry_stops("after_stage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_near_lease_expiry_does_not_publish() {
    holder_near_expiry_stops("after_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_ignoring_conditional_writes_is_refused() {
    let t = T::new(Backend::S3Both, sim_config(1, 100, 0)).await;
    t.proxy.as_ref().unwrap().faults().drop_conditions = true;
    let r = t.run(&["run"]).await;
    r.code(1);
    let last = r.last_line();
    assert!(last.contains("ignores conditional writes"), "{}", r.stderr);
    assert!(last.contains(BUCKET), "{}", r.stderr);
    // Nothing taken, nothing written, no WorkSpaces Web call.
    assert!(s3u::keys(t.client(), BUCKET).await.is_empty());
    assert_eq!(t.env.sim.stats().list_portals_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_with_s3_states_cover_every_portal_once() {
    let mut t = T::new(Backend::S3Both, sim_config(7, 300, 2)).await;
    t.state_key = "team/state/shard-{shard}.db".into();
    for i in 0..3 {
        t.run(&["run", "--shard", &format!("{i}/3")]).await.ok();
    }
    t.assert_exact().await;
    let keys = s3u::keys(t.client(), BUCKET).await;
    for i in 0..3 {
        assert!(
            keys.contains(&format!("team/state/shard-{i}.db")),
            "{keys:?}"
        );
    }
    // Each portal's files come from exactly one state (one shard).
    let mut writers: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for r in t.archived().await {
        let name = r.file.file_name().unwrap().to_string_lossy().into_owned();
        let state_id = name.split('-').nth(1).unwrap().to_string();
        writers.entry(r.portal_id).or_default().insert(state_id);
    }
    assert_eq!(writers.len(), 7);
    assert!(writers.values().all(|w| w.len() == 1), "{writers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_storage_class_and_bucket_owner_reach_s3() {
    let t = T::new(Backend::S3Both, sim_config(1, 400, 0)).await;
    let opts = [
        "--s3-sse",
        "aws:kms",
        "--s3-kms-key-id",
        "alias/archive",
        "--s3-storage-class",
        "STANDARD_IA",
        "--s3-expected-bucket-owner",
        "123456789012",
    ];
    t.proxy.as_ref().unwrap().faults().bucket_owner = Some("123456789012".into());
    let mut args = vec!["run"];
    args.extend(opts);
    t.run(&args).await.ok();
    t.assert_exact().await;
    let keys = s3u::keys(t.client(), BUCKET).await;
    let file = keys.iter().find(|k| k.ends_with(".parquet")).unwrap();
    let h = t
        .client()
        .head_object()
        .bucket(BUCKET)
        .key(file)
        .send()
        .await
        .unwrap();
    assert_eq!(h.storage_class().map(|c| c.as_str()), Some("STANDARD_IA"));
    assert_eq!(
        h.server_side_encryption().map(|c| c.as_str()),
        Some("aws:kms")
    );
    assert!(h
        .ssekms_key_id()
        .unwrap_or_default()
        .contains("alias/archive"));
    {
        let f = t.proxy.as_ref().unwrap().faults();
        let without: Vec<_> = f
            .seen
            .iter()
            .filter(|(_, _, h)| !h.iter().any(|(k, _)| k == "x-amz-expected-bucket-owner"))
            .map(|(m, p, _)| format!("{m} {p}"))
            .collect();
        assert!(
            without.is_empty(),
            "calls without ExpectedBucketOwner: {without:?}"
        );
        // Staged objects are STANDARD: only copies to the final keys carry the class.
        for (m, p, h) in &f.seen {
            let ia = h
                .iter()
                .any(|(k, v)| k == "x-amz-storage-class" && v == "STANDARD_IA");
            if ia {
                assert!(
                    m == "PUT"
                        && p.contains("/sessions/")
                        && h.iter().any(|(k, _)| k == "x-amz-copy-source"),
                    "storage class on {m} {p}"
                );
            }
        }
    }
    // A bucket owned by another account: refused at start-up, naming the bucket.
    let mut args = vec!["run"];
    args.extend(opts);
    let n = args.len();
    args[n - 1] = "210987654321";
    let r = t.run(&args).await;
    r.code(1);
    assert!(
        r.stderr.contains(BUCKET) && r.stderr.contains("210987654321"),
        "{}",
        r.stderr
    );
}

/// Multipart: a file over the part size goes up in parts; a failed upload is aborted; one left
/// by a killed run is aborted by the next recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_complete_or_are_aborted() {
    use archiver::config::{Output, S3Options};
    use archiver::sink::Sink;
    let moto = Moto::start().await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let c = s3u::client(&moto.endpoint);
    s3u::create_bucket(&c, BUCKET).await;
    let via_proxy = s3u::client(&proxy.endpoint);
    let opts = S3Options {
        part_size: 5 * 1024 * 1024,
        ..S3Options::default()
    };
    let out = Output::parse(&format!("s3://{BUCKET}/{PREFIX}")).unwrap();
    let sink = Sink::new(&out, Some(&via_proxy), &opts).unwrap();
    sink.check_writable().await.unwrap();
    // 12 MiB of incompressible bytes: three parts.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big: Vec<u8> = (0..12 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let staged = "_staging/portal_id=p/part-a-0000000001-2026-01-01-t.tmp".to_string();
    let fin = "sessions/portal_id=p/start_date=2026-01-01/part-a-0000000001.parquet".to_string();
    sink.stage(staged.clone(), big.clone(), "").await.unwrap();
    let parts = proxy
        .faults()
        .seen
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p.contains("partNumber="))
        .count();
    assert_eq!(parts, 3);
    sink.publish(staged.clone(), fin.clone()).await.unwrap();
    sink.publish(staged.clone(), fin.clone()).await.unwrap(); // idempotent
    assert_eq!(s3u::get(&c, BUCKET, &format!("{PREFIX}/{fin}")).await, big);
    assert!(s3u::uploads(&c, BUCKET).await.is_empty());

    // Part 2 refused: the stage fails and the upload is aborted, nothing is left.
    proxy.faults().deny_part_2 = true;
    let err = sink
        .stage(staged.clone(), big.clone(), "")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("UploadPart 2"), "{err:#}");
    assert!(s3u::uploads(&c, BUCKET).await.is_empty());
    assert!(!s3u::keys(&c, BUCKET)
        .await
        .iter()
        .any(|k| k.contains("_staging")));
    proxy.faults().deny_part_2 = false;

    // An upload a killed run left: invisible, and aborted by the next recovery's listing.
    let key = format!("{PREFIX}/_staging/portal_id=p/part-a-0000000002-2026-01-01-t.tmp");
    let up = c
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(&key)
        .send()
        .await
        .unwrap();
    c.upload_part()
        .bucket(BUCKET)
        .key(&key)
        .upload_id(up.upload_id().unwrap())
        .part_number(1)
        .body(big[..5 * 1024 * 1024].to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(s3u::uploads(&c, BUCKET).await.len(), 1);
    assert!(sink
        .list_staged("_staging/portal_id=p".into())
        .await
        .unwrap()
        .is_empty());
    assert!(s3u::uploads(&c, BUCKET).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_regions_in_one_run_each_with_its_own_client() {
    let regions = vec!["us-east-1".to_string(), "eu-west-1".to_string()];
    let t = T::new(
        Backend::Local,
        SimConfig {
            regions: regions.clone(),
            ..sim_config(4, 500, 2)
        },
    )
    .await;
    // One region: only its portals.
    t.run(&["run", "--region", "eu-west-1"]).await.ok();
    let rows = t.archived().await;
    let arn_regions: std::collections::BTreeSet<_> = rows
        .iter()
        .map(|r| r.portal_arn.split(':').nth(3).unwrap().to_string())
        .collect();
    assert_eq!(
        arn_regions.into_iter().collect::<Vec<_>>(),
        vec!["eu-west-1"]
    );
    // Both: every portal, exactly once.
    t.run(&["run", "--region", "us-east-1,eu-west-1"])
        .await
        .ok();
    t.assert_exact().await;
    // A named portal is found in its region.
    let p = t.env.portal(1);
    t.run(&[
        "backfill",
        "--portal-id",
        &p,
        "--region",
        "us-east-1",
        "--region",
        "eu-west-1",
    ])
    .await
    .ok();
    let r = t
        .run(&[
            "backfill",
            "--portal-id",
            "00000000-0000-4000-8000-000000000000",
            "--region",
            "us-east-1",
            "--region",
            "eu-west-1",
        ])
        .await;
    r.code(1);
    assert!(
        r.stderr
            .contains("not found in regions us-east-1, eu-west-1"),
        "{}",
        r.stderr
    );
    t.assert_exact().await;
}

/// A state that never archived a portal refuses it when the output already holds that
/// portal's files from another state (a lost state, a changed shard count): writing its
/// sessions again would duplicate them. The archive is left as it was.
async fn a_second_state_is_refused(backend: Backend) {
    let mut t = T::new(backend, sim_config(2, 400, 0)).await;
    t.run(&["run"]).await.ok();
    t.state_key = "team/state/other.db".into();
    let fresh = t.env.dir.path().join("other.db");
    let state = match backend {
        Backend::S3Both => t.state_arg(),
        _ => fresh.to_string_lossy().into_owned(),
    };
    let r = Run::from(
        t.cmd_at(&state, &t.output_arg(), &["run"])
            .output()
            .await
            .unwrap(),
    );
    r.code(1);
    let last = r.last_line();
    assert!(last.contains("2 of 2 portals failed"), "{last}");
    assert!(last.contains("from another state"), "{last}");
    t.assert_exact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_state_on_the_same_output_is_refused_local() {
    a_second_state_is_refused(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_state_on_the_same_output_is_refused_s3() {
    a_second_state_is_refused(Backend::S3Both).await;
}

/// An object at the state key that is not an archiver state: refused (exit 1), left byte for
/// byte, and the lease released (the next run is not blocked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_s3_state_is_refused_and_left_untouched() {
    let t = T::new(Backend::S3Both, sim_config(1, 100, 0)).await;
    // A real SQLite database, someone else's (any rewrite of it would change its bytes).
    let other = t.env.dir.path().join("other-app.db");
    {
        let db = rusqlite::Connection::open(&other).unwrap();
        db.execute_batch(
            "PRAGMA journal_mode=DELETE; CREATE TABLE t (x); INSERT INTO t VALUES (1); DELETE FROM t;",
        )
        .unwrap();
    }
    let junk = std::fs::read(&other).unwrap();
    s3u::put(t.client(), BUCKET, &t.state_key, junk.clone()).await;
    let r = t.run(&["run"]).await;
    r.code(1);
    assert_eq!(s3u::get(t.client(), BUCKET, &t.state_key).await, junk);
    assert_eq!(t.env.sim.stats().list_sessions_calls, 0);
    let r = t.run(&["run"]).await;
    r.code(1); // refused again, not 75: the first run released its lease
}

/// Copy the local state file (and its WAL, if any) from `from` to `to`, replacing `to`.
fn copy_state(from: &std::path::Path, to: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let (f, t) = (
            std::path::PathBuf::from(format!("{}{suffix}", from.display())),
            std::path::PathBuf::from(format!("{}{suffix}", to.display())),
        );
        let _ = std::fs::remove_file(&t);
        if f.exists() {
            std::fs::copy(&f, &t).unwrap();
        }
    }
}

/// A state restored from an older copy of itself reuses flush numbers its lost future already
/// published: the run stops with exit 1 naming the file, and every file of the archive (data
/// and manifests) is byte-identical to before.
async fn a_restored_older_state_overwrites_nothing(backend: Backend) {
    let t = T::new(backend, sim_config(1, 1000, 0)).await;
    let p = t.env.portal(0);
    let args = ["run", "--flush-rows", "200"];
    t.run(&args).await.ok();
    let old = t.env.dir.path().join("old-state.db");
    copy_state(&t.env.state(), &old);
    t.env.sim.add_sessions(&p, 600, 0);
    t.run(&args).await.ok();
    t.assert_exact().await;
    t.assert_clean().await;
    let before = t.files().await;
    assert!(
        before.keys().filter(|k| k.ends_with(".parquet")).count() >= 8,
        "{:?}",
        before.keys()
    );
    copy_state(&old, &t.env.state());
    let r = t.run(&args).await;
    r.code(1);
    assert!(
        r.stderr.contains("already exists") && r.stderr.contains("older"),
        "{}",
        r.stderr
    );
    assert!(
        before.keys().any(|k| r.stderr.contains(k.as_str())),
        "the error names no file of the archive:\n{}",
        r.stderr
    );
    let after = t.files().await;
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (k, bytes) in &before {
        assert!(&after[k] == bytes, "{k} changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_older_state_overwrites_nothing_local() {
    a_restored_older_state_overwrites_nothing(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_older_state_overwrites_nothing_s3() {
    a_restored_older_state_overwrites_nothing(Backend::S3Output).await;
}

/// After a backfill, an incremental run and a compaction (one killed after writing its
/// manifest, then finished by the next), the manifests describe exactly the published files.
async fn manifests_describe_the_archive(backend: Backend) {
    let t = T::new(backend, sim_config(2, 1200, 4)).await;
    let p = t.env.portal(0);
    t.run(&["run", "--flush-rows", "200"]).await.ok();
    t.env.sim.end_active(None, usize::MAX);
    t.env.sim.add_sessions(&p, 300, 2);
    t.run(&["run", "--flush-rows", "200"]).await.ok();
    t.assert_clean().await;
    let r = t
        .run_crashing(
            &["compact", "--older-than", "2d"],
            "compact_after_manifest:2",
        )
        .await;
    assert_eq!(r.code, 134, "{}", r.stderr);
    t.assert_manifests(false).await;
    t.run(&["compact", "--older-than", "2d"]).await.ok();
    t.assert_exact().await;
    t.assert_clean().await;
    let files = t.files().await;
    let compactions = files
        .iter()
        .filter(|(k, v)| {
            k.starts_with("_manifest/") && v.windows(12).any(|w| w == b"\"compaction\"")
        })
        .count();
    assert!(compactions >= 2, "{compactions} compaction manifests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_describe_the_archive_local() {
    manifests_describe_the_archive(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_describe_the_archive_s3() {
    manifests_describe_the_archive(Backend::S3Output).await;
}

/// With CopyObject's `If-None-Match: *` enforced as S3 does: a publish replayed after a kill
/// between the copy and the delete recognises its own object; a publish onto a foreign object
/// fails (exit 1) and leaves it intact. Staged PUTs carry the SHA-256 S3 verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_publish_never_overwrites_and_recognises_its_own_copy() {
    let t = T::new(Backend::S3Output, sim_config(1, 800, 0)).await;
    let p = t.env.portal(0);
    let proxy = t.proxy.as_ref().unwrap();
    proxy.faults().copy_if_none_match = true;
    let args = ["run", "--flush-rows", "200"];
    let r = t.run_crashing(&args, "s3_after_copy:2").await;
    assert_eq!(r.code, 134, "{}", r.stderr);
    t.run(&args).await.ok();
    assert!(
        proxy.faults().copies_refused >= 1,
        "the replayed copy was not refused by the proxy: {:?}",
        proxy
            .faults()
            .seen
            .iter()
            .filter(|(_, _, amz)| amz.iter().any(|(k, _)| k == "x-amz-copy-source"))
            .collect::<Vec<_>>()
    );
    t.assert_exact().await;
    t.assert_clean().await;

    // Every staged single PUT sent x-amz-checksum-sha256, of exactly the published bytes.
    let files = t.files().await;
    let sent: BTreeSet<String> = {
        let f = proxy.faults();
        let staged_puts: Vec<_> = f
            .seen
            .iter()
            .filter(|(m, path, amz)| {
                m == "PUT"
                    && path.contains("/_staging/portal_id")
                    && !amz.iter().any(|(k, _)| k == "x-amz-copy-source")
            })
            .collect();
        assert!(!staged_puts.is_empty());
        staged_puts
            .iter()
            .map(|(_, path, amz)| {
                let others: Vec<_> = amz
                    .iter()
                    .filter(|(k, _)| {
                        k.starts_with("x-amz-checksum-") && k != "x-amz-checksum-sha256"
                    })
                    .collect();
                assert!(others.is_empty(), "{path}: a second checksum {others:?}");
                amz.iter()
                    .find(|(k, _)| k == "x-amz-checksum-sha256")
                    .unwrap_or_else(|| panic!("no checksum on {path}: {amz:?}"))
                    .1
                    .clone()
            })
            .collect()
    };
    for (k, bytes) in files.iter().filter(|(k, _)| k.ends_with(".parquet")) {
        use sha2::Digest;
        let hex: String = sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let b64 = archiver::sink::manifest::checksum_base64(&hex).unwrap();
        assert!(sent.contains(&b64), "{k}: its checksum was never sent");
    }

    // A committed flush whose final name holds a foreign object: the publish is refused.
    t.env.sim.add_sessions(&p, 300, 0);
    let r = t.run_crashing(&args, "after_commit:1").await;
    assert_eq!(r.code, 134, "{}", r.stderr);
    let unpublished: Vec<String> = {
        let db = rusqlite::Connection::open(t.env.state()).unwrap();
        let mut stmt = db
            .prepare("SELECT path FROM flush_files WHERE published = 0")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(!unpublished.is_empty());
    let foreign = format!("{PREFIX}/{}", unpublished[0]);
    s3u::put(t.client(), BUCKET, &foreign, b"not ours".to_vec()).await;
    let r = t.run(&args).await;
    r.code(1);
    assert!(
        r.stderr.contains(&foreign) && r.stderr.contains("already exists"),
        "{}",
        r.stderr
    );
    assert_eq!(s3u::get(t.client(), BUCKET, &foreign).await, b"not ours");
}

/// The nightly role may not delete published files. A compaction killed between its publish
/// and its deletes leaves replaced files; the nightly run that finds them warns and goes on
/// (exit 0), and the next `compact` deletes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nightly_run_denied_deleting_replaced_files_leaves_them_to_compact() {
    let t = T::new(Backend::S3Both, sim_config(1, 1200, 0)).await;
    t.run(&["run", "--flush-rows", "200"]).await.ok();
    let crashed = t
        .run_crashing(&["compact", "--older-than", "2d"], "compact_mid_replace:1")
        .await;
    crashed.code(134);
    expire_lease(&t).await;
    let proxy = t.proxy.as_ref().unwrap();
    proxy.faults().deny_delete_under = Some(format!("{PREFIX}/sessions/"));
    let r = t.run(&["run"]).await;
    r.ok();
    assert!(
        r.stderr
            .contains("replaced files stay until the next `compact`"),
        "{}",
        r.stderr
    );
    assert!(proxy.faults().denied_deletes >= 1);
    let rows = t.archived().await;
    let distinct: BTreeSet<_> = rows.iter().map(|r| &r.session_id).collect();
    assert!(distinct.len() < rows.len(), "no replaced file was left");
    proxy.faults().deny_delete_under = None;
    t.run(&["compact", "--older-than", "2d"]).await.ok();
    t.assert_exact().await;
    t.assert_clean().await;
}

/// The lease recognises its own writes by its writer nonce. A write whose reply is lost lands
/// all the same; the SDK's retry then fails its condition (412), against this run's own
/// object. Lost on the acquire, a renewal and the release: every run ends well, and the next
/// one is never blocked by the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_knows_its_own_writes_when_their_replies_are_lost() {
    let t = T::new(Backend::S3Both, sim_config(1, 2000, 0)).await;
    t.env.sim.set_faults(Faults {
        latency_ms: 600,
        ..Faults::default()
    });
    let proxy = t.proxy.as_ref().unwrap();
    // The lease object is written to take it, to renew it every 10 s (a 30 s TTL), and to
    // release it. The run lasts about 12 s (20 calls of 600 ms): at least one renewal.
    proxy.faults().lose_first_replies = Some(".lease".into());
    let r = t
        .run(&["run", "--lease-ttl", "30s", "--flush-rows", "100"])
        .await;
    r.ok();
    let renewals = proxy
        .faults()
        .seen
        .iter()
        .filter(|(m, p, h)| {
            m == "PUT" && p.contains(".lease?") && h.iter().any(|(k, _)| k == "if-match")
        })
        .count();
    let lost = proxy.faults().replies_lost;
    // Taking, each renewal and the release each lost their first reply.
    assert!(lost >= 3, "{lost} replies lost");
    assert!(renewals >= 2, "no renewal: {renewals} conditional writes");
    assert!(!r.stderr.contains("lost the state lease"), "{}", r.stderr);
    t.assert_exact().await;
    let lease: serde_json::Value = serde_json::from_slice(
        &s3u::get(t.client(), BUCKET, &format!("{}.lease", t.state_key)).await,
    )
    .unwrap();
    assert_eq!(lease["expires_ms"], 0, "not released: {lease}");
    t.run(&["run"]).await.ok();
}

/// `verify` with an S3 `--state` where there is none: refused in one line, and nothing
/// written there (no state, no lease, no probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_a_missing_s3_state() {
    let t = T::new(Backend::S3Both, sim_config(1, 100, 0)).await;
    t.run(&["run"]).await.ok();
    let before = s3u::keys(t.client(), BUCKET).await;
    let r = Run::from(
        t.cmd_at(
            &format!("s3://{BUCKET}/team/stat/typo.db"),
            &t.output_arg(),
            &["verify"],
        )
        .output()
        .await
        .unwrap(),
    );
    r.code(1);
    assert!(r.last_line().contains("no state at s3://"), "{}", r.stderr);
    assert_eq!(s3u::keys(t.client(), BUCKET).await, before);
}

/// Saving the state at the end of a run fails: the run exits 1, and its summary and metrics
/// say it failed, with the line it ended on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_last_state_upload_fails_reports_failed() {
    let t = T::new(Backend::S3Both, sim_config(1, 200, 0)).await;
    let summary = t.env.dir.path().join("summary.json");
    let metrics = t.env.dir.path().join("archiver.prom");
    let (s, m) = (
        format!("--summary-json={}", summary.display()),
        format!("--metrics-file={}", metrics.display()),
    );
    let child = spawn_stopped(&t, &["run", &s, &m], "before_state_finish:1:stop").await;
    t.proxy.as_ref().unwrap().faults().deny_put_under = Some(t.state_key.clone());
    let r = resume(child).await;
    r.code(1);
    assert!(r.last_line().contains("uploading state"), "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(doc["outcome"], "failed", "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("uploading state"),
        "{doc}"
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "archiver_last_run_success{command=\"run\"} 0"),
        "{text}"
    );
}

/// Under the shipped policy, `s3:ListBucket` is allowed only under the job's prefix, so S3
/// answers a missing key 403, not 404 (404 is for callers that may list the bucket). The
/// first run (no state, no lease object yet) and the runs after it work all the same; a
/// state key outside the listable prefix, which cannot be told from a denied one, is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_works_under_a_prefix_scoped_list_bucket() {
    let t = T::new(Backend::S3Both, sim_config(2, 300, 3)).await;
    t.proxy.as_ref().unwrap().faults().list_only_under = Some("team/".into());
    t.run(&["run", "--flush-rows", "100"]).await.ok();
    t.assert_exact().await;
    let denied = t.proxy.as_ref().unwrap().faults().denied_missing;
    assert!(
        denied >= 2,
        "the state and its lease were missing: {denied} 403s"
    );
    t.env.sim.end_active(None, usize::MAX);
    t.env.sim.add_sessions(&t.env.portal(0), 40, 2);
    t.run(&["run"]).await.ok();
    t.assert_exact().await;

    // The state under a prefix the job may not list: its 403 is not "no state yet".
    let f = t.proxy.as_ref().unwrap();
    f.faults().list_only_under = Some("team/archive/".into());
    let r = Run::from(
        t.cmd_at(
            &format!("s3://{BUCKET}/elsewhere/state.db"),
            &t.output_arg(),
            &["run"],
        )
        .output()
        .await
        .unwrap(),
    );
    r.code(1);
    assert!(
        r.last_line().contains("denied"),
        "not a denial: {}",
        r.last_line()
    );
    // Not taken for a new state: none was written there (its lease object stays, released).
    let keys = s3u::keys(t.client(), BUCKET).await;
    assert!(!keys.iter().any(|k| k == "elsewhere/state.db"), "{keys:?}");
}
