//! The commands: `run`, `backfill`, `status`, `demo`, `simulator`. Each opens what it needs
//! (lock, state, sink, AWS clients), does its work, and reports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use aws_config::BehaviorVersion;
use tokio::sync::Semaphore;
use tracing::{error, info, warn, Instrument};

use crate::cli::{Cli, Command, DemoArgs};
use crate::config::{parse_portal_ids, Config, Output, PortalId, Shard, StateLoc};
use crate::error::UsageError;
use crate::fetch::Source;
use crate::pass::{archive_portal, Interrupted, Mode, PortalCtx, PortalReport};
use crate::report::{Failure, RunSummary};
use crate::sink::Sink;
use crate::state::{PortalOutcome, State};
use crate::state_store::{OpenState, ReadOnlyState};

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
            // Only a state in S3 needs AWS; a local one is read as it is.
            let s3 = s3_client(&config, matches!(config.state, StateLoc::S3(_))).await?;
            let copy = ReadOnlyState::open(&config, s3.as_ref()).await?;
            crate::status::print(&config, copy.as_ref().map(|c| c.path.as_path()), a.json)
        }
        Command::Compact(a) => {
            let config = Config::from_args(&cli.global)?;
            let older_than = crate::compact::parse_duration(&a.older_than).ok_or_else(|| {
                UsageError(format!(
                    "invalid --older-than {:?}: a whole number and s, m, h, d or w, e.g. 36h",
                    a.older_than
                ))
            })?;
            let s3 = s3_client(&config, config.uses_s3()).await?;
            let s = crate::compact::compact(&config, older_than, s3.as_ref()).await?;
            println!(
                "compacted {} partitions: {} files into {}, {} rows; readers could see old and new files together for at most {:.1} ms",
                s.partitions, s.files_before, s.files_after, s.rows, s.max_overlap_ms
            );
            Ok(())
        }
        Command::Demo(a) => demo(a, &cli.global, watch_signals()).await,
        Command::Simulator(a) => crate::simulator::run_cli(a).await,
    }
}

/// `run` and `backfill`: validate, then archive (or only say what would be done).
async fn archive(
    g: &crate::cli::GlobalArgs,
    command: &'static str,
    raw_ids: &[String],
    mode: Mode,
    dry: bool,
) -> Result<()> {
    let ids = parse_portal_ids(raw_ids)?;
    let job = Job {
        config: Config::from_args(g)?,
        command,
        portals: (!ids.is_empty()).then_some(ids),
        mode,
    };
    if dry {
        return dry_run(&job, load_aws(job.config.regions.clone())).await;
    }
    let sdk = load_aws(job.config.regions.clone());
    run_job(&job, sdk, watch_signals()).await.map(|_| ())
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

/// The AWS configuration from the standard chain. Without a region there, the first
/// `--region` is the default (it is also the S3 client's region).
async fn load_aws(regions: Vec<String>) -> Result<aws_config::SdkConfig> {
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    if sdk.region().is_some() {
        return Ok(sdk);
    }
    let Some(first) = regions.first() else {
        return Err(UsageError(
            "no AWS region configured: set AWS_REGION, --region, or a region in your AWS profile"
                .into(),
        )
        .into());
    };
    Ok(sdk
        .to_builder()
        .region(aws_config::Region::new(first.clone()))
        .build())
}

/// The S3 client, when `needed` (the AWS configuration is loaded only then).
async fn s3_client(cfg: &Config, needed: bool) -> Result<Option<aws_sdk_s3::Client>> {
    if !needed {
        return Ok(None);
    }
    let sdk = load_aws(cfg.regions.clone()).await?;
    Ok(Some(crate::s3::client(&sdk, cfg.max_attempts)))
}

/// One archiving job: which portals, how.
pub struct Job {
    pub config: Config,
    pub command: &'static str,
    /// `None`: every portal ListPortals returns.
    pub portals: Option<Vec<PortalId>>,
    pub mode: Mode,
}

/// The WorkSpaces Web client of each region to archive: `--region` values, or the SDK chain's
/// region alone.
fn regional_sources(
    sdk: &aws_config::SdkConfig,
    cfg: &Config,
    stop: &Arc<AtomicBool>,
) -> Vec<(String, Source)> {
    if cfg.regions.is_empty() {
        let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
        return vec![(region, Source::new(sdk, cfg.max_attempts, stop.clone()))];
    }
    cfg.regions
        .iter()
        .map(|r| {
            let conf = sdk
                .to_builder()
                .region(aws_config::Region::new(r.clone()))
                .build();
            (
                r.clone(),
                Source::new(&conf, cfg.max_attempts, stop.clone()),
            )
        })
        .collect()
}

/// Take the state (a local lock, or an S3 lease and download), run the job, then make the
/// state durable and release it, whatever the job's outcome. A lost lease wins over other
/// outcomes: it means this run's view of the state is stale.
pub async fn run_job(
    job: &Job,
    sdk: impl std::future::Future<Output = Result<aws_config::SdkConfig>>,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary> {
    let cfg = &job.config;
    tokio::pin!(sdk);
    // S3 is needed before anything else; otherwise the AWS chain (which may probe instance
    // metadata) is loaded only once the lock, state and output are known good.
    let early = if cfg.uses_s3() {
        Some((&mut sdk).await?)
    } else {
        None
    };
    let s3 = early
        .as_ref()
        .map(|sdk| crate::s3::client(sdk, cfg.max_attempts));
    let store = OpenState::acquire(cfg, job.command, s3.as_ref(), stop.clone()).await?;
    let result = run_on_state(job, &store, s3.as_ref(), early, sdk, stop).await;
    match (result, store.finish().await) {
        (Ok(summary), Ok(())) => Ok(summary),
        (Err(e), Ok(())) => Err(e),
        (Ok(_), Err(f)) => Err(f),
        (Err(e), Err(f)) if e.is::<Interrupted>() => Err(f),
        (Err(e), Err(f)) => {
            error!(error = %format!("{f:#}"), "saving the state at the end of the run failed");
            Err(e)
        }
    }
}

/// Open the state, check the output, discover portals, archive each (bounded concurrency, one
/// failing portal does not stop the others), record the run.
async fn run_on_state(
    job: &Job,
    store: &OpenState,
    s3: Option<&aws_sdk_s3::Client>,
    early: Option<aws_config::SdkConfig>,
    sdk: std::pin::Pin<&mut impl std::future::Future<Output = Result<aws_config::SdkConfig>>>,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary> {
    let started = Instant::now();
    let started_at_ms = crate::clock::now_ms();
    let cfg = &job.config;
    let state_path = store.path.clone();
    let state = tokio::task::spawn_blocking(move || State::open(&state_path))
        .await
        .context("state task panicked")??;
    store.mark_opened();
    let state_id = state.state_id()?;
    let sink = Sink::new(&cfg.output, s3, &cfg.s3)?;
    sink.check_writable().await?;
    let sdk = match early {
        Some(sdk) => sdk,
        None => sdk.await?,
    };
    let sources = regional_sources(&sdk, cfg, &stop);

    let run_id = state.start_run(job.command)?;
    let found = match discover(job, &sources, Some(&state)).await {
        Ok(found) => found,
        Err(e) => {
            state.finish_run(run_id, "failed", Some(&format!("{e:#}")))?;
            return Err(e);
        }
    };
    let (portals, others): (Vec<_>, Vec<_>) =
        found.into_iter().partition(|(p, _)| cfg.shard.owns(p));
    if cfg.shard != Shard::ALL {
        for (p, _) in &others {
            if job.portals.is_some() {
                warn!(portal_id = %p, shard = %cfg.shard, "portal belongs to another shard; skipped");
            }
        }
        info!(shard = %cfg.shard, portals = portals.len(), skipped = others.len(), "this shard's portals");
    }
    let state = Arc::new(Mutex::new(state));

    let sem = Arc::new(Semaphore::new(cfg.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let total = portals.len();
    // `--flush-rows` bounds the rows buffered by the whole process: the portals paged side by
    // side share it (a portal alone gets all of it), so memory does not grow with
    // `--concurrency`.
    let flush_rows = portal_flush_rows(cfg.flush_rows, cfg.concurrency, total, cfg.page_size());
    for (portal, source) in portals {
        let ctx_parts = (
            source,
            sink.clone(),
            cfg.clone(),
            state_id.clone(),
            stop.clone(),
            sem.clone(),
            store.durability(),
            store.path.clone(),
        );
        let mode = job.mode;
        tasks.spawn(async move {
            let (source, sink, cfg, state_id, stop, sem, durable, path) = ctx_parts;
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            if stop.load(Ordering::Relaxed) {
                let report = PortalReport {
                    portal_id: portal.to_string(),
                    ..Default::default()
                };
                return (report, Err(Interrupted.into()));
            }
            let mut report = PortalReport {
                portal_id: portal.to_string(),
                ..Default::default()
            };
            let result = async {
                let conn = tokio::task::spawn_blocking(move || State::open(&path))
                    .await
                    .context("state task panicked")??;
                let ctx = PortalCtx {
                    source,
                    sink,
                    state: Arc::new(Mutex::new(conn)),
                    state_id,
                    flush_rows,
                    page_size: cfg.page_size(),
                    with_client_ips: cfg.with_client_ips,
                    stop,
                    durable,
                };
                let span = tracing::info_span!("portal", portal_id = %portal);
                archive_portal(&ctx, &portal, mode, &mut report)
                    .instrument(span)
                    .await
            }
            .await;
            (report, result)
        });
    }

    let mut summary = RunSummary {
        command: job.command.to_string(),
        started_at_ms,
        ..Default::default()
    };
    let mut interrupted = false;
    while let Some(joined) = tasks.join_next().await {
        let (report, result) = joined.context("portal task panicked")?;
        let outcome = match &result {
            Ok(()) => {
                info!(
                    portal_id = %report.portal_id,
                    pass = report.pass.map(|p| p.as_str()),
                    rows = report.rows,
                    pages = report.pages,
                    pending = report.pending,
                    "portal done"
                );
                "ok"
            }
            Err(e) if e.is::<Interrupted>() => {
                interrupted = true;
                "interrupted"
            }
            Err(e) => {
                error!(portal_id = %report.portal_id, error = %format!("{e:#}"), "portal failed");
                summary.failed.push(Failure {
                    portal_id: report.portal_id.clone(),
                    error: format!("{e:#}"),
                });
                "failed"
            }
        };
        let o = PortalOutcome {
            portal_id: report.portal_id.clone(),
            pass: report.pass.map(|p| p.as_str().to_string()),
            outcome: outcome.into(),
            rows: report.rows as i64,
            pages: report.pages as i64,
            error: result.as_ref().err().map(|e| format!("{e:#}")),
        };
        state
            .lock()
            .expect("state")
            .record_portal_outcome(run_id, &o)?;
        summary.portals.push(report);
    }
    summary
        .portals
        .sort_by(|a, b| a.portal_id.cmp(&b.portal_id));
    summary.duration_ms = started.elapsed().as_millis() as u64;
    summary.ended_at_ms = crate::clock::now_ms();
    for (_, source) in &sources {
        summary.totals.api_calls += source.stats.calls.load(Ordering::Relaxed);
        summary.totals.retries += source.stats.retries.load(Ordering::Relaxed);
        summary.totals.throttled += source.stats.throttled.load(Ordering::Relaxed);
    }
    summary.sum_portals();

    let (outcome, detail) = if interrupted {
        ("interrupted", Some("stopped by a signal".to_string()))
    } else if summary.failed.is_empty() {
        ("ok", None)
    } else {
        ("failed", Some(failure_line(&summary, total)))
    };
    summary.outcome = outcome.to_string();
    let state = state.lock().expect("state");
    state.finish_run(run_id, outcome, detail.as_deref())?;
    summary.log();
    if let Some(path) = &cfg.summary_json {
        summary.write_json(path)?;
    }
    if let Some(path) = &cfg.metrics_file {
        let (last, per_portal) = state.last_successes()?;
        crate::report::write_atomic(path, summary.metrics_text(last, &per_portal).as_bytes())
            .with_context(|| format!("writing --metrics-file {}", path.display()))?;
    }
    drop(state);
    if interrupted {
        return Err(Interrupted.into());
    }
    if let Some(d) = detail {
        bail!(d);
    }
    Ok(summary)
}

/// Each portal's share of `--flush-rows` when `side_by_side` portals are paged at once: never
/// below one page (a flush holds at least the page that filled it).
fn portal_flush_rows(flush_rows: usize, concurrency: usize, portals: usize, page: usize) -> usize {
    let side_by_side = concurrency.min(portals).max(1);
    (flush_rows / side_by_side).max(page)
}

/// The portals to archive, each with its region's client: the `--portal-id` values, or every
/// portal ListPortals returns in each region. With several regions, named portals are looked
/// up in each region's list.
async fn discover(
    job: &Job,
    sources: &[(String, Source)],
    record: Option<&State>,
) -> Result<Vec<(PortalId, Source)>> {
    if let (Some(ids), [(_, only)]) = (&job.portals, sources) {
        return Ok(ids.iter().map(|p| (p.clone(), only.clone())).collect());
    }
    let mut found: Vec<(PortalId, Source)> = Vec::new();
    for (region, source) in sources {
        let listed = source.list_portals().await.map_err(|e| {
            anyhow!(e).context(format!("discovering portals in {region} (ListPortals)"))
        })?;
        info!(region = %region, portals = listed.len(), "discovered portals");
        for (id, arn) in listed {
            if job.portals.as_ref().is_some_and(|ids| !ids.contains(&id)) {
                continue;
            }
            if let (None, Some(state)) = (&job.portals, record) {
                state.portal(id.as_str())?;
                state.set_portal_arn(id.as_str(), &arn)?;
            }
            if !found.iter().any(|(p, _)| p == &id) {
                found.push((id, source.clone()));
            }
        }
    }
    if let Some(ids) = &job.portals {
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !found.iter().any(|(p, _)| p == *id))
            .map(|id| id.to_string())
            .collect();
        if !missing.is_empty() {
            let regions: Vec<&str> = sources.iter().map(|(r, _)| r.as_str()).collect();
            bail!(
                "portal {} not found in regions {}",
                missing.join(", "),
                regions.join(", ")
            );
        }
        found.sort_by_key(|(p, _)| ids.iter().position(|i| i == p));
    }
    Ok(found)
}

/// `--dry-run`: what each portal would get, from the state (read only, no lock) and the
/// service's portal list. Writes nothing anywhere.
async fn dry_run(
    job: &Job,
    sdk: impl std::future::Future<Output = Result<aws_config::SdkConfig>>,
) -> Result<()> {
    let cfg = &job.config;
    let local = match &cfg.state {
        StateLoc::Local(p) if p.exists() => Some(p.clone()),
        _ => None,
    };
    let state = local.map(|p| State::open_readonly(&p)).transpose()?;
    let sdk = sdk.await?;
    // An S3 state: a read-only copy, no lease.
    let s3 = cfg
        .uses_s3()
        .then(|| crate::s3::client(&sdk, cfg.max_attempts));
    let copy = match (&state, &cfg.state) {
        (None, StateLoc::S3(_)) => ReadOnlyState::open(cfg, s3.as_ref()).await?,
        _ => None,
    };
    let state = match &copy {
        Some(c) => Some(State::open_readonly(&c.path)?),
        None => state,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sources = regional_sources(&sdk, cfg, &stop);
    let portals: Vec<PortalId> = discover(job, &sources, None)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let portals: Vec<PortalId> = portals.into_iter().filter(|p| cfg.shard.owns(p)).collect();
    println!(
        "dry run of `{}` (shard {}): {} portals; nothing is written",
        job.command,
        cfg.shard,
        portals.len()
    );
    for p in &portals {
        let (ps, pending) = match &state {
            Some(st) => (
                st.find(p.as_str())?,
                st.pending(p.as_str())?
                    .into_values()
                    .map(|(start, _)| start)
                    .collect::<Vec<_>>(),
            ),
            None => (None, vec![]),
        };
        let known = ps.is_some();
        let ps = ps.unwrap_or_default();
        let what = match crate::pass::plan(&ps, pending.iter().copied().min(), job.mode) {
            crate::pass::Plan::Resume(c) => format!(
                "resume the {} pass from its checkpoint (after {} pages)",
                c.kind.as_str(),
                c.pages
            ),
            crate::pass::Plan::New {
                kind: crate::state::PassKind::Backfill,
                ..
            } if !known || !ps.backfill_done => "backfill (never archived)".to_string(),
            crate::pass::Plan::New {
                kind: crate::state::PassKind::Backfill,
                ..
            } => "backfill again from the oldest session (--restart)".to_string(),
            crate::pass::Plan::New {
                stop_before_ms: Some(stop),
                ..
            } => format!(
                "incremental pass, newest first, back to {}",
                crate::clock::rfc3339(stop)
            ),
            crate::pass::Plan::New { .. } => "incremental pass over everything".to_string(),
        };
        println!("{p}  {what}; {} pending", pending.len());
    }
    Ok(())
}

fn failure_line(summary: &RunSummary, total: usize) -> String {
    let list: Vec<String> = summary
        .failed
        .iter()
        .map(|f| {
            // The error already names the portal; keep the line short.
            let prefix = format!("portal {}: ", f.portal_id);
            let e = f.error.strip_prefix(&prefix).unwrap_or(&f.error);
            format!("portal {}: {e}", f.portal_id)
        })
        .collect();
    format!(
        "{} of {total} portals failed (the others' progress is saved): {}",
        summary.failed.len(),
        list.join("; ")
    )
}

/// `archiver demo`: the simulator, a backfill, simulated activity, an incremental run, and a
/// check of the archive against the simulator's own record.
async fn demo(a: DemoArgs, g: &crate::cli::GlobalArgs, stop: Arc<AtomicBool>) -> Result<()> {
    use crate::simulator::{SimConfig, Simulator};
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
    };

    let sim = Simulator::start(SimConfig {
        portals: a.portals,
        sessions_per_portal: a.sessions,
        active_per_portal: 6,
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

    let expected: std::collections::BTreeSet<String> = sim
        .record()
        .into_iter()
        .filter(|s| s.status == "Terminated")
        .map(|s| s.session_id)
        .collect();
    let found = crate::status::read_archive_ids(&archive)?;
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
    println!("\nStatus:  archiver --state {} status", job.config.state);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::portal_flush_rows;

    #[test]
    fn portals_side_by_side_share_the_flush_rows() {
        assert_eq!(portal_flush_rows(100_000, 8, 1, 100), 100_000);
        assert_eq!(portal_flush_rows(100_000, 8, 3, 100), 33_333);
        assert_eq!(portal_flush_rows(100_000, 8, 50, 100), 12_500);
        assert_eq!(portal_flush_rows(100_000, 1, 50, 100), 100_000);
        assert_eq!(portal_flush_rows(300, 8, 8, 100), 100, "at least a page");
    }
}
