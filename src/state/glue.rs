//! `--glue-table` on a table whose partitions are registered in Glue: the partitions (portal,
//! UTC day) that committed flushes publish, kept from their commit until Glue holds them.
//!
//! While meta `glue_partitions` names a table, every flush's commit records the partitions of
//! its files in the same transaction, before any of them is published: a run killed between
//! publishing and registering leaves them here for the next run. A compaction records none:
//! it rewrites files within partitions that already hold files.

use anyhow::Result;
use rusqlite::{params, OptionalExtension, Transaction};

use super::{FileRecord, State};

/// The meta key naming the table (see [`crate::glue::Partitions::identity`]) whose partitions
/// this state records.
const KEY: &str = "glue_partitions";
/// The meta key naming the table every partition of the archive was once listed and
/// registered in; later partitions are those recorded since.
const LISTED: &str = "glue_partitions_listed";

impl State {
    /// The table this state records partitions for, if any.
    pub fn glue_table(&self) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [KEY], |r| r.get(0))
            .optional()?)
    }

    /// The table every partition of the archive was listed and registered in, if any.
    pub fn glue_listed(&self) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [LISTED], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Every partition the archive held when `table` was named ([`State::glue_start`]) is
    /// registered in it.
    pub fn glue_set_listed(&mut self, table: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![LISTED, table],
        )?;
        Ok(())
    }

    /// Record partitions for `table` from now on, in one transaction: every later commit
    /// records its files' partitions, and those of the files committed and not yet published
    /// are recorded now (the caller lists the published ones). For another table than the one
    /// recorded so far, the rows recorded and the listing done are dropped (the caller lists
    /// the archive again).
    pub fn glue_start(&mut self, table: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        if glue_recording(&tx)?.as_deref() != Some(table) {
            tx.execute("DELETE FROM glue_partitions", [])?;
            tx.execute("DELETE FROM meta WHERE key = ?1", [LISTED])?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![KEY, table],
        )?;
        let files: Vec<(String, String)> = {
            let mut stmt =
                tx.prepare("SELECT portal_id, path FROM flush_files WHERE published = 0")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO glue_partitions (portal_id, start_date) VALUES (?1, ?2)",
            )?;
            for (portal, path) in &files {
                if let Some(date) = partition_date(path) {
                    ins.execute(params![portal, date])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Stop recording partitions (the table lists its portals instead): forget the table and
    /// the partitions awaiting registration.
    pub fn glue_stop(&mut self) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM meta WHERE key IN (?1, ?2)", [KEY, LISTED])?;
        tx.execute("DELETE FROM glue_partitions", [])?;
        tx.commit()?;
        Ok(())
    }

    /// The partitions awaiting registration, `(portal_id, start_date)`, sorted.
    pub fn glue_pending(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT portal_id, start_date FROM glue_partitions ORDER BY portal_id, start_date",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Glue holds these partitions: forget them, in one transaction.
    pub fn glue_registered(&mut self, parts: &[(String, String)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut del = tx.prepare_cached(
                "DELETE FROM glue_partitions WHERE portal_id = ?1 AND start_date = ?2",
            )?;
            for (portal, date) in parts {
                del.execute(params![portal, date])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn glue_recording(tx: &Transaction) -> Result<Option<String>> {
    Ok(tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [KEY], |r| r.get(0))
        .optional()?)
}

/// In a flush's commit: record the partitions of its files, if this state records partitions.
pub(super) fn record_partitions(
    tx: &Transaction,
    portal_id: &str,
    files: &[FileRecord],
) -> Result<()> {
    if files.is_empty() || glue_recording(tx)?.is_none() {
        return Ok(());
    }
    let mut ins = tx.prepare_cached(
        "INSERT OR IGNORE INTO glue_partitions (portal_id, start_date) VALUES (?1, ?2)",
    )?;
    for f in files {
        if let Some(date) = partition_date(&f.path) {
            ins.execute(params![portal_id, date])?;
        }
    }
    Ok(())
}

/// The `start_date` of a published file's key (see [`crate::sink::final_key`]).
fn partition_date(path: &str) -> Option<&str> {
    path.split('/')
        .find_map(|seg| seg.strip_prefix("start_date="))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::FlushCommit;

    fn file(portal: &str, date: &str, seq: i64) -> FileRecord {
        FileRecord {
            seq,
            path: format!("sessions/portal_id={portal}/start_date={date}/part-s-{seq:010}.parquet"),
            staging: format!("_staging/portal_id={portal}/x-{seq}-{date}.tmp"),
            rows: 1,
            bytes: 1,
            sha256: "0".repeat(64),
        }
    }

    fn commit(st: &mut State, portal: &str, seq: i64, dates: &[&str]) {
        st.portal(portal).unwrap();
        let c = FlushCommit {
            seq,
            files: dates.iter().map(|d| file(portal, d, seq)).collect(),
            ..Default::default()
        };
        st.commit_flush(portal, &c).unwrap();
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(p, d)| (p.to_string(), d.to_string()))
            .collect()
    }

    #[test]
    fn commits_record_partitions_only_while_a_table_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(&dir.path().join("s.db")).unwrap();
        commit(&mut st, "a", 1, &["2026-11-01"]);
        assert!(st.glue_pending().unwrap().is_empty(), "no table: nothing");
        assert_eq!(st.glue_table().unwrap(), None);

        // Naming a table records the files committed and not yet published, then every
        // commit's.
        st.glue_start("db.t@1").unwrap();
        assert_eq!(st.glue_listed().unwrap(), None);
        st.glue_set_listed("db.t@1").unwrap();
        assert_eq!(st.glue_table().unwrap().as_deref(), Some("db.t@1"));
        assert_eq!(st.glue_pending().unwrap(), pairs(&[("a", "2026-11-01")]));
        commit(&mut st, "a", 2, &["2026-11-01", "2026-11-02"]);
        commit(&mut st, "b", 1, &["2026-11-02"]);
        let all = pairs(&[
            ("a", "2026-11-01"),
            ("a", "2026-11-02"),
            ("b", "2026-11-02"),
        ]);
        assert_eq!(st.glue_pending().unwrap(), all, "each partition once");

        st.glue_registered(&all[..2]).unwrap();
        assert_eq!(st.glue_pending().unwrap(), all[2..].to_vec());
        // The same table again keeps what awaits registration; another drops it.
        st.glue_start("db.t@1").unwrap();
        assert!(st.glue_pending().unwrap().contains(&all[2]));
        assert_eq!(st.glue_listed().unwrap().as_deref(), Some("db.t@1"));
        st.glue_registered(&all).unwrap();
        st.glue_start("db.other@5").unwrap();
        assert_eq!(st.glue_listed().unwrap(), None, "another table: list again");
        // Re-recorded from flush_files: none of the files is published yet here.
        assert_eq!(st.glue_pending().unwrap(), all);
        st.mark_published("a", 2).unwrap();
        st.glue_start("db.third@1").unwrap();
        assert_eq!(
            st.glue_pending().unwrap(),
            pairs(&[("a", "2026-11-01"), ("b", "2026-11-02")]),
            "published files are left to the listing"
        );

        st.glue_set_listed("db.other@5").unwrap();
        st.glue_stop().unwrap();
        assert_eq!(st.glue_table().unwrap(), None);
        assert_eq!(st.glue_listed().unwrap(), None);
        assert!(st.glue_pending().unwrap().is_empty());
        commit(&mut st, "a", 3, &["2026-11-03"]);
        assert!(st.glue_pending().unwrap().is_empty(), "stopped: nothing");
    }
}
