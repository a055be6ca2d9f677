//! Commits: a flush's ids, pending changes, files and checkpoint in one transaction; a
//! compaction's files and the files they replace; and what recovery needs of them.

use anyhow::{Context, Result};
use rusqlite::params;

use super::portals::save_pass;
use super::{PassCheckpoint, State};
use crate::clock::now_ms;
use crate::model::{Gap, OddSession, PassKind};

/// Published files stay listed in `flush_files` this long (for inspection); recovery needs
/// only the unpublished ones, so the table does not grow with the history.
const PUBLISHED_FILES_KEPT_MS: i64 = 86_400_000;

/// A file of a flush: staged, then committed here, then published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub seq: i64,
    pub path: String,
    pub staging: String,
    pub rows: i64,
    pub bytes: i64,
    /// SHA-256 of the bytes, 64 lowercase hex digits; empty for a file committed by an
    /// archiver before the manifest (recovery hashes it then).
    pub sha256: String,
}

/// Everything one flush commits, in one transaction.
#[derive(Debug, Default)]
pub struct FlushCommit {
    pub seq: i64,
    /// Sessions written by this flush: `(session_id, start_ms)`.
    pub archived: Vec<(String, i64)>,
    /// Sessions seen Active (new or again): `(session_id, start_ms)`.
    pub pending_upsert: Vec<(String, i64)>,
    /// Pending sessions that ended (written) or are gone.
    pub pending_remove: Vec<String>,
    pub files: Vec<FileRecord>,
    /// The checkpoint after this flush. With `complete`, the pass is over.
    pub pass: Option<PassCheckpoint>,
    pub complete: bool,
    /// Archived ids starting before this are pruned and the dedup floor raised to it.
    pub prune_before_ms: Option<i64>,
    /// Pending sessions GetSession did not find this time (kept; their misses counted).
    pub pending_missed: Vec<String>,
    /// Pending sessions given up (also in `pending_remove`): added to the portal's count.
    pub pending_lost: i64,
    /// A range the pass could not reach back to.
    pub gap: Option<Gap>,
    /// Sessions quarantined (new or again), each with its [`Held::floor_ms`](crate::dedup::Held).
    pub quarantine_upsert: Vec<(OddSession, Option<i64>)>,
    /// Quarantined sessions released or given up (those archived or now pending leave the
    /// quarantine without being listed here).
    pub quarantine_remove: Vec<String>,
    /// Quarantined sessions GetSession did not find this time (kept; their misses counted).
    pub quarantine_missed: Vec<String>,
    /// Quarantined sessions given up (also in `quarantine_remove`): added to the portal's count.
    pub quarantine_lost: i64,
}

impl State {
    /// Commit one flush: ids, pending changes, files and the checkpoint, all or nothing.
    /// The files must already be staged durably.
    pub fn commit_flush(&mut self, portal_id: &str, c: &FlushCommit) -> Result<()> {
        let now = now_ms();
        let tx = self.conn.transaction()?;
        // Prune first: the inserts below then go into the smaller table, and the delete scans
        // only the ids kept from before.
        if let Some(cut) = c.prune_before_ms {
            tx.execute(
                "DELETE FROM archived WHERE portal_id = ?1 AND start_ms < ?2",
                params![portal_id, cut],
            )?;
            tx.execute(
                "UPDATE portals SET dedup_floor_ms = max(coalesce(dedup_floor_ms, ?2), ?2)
                 WHERE portal_id = ?1",
                params![portal_id, cut],
            )?;
        }
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO archived (portal_id, session_id, start_ms) VALUES (?1, ?2, ?3)",
            )?;
            let max_start: Option<i64> = c.archived.iter().map(|(_, start)| *start).max();
            // Ids this very transaction prunes (below `prune_before_ms`) are not inserted: the
            // dedup floor covers them, and the table ends the same. The others go in key order:
            // each B-tree page is then visited once, instead of once per id (random UUIDs),
            // which on a table larger than the page cache costs a read and a WAL write each.
            let mut ids: Vec<&(String, i64)> = c
                .archived
                .iter()
                .filter(|(_, start)| c.prune_before_ms.is_none_or(|cut| *start >= cut))
                .collect();
            ids.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            // The portal id is bound once; a statement keeps its bindings between executions.
            ins.raw_bind_parameter(1, portal_id)?;
            for (id, start) in ids {
                ins.raw_bind_parameter(2, id.as_str())?;
                ins.raw_bind_parameter(3, *start)?;
                ins.raw_execute()
                    .with_context(|| format!("session {id} archived twice (state invariant)"))?;
            }
            if let Some(m) = max_start {
                tx.execute(
                    "UPDATE portals SET archived_max_ms = max(coalesce(archived_max_ms, ?2), ?2)
                     WHERE portal_id = ?1",
                    params![portal_id, m],
                )?;
                // Written outside the portal's pass (by `verify --repair`): a pass in progress
                // must look these ids up when it reaches them, wherever they lie. Its lookups
                // cover every start at or below its `prior_max` (see `Dedup::needs_lookup`).
                if c.pass.is_none() {
                    tx.execute(
                        "UPDATE portals SET pass_prior_max_ms = max(coalesce(pass_prior_max_ms, ?2), ?2)
                         WHERE portal_id = ?1 AND pass_kind IS NOT NULL",
                        params![portal_id, m],
                    )?;
                }
            }
            // Seen Active again: whatever misses it had are forgotten.
            let mut up = tx.prepare_cached(
                "INSERT INTO pending (portal_id, session_id, start_ms, seen_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (portal_id, session_id) DO UPDATE SET seen_at = excluded.seen_at,
                     misses = 0, first_missed_at = NULL",
            )?;
            for (id, start) in &c.pending_upsert {
                up.execute(params![portal_id, id, start, now])?;
            }
            let mut del =
                tx.prepare_cached("DELETE FROM pending WHERE portal_id = ?1 AND session_id = ?2")?;
            for id in &c.pending_remove {
                del.execute(params![portal_id, id])?;
            }
            let mut missed = tx.prepare_cached(
                "UPDATE pending SET misses = misses + 1, first_missed_at = coalesce(first_missed_at, ?3)
                 WHERE portal_id = ?1 AND session_id = ?2",
            )?;
            for id in &c.pending_missed {
                missed.execute(params![portal_id, id, now])?;
            }
            let mut file = tx.prepare_cached(
                "INSERT INTO flush_files (portal_id, seq, path, staging, rows, bytes, committed_at, sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for f in &c.files {
                file.execute(params![
                    portal_id, f.seq, f.path, f.staging, f.rows, f.bytes, now, f.sha256
                ])?;
            }
        }
        tx.execute(
            "UPDATE portals SET flush_seq = max(flush_seq, ?2), updated_at = ?3,
                    rows_written = rows_written + ?4, files_written = files_written + ?5
             WHERE portal_id = ?1",
            params![
                portal_id,
                c.seq,
                now,
                c.files.iter().map(|f| f.rows).sum::<i64>(),
                c.files.len() as i64
            ],
        )?;
        if c.pending_lost > 0 {
            tx.execute(
                "UPDATE portals SET lost_pending = lost_pending + ?2 WHERE portal_id = ?1",
                params![portal_id, c.pending_lost],
            )?;
        }
        super::quarantine::commit_quarantine(&tx, portal_id, c, now)?;
        super::glue::record_partitions(&tx, portal_id, &c.files)?;
        if let Some(g) = c.gap {
            tx.execute(
                "UPDATE portals SET gap_from_ms = ?2, gap_to_ms = ?3, gap_found_at = ?4
                 WHERE portal_id = ?1",
                params![portal_id, g.from_ms, g.to_ms, now],
            )?;
        }
        match (&c.pass, c.complete) {
            (Some(pass), false) => save_pass(&tx, portal_id, pass, now)?,
            (Some(pass), true) => {
                tx.execute(
                    "UPDATE portals SET
                        backfill_done = backfill_done OR ?2,
                        high_watermark_ms = CASE
                            WHEN ?3 IS NULL THEN high_watermark_ms
                            WHEN high_watermark_ms IS NULL THEN ?3
                            ELSE max(high_watermark_ms, ?3) END,
                        pass_kind = NULL, pass_token = NULL, pass_stop_before_ms = NULL,
                        pass_high_ms = NULL, pass_pages = 0, pass_started_at = NULL,
                        pass_low_ms = NULL, pass_prior_max_ms = NULL
                     WHERE portal_id = ?1",
                    params![portal_id, pass.kind == PassKind::Backfill, pass.high_ms],
                )?;
            }
            (None, _) => {}
        }
        tx.commit()
            .with_context(|| format!("committing flush {} of portal {portal_id}", c.seq))?;
        Ok(())
    }

    /// Commit a compaction: the new files (to publish) and the files they replace (to delete
    /// once published), under a new flush sequence, in one transaction.
    pub fn commit_compaction(
        &mut self,
        portal_id: &str,
        seq: i64,
        files: &[FileRecord],
        retired: &[String],
    ) -> Result<()> {
        let now = now_ms();
        let tx = self.conn.transaction()?;
        {
            let mut file = tx.prepare_cached(
                "INSERT INTO flush_files (portal_id, seq, path, staging, rows, bytes, committed_at, sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for f in files {
                file.execute(params![
                    portal_id, seq, f.path, f.staging, f.rows, f.bytes, now, f.sha256
                ])?;
            }
            let mut ret = tx.prepare_cached(
                "INSERT INTO retired_files (portal_id, seq, path) VALUES (?1, ?2, ?3)",
            )?;
            for path in retired {
                ret.execute(params![portal_id, seq, path])?;
            }
        }
        tx.execute(
            "UPDATE portals SET flush_seq = max(flush_seq, ?2), updated_at = ?3,
                    files_written = files_written + ?4
             WHERE portal_id = ?1",
            params![portal_id, seq, now, files.len() as i64],
        )?;
        tx.commit()
            .with_context(|| format!("committing compaction {seq} of portal {portal_id}"))?;
        Ok(())
    }

    /// Files replaced by a committed compaction and not deleted yet.
    pub fn retired(&self, portal_id: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT path FROM retired_files WHERE portal_id = ?1 ORDER BY path")?;
        let rows = stmt.query_map([portal_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The files a committed compaction replaces (empty for a flush's sequence), sorted.
    pub fn retired_of(&self, portal_id: &str, seq: i64) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT path FROM retired_files WHERE portal_id = ?1 AND seq = ?2 ORDER BY path",
        )?;
        let rows = stmt.query_map(params![portal_id, seq], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The retired files are deleted (durably): forget them, in one transaction.
    pub fn forget_retired(&mut self, portal_id: &str, paths: &[String]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut del =
                tx.prepare_cached("DELETE FROM retired_files WHERE portal_id = ?1 AND path = ?2")?;
            for path in paths {
                del.execute(params![portal_id, path])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A compaction's (or repair's) replace is done: its new files are published and the
    /// files they replace deleted. Both records change in one transaction: recovery never
    /// sees the replaced files forgotten while the new ones still wait to be published (it
    /// would write their manifest a second time).
    pub fn finish_replace(&mut self, portal_id: &str, seq: i64, retired: &[String]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut del =
                tx.prepare_cached("DELETE FROM retired_files WHERE portal_id = ?1 AND path = ?2")?;
            for path in retired {
                del.execute(params![portal_id, path])?;
            }
        }
        mark_published(&tx, portal_id, seq)?;
        tx.commit()?;
        Ok(())
    }

    /// A committed file was lost before it was published (its staged copy is gone): forget
    /// it, and un-record the sessions of its day that no file of the portal holds (`kept`:
    /// the ids of the day's other files), so a later listing writes them again. A lost
    /// compaction is dropped whole: the files it was to replace are kept. One transaction.
    /// Returns how many ids were un-recorded.
    pub fn forget_lost_file(
        &mut self,
        portal_id: &str,
        file: &FileRecord,
        day: (i64, i64),
        kept: &std::collections::HashSet<String>,
    ) -> Result<u64> {
        let tx = self.conn.transaction()?;
        let ids: Vec<String> = {
            let mut stmt = tx.prepare_cached(
                "SELECT session_id FROM archived
                 WHERE portal_id = ?1 AND start_ms >= ?2 AND start_ms < ?3",
            )?;
            let rows = stmt.query_map(params![portal_id, day.0, day.1], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<Vec<String>>>()?
        };
        let mut n = 0;
        {
            let mut del =
                tx.prepare_cached("DELETE FROM archived WHERE portal_id = ?1 AND session_id = ?2")?;
            for id in ids.iter().filter(|id| !kept.contains(*id)) {
                del.execute(params![portal_id, id])?;
                n += 1;
            }
        }
        tx.execute(
            "DELETE FROM flush_files WHERE portal_id = ?1 AND seq = ?2 AND path = ?3",
            params![portal_id, file.seq, file.path],
        )?;
        // A compaction's (or repair's rewrite's) file: the files it was to replace stay, and
        // are no longer to be deleted. It added no rows.
        let replaced = tx.execute(
            "DELETE FROM retired_files WHERE portal_id = ?1 AND seq = ?2",
            params![portal_id, file.seq],
        )?;
        let rows = if replaced > 0 { 0 } else { file.rows };
        tx.execute(
            "UPDATE portals SET rows_written = max(rows_written - ?2, 0),
                    files_written = max(files_written - 1, 0)
             WHERE portal_id = ?1",
            params![portal_id, rows],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Committed files not yet published under their final name.
    pub fn unpublished(&self, portal_id: &str) -> Result<Vec<FileRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, path, staging, rows, bytes, coalesce(sha256, '') FROM flush_files
             WHERE portal_id = ?1 AND published = 0 ORDER BY seq, path",
        )?;
        let rows = stmt.query_map([portal_id], |r| {
            Ok(FileRecord {
                seq: r.get(0)?,
                path: r.get(1)?,
                staging: r.get(2)?,
                rows: r.get(3)?,
                bytes: r.get(4)?,
                sha256: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A flush's files are published; published files listed longer than a day are forgotten.
    pub fn mark_published(&self, portal_id: &str, seq: i64) -> Result<()> {
        mark_published(&self.conn, portal_id, seq)
    }

    /// Rows written by flushes and files published (flushes and compactions), ever.
    pub fn file_totals(&self, portal_id: &str) -> Result<(i64, i64)> {
        Ok(self.conn.query_row(
            "SELECT rows_written, files_written FROM portals WHERE portal_id = ?1",
            [portal_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }
}

/// Flush `seq`'s files are published; published files older than a day are dropped from the
/// table unless a pending replace still needs them.
fn mark_published(conn: &rusqlite::Connection, portal_id: &str, seq: i64) -> Result<()> {
    conn.execute(
        "UPDATE flush_files SET published = 1 WHERE portal_id = ?1 AND seq = ?2",
        params![portal_id, seq],
    )?;
    conn.execute(
        "DELETE FROM flush_files
         WHERE portal_id = ?1 AND published = 1 AND committed_at < ?2
           AND NOT EXISTS (SELECT 1 FROM retired_files r
                           WHERE r.portal_id = flush_files.portal_id AND r.seq = flush_files.seq)",
        params![portal_id, now_ms() - PUBLISHED_FILES_KEPT_MS],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn pass(kind: PassKind, token: Option<&str>) -> PassCheckpoint {
        PassCheckpoint {
            kind,
            token: token.map(str::to_string),
            stop_before_ms: None,
            high_ms: Some(100),
            low_ms: None,
            prior_max_ms: None,
            pages: 3,
            started_at: 1,
        }
    }

    #[test]
    fn a_flush_commits_ids_pending_files_and_checkpoint_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut st = State::open(&path).unwrap();
        st.portal("p").unwrap();
        st.begin_pass("p", &pass(PassKind::Backfill, None)).unwrap();
        let c = FlushCommit {
            seq: 1,
            archived: vec![("a".into(), 10), ("b".into(), 20)],
            pending_upsert: vec![("c".into(), 30)],
            files: vec![FileRecord {
                seq: 1,
                path: "x.parquet".into(),
                staging: "x.tmp".into(),
                rows: 2,
                bytes: 9,
                sha256: "ab".repeat(32),
            }],
            pass: Some(pass(PassKind::Backfill, Some("tok"))),
            ..Default::default()
        };
        st.commit_flush("p", &c).unwrap();
        drop(st);
        let st = State::open(&path).unwrap();
        let p = st.portal("p").unwrap();
        assert_eq!(p.flush_seq, 1);
        assert_eq!(p.archived_max_ms, Some(20));
        assert_eq!(p.pass.as_ref().unwrap().token.as_deref(), Some("tok"));
        assert!(!p.backfill_done);
        assert_eq!(st.archived_among("p", ["a", "b", "z"]).unwrap().len(), 2);
        assert!(st.pending("p").unwrap().contains_key("c"));
        assert_eq!(st.unpublished("p").unwrap(), c.files);
        st.mark_published("p", 1).unwrap();
        assert!(st.unpublished("p").unwrap().is_empty());
    }

    #[test]
    fn published_files_are_forgotten_after_a_day_but_the_totals_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(&dir.path().join("s.db")).unwrap();
        st.portal("p").unwrap();
        let file = |seq: i64, rows: i64| FileRecord {
            seq,
            path: format!("f{seq}.parquet"),
            staging: format!("f{seq}.tmp"),
            rows,
            bytes: 1,
            sha256: String::new(),
        };
        for seq in 1..=3 {
            let c = FlushCommit {
                seq,
                archived: vec![(format!("s{seq}"), seq)],
                files: vec![file(seq, 5)],
                ..Default::default()
            };
            st.commit_flush("p", &c).unwrap();
        }
        st.mark_published("p", 1).unwrap();
        st.mark_published("p", 2).unwrap();
        let listed = |st: &State| -> i64 {
            st.conn
                .query_row("SELECT count(*) FROM flush_files", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(listed(&st), 3, "published files are kept for a day");
        // Two days later: published files go, the unpublished one (seq 3) stays for recovery.
        st.conn
            .execute(
                "UPDATE flush_files SET committed_at = committed_at - 2 * 86400000",
                [],
            )
            .unwrap();
        st.mark_published("p", 2).unwrap();
        assert_eq!(listed(&st), 1);
        assert_eq!(st.unpublished("p").unwrap().len(), 1);
        // A compaction adds files, not rows.
        st.commit_compaction(
            "p",
            4,
            &[file(4, 10)],
            &["f1.parquet".into(), "f2.parquet".into()],
        )
        .unwrap();
        assert_eq!(st.file_totals("p").unwrap(), (15, 4));
    }

    #[test]
    fn a_session_archived_twice_rolls_the_whole_flush_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(&dir.path().join("s.db")).unwrap();
        st.portal("p").unwrap();
        let first = FlushCommit {
            seq: 1,
            archived: vec![("a".into(), 10)],
            ..Default::default()
        };
        st.commit_flush("p", &first).unwrap();
        let again = FlushCommit {
            seq: 2,
            archived: vec![("b".into(), 11), ("a".into(), 10)],
            ..Default::default()
        };
        assert!(st.commit_flush("p", &again).is_err());
        assert!(st.archived_among("p", ["b"]).unwrap().is_empty());
        assert_eq!(st.portal("p").unwrap().flush_seq, 1);
    }

    #[test]
    fn completing_a_pass_sets_the_watermark_and_pruning_raises_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(&dir.path().join("s.db")).unwrap();
        st.portal("p").unwrap();
        let c = FlushCommit {
            seq: 1,
            archived: vec![("old".into(), 5), ("new".into(), 50)],
            pass: Some(pass(PassKind::Backfill, None)),
            complete: true,
            prune_before_ms: Some(40),
            ..Default::default()
        };
        st.commit_flush("p", &c).unwrap();
        let p = st.portal("p").unwrap();
        assert!(p.backfill_done);
        assert!(p.pass.is_none());
        assert_eq!(p.high_watermark_ms, Some(100));
        assert_eq!(p.dedup_floor_ms, Some(40));
        let kept = st.archived_among("p", ["old", "new"]).unwrap();
        assert_eq!(kept, HashSet::from(["new".to_string()]));
    }
}
