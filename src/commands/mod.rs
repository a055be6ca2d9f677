//! The commands: parse what each needs into a validated configuration, open what it needs
//! (AWS clients, the state), do its work, and report.
//!
//! - `run` and `backfill`: an archiving job (see [`crate::run`]), or [`dry_run`];
//! - [`status`]: what the state says, per portal;
//! - [`verify`]: compare the service's listing with the archive, and repair it;
//! - [`compact`]: rewrite each old partition's files into one;
//! - [`demo`]: the whole job end to end against the built-in simulator;
//! - `simulator`: serve the built-in simulator;
//! - [`keys`]: `keygen` and `public-key`, for signing digests.

pub mod compact;
pub mod demo;
pub mod dry_run;
pub mod keys;
pub mod status;
pub mod verify;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use tracing::warn;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::{parse_duration, parse_portal_ids, Config};
use crate::error::UsageError;
use crate::run::{run_job, Job, Mode};

/// Run the parsed command line.
pub async fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => archive(&cli.global, "run", &a.portal_ids, Mode::Run, a.dry_run).await,
        Command::Backfill(a) => {
            let mode = Mode::Backfill { restart: a.restart };
            archive(&cli.global, "backfill", &a.portal_ids, mode, a.dry_run).await
        }
        Command::Status(a) => {
            let config = Config::from_args(&cli.global)?;
            status::print(&config, a.json).await
        }
        Command::Verify(a) => {
            let config = Config::from_args(&cli.global)?;
            let ids = parse_portal_ids(&a.portal_ids)?;
            let named = (!ids.is_empty()).then_some(ids);
            let proof = verify::Proof::new(&a, &config).await?;
            if a.offline {
                return verify::verify_offline(&config, &proof, a.json).await;
            }
            verify::verify(
                &config,
                named,
                a.repair,
                a.json,
                a.new_state,
                &proof,
                watch_signals(),
            )
            .await
        }
        Command::Compact(a) => {
            let config = Config::from_args(&cli.global)?;
            let older_than = parse_duration(&a.older_than).ok_or_else(|| {
                UsageError(format!(
                    "invalid --older-than {:?}: a number and a unit (s, m, h, d, w, ...), or several added up, e.g. 36h, 1.5d or 1d 12h",
                    a.older_than
                ))
            })?;
            let s = compact::compact(&config, older_than, watch_signals()).await?;
            println!(
                "compacted {} partitions: {} files into {}, {} rows; readers could see old and new files together for at most {:.1} ms",
                s.partitions, s.files_before, s.files_after, s.rows, s.max_overlap_ms
            );
            Ok(())
        }
        Command::Demo(a) => demo::demo(a, &cli.global, watch_signals()).await,
        Command::Simulator(a) => archiver_simulator::run_cli(a.0).await,
        Command::Keygen(a) => keys::keygen(&a.out),
        Command::PublicKey(a) => keys::public_key(&cli.global, &a.sign_key, a.out.as_deref()).await,
    }
}

/// `run` and `backfill`: validate, then archive (or only say what would be done).
async fn archive(
    g: &GlobalArgs,
    command: &'static str,
    raw_ids: &[String],
    mode: Mode,
    dry: bool,
) -> Result<()> {
    let job = parse_portal_ids(raw_ids)
        .map_err(anyhow::Error::from)
        .and_then(|ids| {
            Ok(Job {
                config: Config::from_args(g)?,
                command,
                portals: (!ids.is_empty()).then_some(ids),
                mode,
            })
        });
    let job = match job {
        Ok(job) => job,
        // Refused before it started, the run still reports, as every run does.
        Err(e) if !dry => {
            let failed: Result<()> = Err(e);
            let reports = crate::report::Reports {
                summary_json: g.summary_json.clone(),
                metrics_file: g.metrics_file.clone(),
            };
            let mut summary = crate::report::RunSummary::started(command);
            let started = std::time::Instant::now();
            if let Err(r) = reports.close(&mut summary, started, &failed, None) {
                warn!(error = %format!("{r:#}"), "writing the run's reports failed");
            }
            return failed;
        }
        Err(e) => return Err(e),
    };
    let sdk = crate::aws::load_sdk(&job.config.regions);
    if dry {
        return dry_run::dry_run(&job, sdk).await;
    }
    run_job(&job, sdk, watch_signals()).await.map(|_| ())
}

/// The S3 client, when `needed` (the AWS configuration is loaded only then).
async fn s3_client(cfg: &Config, needed: bool) -> Result<Option<aws_sdk_s3::Client>> {
    if !needed {
        return Ok(None);
    }
    let sdk = crate::aws::load_sdk(&cfg.regions).await?;
    Ok(Some(crate::aws::s3_client(&sdk, cfg.max_attempts)))
}

/// SIGTERM and SIGINT set the stop flag: every portal flushes what it has and stops. A second
/// signal exits at once, which is safe: every step on disk is crash-consistent.
fn watch_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!("archiver: second {name}: exiting now; the next run resumes from the last checkpoint");
                std::process::exit(130);
            }
            warn!(
                signal = name,
                "stopping: flushing what is buffered, then exiting"
            );
        }
    });
    stop
}
