//! The run's `--glue-table` step, before and after archiving (the two kinds of table are in
//! [`crate::glue`]).
//!
//! Before archiving ([`before`]):
//! - a table with partition projection on (and no `--glue-partitions`) gets every portal
//!   discovered or known added to its portal list;
//! - otherwise the table's partitions are registered: the first run for a table lists every
//!   partition folder of the archive and registers it; every run registers the partitions
//!   recorded in the state since (each flush records its partitions with its commit, before
//!   publishing). With `--glue-partitions`, a table that still projects its partitions has
//!   its projection turned off once all of them are registered, never before.
//!
//! After archiving ([`after`]): the partitions this run published are registered.
//!
//! A failure is logged and reported; archiving goes on, and the run fails at its end. What was
//! not registered stays recorded in the state for the next run.

use anyhow::{anyhow, Context, Result};
use tracing::{error, info, warn};

use super::discover;
use crate::config::{Config, GlueTable};
use crate::glue::{self, Partitions, Registered};
use crate::model::PortalId;
use crate::report::GlueReport;
use crate::sink::Sink;
use crate::state::StateHandle;

/// Portals whose partition folders are listed at once, when listing the whole archive.
const LISTING: usize = 8;
/// Portals listed before their partitions are registered (bounds the memory of a listing).
const PORTALS_PER_ROUND: usize = 64;

/// A table whose partitions this run registers.
pub struct Registering {
    client: aws_sdk_glue::Client,
    table: GlueTable,
    parts: Partitions,
}

/// What this run does with the table.
// One value per run, matched at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Kind {
    /// Keep its portal list (the table as just read).
    PortalList(aws_sdk_glue::types::Table),
    /// Register its partitions; `true`: it still projects them (`--glue-partitions`).
    Partitions(Partitions, bool),
}

/// Before archiving: bring the table up to date with the portals found and the archive. Returns
/// the table if its partitions are registered (for [`after`]), and what was done.
pub async fn before(
    cfg: &Config,
    sdk: &aws_config::SdkConfig,
    state: &StateHandle,
    sink: &Sink,
    found: &[discover::Found],
) -> (Option<Registering>, Option<GlueReport>) {
    let Some(table) = cfg.glue_table.as_ref() else {
        return (None, None);
    };
    let mut report = GlueReport {
        table: table.to_string(),
        ..Default::default()
    };
    let client = glue::client(sdk, cfg.max_attempts);
    let kind = async {
        let t = glue::read(&client, table).await?;
        let projected = glue::projected(&t);
        if projected && !cfg.glue_partitions {
            return Ok(Kind::PortalList(t));
        }
        Ok::<_, anyhow::Error>(Kind::Partitions(Partitions::of(&t, table)?, projected))
    }
    .await;
    let (parts, projected) = match kind {
        Ok(Kind::Partitions(parts, projected)) => (parts, projected),
        Ok(Kind::PortalList(read)) => {
            report.mode = Some("portal_list".into());
            if let Err(e) = portal_list(&client, table, read, state, found, &mut report).await {
                fail(&mut report, e);
            }
            return (None, Some(report));
        }
        Err(e) => {
            fail(&mut report, e);
            return (None, Some(report));
        }
    };
    report.mode = Some("partitions".into());
    let reg = Registering {
        client,
        table: table.clone(),
        parts,
    };
    match catch_up(&reg, state, sink, &mut report).await {
        Ok(()) if projected => match glue::disable_projection(&reg.client, table).await {
            Ok(changed) => {
                report.projection_disabled = changed;
                if changed {
                    info!(glue_table = %table, "every partition of the archive is registered: the Glue table's partition projection is now off");
                }
            }
            Err(e) => fail(&mut report, e),
        },
        Ok(()) => {}
        Err(e) => fail(&mut report, e),
    }
    (Some(reg), Some(report))
}

/// After archiving: register the partitions this run published (and any left before), unless
/// the table already failed this run (then they wait for the next run, and are counted).
pub async fn after(reg: &Registering, state: &StateHandle, report: &mut GlueReport) {
    if report.error.is_some() {
        if let Ok(pending) = state.db(|st| st.glue_pending()).await {
            report.partitions_pending = pending.len() as u64;
        }
        return;
    }
    if let Err(e) = drain(reg, state, report).await {
        fail(report, e);
    }
}

/// The table lists its portals: add every portal discovered (all shards') and every portal
/// the state knows. A state that registered partitions for a table before forgets them (a
/// later switch to partitions lists the archive again).
async fn portal_list(
    client: &aws_sdk_glue::Client,
    table: &GlueTable,
    read: aws_sdk_glue::types::Table,
    state: &StateHandle,
    found: &[discover::Found],
    report: &mut GlueReport,
) -> Result<()> {
    let recorded = state.db(|st| st.glue_table()).await?;
    if recorded.is_some() {
        state.db(|st| st.glue_stop()).await?;
    }
    let mut portals: Vec<String> = found.iter().map(|f| f.portal.to_string()).collect();
    // Portals of earlier runs: those discovery listed (they have an ARN) or with files.
    // A mistyped `--portal-id` of an earlier run without --glue-table has neither.
    let known = state.db(|st| st.portals()).await?;
    portals.extend(
        known
            .into_iter()
            .filter(|p| p.portal_arn.is_some() || p.flush_seq > 0)
            .map(|p| p.portal_id),
    );
    let added = glue::add_portals(client, table, Some(read), &portals).await?;
    if added > 0 {
        info!(glue_table = %table, portals_added = added, "Glue table's portal list updated");
    }
    report.portals_added = added as u64;
    Ok(())
}

/// Make Glue hold every partition the archive holds: on the first run for this table, list
/// the archive's partition folders and register them all; then register what the state
/// recorded since.
async fn catch_up(
    reg: &Registering,
    state: &StateHandle,
    sink: &Sink,
    report: &mut GlueReport,
) -> Result<()> {
    let id = reg.parts.identity.clone();
    let listed = state.db(|st| st.glue_listed()).await?;
    if listed.as_deref() != Some(id.as_str()) {
        // Recording starts first: whatever is published after the listing below began is
        // recorded by its commit (or, committed earlier, now).
        let start = id.clone();
        state.db(move |st| st.glue_start(&start)).await?;
        let created = register_archive(reg, sink).await?;
        report.partitions_added += created as u64;
        let done = id.clone();
        state.db(move |st| st.glue_set_listed(&done)).await?;
        info!(glue_table = %reg.table, partitions_added = created, "every partition folder of the archive is registered in the Glue table");
    }
    drain(reg, state, report).await
}

/// List every portal's partition folders in the archive and register them: a round of
/// portals listed at a time, their partitions sent in full batches (the rest waits for the
/// next round). Returns how many partitions were created.
async fn register_archive(reg: &Registering, sink: &Sink) -> Result<usize> {
    let portals = sink
        .portals()
        .await
        .context("listing the portals the archive holds")?;
    let mut created = 0;
    let mut waiting: Vec<(String, String)> = Vec::new();
    let mut rounds = portals.chunks(PORTALS_PER_ROUND).peekable();
    while let Some(round) = rounds.next() {
        for group in round.chunks(LISTING) {
            let mut listing = tokio::task::JoinSet::new();
            for portal in group {
                let (sink, portal) = (sink.clone(), portal.clone());
                listing.spawn(async move {
                    let dates = sink.dates(&portal).await;
                    (portal, dates)
                });
            }
            while let Some(joined) = listing.join_next().await {
                let (portal, dates): (PortalId, Result<Vec<String>>) =
                    joined.context("listing task panicked")?;
                let dates = dates
                    .with_context(|| format!("listing the partition folders of portal {portal}"))?;
                let id = portal.to_string();
                waiting.extend(dates.into_iter().map(|d| (id.clone(), d)));
            }
        }
        let full = if rounds.peek().is_some() {
            waiting.len() / glue::BATCH * glue::BATCH
        } else {
            waiting.len()
        };
        let send: Vec<(String, String)> = waiting.drain(..full).collect();
        let r = glue::register_many(&reg.client, &reg.table, &reg.parts, &send).await;
        created += r.created;
        check(&r)?;
    }
    Ok(created)
}

/// Register the partitions recorded in the state, and forget those Glue now holds.
async fn drain(reg: &Registering, state: &StateHandle, report: &mut GlueReport) -> Result<()> {
    let pending = state.db(|st| st.glue_pending()).await?;
    if pending.is_empty() {
        report.partitions_pending = 0;
        return Ok(());
    }
    let r = glue::register_many(&reg.client, &reg.table, &reg.parts, &pending).await;
    crate::failpoint::hit("glue_after_register");
    let held = r.held.clone();
    state.db(move |st| st.glue_registered(&held)).await?;
    report.partitions_added += r.created as u64;
    report.partitions_pending = r.failed as u64;
    if r.created > 0 {
        info!(glue_table = %reg.table, partitions_added = r.created, "partitions registered in the Glue table");
    }
    check(&r)
}

/// An error naming why, if some partitions were not registered.
fn check(r: &Registered) -> Result<()> {
    if r.failed == 0 {
        return Ok(());
    }
    Err(anyhow!(
        "{} partitions not registered (the next run tries again): {}",
        r.failed,
        r.errors.join("; ")
    ))
}

/// At the end of a run without `--glue-table`: a state that records partitions for a table
/// says how many wait for registration.
pub async fn warn_unregistered(state: &StateHandle) {
    let waiting = state
        .db(|st| Ok((st.glue_table()?, st.glue_pending()?.len())))
        .await;
    if let Ok((Some(table), n)) = waiting {
        if n > 0 {
            let name = table.rsplit_once('@').map_or(table.as_str(), |(n, _)| n);
            warn!(glue_table = %name, partitions = n, "partitions published for this Glue table are not registered yet: run with --glue-table to register them");
        }
    }
}

fn fail(report: &mut GlueReport, e: anyhow::Error) {
    let e = format!("{e:#}");
    error!(glue_table = %report.table, error = %e, "keeping the Glue table current failed; archiving goes on");
    report.error = Some(match report.error.take() {
        Some(before) => format!("{before}; {e}"),
        None => e,
    });
}
