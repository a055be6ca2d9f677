//! Helpers for the end-to-end tests: run the real binary against a simulator on 127.0.0.1,
//! read the archive back with an independent Parquet reader, compare with the simulator.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use archiver_simulator::{SimConfig, SimSession, Simulator};

pub mod kms;
pub mod s3;

pub const BIN: &str = env!("CARGO_BIN_EXE_archiver");

/// A test's working folder with its state and archive.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub sim: Simulator,
}

impl Env {
    pub async fn new(cfg: SimConfig) -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            sim: Simulator::start(cfg).await.unwrap(),
        }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    pub fn archive(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    pub fn portal(&self, i: usize) -> String {
        self.sim.portal_ids()[i].clone()
    }

    /// A command for the binary with this env's state, output and simulator.
    pub fn cmd(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(BIN);
        c.arg("--state")
            .arg(self.state())
            .arg("--output")
            .arg(self.archive())
            .args(args);
        for (k, v) in aws_env(&self.sim.endpoint_url()) {
            c.env(k, v);
        }
        c.env_remove("ARCHIVER_FAILPOINT");
        c.kill_on_drop(true);
        c
    }

    /// Run to completion.
    pub async fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().await.unwrap())
    }

    /// Run with a failpoint armed (the process aborts there).
    pub async fn run_crashing(&self, args: &[&str], failpoint: &str) -> Run {
        let mut c = self.cmd(args);
        c.env("ARCHIVER_FAILPOINT", failpoint);
        Run::from(c.output().await.unwrap())
    }

    /// The rows the archive holds, read back from the Parquet files.
    pub fn archived(&self) -> Vec<Row> {
        read_dataset(&self.archive())
    }

    /// What the archive must hold: every terminated session the service lists.
    pub fn expected(&self) -> BTreeMap<String, SimSession> {
        let cutoff = self.sim.retention_cutoff_ms();
        self.sim
            .record()
            .into_iter()
            .filter(|s| s.status == "Terminated" && s.start_time_ms >= cutoff)
            .map(|s| (s.session_id.clone(), s))
            .collect()
    }

    /// Write [`Env::expected`] as JSON for the Python checks; returns the file and the count.
    pub fn write_expected(&self) -> (PathBuf, usize) {
        let expected: Vec<SimSession> = self.expected().into_values().collect();
        let path = self.dir.path().join("expected.json");
        std::fs::write(&path, serde_json::to_vec(&expected).unwrap()).unwrap();
        (path, expected.len())
    }

    /// The archive holds each expected session exactly once, with the simulator's values, in
    /// the right partition.
    pub fn assert_exact(&self) {
        assert_exact(&self.archived(), &self.expected());
    }
}

/// The test venv's python (`ARCHIVER_TEST_PYTHON`, set by `tests/run`), checked to import
/// `modules` (e.g. `"pyarrow, duckdb"`): a test that needs them fails, never skips.
pub fn python_with(modules: &str) -> String {
    let py = std::env::var("ARCHIVER_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}; run the tests through tests/run"));
    assert!(
        probe.status.success(),
        "{py} lacks {modules}: run the tests through tests/run\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    py
}

/// Run Python with pyarrow on `code`, with `args` as sys.argv[1:]; it must succeed.
pub fn pyarrow(code: &str, args: &[&Path]) {
    let py = python_with("pyarrow");
    let out = std::process::Command::new(py)
        .args(["-c", code])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rewrites the Parquet file argv[1] with its first row's username changed (pyarrow).
pub const CHANGE_A_USERNAME: &str = "import sys, pyarrow as pa, pyarrow.parquet as pq
f = sys.argv[1]
t = pq.read_table(f, partitioning=None)
users = t.column('username').to_pylist()
users[0] = 'someone-else@example.com'
i = t.column_names.index('username')
t = t.set_column(i, t.schema.field(i), pa.array(users, pa.string()))
pq.write_table(t, f, compression='zstd')";

/// `openssl ARGS`, which must succeed: its stdout.
pub fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is needed by this test");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The standard AWS variables pointing the SDK at a local endpoint.
pub fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_WORKSPACES_WEB", endpoint.to_string()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        // Empty: nothing from the machine's own AWS set-up leaks into a test.
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
    ]
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        use std::os::unix::process::ExitStatusExt;
        Run {
            code: o
                .status
                .code()
                .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Run {
        assert_eq!(self.code, 0, "exit {}\nstderr:\n{}", self.code, self.stderr);
        self
    }

    #[track_caller]
    pub fn code(&self, want: i32) -> &Run {
        assert_eq!(self.code, want, "stderr:\n{}", self.stderr);
        self
    }

    /// The last line of stderr (empty if there is none): where the binary puts its one-line
    /// error.
    pub fn last_line(&self) -> &str {
        self.stderr.trim_end().lines().last().unwrap_or_default()
    }
}

/// One archived row, with the partition values from its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub file: PathBuf,
    pub portal_id: String,
    pub start_date: String,
    pub portal_arn: String,
    pub session_id: String,
    pub username: Option<String>,
    pub status: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    pub client_ips: Option<Vec<String>>,
}

/// Every `.parquet` file under `<root>/sessions`, read with parquet's own reader.
pub fn read_dataset(root: &Path) -> Vec<Row> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMillisecondType;
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut rows = Vec::new();
    for file in parquet_files(&root.join("sessions")) {
        let rel = file.strip_prefix(root.join("sessions")).unwrap();
        let parts: Vec<String> = rel
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(parts.len(), 3, "unexpected layout {}", rel.display());
        let portal_id = parts[0]
            .strip_prefix("portal_id=")
            .expect("portal_id=")
            .to_string();
        let start_date = parts[1]
            .strip_prefix("start_date=")
            .expect("start_date=")
            .to_string();
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
            let t = |n: &str| {
                b.column_by_name(n)
                    .unwrap()
                    .as_primitive::<TimestampMillisecondType>()
                    .clone()
            };
            let (arn, id, user, status) =
                (s("portal_arn"), s("session_id"), s("username"), s("status"));
            let (start, end) = (t("start_time"), t("end_time"));
            let ips = b
                .column_by_name("client_ip_addresses")
                .map(|c| c.as_list::<i32>().clone());
            for i in 0..b.num_rows() {
                rows.push(Row {
                    file: file.clone(),
                    portal_id: portal_id.clone(),
                    start_date: start_date.clone(),
                    portal_arn: arn.value(i).to_string(),
                    session_id: id.value(i).to_string(),
                    username: (!user.is_null(i)).then(|| user.value(i).to_string()),
                    status: status.value(i).to_string(),
                    start_ms: start.value(i),
                    end_ms: (!end.is_null(i)).then(|| end.value(i)),
                    client_ips: ips.as_ref().filter(|l| !l.is_null(i)).map(|l| {
                        l.value(i)
                            .as_string::<i32>()
                            .iter()
                            .map(|v| v.unwrap_or_default().to_string())
                            .collect()
                    }),
                });
            }
        }
    }
    rows
}

/// Every file whose name ends in `.parquet` below `dir`, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    files_below(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".parquet"))
        .collect()
}

/// Every file below `dir` (none if it does not exist), sorted.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// UTC date of an epoch-ms instant, computed independently of the archiver's own code.
pub fn utc_date(ms: i64) -> String {
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", ms.div_euclid(1000)),
            "+%Y-%m-%d",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[track_caller]
pub fn assert_exact(rows: &[Row], expected: &BTreeMap<String, SimSession>) {
    let mut seen = BTreeSet::new();
    let mut dupes = Vec::new();
    for r in rows {
        if !seen.insert(r.session_id.clone()) {
            dupes.push(r.session_id.clone());
        }
    }
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !seen.contains(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = seen
        .iter()
        .filter(|k| !expected.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        dupes.is_empty() && missing.is_empty() && extra.is_empty(),
        "archive differs from the simulator: {} rows, {} expected; duplicates {:?}, missing {:?}, extra {:?}",
        rows.len(),
        expected.len(),
        &dupes[..dupes.len().min(5)],
        missing,
        extra
    );
    // Values and partitions: check every row against the simulator (dates via `date -u`
    // for a sample, since it forks).
    let mut date_checks = 0;
    for r in rows {
        let want = &expected[&r.session_id];
        assert_eq!(r.portal_id, want.portal_id, "{}", r.session_id);
        assert_eq!(r.portal_arn, want.portal_arn, "{}", r.session_id);
        assert_eq!(r.username, want.username, "{}", r.session_id);
        assert_eq!(r.status, want.status, "{}", r.session_id);
        assert_eq!(r.start_ms, want.start_time_ms, "{}", r.session_id);
        assert_eq!(r.end_ms, want.end_time_ms, "{}", r.session_id);
        if date_checks < 40 || r.start_ms.rem_euclid(86_400_000) < 60_000 {
            assert_eq!(r.start_date, utc_date(r.start_ms), "{}", r.session_id);
            date_checks += 1;
        }
    }
}

/// A simulator config for tests: fixed clock and seed.
pub fn sim_config(portals: usize, sessions: usize, active: usize) -> SimConfig {
    SimConfig {
        seed: 7,
        portals,
        sessions_per_portal: sessions,
        active_per_portal: active,
        history_days: 20,
        now_ms: 1_795_694_400_000, // 2026-11-26T12:00:00Z
        ..SimConfig::default()
    }
}

/// Start `cmd` with a failpoint that stops it (`<point>:<n>:stop`); returns once the process
/// is stopped (`T` in `/proc/<pid>/stat`).
pub async fn spawn_stopped(
    mut cmd: tokio::process::Command,
    failpoint: &str,
) -> tokio::process::Child {
    cmd.env("ARCHIVER_FAILPOINT", failpoint)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id().unwrap();
    for _ in 0..1200 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // `pid (comm) state ...`: the state follows the last parenthesis.
        let state = stat.rfind(") ").map(|i| &stat[i + 2..i + 3]);
        if state == Some("T") {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().await.unwrap();
            panic!(
                "{failpoint}: exited ({status}) before stopping\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{failpoint}: the process did not stop within 60 s");
}

/// Resume a stopped process, after sending it `signal` (e.g. `TERM`: delivered on resuming),
/// and wait for it to end.
pub async fn resume(child: tokio::process::Child, signal: Option<&str>) -> Run {
    let pid = child.id().unwrap().to_string();
    let kill = |sig: &str| {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    if let Some(sig) = signal {
        kill(sig);
    }
    kill("CONT");
    Run::from(
        tokio::time::timeout(
            std::time::Duration::from_secs(120),
            child.wait_with_output(),
        )
        .await
        .expect("the resumed process did not end within 120 s")
        .unwrap(),
    )
}
