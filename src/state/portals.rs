//! Per-portal rows: checkpoints of passes in progress, watermarks, pending (still active)
//! sessions and the archived ids of the dedup window.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, Result};
use rusqlite::{params, OptionalExtension};

use super::State;
use crate::clock::now_ms;
use crate::model::{Gap, PassKind};

/// A pass in progress: where to continue from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassCheckpoint {
    pub kind: PassKind,
    /// NextToken of the next page to fetch; `None` means the pass's first page.
    pub token: Option<String>,
    pub stop_before_ms: Option<i64>,
    /// Newest start seen so far (not counting starts in the future).
    pub high_ms: Option<i64>,
    /// Lowest start this pass has written (committed).
    pub low_ms: Option<i64>,
    /// Newest archived start when this pass began: archived ids of earlier passes lie at or
    /// below it.
    pub prior_max_ms: Option<i64>,
    pub pages: i64,
    pub started_at: i64,
}

/// A pending (still active) session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingRow {
    pub start_ms: i64,
    /// When a pass last saw it Active (epoch ms).
    pub seen_at: i64,
    /// Passes in a row that looked for it and the service did not find it.
    pub misses: i64,
    pub first_missed_at: Option<i64>,
}

/// One portal's row.
#[derive(Clone, Debug, Default)]
pub struct PortalState {
    pub portal_id: String,
    pub portal_arn: Option<String>,
    pub backfill_done: bool,
    pub high_watermark_ms: Option<i64>,
    pub archived_max_ms: Option<i64>,
    pub dedup_floor_ms: Option<i64>,
    pub flush_seq: i64,
    pub pass: Option<PassCheckpoint>,
    pub updated_at: Option<i64>,
    /// The newest uncovered range found, and when.
    pub gap: Option<(Gap, i64)>,
    /// Pending sessions given up after the service stopped returning them.
    pub lost_pending: i64,
}

impl State {
    pub fn portal(&self, portal_id: &str) -> Result<PortalState> {
        self.conn.execute(
            "INSERT OR IGNORE INTO portals (portal_id) VALUES (?1)",
            [portal_id],
        )?;
        Ok(self
            .find_portal(portal_id)?
            .expect("portal row was just inserted"))
    }

    fn find_portal(&self, portal_id: &str) -> Result<Option<PortalState>> {
        let row = self
            .conn
            .query_row(
                "SELECT portal_id, portal_arn, backfill_done, high_watermark_ms, archived_max_ms,
                        dedup_floor_ms, flush_seq, pass_kind, pass_token, pass_stop_before_ms,
                        pass_high_ms, pass_pages, pass_started_at, updated_at,
                        pass_low_ms, pass_prior_max_ms, gap_from_ms, gap_to_ms, gap_found_at,
                        lost_pending
                 FROM portals WHERE portal_id = ?1",
                [portal_id],
                portal_from_row,
            )
            .optional()?;
        row.map(|(mut p, kind)| {
            if let (Some(kind), Some(pass)) = (kind, p.pass.as_mut()) {
                pass.kind = PassKind::parse(&kind)
                    .ok_or_else(|| anyhow!("unknown pass kind {kind:?} in state"))?;
            }
            Ok(p)
        })
        .transpose()
    }

    /// Every portal known to this state, by id.
    pub fn portals(&self) -> Result<Vec<PortalState>> {
        let ids: Vec<String> = self
            .conn
            .prepare("SELECT portal_id FROM portals ORDER BY portal_id")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        ids.iter()
            .filter_map(|id| self.find_portal(id).transpose())
            .collect()
    }

    pub fn set_portal_arn(&self, portal_id: &str, arn: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE portals SET portal_arn = ?2 WHERE portal_id = ?1",
            params![portal_id, arn],
        )?;
        Ok(())
    }

    /// Start a new pass (replacing any checkpoint).
    pub fn begin_pass(&self, portal_id: &str, pass: &PassCheckpoint) -> Result<()> {
        save_pass(&self.conn, portal_id, pass, now_ms())?;
        Ok(())
    }

    /// Pending sessions of a portal, by id.
    pub fn pending(&self, portal_id: &str) -> Result<HashMap<String, PendingRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT session_id, start_ms, seen_at, misses, first_missed_at
             FROM pending WHERE portal_id = ?1",
        )?;
        let rows = stmt.query_map([portal_id], |r| {
            Ok((
                r.get(0)?,
                PendingRow {
                    start_ms: r.get(1)?,
                    seen_at: r.get(2)?,
                    misses: r.get(3)?,
                    first_missed_at: r.get(4)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Which of these ids are archived already.
    pub fn archived_among<'a>(
        &self,
        portal_id: &str,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<HashSet<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM archived WHERE portal_id = ?1 AND session_id = ?2")?;
        let mut found = HashSet::new();
        for id in ids {
            if stmt.exists(params![portal_id, id])? {
                found.insert(id.to_string());
            }
        }
        Ok(found)
    }

    /// A portal's row, if this state knows the portal. Reads only.
    pub fn find(&self, portal_id: &str) -> Result<Option<PortalState>> {
        self.find_portal(portal_id)
    }

    /// How many archived ids (the dedup window) and pending sessions a portal holds.
    pub fn sizes(&self, portal_id: &str) -> Result<(i64, i64)> {
        let archived = self.conn.query_row(
            "SELECT count(*) FROM archived WHERE portal_id = ?1",
            [portal_id],
            |r| r.get(0),
        )?;
        let pending = self.conn.query_row(
            "SELECT count(*) FROM pending WHERE portal_id = ?1",
            [portal_id],
            |r| r.get(0),
        )?;
        Ok((archived, pending))
    }
}

/// Write a pass's checkpoint into the portal's row (the one place that lists its columns),
/// with the time of this commit.
pub(super) fn save_pass(
    conn: &rusqlite::Connection,
    portal_id: &str,
    pass: &PassCheckpoint,
    updated_at: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE portals SET pass_kind = ?2, pass_token = ?3, pass_stop_before_ms = ?4,
                pass_high_ms = ?5, pass_pages = ?6, pass_started_at = ?7, updated_at = ?8,
                pass_low_ms = ?9, pass_prior_max_ms = ?10
         WHERE portal_id = ?1",
        params![
            portal_id,
            pass.kind.as_str(),
            pass.token,
            pass.stop_before_ms,
            pass.high_ms,
            pass.pages,
            pass.started_at,
            updated_at,
            pass.low_ms,
            pass.prior_max_ms
        ],
    )?;
    Ok(())
}

type PortalRow = (PortalState, Option<String>);

fn portal_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PortalRow> {
    let kind: Option<String> = r.get(7)?;
    let pass = kind.as_ref().map(|_| -> rusqlite::Result<PassCheckpoint> {
        Ok(PassCheckpoint {
            kind: PassKind::Backfill, // replaced by the parsed kind
            token: r.get(8)?,
            stop_before_ms: r.get(9)?,
            high_ms: r.get(10)?,
            low_ms: r.get(14)?,
            prior_max_ms: r.get(15)?,
            pages: r.get(11)?,
            started_at: r.get::<_, Option<i64>>(12)?.unwrap_or(0),
        })
    });
    Ok((
        PortalState {
            portal_id: r.get(0)?,
            portal_arn: r.get(1)?,
            backfill_done: r.get(2)?,
            high_watermark_ms: r.get(3)?,
            archived_max_ms: r.get(4)?,
            dedup_floor_ms: r.get(5)?,
            flush_seq: r.get(6)?,
            pass: pass.transpose()?,
            updated_at: r.get(13)?,
            gap: match (r.get(16)?, r.get(17)?, r.get(18)?) {
                (Some(from_ms), Some(to_ms), Some(at)) => Some((Gap { from_ms, to_ms }, at)),
                _ => None,
            },
            lost_pending: r.get(19)?,
        },
        kind,
    ))
}
