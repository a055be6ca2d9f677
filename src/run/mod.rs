//! An archiving job (`run`, `backfill`, the demo): take the state, check the output, discover
//! the portals, archive each in its own task (bounded concurrency; one failing portal does not
//! stop the others), record the run and report it.
//!
//! - [`discover`]: the portals to archive, each with its account and region, and their clients;
//! - [`pass`]: one portal's pass, page by page through dedup;
//! - [`flush`]: encode → stage → commit → publish, shared with compaction;
//! - [`recover`]: finish or drop what an interrupted run left;
//! - `glue`: `--glue-table`, before archiving (portal list, or the archive's partitions) and
//!   after (the partitions the run published).

mod client_ips;
pub mod discover;
pub mod flush;
mod glue;
pub mod pass;
pub mod recover;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tracing::{error, info, warn, Instrument};

use crate::config::{Config, Shard};
use crate::digest::Digests;
use crate::error::Interrupted;
use crate::model::PortalId;
use crate::report::{AccountReport, Failure, PortalReport, RunSummary};
use crate::sink::{Role, Sink};
use crate::state::{LastSuccesses, PortalOutcome, StateHandle};
use pass::{archive_portal, PortalCtx};

/// What a portal's work is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `run`: backfill a new portal, resume a pass in progress, or an incremental pass.
    Run,
    /// `backfill`: the same, or with `restart` a new listing of everything the service holds
    /// (newest first, to the end).
    Backfill { restart: bool },
}

/// One archiving job: which portals, how.
pub struct Job {
    pub config: Config,
    pub command: &'static str,
    /// `None`: every portal ListPortals returns.
    pub portals: Option<Vec<PortalId>>,
    pub mode: Mode,
}

/// Take the state (a local lock, or an S3 lease and download), run the job, then make the
/// state durable and release it, whatever the job's outcome. A lost lease wins over other
/// outcomes: it means this run's view of the state is stale.
///
/// Whatever the outcome, and wherever the job stopped (the lock or lease, the state, the
/// output check, discovery, a portal, saving the state), the run ends with its summary line,
/// `--summary-json` and `--metrics-file` (see [`crate::report`]).
///
/// `sdk` is awaited only once the lock, state and output are known good (it may probe
/// instance metadata), unless the state or output is in S3 and needs it first.
pub async fn run_job(
    job: &Job,
    sdk: impl std::future::Future<Output = Result<aws_config::SdkConfig>>,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary> {
    let started = Instant::now();
    let mut summary = RunSummary::started(job.command);
    let mut successes = None;
    let result = take_state_and_run(job, sdk, stop, &mut summary, &mut successes).await;
    let reported =
        crate::report::Reports::of(&job.config).close(&mut summary, started, &result, successes);
    // The summary line, once the run reached its portals; before that, its error line alone
    // says what happened.
    if result.is_ok() || !summary.portals.is_empty() {
        summary.log();
    }
    match (result, reported) {
        (Ok(()), Ok(())) => Ok(summary),
        (Ok(()), Err(e)) | (Err(e), Ok(())) => Err(e),
        (Err(e), Err(r)) => {
            error!(error = %format!("{r:#}"), "writing the run's reports failed");
            Err(e)
        }
    }
}

async fn take_state_and_run(
    job: &Job,
    sdk: impl std::future::Future<Output = Result<aws_config::SdkConfig>>,
    stop: Arc<AtomicBool>,
    summary: &mut RunSummary,
    successes: &mut Option<LastSuccesses>,
) -> Result<()> {
    let cfg = &job.config;
    tokio::pin!(sdk);
    let early = if cfg.uses_s3() {
        Some((&mut sdk).await?)
    } else {
        None
    };
    let s3 = early
        .as_ref()
        .map(|sdk| crate::aws::s3_client(sdk, cfg.max_attempts));
    let state = StateHandle::open(cfg, job.command, s3.as_ref(), stop.clone()).await?;
    let command = job.command;
    let result = match state.db(move |st| st.start_run(command)).await {
        Ok(run_id) => {
            let mut digests = None;
            let result = async {
                let sink = Sink::open(&cfg.output, s3.as_ref(), &cfg.s3, Role::Output).await?;
                sink.check_writable().await?;
                let sdk = match early {
                    Some(sdk) => sdk,
                    None => sdk.await?,
                };
                let d = Digests::open(cfg, s3.as_ref(), Some(&sdk), &state).await?;
                d.recover(&state).await?;
                digests = Some(d);
                run_on_state(job, &state, sink, &sdk, stop, run_id, summary).await
            }
            .await;
            // The digest of what the run wrote (or that it wrote nothing), whatever its
            // outcome, once the digest writer is open.
            let result = match &digests {
                Some(d) => {
                    // Its line only once the run reached its portals, like the summary line.
                    let quiet = result.is_err() && summary.portals.is_empty();
                    write_digest(d, &state, command, run_id, result, quiet).await
                }
                None => result,
            };
            // The run's outcome goes into the history before the state's last upload.
            let (outcome, detail) = crate::report::outcome_of(&result);
            let recorded = state
                .db(move |st| {
                    st.finish_run(run_id, outcome, detail.as_deref())?;
                    st.last_successes()
                })
                .await;
            match recorded {
                Ok(s) => {
                    *successes = Some(s);
                    result
                }
                Err(e) if result.is_ok() => Err(e),
                Err(e) => {
                    error!(error = %format!("{e:#}"), "recording the run in the state failed");
                    result
                }
            }
        }
        Err(e) => Err(e),
    };
    crate::failpoint::hit("before_state_finish");
    match (result, state.finish().await) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Err(f)) => Err(f),
        (Err(e), Err(f)) if e.is::<Interrupted>() => Err(f),
        (Err(e), Err(f)) => {
            error!(error = %format!("{f:#}"), "saving the state at the end of the run failed");
            Err(e)
        }
    }
}

/// Write the run's digest; a failure to write it fails a run that was ok, and is logged
/// beside the error of one that failed.
async fn write_digest(
    d: &Digests,
    state: &StateHandle,
    command: &str,
    run_id: i64,
    result: Result<()>,
    quiet: bool,
) -> Result<()> {
    let written = async {
        let passes = crate::digest::passes_of_run(state, run_id).await?;
        let (key, listed) = d.write_quietly(state, command, passes).await?;
        if !quiet {
            info!("digest {key} written: {listed} manifests");
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    match (result, written) {
        (result, Ok(_)) => result,
        (Ok(()), Err(e)) => Err(e),
        (Err(e), Err(w)) => {
            error!(error = %format!("{w:#}"), "writing the run's digest failed");
            Err(e)
        }
    }
}

/// Discover the portals, archive this shard's, and fill in the run's summary. An error is the
/// run's failure (its line names what failed), or [`Interrupted`].
async fn run_on_state(
    job: &Job,
    state: &StateHandle,
    sink: Sink,
    sdk: &aws_config::SdkConfig,
    stop: Arc<AtomicBool>,
    run_id: i64,
    summary: &mut RunSummary,
) -> Result<()> {
    let cfg = &job.config;
    let mut sources = discover::sources(sdk, cfg, &stop).await?;
    let found = discover::discover(
        job.portals.as_deref(),
        &mut sources,
        Some(state),
        cfg.concurrency,
        // Only portals the service lists go into the Glue table.
        cfg.glue_table.is_some(),
    )
    .await;
    let found = match found {
        Ok(found) => found,
        Err(e) => {
            summary.accounts = account_reports(&sources, summary);
            count_calls(&sources, summary);
            return Err(e);
        }
    };
    let (registering, glue_report) = glue::before(cfg, sdk, state, &sink, &found).await;
    summary.glue = glue_report;
    // With `--portal-id` only the named portals are in scope, and one the service does not
    // list already fails discovery (or its ListSessions).
    let mut unlisted_error = None;
    if job.portals.is_none() {
        match unlisted_portals(cfg, state, &sink, &found, &sources, run_id).await {
            Ok(ids) => summary.unlisted_portals = ids,
            Err(e) => {
                error!(error = %format!("{e:#}"), "looking for known portals the service no longer lists failed; archiving goes on");
                unlisted_error = Some(format!("{e:#}"));
            }
        }
    }
    let (portals, others): (Vec<_>, Vec<_>) =
        found.into_iter().partition(|f| cfg.shard.owns(&f.portal));
    if cfg.shard != Shard::ALL {
        if job.portals.is_some() {
            for f in &others {
                warn!(portal_id = %f.portal, shard = %cfg.shard, "portal belongs to another shard; skipped");
            }
        }
        info!(shard = %cfg.shard, portals = portals.len(), skipped = others.len(), "this shard's portals");
    }
    let total = portals.len();

    let mut interrupted = false;
    let mut outcomes = Outcomes {
        state,
        run_id,
        summary: &mut *summary,
    };
    // Each account's portals together, so that its clients are made once and dropped once
    // they are done: at most `--concurrency` portals, so about as many accounts, in flight.
    let portals = discover::by_account(portals);
    let mut clients = sources.clients();
    let flush_rows = portal_flush_rows(
        cfg.flush_rows,
        cfg.concurrency,
        portals.len(),
        cfg.page_size(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for f in portals {
        while tasks.len() >= cfg.concurrency.max(1) {
            let joined = tasks.join_next().await.expect("a portal is in flight");
            interrupted |= outcomes.record(joined).await?;
        }
        if stop.load(Ordering::Relaxed) {
            let report = PortalReport {
                portal_id: f.portal.to_string(),
                account_id: f.account,
                ..Default::default()
            };
            interrupted |= outcomes
                .record(Ok((report, Err(Interrupted.into()))))
                .await?;
            continue;
        }
        let source = clients.source(&f.reach);
        tasks.spawn(archive_one(job, state, &sink, f, source, flush_rows, &stop));
    }
    drop(clients);
    while let Some(joined) = tasks.join_next().await {
        interrupted |= outcomes.record(joined).await?;
    }
    summary
        .portals
        .sort_by(|a, b| a.portal_id.cmp(&b.portal_id));
    summary.accounts = account_reports(&sources, summary);
    count_calls(&sources, summary);
    if interrupted {
        return Err(Interrupted.into());
    }
    match (&registering, summary.glue.as_mut()) {
        (Some(reg), Some(report)) => glue::after(reg, state, report).await,
        _ if cfg.glue_table.is_none() => glue::warn_unregistered(state).await,
        _ => {}
    }
    let lines: Vec<String> = run_failure_line(sources.failure_line(), summary, total)
        .into_iter()
        .chain(unlisted_error)
        .collect();
    match lines.is_empty() {
        true => Ok(()),
        false => bail!(lines.join("; ")),
    }
}

/// The portals of this shard that the state or the archive knows and that discovery no
/// longer listed (deleted, or outside the regions, accounts or role searched): each named in
/// a warning and recorded as `unlisted` in the run's history (which `status` shows). Nothing
/// is archived for them; they do not fail the run.
async fn unlisted_portals(
    cfg: &Config,
    state: &StateHandle,
    sink: &Sink,
    found: &[discover::Found],
    sources: &discover::Sources,
    run_id: i64,
) -> Result<Vec<String>> {
    let known = discover::known_portals(state, sink).await?;
    let listed: Vec<&PortalId> = found.iter().map(|f| &f.portal).collect();
    let ids: Vec<String> = discover::unlisted(known, &listed, &sources.failed)
        .into_iter()
        .filter(|p| cfg.shard.owns(p))
        .map(|p| p.to_string())
        .collect();
    let searched = sources.searched();
    for id in &ids {
        warn!(
            portal_id = %id,
            searched = %searched,
            "portal no longer listed by the service (ListPortals), though the state or the archive knows it: nothing archived for it; its archive is kept, and `verify` checks its files"
        );
    }
    let recorded = ids.clone();
    state
        .db(move |st| {
            for id in recorded {
                st.record_portal_outcome(
                    run_id,
                    &PortalOutcome {
                        portal_id: id,
                        pass: None,
                        outcome: "unlisted".into(),
                        rows: 0,
                        pages: 0,
                        error: None,
                    },
                )?;
            }
            Ok(())
        })
        .await?;
    Ok(ids)
}

/// The WorkSpaces Web calls of every account and region, into the totals.
fn count_calls(sources: &discover::Sources, summary: &mut RunSummary) {
    let stats = sources.stats();
    summary.totals.api_calls += stats.calls.load(Ordering::Relaxed);
    summary.totals.retries += stats.retries.load(Ordering::Relaxed);
    summary.totals.throttled += stats.throttled.load(Ordering::Relaxed);
}

/// Each finished portal's outcome: logged, recorded in the state's history and in the
/// summary.
struct Outcomes<'a> {
    state: &'a StateHandle,
    run_id: i64,
    summary: &'a mut RunSummary,
}

impl Outcomes<'_> {
    /// Record one portal's outcome; `true` if it was interrupted.
    async fn record(
        &mut self,
        joined: Result<(PortalReport, Result<()>), tokio::task::JoinError>,
    ) -> Result<bool> {
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
            Err(e) if e.is::<Interrupted>() => "interrupted",
            Err(e) => {
                error!(portal_id = %report.portal_id, error = %format!("{e:#}"), "portal failed");
                self.summary.failed.push(Failure {
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
        let run_id = self.run_id;
        self.state
            .db(move |st| st.record_portal_outcome(run_id, &o))
            .await?;
        self.summary.portals.push(report);
        Ok(outcome == "interrupted")
    }
}

/// One portal's work, as a task: its report and outcome.
fn archive_one(
    job: &Job,
    state: &StateHandle,
    sink: &Sink,
    found: discover::Found,
    source: crate::source::Source,
    flush_rows: usize,
    stop: &Arc<AtomicBool>,
) -> impl std::future::Future<Output = (PortalReport, Result<()>)> + Send + 'static {
    let cfg = &job.config;
    let ctx = PortalCtx {
        source,
        sink: sink.clone(),
        state: state.clone(),
        flush_rows,
        page_size: cfg.page_size(),
        with_client_ips: cfg.with_client_ips,
        stop: stop.clone(),
    };
    let mode = job.mode;
    let discover::Found {
        portal, account, ..
    } = found;
    async move {
        let mut report = PortalReport {
            portal_id: portal.to_string(),
            account_id: account,
            ..Default::default()
        };
        let span = match &report.account_id {
            Some(a) => tracing::info_span!("portal", portal_id = %portal, account_id = %a),
            None => tracing::info_span!("portal", portal_id = %portal),
        };
        let result = archive_portal(&ctx, &portal, mode, &mut report)
            .instrument(span)
            .await;
        (report, result)
    }
}

/// Each portal's share of `--flush-rows` when `side_by_side` portals are paged at once: never
/// below one page (a flush holds at least the page that filled it).
fn portal_flush_rows(flush_rows: usize, concurrency: usize, portals: usize, page: usize) -> usize {
    let side_by_side = concurrency.min(portals).max(1);
    (flush_rows / side_by_side).max(page)
}

/// Per account tried (with `--accounts`/`--organization`): its portals and outcome.
fn account_reports(sources: &discover::Sources, summary: &RunSummary) -> Vec<AccountReport> {
    let failed_portals: HashSet<&str> = summary
        .failed
        .iter()
        .map(|f| f.portal_id.as_str())
        .collect();
    // (portals, failed portals) by account.
    let mut by_account: HashMap<&str, (u64, u64)> = HashMap::new();
    for p in &summary.portals {
        if let Some(a) = &p.account_id {
            let n = by_account.entry(a.as_str()).or_default();
            n.0 += 1;
            n.1 += u64::from(failed_portals.contains(p.portal_id.as_str()));
        }
    }
    let failures: HashMap<&str, &str> = sources
        .failed
        .iter()
        .map(|f| (f.account.as_str(), f.error.as_str()))
        .collect();
    let roles: HashMap<&str, &str> = sources
        .roles
        .iter()
        .map(|(a, r)| (a.as_str(), r.as_str()))
        .collect();
    sources
        .accounts
        .iter()
        .map(|a| {
            let failure = failures.get(a.as_str());
            let (portals, failed_portals) = by_account.get(a.as_str()).copied().unwrap_or_default();
            AccountReport {
                account_id: a.clone(),
                role_arn: roles.get(a.as_str()).map(|r| r.to_string()),
                outcome: if failure.is_some() || failed_portals > 0 {
                    "failed"
                } else {
                    "ok"
                }
                .into(),
                error: failure.map(|e| e.to_string()),
                portals,
                failed_portals,
            }
        })
        .collect()
}

/// The `--glue-table` failure of this run, as the line to report (it names the table).
fn glue_error(summary: &RunSummary) -> Option<String> {
    let g = summary.glue.as_ref()?;
    let e = g.error.as_ref()?;
    Some(if e.contains(&g.table) {
        e.clone()
    } else {
        format!("Glue table {}: {e}", g.table)
    })
}

/// The failed run's line: its unreachable accounts, its failed portals, then its
/// `--glue-table` failure; `None` when nothing failed.
fn run_failure_line(
    accounts: Option<String>,
    summary: &RunSummary,
    total: usize,
) -> Option<String> {
    let lines: Vec<String> = accounts
        .into_iter()
        .chain((!summary.failed.is_empty()).then(|| failure_line(summary, total)))
        .chain(glue_error(summary))
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
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

#[cfg(test)]
mod tests {
    use super::{portal_flush_rows, run_failure_line};
    use crate::report::{Failure, GlueReport, RunSummary};

    #[test]
    fn a_glue_failure_is_named_in_the_failure_line() {
        let mut s = RunSummary {
            glue: Some(GlueReport {
                table: "db.t".into(),
                error: Some("Glue table db.t: not found: EntityNotFoundException".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(run_failure_line(None, &RunSummary::default(), 3), None);
        assert_eq!(
            run_failure_line(None, &s, 3).unwrap(),
            "Glue table db.t: not found: EntityNotFoundException"
        );
        s.failed.push(Failure {
            portal_id: "p".into(),
            error: "portal p: denied".into(),
        });
        assert_eq!(
            run_failure_line(Some("1 of 2 accounts failed: account 1: x".into()), &s, 3).unwrap(),
            "1 of 2 accounts failed: account 1: x; \
             1 of 3 portals failed (the others' progress is saved): portal p: denied; \
             Glue table db.t: not found: EntityNotFoundException"
        );
    }

    #[test]
    fn portals_side_by_side_share_the_flush_rows() {
        assert_eq!(portal_flush_rows(100_000, 8, 1, 100), 100_000);
        assert_eq!(portal_flush_rows(100_000, 8, 3, 100), 33_333);
        assert_eq!(portal_flush_rows(100_000, 8, 50, 100), 12_500);
        assert_eq!(portal_flush_rows(100_000, 1, 50, 100), 100_000);
        assert_eq!(portal_flush_rows(300, 8, 8, 100), 100, "at least a page");
    }
}
