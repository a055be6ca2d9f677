//! An archive on S3 Object Lock (WORM), against moto's S3 server on 127.0.0.1: the output
//! bucket is created with Object Lock and (mostly) a default retention, and the state and the
//! staged files live in another, unlocked bucket. moto refuses to delete a locked version
//! (403), turns a delete without a version into a delete marker, and refuses an upload under
//! a retention without a checksum header, as S3 does.
//!
//! Every request the binary makes to S3 goes through the test proxy, whose record says what
//! reached the locked bucket: no DELETE ever (but the one `verify --repair` sends for a delete
//! marker, naming the marker's version), and every PUT there a create-only write
//! (`If-None-Match: *`) with its SHA-256. The test's own checks go to moto directly.
//!
//! Truth is the simulator's record; the archive is downloaded and read back with parquet's
//! reader. Versions are ListObjectVersions; retention is HeadObject's (moto answers
//! GetObjectRetention with a 500).

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use archiver_simulator::Faults;
use aws_sdk_s3::types::{
    DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode,
    ObjectLockRule,
};
use util::s3::{self as s3u, FaultProxy, Moto};
use util::{aws_env, sim_config, Env, Run, BIN};

/// The locked output bucket, and the output under it.
const LOCKED: &str = "worm-archive";
const PREFIX: &str = "audit";
/// The unlocked bucket for the state and the staged files.
const WORK: &str = "worm-work";
/// An S3 state's key in `WORK` (its folder is then the default staging place).
const STATE_KEY: &str = "jobs/archiver.db";
/// `--staging` with a local state.
const STAGING: &str = "stage/area";

const DAY: u64 = 86_400;
const RETAIN_400D: u64 = 400 * DAY;

/// Where the state is, which decides where files are staged.
#[derive(Clone, Copy, Debug, PartialEq)]
enum StateAt {
    /// `s3://WORK/jobs/archiver.db`; staging defaults to `s3://WORK/jobs`.
    S3,
    /// A local file, with `--staging s3://WORK/stage/area`.
    Local,
}

/// A request the proxy forwarded, taken apart.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    bucket: String,
    /// Percent-decoded.
    key: String,
    query: String,
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// DeleteObject or DeleteObjects.
    fn is_delete(&self) -> bool {
        (self.method == "DELETE" && !self.query.contains("uploadId"))
            || (self.method == "POST" && self.query.split('&').any(|q| q == "delete"))
    }

    fn version_id(&self) -> Option<String> {
        self.query.split('&').find_map(|q| {
            q.strip_prefix("versionId=").map(|v| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    }
}

/// One entry of ListObjectVersions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ver {
    version_id: String,
    latest: bool,
    marker: bool,
}

/// A simulator, moto with the proxy in front, the two buckets, and how the binary is pointed
/// at them.
struct W {
    env: Env,
    _moto: Moto,
    proxy: FaultProxy,
    s3: aws_sdk_s3::Client,
    state: StateAt,
}

impl W {
    /// `LOCKED` with Object Lock and `rule` as its default retention (mode, days), `WORK`
    /// without.
    async fn new(rule: Option<(ObjectLockRetentionMode, i32)>, state: StateAt, sim: usize) -> W {
        let moto = Moto::start().await;
        let proxy = FaultProxy::start(&moto.endpoint).await;
        // moto ignores If-None-Match on CopyObject; the proxy answers 412 as S3 does, so a
        // publish by copy is held to S3's rule too.
        proxy.faults().copy_if_none_match = true;
        let s3 = s3u::client(&moto.endpoint);
        create_locked(&s3, LOCKED, rule).await;
        s3u::create_bucket(&s3, WORK).await;
        W {
            env: Env::new(sim_config(2, sim, 4)).await,
            _moto: moto,
            proxy,
            s3,
            state,
        }
    }

    fn output(&self) -> String {
        format!("s3://{LOCKED}/{PREFIX}")
    }

    fn state_arg(&self) -> String {
        match self.state {
            StateAt::S3 => format!("s3://{WORK}/{STATE_KEY}"),
            StateAt::Local => self.env.state().to_string_lossy().into_owned(),
        }
    }

    /// The staged files' prefix in `WORK` (`_staging/` goes under it).
    fn staging_prefix(&self) -> &'static str {
        match self.state {
            StateAt::S3 => "jobs",
            StateAt::Local => STAGING,
        }
    }

    fn cmd(&self, args: &[&str]) -> tokio::process::Command {
        let mut global = vec![
            "--state".to_string(),
            self.state_arg(),
            "--output".to_string(),
            self.output(),
        ];
        if self.state == StateAt::Local {
            global.extend(["--staging".to_string(), format!("s3://{WORK}/{STAGING}")]);
        }
        let mut all: Vec<&str> = global.iter().map(String::as_str).collect();
        all.extend(args);
        self.raw(&all)
    }

    /// The binary with exactly these arguments, pointed at the simulator and the proxy.
    fn raw(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(BIN);
        c.args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in aws_env(&self.env.sim.endpoint_url()) {
            c.env(k, v);
        }
        c.env("AWS_ENDPOINT_URL_S3", &self.proxy.endpoint)
            .env_remove("ARCHIVER_FAILPOINT")
            .env_remove("ARCHIVER_STAGING")
            .env_remove("ARCHIVER_RETAIN_FOR")
            .env_remove("ARCHIVER_LOCK_MODE")
            .env("TMPDIR", self.env.dir.path());
        c.kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().await.unwrap())
    }

    async fn run_raw(&self, args: &[&str]) -> Run {
        Run::from(self.raw(args).output().await.unwrap())
    }

    async fn run_crashing(&self, args: &[&str], failpoint: &str) -> Run {
        let mut c = self.cmd(args);
        c.env("ARCHIVER_FAILPOINT", failpoint);
        Run::from(c.output().await.unwrap())
    }

    /// New sessions in every portal, and some active ones ended.
    fn activity(&self, n: usize) {
        for p in self.env.sim.portal_ids() {
            self.env.sim.add_sessions(&p, n, 2);
        }
        self.env.sim.end_active(None, 2);
    }

    async fn archived(&self) -> Vec<util::Row> {
        let dir = self.env.dir.path().join("downloaded");
        s3u::download(&self.s3, LOCKED, PREFIX, &dir).await;
        util::read_dataset(&dir)
    }

    async fn assert_exact(&self) {
        util::assert_exact(&self.archived().await, &self.env.expected());
    }

    /// No session twice (after a kill: some may be missing until the next run).
    async fn assert_no_duplicate(&self, when: &str) {
        let rows = self.archived().await;
        let ids: BTreeSet<_> = rows.iter().map(|r| &r.session_id).collect();
        assert_eq!(ids.len(), rows.len(), "{when}: duplicated sessions");
    }

    /// Every request the proxy forwarded so far.
    fn requests(&self) -> Vec<Req> {
        self.proxy
            .faults()
            .seen
            .iter()
            .map(|(method, path, headers)| {
                let (path, query) = path.split_once('?').unwrap_or((path, ""));
                let path = path.trim_start_matches('/');
                let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
                Req {
                    method: method.clone(),
                    bucket: bucket.to_string(),
                    key: percent_encoding::percent_decode_str(key)
                        .decode_utf8_lossy()
                        .into_owned(),
                    query: query.to_string(),
                    headers: headers.clone(),
                }
            })
            .collect()
    }

    /// The requests to `bucket` from the `from`-th on.
    fn requests_to(&self, bucket: &str, from: usize) -> Vec<Req> {
        self.requests()
            .into_iter()
            .skip(from)
            .filter(|r| r.bucket == bucket)
            .collect()
    }

    fn seen(&self) -> usize {
        self.proxy.faults().seen.len()
    }

    /// Every key of `bucket` with its versions and delete markers.
    async fn versions(&self, bucket: &str) -> BTreeMap<String, Vec<Ver>> {
        versions(&self.s3, bucket).await
    }

    /// The locked bucket holds only the archive's own objects, each with exactly one version
    /// and no delete marker: no staged file, no probe, no state.
    async fn assert_one_version_each(&self, when: &str) {
        let all = self.versions(LOCKED).await;
        assert!(!all.is_empty(), "{when}: the locked bucket is empty");
        for (key, vers) in &all {
            let rel = key
                .strip_prefix(&format!("{PREFIX}/"))
                .unwrap_or_else(|| panic!("{when}: {key} is outside the output"));
            assert!(
                is_archived_key(rel),
                "{when}: {key} is not an archived object (staged, probe or state?)"
            );
            assert_eq!(
                vers.len(),
                1,
                "{when}: {key} has {} versions or delete markers: {vers:?}",
                vers.len()
            );
            assert!(!vers[0].marker && vers[0].latest, "{when}: {key}: {vers:?}");
        }
    }

    /// No delete of any kind reached the locked bucket from the `from`-th request on.
    fn assert_no_delete_on_locked(&self, from: usize, when: &str) {
        let deletes: Vec<String> = self
            .requests_to(LOCKED, from)
            .into_iter()
            .filter(Req::is_delete)
            .map(|r| format!("{} {}?{}", r.method, r.key, r.query))
            .collect();
        assert!(
            deletes.is_empty(),
            "{when}: deletes sent to the locked bucket: {deletes:?}"
        );
    }

    /// Every PUT to the locked bucket from the `from`-th request on wrote a new object once:
    /// create-only, with its SHA-256 (and the sdk checksum header moto, like S3, requires under
    /// a retention); with lock headers exactly when `explicit` names a mode; never a
    /// retention, legal hold or ACL change on an existing object.
    fn assert_writes_once(&self, from: usize, explicit: Option<&str>) {
        let puts: Vec<Req> = self
            .requests_to(LOCKED, from)
            .into_iter()
            .filter(|r| r.method == "PUT" || r.method == "POST")
            .collect();
        assert!(!puts.is_empty(), "no write reached the locked bucket");
        for r in &puts {
            let what = format!("{} {}?{}", r.method, r.key, r.query);
            assert!(
                r.method == "PUT" && !r.key.is_empty(),
                "{what}: not an object write (multipart or bucket call)"
            );
            for q in ["retention", "legal-hold", "acl", "tagging"] {
                assert!(
                    !r.query
                        .split('&')
                        .any(|p| p == q || p.starts_with(&format!("{q}="))),
                    "{what}: changes an existing object"
                );
            }
            assert_eq!(
                r.header("if-none-match"),
                Some("*"),
                "{what}: not create-only"
            );
            if r.header("x-amz-copy-source").is_some() {
                assert_eq!(
                    r.header("x-amz-checksum-algorithm"),
                    Some("SHA256"),
                    "{what}: a copy without SHA-256"
                );
            } else {
                assert!(
                    r.header("x-amz-checksum-sha256").is_some(),
                    "{what}: no x-amz-checksum-sha256"
                );
            }
            match explicit {
                Some(mode) => {
                    assert_eq!(
                        r.header("x-amz-object-lock-mode"),
                        Some(mode),
                        "{what}: lock mode"
                    );
                    assert!(
                        r.header("x-amz-object-lock-retain-until-date").is_some(),
                        "{what}: no retain-until date"
                    );
                }
                None => assert!(
                    r.header("x-amz-object-lock-mode").is_none()
                        && r.header("x-amz-object-lock-retain-until-date").is_none(),
                    "{what}: lock headers sent though the bucket's default applies"
                ),
            }
        }
    }

    /// Each of `keys` (full keys in the locked bucket) has `mode` and a retain-until date
    /// within `[from + keep - slack, to + keep + slack]`.
    async fn assert_retention(
        &self,
        keys: &BTreeSet<String>,
        mode: &str,
        keep: u64,
        (from, to): (u64, u64),
    ) {
        assert!(!keys.is_empty(), "no object to check");
        let slack = 5;
        for key in keys {
            let h = self
                .s3
                .head_object()
                .bucket(LOCKED)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("HEAD {key}: {e:?}"));
            assert_eq!(
                h.object_lock_mode().map(|m| m.as_str()),
                Some(mode),
                "{key}: lock mode"
            );
            let until = h
                .object_lock_retain_until_date()
                .unwrap_or_else(|| panic!("{key}: no retain-until date"))
                .secs() as u64;
            assert!(
                until + slack >= from + keep && until <= to + keep + slack,
                "{key}: retained until {until}, expected {}..={} (+{keep} s from the write)",
                from + keep,
                to + keep
            );
        }
    }

    /// The keys of the locked bucket now (every version's).
    async fn locked_keys(&self) -> BTreeSet<String> {
        self.versions(LOCKED).await.into_keys().collect()
    }

    /// Nothing is left staged in the work bucket after a clean end.
    async fn assert_nothing_staged(&self) {
        let staged = format!("{}/_staging/", self.staging_prefix());
        let left: Vec<String> = s3u::keys(&self.s3, WORK)
            .await
            .into_iter()
            .filter(|k| k.starts_with(&staged))
            .collect();
        assert!(left.is_empty(), "staged objects left: {left:?}");
        assert!(
            s3u::uploads(&self.s3, WORK).await.is_empty(),
            "multipart uploads left in the work bucket"
        );
    }

    /// Rewrite an S3 state's lease as expired (what waiting out its TTL would do).
    async fn expire_lease(&self) {
        if self.state != StateAt::S3 {
            return;
        }
        let key = format!("{STATE_KEY}.lease");
        let mut lease: serde_json::Value =
            serde_json::from_slice(&s3u::get(&self.s3, WORK, &key).await).unwrap();
        lease["expires_ms"] = serde_json::json!(1);
        s3u::put(&self.s3, WORK, &key, serde_json::to_vec(&lease).unwrap()).await;
    }
}

/// A bucket with Object Lock, and `rule` (mode, days) as its default retention.
async fn create_locked(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    rule: Option<(ObjectLockRetentionMode, i32)>,
) {
    c.create_bucket()
        .bucket(bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    if let Some((mode, days)) = rule {
        c.put_object_lock_configuration()
            .bucket(bucket)
            .object_lock_configuration(
                ObjectLockConfiguration::builder()
                    .object_lock_enabled(ObjectLockEnabled::Enabled)
                    .rule(
                        ObjectLockRule::builder()
                            .default_retention(
                                DefaultRetention::builder().mode(mode).days(days).build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
}

/// Every key of `bucket` with its versions and delete markers (ListObjectVersions, paged).
async fn versions(c: &aws_sdk_s3::Client, bucket: &str) -> BTreeMap<String, Vec<Ver>> {
    let mut out: BTreeMap<String, Vec<Ver>> = BTreeMap::new();
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let page = c
            .list_object_versions()
            .bucket(bucket)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
            .unwrap();
        for v in page.versions() {
            out.entry(v.key().unwrap().to_string())
                .or_default()
                .push(Ver {
                    version_id: v.version_id().unwrap_or_default().to_string(),
                    latest: v.is_latest() == Some(true),
                    marker: false,
                });
        }
        for m in page.delete_markers() {
            out.entry(m.key().unwrap().to_string())
                .or_default()
                .push(Ver {
                    version_id: m.version_id().unwrap_or_default().to_string(),
                    latest: m.is_latest() == Some(true),
                    marker: true,
                });
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// A key relative to the output that archiver publishes: data, manifests, claims, digests.
fn is_archived_key(rel: &str) -> bool {
    (rel.starts_with("sessions/portal_id=") && rel.ends_with(".parquet"))
        || (rel.starts_with("_manifest/portal_id=") && rel.ends_with(".json"))
        || (rel.starts_with("_claim/portal_id=") && rel.ends_with(".json"))
        || (rel.starts_with("_digest/state_id=") && rel.ends_with(".json"))
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Each kind of archived object is among `keys`.
fn assert_every_kind(keys: &BTreeSet<String>) {
    for kind in ["sessions/", "_manifest/", "_claim/", "_digest/"] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("{PREFIX}/{kind}"))),
            "no {kind} object among {} keys",
            keys.len()
        );
    }
}

/// A run that failed with one error line (the last) containing each of `needles`; no other
/// line of stderr is an error.
#[track_caller]
fn one_error_line(r: &Run, needles: &[&str]) {
    assert_eq!(r.code, 1, "exit {}\nstderr:\n{}", r.code, r.stderr);
    let last = r.last_line();
    assert!(
        last.starts_with("archiver: error: "),
        "last line is not the error: {}",
        r.stderr
    );
    for n in needles {
        assert!(last.contains(n), "{n:?} not in the error line: {last}");
    }
    let errors = r
        .stderr
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("archiver: error"))
        .count();
    assert_eq!(errors, 1, "more than one error line:\n{}", r.stderr);
}

const RUN: [&str; 3] = ["run", "--flush-rows", "300"];

/// A backfill, then incremental runs with activity between, and a run with nothing new, on a
/// bucket whose default retention (governance, 1 day) applies: exact after each; every
/// archived key has one version, every write was create-only with its SHA-256 and no lock
/// header, each object is locked for a day from its write, no DELETE reached the locked
/// bucket (the staged copies were deleted from the work bucket), nothing is left staged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_default_retention_archives_exactly_once_and_deletes_nothing() {
    let w = W::new(
        Some((ObjectLockRetentionMode::Governance, 1)),
        StateAt::S3,
        900,
    )
    .await;
    let started = now_s();
    let r = w.run(&RUN).await;
    r.ok();
    assert!(
        r.stderr.contains(&format!(
            "output s3://{LOCKED}/{PREFIX} has Object Lock: each object is kept 1 day after it is written (governance mode, the bucket's default retention)"
        )),
        "no line saying what retention objects get:\n{}",
        r.stderr
    );
    w.assert_exact().await;
    w.assert_one_version_each("after the backfill").await;
    for i in 0..2 {
        w.activity(250);
        w.run(&RUN).await.ok();
        w.assert_exact().await;
        w.assert_one_version_each(&format!("after incremental run {i}"))
            .await;
    }
    // Nothing new: still one version each (nothing rewritten).
    w.run(&RUN).await.ok();
    w.assert_exact().await;
    w.assert_one_version_each("after an idle run").await;
    let ended = now_s();

    let keys = w.locked_keys().await;
    assert_every_kind(&keys);
    w.assert_retention(&keys, "GOVERNANCE", DAY, (started, ended))
        .await;
    w.assert_no_delete_on_locked(0, "run");
    w.assert_writes_once(0, None);
    // The proxy saw the run's other deletes: the staged copies, in the work bucket.
    let staged_deletes = w
        .requests_to(WORK, 0)
        .into_iter()
        .filter(|r| r.is_delete() && r.key.starts_with("jobs/_staging/"))
        .count();
    assert!(
        staged_deletes > 0,
        "no staged copy deleted from the work bucket: the proxy saw no delete at all?"
    );
    w.assert_nothing_staged().await;
    // verify agrees, and reads only.
    let from = w.seen();
    w.run(&["verify"]).await.ok();
    let sent: Vec<String> = w
        .requests_to(LOCKED, from)
        .into_iter()
        .filter(|r| r.method != "GET" && r.method != "HEAD")
        .map(|r| format!("{} {}", r.method, r.key))
        .collect();
    assert!(
        sent.is_empty(),
        "verify sent to the locked bucket: {sent:?}"
    );
}

/// `--retain-for 400d --lock-mode compliance` on a bucket whose default is governance (a
/// local state, `--staging` in the work bucket): every object is in compliance mode until 400
/// days after its write, sent with the write; exact over a backfill and an incremental run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_for_in_compliance_mode_overrides_the_bucket_default() {
    let w = W::new(
        Some((ObjectLockRetentionMode::Governance, 1)),
        StateAt::Local,
        700,
    )
    .await;
    let args = [
        "run",
        "--flush-rows",
        "300",
        "--retain-for",
        "400d",
        "--lock-mode",
        "compliance",
    ];
    let started = now_s();
    let r = w.run(&args).await;
    r.ok();
    assert!(
        r.stderr.contains(&format!(
            "output s3://{LOCKED}/{PREFIX} has Object Lock: each object is kept"
        )) && r.stderr.contains("(compliance mode, --retain-for)"),
        "no line saying what retention objects get:\n{}",
        r.stderr
    );
    w.activity(250);
    w.run(&args).await.ok();
    let ended = now_s();
    w.assert_exact().await;
    w.assert_one_version_each("after two runs").await;
    let keys = w.locked_keys().await;
    assert_every_kind(&keys);
    w.assert_retention(&keys, "COMPLIANCE", RETAIN_400D, (started, ended))
        .await;
    w.assert_no_delete_on_locked(0, "run");
    w.assert_writes_once(0, Some("COMPLIANCE"));
    w.assert_nothing_staged().await;
}

/// On a bucket whose default is compliance for a day: a first run gets the default
/// (compliance, 1 day, no lock header); a second with `--retain-for 400d --lock-mode
/// governance` gives its own new objects governance for 400 days, and leaves the older ones
/// as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_default_then_retain_for_in_governance_mode() {
    let w = W::new(
        Some((ObjectLockRetentionMode::Compliance, 1)),
        StateAt::S3,
        600,
    )
    .await;
    let t0 = now_s();
    let r = w.run(&RUN).await;
    r.ok();
    assert!(
        r.stderr
            .contains("each object is kept 1 day after it is written (compliance mode, the bucket's default retention)"),
        "{}",
        r.stderr
    );
    let t1 = now_s();
    let first = w.locked_keys().await;
    let seen = w.seen();
    w.assert_writes_once(0, None);

    w.activity(250);
    let r = w
        .run(&[
            "run",
            "--flush-rows",
            "300",
            "--retain-for",
            "400d",
            "--lock-mode",
            "governance",
        ])
        .await;
    r.ok();
    assert!(
        r.stderr.contains("(governance mode, --retain-for)"),
        "{}",
        r.stderr
    );
    let t2 = now_s();
    w.assert_writes_once(seen, Some("GOVERNANCE"));
    let second: BTreeSet<String> = w.locked_keys().await.difference(&first).cloned().collect();
    assert!(
        second
            .iter()
            .any(|k| k.starts_with(&format!("{PREFIX}/sessions/"))),
        "the second run published no file"
    );
    w.assert_retention(&first, "COMPLIANCE", DAY, (t0, t1))
        .await;
    w.assert_retention(&second, "GOVERNANCE", RETAIN_400D, (t1, t2))
        .await;
    w.assert_exact().await;
    w.assert_one_version_each("after both runs").await;
    w.assert_no_delete_on_locked(0, "both runs");
    w.assert_nothing_staged().await;
}

/// Killed (abort, like `kill -9`) at every failpoint a run passes, with activity between,
/// then SIGKILLed at random moments: after each kill no session is archived twice and every
/// key of the locked bucket still has one version; the next clean run is exact; no DELETE
/// ever reached the locked bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_failpoint_then_resumed_is_exact_with_one_version_each() {
    let w = W::new(
        Some((ObjectLockRetentionMode::Governance, 1)),
        StateAt::S3,
        1200,
    )
    .await;
    let args = ["run", "--flush-rows", "200"];
    let started = now_s();
    for point in [
        "after_page:3",
        "after_stage:2",
        "after_local_commit:2",
        "after_commit:2",
        "after_manifest:2",
        "manifest_before_record:2",
        "s3_after_copy:2",
        "after_publish:2",
        "after_recover:1",
        "digest_stored_locally:1",
        "digest_stored:1",
        "digest_written:1",
        "before_state_finish:1",
    ] {
        let r = w.run_crashing(&args, point).await;
        assert_eq!(
            r.code, 134,
            "{point}: the failpoint did not fire\n{}",
            r.stderr
        );
        w.expire_lease().await;
        w.assert_no_duplicate(point).await;
        w.assert_one_version_each(&format!("killed at {point}"))
            .await;
        w.assert_no_delete_on_locked(0, point);
        w.activity(250);
    }
    w.env.sim.set_faults(Faults {
        latency_ms: 10,
        ..Faults::default()
    });
    let mut kills = 0;
    for (i, wait_ms) in [150u64, 400, 60, 250, 700].into_iter().enumerate() {
        w.activity(200);
        let log = w.env.dir.path().join(format!("run-{i}.stderr"));
        let mut child = w
            .cmd(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(wait_ms), child.wait())
            .await
            .is_err()
        {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
            kills += 1;
            w.expire_lease().await;
        } else {
            assert_eq!(
                child.wait().await.unwrap().code(),
                Some(0),
                "run {i} failed\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        w.assert_no_duplicate(&format!("SIGKILL {i}")).await;
        w.assert_one_version_each(&format!("SIGKILL {i}")).await;
    }
    assert!(kills >= 3, "only {kills} SIGKILLs landed");
    w.env.sim.set_faults(Faults::default());
    w.run(&args).await.ok();
    let ended = now_s();
    w.assert_exact().await;
    w.assert_one_version_each("after the last run").await;
    w.assert_no_delete_on_locked(0, "every run");
    w.assert_writes_once(0, None);
    let keys = w.locked_keys().await;
    w.assert_retention(&keys, "GOVERNANCE", DAY, (started, ended))
        .await;
    w.assert_nothing_staged().await;
}

/// What `verify --json` says, and its exit code.
async fn verify_json(w: &W, extra: &[&str]) -> (i32, serde_json::Value, Run) {
    let mut args = vec!["verify", "--json"];
    args.extend(extra);
    let r = w.run(&args).await;
    let v = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "verify --json: {e}\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        )
    });
    (r.code, v, r)
}

/// Delete markers placed over `keys` (relative to the output) by someone with the bucket's
/// ordinary delete permission: `(key, marker version)`.
async fn hide(w: &W, keys: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rel in keys {
        let d =
            w.s3.delete_object()
                .bucket(LOCKED)
                .key(format!("{PREFIX}/{rel}"))
                .send()
                .await
                .unwrap();
        assert_eq!(d.delete_marker(), Some(true), "{rel}: no delete marker");
        out.push((rel.to_string(), d.version_id().unwrap().to_string()));
    }
    out
}

/// A run, then delete markers over `victims` (`layers` of them on each): `verify` finds them
/// (exit 3, each key named, `delete_markers` in `--json`) and sends no delete; `verify
/// --repair` removes exactly those markers (one DELETE naming each marker's version, nothing
/// else deleted), writes nothing again (only its digest is new), and the files are back: each
/// key has its one version, current again, and `verify` exits 0; the archive is exact.
async fn markers_found_and_removed(state: StateAt, layers: usize) {
    let w = W::new(Some((ObjectLockRetentionMode::Governance, 1)), state, 600).await;
    w.run(&RUN).await.ok();
    w.run(&["verify"]).await.ok();
    let before = w.versions(LOCKED).await;
    let rel = |k: &String| k.strip_prefix(&format!("{PREFIX}/")).unwrap().to_string();
    let file = before
        .keys()
        .filter(|k| k.ends_with(".parquet"))
        .nth(1)
        .map(rel)
        .expect("a published file");
    let manifest = before
        .keys()
        .rfind(|k| k.contains("/_manifest/"))
        .map(rel)
        .expect("a manifest");
    let mut victims = vec![file.clone(), manifest.clone()];
    victims.sort();
    let mut markers = Vec::new();
    for _ in 0..layers {
        markers.extend(hide(&w, &[file.as_str(), manifest.as_str()]).await);
    }
    for v in &victims {
        let h =
            w.s3.head_object()
                .bucket(LOCKED)
                .key(format!("{PREFIX}/{v}"))
                .send()
                .await;
        assert!(h.is_err(), "{v} still readable under its delete marker");
    }

    let from = w.seen();
    let r = w.run(&["verify"]).await;
    r.code(3);
    for v in &victims {
        assert!(
            r.stdout
                .contains(&format!("hidden by a delete marker: {v}")),
            "{v} not named:\nstdout:\n{}\nstderr:\n{}",
            r.stdout,
            r.stderr
        );
    }
    let (code, json, _) = verify_json(&w, &[]).await;
    assert_eq!(code, 3);
    let named: Vec<String> = json["delete_markers"]
        .as_array()
        .unwrap_or_else(|| panic!("no delete_markers in {json}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(named, victims, "delete_markers");
    // The offline walk (no state, no service) finds them too.
    let (code, json, r) = verify_json(&w, &["--offline"]).await;
    assert_eq!(code, 3, "verify --offline\n{}", r.stderr);
    assert_eq!(
        json["delete_markers"],
        serde_json::json!(victims),
        "verify --offline"
    );
    w.assert_no_delete_on_locked(from, "verify");

    let from = w.seen();
    let r = w.run(&["verify", "--repair"]).await;
    r.ok();
    // Exactly one DELETE per marker, each naming the marker's version; no other delete.
    let mut deleted: Vec<(String, String)> = w
        .requests_to(LOCKED, from)
        .into_iter()
        .filter(Req::is_delete)
        .map(|r| {
            let id = r
                .version_id()
                .unwrap_or_else(|| panic!("a delete without a version: {r:?}"));
            (rel(&r.key), id)
        })
        .collect();
    deleted.sort();
    markers.sort();
    assert_eq!(deleted, markers, "deletes sent by verify --repair");
    let bypass = w
        .requests()
        .into_iter()
        .filter(|r| r.header("x-amz-bypass-governance-retention").is_some())
        .count();
    assert_eq!(bypass, 0, "a request bypassed governance retention");
    // Nothing written again: the only new objects are the repair's digest.
    let writes: Vec<String> = w
        .requests_to(LOCKED, from)
        .into_iter()
        .filter(|r| r.method == "PUT" || r.method == "POST")
        .map(|r| r.key)
        .filter(|k| !k.starts_with(&format!("{PREFIX}/_digest/")))
        .collect();
    assert!(writes.is_empty(), "verify --repair wrote again: {writes:?}");
    let after = w.versions(LOCKED).await;
    for (key, vers) in &before {
        assert_eq!(after.get(key), Some(vers), "{key}: versions changed");
    }
    for key in after.keys().filter(|k| !before.contains_key(*k)) {
        assert!(
            key.starts_with(&format!("{PREFIX}/_digest/")),
            "new object {key}"
        );
    }
    w.assert_one_version_each("after the repair").await;
    for v in &victims {
        w.s3.head_object()
            .bucket(LOCKED)
            .key(format!("{PREFIX}/{v}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{v} is not back: {e:?}"));
    }
    let (code, json, r) = verify_json(&w, &[]).await;
    assert_eq!(code, 0, "{json}\n{}", r.stderr);
    assert!(
        json.get("delete_markers")
            .is_none_or(|m| m.as_array().is_some_and(|a| a.is_empty())),
        "{json}"
    );
    w.assert_exact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_marker_over_a_file_and_a_manifest_is_found_and_removed_by_repair() {
    markers_found_and_removed(StateAt::Local, 1).await;
}

/// A key deleted twice has two markers: the repair must remove both for the file to be back
/// (and must not write its sessions again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_delete_markers_over_one_key_are_both_removed_by_repair() {
    markers_found_and_removed(StateAt::S3, 2).await;
}

/// `compact` on a locked output: exit 1, one line saying why, and nothing changed (same keys,
/// same versions), no write and no delete sent to the locked bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_refuses_on_a_locked_output_and_changes_nothing() {
    let w = W::new(
        Some((ObjectLockRetentionMode::Governance, 1)),
        StateAt::Local,
        600,
    )
    .await;
    w.run(&RUN).await.ok();
    let before = w.versions(LOCKED).await;
    let from = w.seen();
    let r = w.run(&["compact", "--older-than", "0s"]).await;
    one_error_line(
        &r,
        &[
            &format!("compact: s3://{LOCKED}/{PREFIX} has Object Lock"),
            "nothing was changed",
        ],
    );
    assert_eq!(
        w.versions(LOCKED).await,
        before,
        "the locked bucket changed"
    );
    let sent: Vec<String> = w
        .requests_to(LOCKED, from)
        .into_iter()
        .filter(|r| r.method != "GET" && r.method != "HEAD")
        .map(|r| format!("{} {}", r.method, r.key))
        .collect();
    assert!(
        sent.is_empty(),
        "compact sent to the locked bucket: {sent:?}"
    );
    w.assert_exact().await;
}

/// Set-ups that would leave locked objects behind, or none locked, each fail in one line
/// before anything is fetched or archived: `--retain-for` on a bucket without Object Lock; a
/// locked bucket with no default retention and no `--retain-for`; a locked output with a local
/// state and no `--staging`; `--staging` in the locked bucket, or in another locked bucket;
/// the state in the locked bucket. Then the locked bucket without a default, given
/// `--retain-for 400d`, archives exactly in governance mode (the default mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_set_ups_fail_in_one_line_before_archiving() {
    const NODEF: &str = "worm-no-default";
    const PLAIN: &str = "plain-archive";
    const LOCKED2: &str = "worm-staging";
    let w = W::new(
        Some((ObjectLockRetentionMode::Governance, 1)),
        StateAt::Local,
        300,
    )
    .await;
    create_locked(&w.s3, NODEF, None).await;
    s3u::create_bucket(&w.s3, PLAIN).await;
    create_locked(
        &w.s3,
        LOCKED2,
        Some((ObjectLockRetentionMode::Governance, 1)),
    )
    .await;
    // A new state for each case: a state keeps the output it was first used with.
    let local = |i: usize| {
        w.env
            .dir
            .path()
            .join(format!("state-{i}.db"))
            .to_string_lossy()
            .into_owned()
    };
    let locked_out = format!("s3://{LOCKED}/{PREFIX}");
    let staging = format!("s3://{WORK}/{STAGING}");
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        (
            "--retain-for on a bucket without Object Lock",
            vec![
                "--state".into(),
                local(1),
                "--output".into(),
                format!("s3://{PLAIN}/{PREFIX}"),
                "--retain-for".into(),
                "400d".into(),
            ],
            vec!["--retain-for", PLAIN, "no Object Lock"],
        ),
        (
            "a locked bucket without default retention, no --retain-for",
            vec![
                "--state".into(),
                local(2),
                "--output".into(),
                format!("s3://{NODEF}/{PREFIX}"),
                "--staging".into(),
                staging.clone(),
            ],
            vec![NODEF, "no default retention", "--retain-for"],
        ),
        (
            "a local state and no --staging",
            vec![
                "--state".into(),
                local(3),
                "--output".into(),
                locked_out.clone(),
            ],
            vec![LOCKED, "--staging"],
        ),
        (
            "--staging in the locked bucket",
            vec![
                "--state".into(),
                local(4),
                "--output".into(),
                locked_out.clone(),
                "--staging".into(),
                format!("s3://{LOCKED}/stage"),
            ],
            vec![LOCKED, "Object Lock", "--staging"],
        ),
        (
            "--staging in another locked bucket",
            vec![
                "--state".into(),
                format!("s3://{WORK}/jobs/state-5.db"),
                "--output".into(),
                locked_out.clone(),
                "--staging".into(),
                format!("s3://{LOCKED2}/stage"),
            ],
            vec![LOCKED2, "Object Lock", "--staging"],
        ),
        (
            "the state in the locked bucket",
            vec![
                "--state".into(),
                format!("s3://{LOCKED}/jobs/archiver.db"),
                "--output".into(),
                locked_out.clone(),
                "--staging".into(),
                staging.clone(),
            ],
            vec![LOCKED, "state"],
        ),
    ];
    for (what, global, needles) in cases {
        let mut args: Vec<&str> = global.iter().map(String::as_str).collect();
        args.push("run");
        let from = w.seen();
        let r = w.run_raw(&args).await;
        eprintln!("{what}: {}", r.last_line());
        one_error_line(&r, &needles);
        assert_eq!(
            w.env.sim.stats().list_sessions_calls,
            0,
            "{what}: sessions were fetched"
        );
        for bucket in [LOCKED, NODEF, LOCKED2, PLAIN] {
            let left = w.versions(bucket).await;
            assert!(left.is_empty(), "{what}: left in {bucket}: {left:?}");
            let sent: Vec<String> = w
                .requests_to(bucket, from)
                .into_iter()
                .filter(|r| r.method != "GET" && r.method != "HEAD")
                .map(|r| format!("{} {}", r.method, r.key))
                .collect();
            assert!(sent.is_empty(), "{what}: sent to {bucket}: {sent:?}");
        }
    }

    // The bucket without a default, with --retain-for: governance unless told, 400 days.
    let started = now_s();
    let r = w
        .run_raw(&[
            "--state",
            &local(7),
            "--output",
            &format!("s3://{NODEF}/{PREFIX}"),
            "--staging",
            &staging,
            "--retain-for",
            "400d",
            "run",
        ])
        .await;
    r.ok();
    assert!(
        r.stderr.contains("(governance mode, --retain-for)"),
        "{}",
        r.stderr
    );
    let ended = now_s();
    let dir = w.env.dir.path().join("nodef");
    s3u::download(&w.s3, NODEF, PREFIX, &dir).await;
    util::assert_exact(&util::read_dataset(&dir), &w.env.expected());
    let all = w.versions(NODEF).await;
    for (key, vers) in &all {
        assert!(
            is_archived_key(key.strip_prefix(&format!("{PREFIX}/")).unwrap()),
            "{key}"
        );
        assert_eq!(vers.len(), 1, "{key}: {vers:?}");
        let h =
            w.s3.head_object()
                .bucket(NODEF)
                .key(key)
                .send()
                .await
                .unwrap();
        assert_eq!(
            h.object_lock_mode().map(|m| m.as_str()),
            Some("GOVERNANCE"),
            "{key}"
        );
        let until = h.object_lock_retain_until_date().unwrap().secs() as u64;
        assert!(
            until + 5 >= started + RETAIN_400D && until <= ended + RETAIN_400D + 5,
            "{key}: retained until {until}"
        );
    }
    let deletes: Vec<Req> = w
        .requests_to(NODEF, 0)
        .into_iter()
        .filter(Req::is_delete)
        .collect();
    assert!(deletes.is_empty(), "deletes sent to {NODEF}: {deletes:?}");
}

/// A file over the part size, published into a locked bucket: a multipart upload to its final
/// key, completed only if the key is free, so a replayed publish (a lost reply, a run killed
/// before the staged copy was deleted) leaves one version; the staged copy is read from and
/// deleted in the staging bucket, and nothing else is ever in the locked one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_part_size_is_written_once_in_parts() {
    use archiver::config::{Output, S3Options, S3Url};
    use archiver::sink::{Role, Sink};
    let moto = Moto::start().await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let c = s3u::client(&moto.endpoint);
    create_locked(&c, LOCKED, Some((ObjectLockRetentionMode::Governance, 1))).await;
    s3u::create_bucket(&c, WORK).await;
    let opts = S3Options {
        part_size: 5 * 1024 * 1024,
        staging: Some(S3Url::parse(&format!("s3://{WORK}/{STAGING}"), "--staging").unwrap()),
        ..S3Options::default()
    };
    let out = Output::parse(&format!("s3://{LOCKED}/{PREFIX}")).unwrap();
    let via_proxy = s3u::client(&proxy.endpoint);
    let sink = Sink::open(&out, Some(&via_proxy), &opts, Role::Output)
        .await
        .unwrap();
    assert!(sink.lock().is_some());
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
    // Replayed with the staged copy still there: the second completion is refused (the key is
    // taken) and recognised as this file's own.
    sink.publish(staged.clone(), fin.clone()).await.unwrap();
    s3u::put(&c, WORK, &format!("{STAGING}/{staged}"), big.clone()).await;
    sink.publish(staged.clone(), fin.clone()).await.unwrap();
    assert_eq!(s3u::get(&c, LOCKED, &format!("{PREFIX}/{fin}")).await, big);
    let vs = versions(&c, LOCKED).await;
    assert_eq!(
        vs.keys().cloned().collect::<Vec<_>>(),
        vec![format!("{PREFIX}/{fin}")],
        "only the final file is in the locked bucket: {vs:?}"
    );
    assert_eq!(vs.values().next().unwrap().len(), 1, "one version: {vs:?}");
    assert!(
        s3u::uploads(&c, LOCKED).await.is_empty(),
        "no upload left open"
    );
    assert!(
        !s3u::keys(&c, WORK)
            .await
            .iter()
            .any(|k| k.contains("part-a")),
        "the staged copy is deleted"
    );
    let seen = proxy.faults().seen.clone();
    let in_locked = |m: &str| {
        seen.iter()
            .filter(|(method, p, _)| method == m && p.starts_with(&format!("/{LOCKED}/")))
            .count()
    };
    assert_eq!(in_locked("DELETE"), 1, "only the refused upload's abort");
    assert!(seen
        .iter()
        .filter(|(m, p, _)| m == "DELETE" && p.starts_with(&format!("/{LOCKED}/")))
        .all(|(_, p, _)| p.contains("uploadId=")));
    let completions: Vec<_> = seen
        .iter()
        .filter(|(m, p, _)| {
            m == "POST" && p.starts_with(&format!("/{LOCKED}/")) && p.contains("uploadId=")
        })
        .collect();
    assert_eq!(completions.len(), 2);
    assert!(completions
        .iter()
        .all(|(_, _, h)| h.iter().any(|(k, v)| k == "if-none-match" && v == "*")));
}

/// A session archived twice into locked files (as a copy that a manifest records would be)
/// cannot be rewritten: `verify` counts it as duplicated (exit 3); `verify --repair` sends no
/// delete and writes no file, and records it as kept; from then on `verify` counts it under
/// `kept_duplicates`, not as a difference, and the portal is ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_in_locked_files_are_reported_and_kept_not_counted_twice() {
    let w = W::new(
        Some((ObjectLockRetentionMode::Governance, 1)),
        StateAt::Local,
        600,
    )
    .await;
    w.run(&RUN).await.ok();
    let keys = w.locked_keys().await;
    // A file of an older day (the newest may still receive sessions), copied under a new name
    // with a manifest recording it.
    let file = keys
        .iter()
        .find(|k| k.ends_with(".parquet"))
        .expect("a published file")
        .clone();
    let portal = file
        .split('/')
        .find_map(|s| s.strip_prefix("portal_id="))
        .unwrap()
        .to_string();
    let bytes = s3u::get(&w.s3, LOCKED, &file).await;
    let rows = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(bytes.clone()),
    )
    .unwrap()
    .metadata()
    .file_metadata()
    .num_rows() as u64;
    let copy = file.replace(".parquet", "-copy.parquet");
    let rel = |k: &str| k.strip_prefix(&format!("{PREFIX}/")).unwrap().to_string();
    let manifest = serde_json::json!({
        "version": 1,
        "portal_id": portal,
        "state_id": "teststate",
        "seq": 1,
        "kind": "flush",
        "files": [{
            "path": rel(&copy),
            "rows": rows,
            "bytes": bytes.len(),
            "sha256": archiver::sink::manifest::sha256_hex(&bytes),
        }],
        "replaces": [],
    });
    for (key, body) in [
        (copy.clone(), bytes.clone()),
        (
            format!("{PREFIX}/_manifest/portal_id={portal}/teststate-0000000001.json"),
            serde_json::to_vec(&manifest).unwrap(),
        ),
    ] {
        w.s3.put_object()
            .bucket(LOCKED)
            .key(key)
            .body(body.into())
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .send()
            .await
            .unwrap();
    }
    let portal_of = |json: &serde_json::Value| -> serde_json::Value {
        json["portals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["portal_id"] == portal.as_str())
            .unwrap_or_else(|| panic!("no portal {portal} in {json}"))
            .clone()
    };
    let (code, json, _) = verify_json(&w, &[]).await;
    assert_eq!(code, 3);
    let p = portal_of(&json);
    assert_eq!(p["duplicated"], rows, "{p}");
    assert_eq!(p["kept_duplicates"], 0, "{p}");
    assert_eq!(p["ok"], false);

    let before = w.versions(LOCKED).await;
    let from = w.seen();
    // The hand-written manifest is in no digest: the proof's finding, not the portal's.
    let (_, json, r) = verify_json(&w, &["--repair"]).await;
    let p = portal_of(&json);
    assert_eq!(p["repaired"]["duplicates_kept"], rows, "{p}\n{}", r.stderr);
    assert_eq!(p["repaired"]["partitions_rewritten"], 0, "{p}");
    assert_eq!(p["duplicated"], 0, "{p}");
    assert_eq!(p["kept_duplicates"], rows, "{p}");
    assert_eq!(p["ok"], true, "{p}");
    w.assert_no_delete_on_locked(from, "verify --repair");
    let after = w.versions(LOCKED).await;
    for key in after.keys().filter(|k| !before.contains_key(*k)) {
        assert!(
            key.starts_with(&format!("{PREFIX}/_digest/")),
            "verify --repair wrote {key}"
        );
    }
    // Recorded: a later verify counts them as kept, once.
    let (_, json, _) = verify_json(&w, &[]).await;
    let p = portal_of(&json);
    assert_eq!(p["duplicated"], 0, "{p}");
    assert_eq!(p["kept_duplicates"], rows, "{p}");
    assert_eq!(p["ok"], true, "{p}");
}
