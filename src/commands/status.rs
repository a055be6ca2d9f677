//! `archiver status`: what the state says, per portal. Reads only; takes no lock or lease.

use anyhow::{bail, Result};
use serde::Serialize;

use crate::clock::rfc3339;
use crate::config::{Config, StateLoc};
use crate::model::PassKind;
use crate::state::{State, StateHandle};

/// `status --json`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub state: String,
    pub state_id: String,
    pub last_run: Option<LastRun>,
    pub portals: Vec<PortalStatus>,
    /// Portals the newest run that looked found no longer listed by the service, though the
    /// state or the archive knew them (also portals of the archive alone, which have no row
    /// in `portals`).
    pub unlisted_portals: Vec<UnlistedStatus>,
    /// The newest digest of the state's chain; `None` before the first.
    pub digest: Option<DigestStatus>,
}

/// The newest digest.
#[derive(Debug, Serialize)]
pub struct DigestStatus {
    pub seq: u64,
    /// Relative to the digest root (the output, or `--digests`).
    pub key: String,
    pub created_at: String,
    pub signed: bool,
    /// `false`: stored in the state by a command killed before writing it; the next command
    /// writes it first.
    pub written: bool,
}

/// A portal the service no longer listed.
#[derive(Debug, Serialize)]
pub struct UnlistedStatus {
    pub portal_id: String,
    /// The run that found it unlisted, and when that run started.
    pub run_id: i64,
    pub since: String,
}

/// The newest run of the state.
#[derive(Debug, Serialize)]
pub struct LastRun {
    pub run_id: i64,
    pub command: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

/// One portal's row.
#[derive(Debug, Serialize)]
pub struct PortalStatus {
    pub portal_id: String,
    pub portal_arn: Option<String>,
    /// The AWS account of the portal, from its ARN.
    pub account_id: Option<String>,
    pub backfill_done: bool,
    /// Newest session start covered by a completed pass.
    pub watermark: Option<String>,
    /// The pass in progress, if any.
    pub checkpoint: Option<Checkpoint>,
    pub last_commit: Option<String>,
    pub pending: i64,
    pub dedup_ids: i64,
    pub flushes: i64,
    pub rows_written: i64,
    pub files_written: i64,
    pub last_run: Option<PortalRun>,
    /// The newest range a pass found uncovered.
    pub gap: Option<GapStatus>,
    /// Pending sessions the service did not find on the last pass that looked (kept).
    pub pending_missing: i64,
    /// Pending sessions given up, ever.
    pub pending_lost: i64,
    /// Sessions in quarantine: sent in a form that cannot be archived faithfully, tried again
    /// by every run.
    pub quarantined: i64,
    /// Each of them, with its fields as last received (never a username).
    pub quarantine: Vec<QuarantinedStatus>,
    /// Quarantined sessions given up, ever.
    pub quarantine_lost: i64,
}

/// A quarantined session.
#[derive(Debug, Serialize)]
pub struct QuarantinedStatus {
    pub session_id: String,
    pub reason: String,
    /// As received: the portal ARN, the status, the times in epoch seconds.
    pub portal_arn: Option<String>,
    pub status: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    /// Passes in a row that asked for it and the service did not find it.
    pub misses: i64,
}

/// A range a pass could not reach back to.
#[derive(Debug, Serialize)]
pub struct GapStatus {
    pub from: String,
    pub to: String,
    pub seconds: f64,
    pub found_at: String,
}

/// A pass in progress.
#[derive(Debug, Serialize)]
pub struct Checkpoint {
    pub pass: PassKind,
    pub pages: i64,
    pub has_token: bool,
    pub started_at: String,
}

/// A portal's outcome in the newest run that worked on it.
#[derive(Debug, Serialize)]
pub struct PortalRun {
    pub started_at: String,
    pub pass: Option<String>,
    pub outcome: String,
    pub rows: i64,
    pub pages: i64,
    pub error: Option<String>,
}

/// Print the status table (or JSON) of a state.
pub async fn print(config: &Config, as_json: bool) -> Result<()> {
    // Only a state in S3 needs AWS; a local one is read as it is.
    let s3 = super::s3_client(config, matches!(config.state, StateLoc::S3(_))).await?;
    let Some(state) = StateHandle::open_readonly(config, s3.as_ref()).await? else {
        bail!(
            "no state at {} (nothing archived yet with this --state)",
            config.state
        );
    };
    let name = config.state.to_string();
    let status = state.db(move |st| read(st, name)).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_table(&status);
    }
    Ok(())
}

fn read(st: &State, state: String) -> Result<Status> {
    let last_run = st.last_run()?.map(|r| LastRun {
        run_id: r.run_id,
        command: r.command,
        started_at: rfc3339(r.started_at),
        ended_at: r.ended_at.map(rfc3339),
        outcome: r.outcome,
        detail: r.detail,
    });
    let mut portals = Vec::new();
    for p in st.portals()? {
        let (dedup_ids, pending) = st.sizes(&p.portal_id)?;
        let pending_missing = st
            .pending(&p.portal_id)?
            .values()
            .filter(|r| r.misses > 0)
            .count() as i64;
        let (rows_written, files_written) = st.file_totals(&p.portal_id)?;
        let quarantine: Vec<QuarantinedStatus> = st
            .quarantine(&p.portal_id)?
            .into_iter()
            .map(|q| QuarantinedStatus {
                session_id: q.session_id,
                reason: q.reason,
                portal_arn: q.portal_arn,
                status: q.status,
                start_time: q.start_time,
                end_time: q.end_time,
                first_seen: rfc3339(q.first_seen_at),
                last_seen: rfc3339(q.last_seen_at),
                misses: q.misses,
            })
            .collect();
        let quarantine_lost = st.quarantine_lost(&p.portal_id)?;
        let last_run = st
            .last_portal_outcome(&p.portal_id)?
            .map(|(started, o)| PortalRun {
                started_at: rfc3339(started),
                pass: o.pass,
                outcome: o.outcome,
                rows: o.rows,
                pages: o.pages,
                error: o.error,
            });
        portals.push(PortalStatus {
            watermark: p.high_watermark_ms.map(rfc3339),
            checkpoint: p.pass.as_ref().map(|c| Checkpoint {
                pass: c.kind,
                pages: c.pages,
                has_token: c.token.is_some(),
                started_at: rfc3339(c.started_at),
            }),
            last_commit: p.updated_at.map(rfc3339),
            pending,
            dedup_ids,
            flushes: p.flush_seq,
            rows_written,
            files_written,
            last_run,
            gap: p.gap.map(|(g, at)| GapStatus {
                from: rfc3339(g.from_ms),
                to: rfc3339(g.to_ms),
                seconds: g.seconds(),
                found_at: rfc3339(at),
            }),
            pending_missing,
            pending_lost: p.lost_pending,
            quarantined: quarantine.len() as i64,
            quarantine,
            quarantine_lost,
            account_id: p
                .portal_arn
                .as_deref()
                .and_then(crate::run::discover::arn_account)
                .map(str::to_string),
            portal_id: p.portal_id,
            portal_arn: p.portal_arn,
            backfill_done: p.backfill_done,
        });
    }
    let unlisted_portals = st
        .unlisted_portals()?
        .into_iter()
        .map(|(portal_id, run_id, started)| UnlistedStatus {
            portal_id,
            run_id,
            since: rfc3339(started),
        })
        .collect();
    let digest = st.newest_digest()?.map(|d| DigestStatus {
        seq: d.seq,
        key: d.key,
        created_at: d.created_at,
        signed: d.signature.is_some(),
        written: d.written,
    });
    Ok(Status {
        state,
        state_id: st.state_id()?,
        last_run,
        portals,
        unlisted_portals,
        digest,
    })
}

fn print_table(status: &Status) {
    println!("state {}", status.state);
    match &status.last_run {
        None => println!("last run: none"),
        Some(r) => println!(
            "last run: #{} `{}` {} (started {}, ended {}){}",
            r.run_id,
            r.command,
            r.outcome,
            r.started_at,
            r.ended_at.as_deref().unwrap_or("-"),
            r.detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
    }
    match &status.digest {
        None => println!("digest: none yet"),
        Some(d) => println!(
            "digest: #{} {} {} ({}{})",
            d.seq,
            d.key,
            d.created_at,
            if d.signed { "signed" } else { "unsigned" },
            if d.written {
                ""
            } else {
                ", not written yet: the next command writes it"
            }
        ),
    }
    println!(
        "{:<36}  {:<12}  {:<8}  {:<24}  {:>7}  {:<22}  {:<10}  {:>9}",
        "PORTAL", "ACCOUNT", "BACKFILL", "WATERMARK", "PENDING", "CHECKPOINT", "LAST RUN", "ROWS"
    );
    for p in &status.portals {
        let checkpoint = match &p.checkpoint {
            None => "-".to_string(),
            Some(c) => format!("{} after {} pages", c.pass.as_str(), c.pages),
        };
        println!(
            "{:<36}  {:<12}  {:<8}  {:<24}  {:>7}  {:<22}  {:<10}  {:>9}",
            p.portal_id,
            p.account_id.as_deref().unwrap_or("-"),
            if p.backfill_done { "done" } else { "not yet" },
            p.watermark.as_deref().unwrap_or("-"),
            p.pending,
            checkpoint,
            p.last_run.as_ref().map_or("-", |r| r.outcome.as_str()),
            p.rows_written,
        );
    }
    for p in &status.portals {
        if let Some(g) = &p.gap {
            println!(
                "portal {}: sessions from {} to {} may have aged out of the service unarchived (found {})",
                p.portal_id, g.from, g.to, g.found_at
            );
        }
        if p.pending_missing > 0 || p.pending_lost > 0 {
            println!(
                "portal {}: {} pending sessions not found by the service on the last pass (kept), {} given up",
                p.portal_id, p.pending_missing, p.pending_lost
            );
        }
        if p.quarantined > 0 || p.quarantine_lost > 0 {
            let named: Vec<String> = p
                .quarantine
                .iter()
                .take(5)
                .map(|q| format!("{} ({})", q.session_id, q.reason))
                .collect();
            let more = p.quarantine.len().saturating_sub(named.len());
            println!(
                "portal {}: {} sessions quarantined (sent in a form that cannot be archived; tried again every run), {} given up{}{}{}",
                p.portal_id,
                p.quarantined,
                p.quarantine_lost,
                if named.is_empty() { "" } else { ": " },
                named.join(", "),
                if more > 0 { format!(" and {more} more (see --json)") } else { String::new() }
            );
        }
    }
    for u in &status.unlisted_portals {
        println!(
            "portal {}: not listed by the service in run #{} (started {}): not archived since; its archive is kept, and `verify` checks its files",
            u.portal_id, u.run_id, u.since
        );
    }
}
