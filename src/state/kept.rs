//! Duplicated sessions kept under S3 Object Lock: `verify --repair` cannot rewrite a
//! partition whose files are locked, so it records its duplicated sessions here, and `verify`
//! counts them as kept rather than as differences (see migration 0009).

use std::collections::HashSet;

use anyhow::Result;
use rusqlite::params;

use super::State;

impl State {
    /// Record `ids`, duplicated in `date`'s partition of `portal`, as kept.
    pub fn keep_duplicates(
        &mut self,
        portal: &str,
        date: &str,
        ids: &[String],
        now_ms: i64,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO kept_duplicates (portal_id, session_id, start_date, recorded_ms)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )?;
            for id in ids {
                insert.execute(params![portal, id, date, now_ms])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The sessions of `portal` recorded as kept duplicates.
    pub fn kept_duplicates(&self, portal: &str) -> Result<HashSet<String>> {
        let mut q = self
            .conn
            .prepare("SELECT session_id FROM kept_duplicates WHERE portal_id = ?1")?;
        let ids = q
            .query_map([portal], |r| r.get(0))?
            .collect::<rusqlite::Result<HashSet<String>>>()?;
        Ok(ids)
    }
}
