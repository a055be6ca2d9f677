//! `archiver demo`: the whole job end to end against the built-in simulator, in a local
//! folder, checked against the simulator's own record.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use aws_config::BehaviorVersion;

use crate::cli::{DemoArgs, GlobalArgs};
use crate::config::{check_job_limits, Config, Output, Shard, StateLoc};
use crate::error::UsageError;
use crate::run::{run_job, Job, Mode};

/// `archiver demo`: the simulator, a backfill, simulated activity, an incremental run, and a
/// check of the archive against the simulator's own record.
pub async fn demo(a: DemoArgs, g: &GlobalArgs, stop: Arc<AtomicBool>) -> Result<()> {
    use archiver_simulator::{SimConfig, Simulator};
    // The global options the demo takes, checked as `run` checks them, before anything is
    // touched.
    check_job_limits(g)?;
    let dir = &a.dir;
    let marker = dir.join(".archiver-demo");
    if dir.exists() {
        if marker.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("clearing the previous demo in {}", dir.display()))?;
        } else if std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
        {
            return Err(UsageError(format!(
                "{} exists and is not an earlier demo; choose another --dir",
                dir.display()
            ))
            .into());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        &marker,
        b"archiver demo folder; `archiver demo` replaces it\n",
    )?;
    let archive = dir.join("archive");
    // A signing key of its own: every digest the demo's runs write is signed with it, and
    // its public key is what `verify --offline` checks them with.
    let (private_pem, public) = crate::sign::generate_p256_pem()?;
    let key_file = dir.join("sign.pem");
    let public_file = dir.join("public.pem");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)
            .with_context(|| format!("creating {}", key_file.display()))?;
        std::io::Write::write_all(&mut f, private_pem.as_bytes())?;
    }
    std::fs::write(&public_file, public.to_pem())?;
    let config = Config {
        state: StateLoc::Local(dir.join("state.db")),
        output: Output::Local(archive.clone()),
        flush_rows: g.flush_rows,
        concurrency: g.concurrency,
        max_attempts: g.max_attempts,
        shard: Shard::ALL,
        summary_json: None,
        metrics_file: None,
        with_client_ips: false,
        regions: vec![],
        s3: Default::default(),
        lease_ttl: std::time::Duration::from_secs(600),
        accounts: crate::config::Accounts::Own,
        glue_table: None,
        glue_partitions: false,
        digests: None,
        sign_key: Some(key_file.display().to_string()),
    };

    // The simulated history ends three hours ago: the activity below starts new sessions after
    // it (about a minute apart), and none may start or end after the run.
    let now = crate::clock::now_ms();
    let sim = Simulator::start(SimConfig {
        portals: a.portals,
        sessions_per_portal: a.sessions,
        active_per_portal: 6,
        now_ms: now - 3 * 3_600_000,
        ..SimConfig::default()
    })
    .await?;
    println!(
        "simulator: WorkSpaces Web on {} ({} portals, {} sessions each)",
        sim.endpoint_url(),
        a.portals,
        a.sessions
    );
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_workspacesweb::config::Credentials::new(
            "demo", "demo", None, None, "demo",
        ))
        .endpoint_url(sim.endpoint_url())
        .load()
        .await;
    let job = Job {
        config,
        command: "run",
        portals: None,
        mode: Mode::Run,
    };

    let first = run_job(&job, async { Ok(sdk.clone()) }, stop.clone()).await?;
    let calls_first = sim.stats().list_sessions_calls;
    println!(
        "run 1 (backfill):    {:>6} sessions archived, {:>4} still active kept pending, {:>5} ListSessions calls",
        first.portals.iter().map(|r| r.rows).sum::<u64>(),
        first.portals.iter().map(|r| r.pending).sum::<u64>(),
        calls_first
    );

    let ended = sim.end_active(None, usize::MAX).len();
    let mut added = 0;
    for p in sim.portal_ids() {
        added += sim.add_sessions(&p, 25, 3).len();
    }
    println!("activity:            {ended:>6} active sessions ended, {added} new ones started (some still active)");
    sim.reset_stats();
    let second = run_job(&job, async { Ok(sdk.clone()) }, stop).await?;
    println!(
        "run 2 (incremental): {:>6} sessions archived, {:>4} still active kept pending, {:>5} ListSessions calls",
        second.portals.iter().map(|r| r.rows).sum::<u64>(),
        second.portals.iter().map(|r| r.pending).sum::<u64>(),
        sim.stats().list_sessions_calls
    );

    let record = sim.record();
    if let Some(late) = record
        .iter()
        .find(|s| s.start_time_ms.max(s.end_time_ms.unwrap_or(0)) > crate::clock::now_ms())
    {
        bail!(
            "the demo's simulator served session {} in the future",
            late.session_id
        );
    }
    let expected: std::collections::BTreeSet<String> = record
        .into_iter()
        .filter(|s| s.status == "Terminated")
        .map(|s| s.session_id)
        .collect();
    let found = read_archive_ids(&archive)?;
    let distinct: std::collections::BTreeSet<String> = found.iter().cloned().collect();
    if found.len() != distinct.len() || distinct != expected {
        bail!(
            "demo archive does not match the simulator: {} rows, {} distinct, {} ended sessions expected",
            found.len(),
            distinct.len(),
            expected.len()
        );
    }
    println!(
        "check:               the archive holds each of the simulator's {} ended sessions exactly once",
        expected.len()
    );
    // The archive proves itself, as an auditor would check it: the digest chain, its
    // signatures, the manifests and every file, with no state and no service.
    let archive_sink = crate::sink::Sink::local(&archive);
    let integrity = crate::commands::verify::integrity::walk(
        &archive_sink,
        &archive_sink,
        &crate::commands::verify::integrity::WalkOpts {
            key: Some(&public),
            max_age_ms: None,
            portals: None,
            files_checked: Default::default(),
            expected_newest: vec![],
        },
    )
    .await?;
    if !integrity.ok {
        bail!(
            "the demo archive's proof has findings: {}",
            integrity.findings[0]
        );
    }
    println!(
        "proof:               {} signed digests vouch for {} manifests and {} files (verify --offline)",
        integrity.digests, integrity.manifests, integrity.files
    );
    let glob = archive.join("sessions/**/*.parquet");
    println!(
        "\nArchive: {}\nState:   {}",
        archive.display(),
        job.config.state
    );
    println!("\nTry it with DuckDB (pip install duckdb, or the duckdb CLI):");
    println!(
        "  duckdb -c \"SELECT portal_id, count(*) AS sessions, min(start_time) AS first, max(end_time) AS last \
         FROM read_parquet('{}', hive_partitioning = true) GROUP BY ALL ORDER BY 1\"",
        glob.display()
    );
    println!(
        "\nStatus:  {} --state {} status",
        self_command(),
        shell_word(&job.config.state.to_string())
    );
    println!(
        "Audit:   {} --output {} verify --offline --public-key {}",
        self_command(),
        shell_word(&archive.display().to_string()),
        shell_word(&public_file.display().to_string())
    );
    Ok(())
}

/// How to run this same binary again from the current folder, as a shell would take it:
/// `archiver` when that is what `PATH` finds, else the binary's path (relative to the current
/// folder when it is below it, as `./target/debug/archiver` after `cargo run`).
fn self_command() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|p| p.canonicalize()) else {
        return "archiver".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            dir.join("archiver")
                .canonicalize()
                .is_ok_and(|found| found == exe)
        })
    });
    if on_path {
        return "archiver".into();
    }
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.canonicalize().ok())
        .and_then(|cwd| {
            exe.strip_prefix(cwd)
                .ok()
                .map(|rel| Path::new(".").join(rel))
        })
        .unwrap_or_else(|| exe.clone());
    shell_word(&shown.to_string_lossy())
}

/// `s` as one shell word: as it is when it has nothing a shell would split or expand.
fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Every `session_id` in the dataset under a local output root (for `demo`'s self-check).
fn read_archive_ids(root: &Path) -> Result<Vec<String>> {
    use arrow_array::cast::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut ids = Vec::new();
    let mut stack = vec![root.join(crate::sink::DATASET)];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for e in entries {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                let file = std::fs::File::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                    .with_context(|| format!("reading {}", path.display()))?
                    .build()?;
                for batch in reader {
                    let batch = batch?;
                    let col = batch
                        .column_by_name("session_id")
                        .context("a file without session_id")?
                        .as_string::<i32>();
                    ids.extend(col.iter().flatten().map(str::to_string));
                }
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn shell_words_are_quoted_only_when_a_shell_would_split_them() {
        assert_eq!(
            shell_word("./target/debug/archiver"),
            "./target/debug/archiver"
        );
        assert_eq!(
            shell_word("/tmp/my demo/state.db"),
            "'/tmp/my demo/state.db'"
        );
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word("$HOME/x"), "'$HOME/x'");
    }
}
