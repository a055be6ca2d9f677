//! The quarantine: sessions the service sent in a form that cannot be archived faithfully,
//! kept with their fields as received (never the username or client IPs) until a later pass
//! gets them usably. A flush's quarantine changes commit in its transaction
//! ([`super::FlushCommit`]); archiving a session, or making it pending, ends its quarantine in
//! that same transaction, so a quarantined id is never an archived one.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use rusqlite::{params, Transaction};

use super::{FlushCommit, State};
use crate::dedup::Held;

/// One quarantined session, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantineRow {
    pub session_id: String,
    pub reason: String,
    pub portal_arn: Option<String>,
    pub status: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub start_ms: Option<i64>,
    pub floor_ms: Option<i64>,
    /// When a pass first and last got it in this form (epoch ms).
    pub first_seen_at: i64,
    pub last_seen_at: i64,
    /// Passes in a row that asked for it and the service did not find it.
    pub misses: i64,
    pub first_missed_at: Option<i64>,
}

impl QuarantineRow {
    pub fn held(&self) -> Held {
        Held {
            start_ms: self.start_ms,
            floor_ms: self.floor_ms,
        }
    }
}

impl State {
    /// A portal's quarantined sessions, by session id.
    pub fn quarantine(&self, portal_id: &str) -> Result<Vec<QuarantineRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT session_id, reason, raw_portal_arn, raw_status, raw_start_time, raw_end_time,
                    start_ms, floor_ms, first_seen_at, last_seen_at, misses, first_missed_at
             FROM quarantine WHERE portal_id = ?1 ORDER BY session_id",
        )?;
        let rows = stmt.query_map([portal_id], |r| {
            Ok(QuarantineRow {
                session_id: r.get(0)?,
                reason: r.get(1)?,
                portal_arn: r.get(2)?,
                status: r.get(3)?,
                start_time: r.get(4)?,
                end_time: r.get(5)?,
                start_ms: r.get(6)?,
                floor_ms: r.get(7)?,
                first_seen_at: r.get(8)?,
                last_seen_at: r.get(9)?,
                misses: r.get(10)?,
                first_missed_at: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A portal's quarantined sessions as dedup needs them.
    pub fn quarantine_held(&self, portal_id: &str) -> Result<HashMap<String, Held>> {
        Ok(self
            .quarantine(portal_id)?
            .into_iter()
            .map(|q| (q.session_id.clone(), q.held()))
            .collect())
    }

    /// Quarantined sessions given up, ever, after the service stopped returning them.
    pub fn quarantine_lost(&self, portal_id: &str) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT coalesce((SELECT lost_quarantined FROM portals WHERE portal_id = ?1), 0)",
            [portal_id],
            |r| r.get(0),
        )?)
    }
}

/// A flush's quarantine changes, inside its transaction (see [`State::commit_flush`]):
/// sessions archived or now pending leave the quarantine; those quarantined (new or again) are
/// written with the fields last received, keeping when they were first seen and, for one
/// quarantined without a start, the floor of that moment.
pub(super) fn commit_quarantine(
    tx: &Transaction<'_>,
    portal_id: &str,
    c: &FlushCommit,
    now: i64,
) -> Result<()> {
    // The portal's quarantined ids as this transaction sees them (almost always none): a
    // session archived or made pending leaves the quarantine, looked up here rather than with
    // one DELETE per archived id.
    let held: HashSet<String> = {
        let mut q = tx.prepare_cached("SELECT session_id FROM quarantine WHERE portal_id = ?1")?;
        let ids = q.query_map([portal_id], |r| r.get(0))?;
        ids.collect::<rusqlite::Result<_>>()?
    };
    if !held.is_empty() {
        let mut del =
            tx.prepare_cached("DELETE FROM quarantine WHERE portal_id = ?1 AND session_id = ?2")?;
        let released = c
            .archived
            .iter()
            .chain(&c.pending_upsert)
            .map(|(id, _)| id)
            .chain(&c.quarantine_remove)
            .filter(|id| held.contains(id.as_str()));
        for id in released {
            del.execute(params![portal_id, id])?;
        }
    }
    let mut up = tx.prepare_cached(
        "INSERT INTO quarantine (portal_id, session_id, reason, raw_portal_arn, raw_status,
                raw_start_time, raw_end_time, start_ms, floor_ms, first_seen_at, last_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)
         ON CONFLICT (portal_id, session_id) DO UPDATE SET reason = excluded.reason,
             raw_portal_arn = excluded.raw_portal_arn, raw_status = excluded.raw_status,
             raw_start_time = excluded.raw_start_time, raw_end_time = excluded.raw_end_time,
             start_ms = coalesce(excluded.start_ms, start_ms), last_seen_at = excluded.last_seen_at,
             misses = 0, first_missed_at = NULL",
    )?;
    for (o, floor_ms) in &c.quarantine_upsert {
        up.execute(params![
            portal_id,
            o.session_id,
            o.reason,
            o.raw.portal_arn,
            o.raw.status,
            o.raw.start_time,
            o.raw.end_time,
            o.start_ms,
            floor_ms,
            now
        ])?;
    }
    let mut missed = tx.prepare_cached(
        "UPDATE quarantine SET misses = misses + 1, first_missed_at = coalesce(first_missed_at, ?3)
         WHERE portal_id = ?1 AND session_id = ?2",
    )?;
    for id in &c.quarantine_missed {
        missed.execute(params![portal_id, id, now])?;
    }
    if c.quarantine_lost > 0 {
        tx.execute(
            "UPDATE portals SET lost_quarantined = lost_quarantined + ?2 WHERE portal_id = ?1",
            params![portal_id, c.quarantine_lost],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OddSession, RawFields};

    fn odd(id: &str, status: &str, start_ms: Option<i64>) -> OddSession {
        OddSession {
            session_id: id.into(),
            reason: format!("unknown status {status:?}"),
            start_ms,
            raw: RawFields {
                portal_arn: Some("arn".into()),
                status: Some(status.into()),
                start_time: start_ms.map(|s| format!("{}.000", s / 1000)),
                end_time: None,
            },
        }
    }

    #[test]
    fn quarantined_sessions_are_kept_updated_and_leave_when_archived_or_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(&dir.path().join("s.db")).unwrap();
        st.portal("p").unwrap();
        let c = FlushCommit {
            seq: 1,
            quarantine_upsert: vec![
                (odd("a", "Pending", Some(10_000)), None),
                (odd("b", "Pending", None), Some(5)),
                (odd("c", "Pending", None), None),
            ],
            ..Default::default()
        };
        st.commit_flush("p", &c).unwrap();
        let q = st.quarantine("p").unwrap();
        assert_eq!(q.len(), 3);
        assert_eq!(q[0].status.as_deref(), Some("Pending"));
        assert_eq!(
            q[1].held(),
            Held {
                start_ms: None,
                floor_ms: Some(5)
            }
        );
        // Seen again in another form: the fields are the newest, the first sighting and the
        // floor stay; a miss is counted.
        let c = FlushCommit {
            seq: 2,
            quarantine_upsert: vec![(odd("b", "Hibernating", Some(20_000)), None)],
            quarantine_missed: vec!["c".into()],
            ..Default::default()
        };
        st.commit_flush("p", &c).unwrap();
        let q = st.quarantine("p").unwrap();
        assert_eq!(q[1].status.as_deref(), Some("Hibernating"));
        assert_eq!(
            q[1].held(),
            Held {
                start_ms: Some(20_000),
                floor_ms: Some(5)
            }
        );
        assert_eq!(q[2].misses, 1);
        // Archived, pending, given up: gone.
        let c = FlushCommit {
            seq: 3,
            archived: vec![("a".into(), 10_000)],
            pending_upsert: vec![("b".into(), 20_000)],
            quarantine_remove: vec!["c".into()],
            quarantine_lost: 1,
            ..Default::default()
        };
        st.commit_flush("p", &c).unwrap();
        assert!(st.quarantine("p").unwrap().is_empty());
        assert_eq!(st.quarantine_lost("p").unwrap(), 1);
    }
}
