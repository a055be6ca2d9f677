//! The history of runs: when each started and ended, and each portal's outcome.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use rusqlite::{params, OptionalExtension};

use super::State;
use crate::clock::now_ms;

/// Runs kept in the history; older ones are pruned.
const RUNS_KEPT: i64 = 500;

impl State {
    /// Record a run's start; the history keeps the newest runs only.
    pub fn start_run(&self, command: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (command, pid, started_at, outcome) VALUES (?1, ?2, ?3, 'running')",
            params![command, std::process::id(), now_ms()],
        )?;
        let id = self.conn.last_insert_rowid();
        self.conn.execute(
            "DELETE FROM run_portals WHERE run_id <= ?1 - ?2",
            params![id, RUNS_KEPT],
        )?;
        self.conn.execute(
            "DELETE FROM runs WHERE run_id <= ?1 - ?2",
            params![id, RUNS_KEPT],
        )?;
        Ok(id)
    }

    pub fn finish_run(&self, run_id: i64, outcome: &str, detail: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET ended_at = ?2, outcome = ?3, detail = ?4 WHERE run_id = ?1",
            params![run_id, now_ms(), outcome, detail],
        )?;
        Ok(())
    }

    pub fn record_portal_outcome(&self, run_id: i64, o: &PortalOutcome) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO run_portals (run_id, portal_id, pass, outcome, rows, pages, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![run_id, o.portal_id, o.pass, o.outcome, o.rows, o.pages, o.error],
        )?;
        Ok(())
    }

    /// The newest run's row: (run_id, command, started_at, ended_at, outcome, detail).
    pub fn last_run(&self) -> Result<Option<RunRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT run_id, command, started_at, ended_at, outcome, detail
                 FROM runs ORDER BY run_id DESC LIMIT 1",
                [],
                |r| {
                    Ok(RunRow {
                        run_id: r.get(0)?,
                        command: r.get(1)?,
                        started_at: r.get(2)?,
                        ended_at: r.get(3)?,
                        outcome: r.get(4)?,
                        detail: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// The newest recorded outcome for a portal.
    pub fn last_portal_outcome(&self, portal_id: &str) -> Result<Option<(i64, PortalOutcome)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT rp.run_id, r.started_at, rp.pass, rp.outcome, rp.rows, rp.pages, rp.error
                 FROM run_portals rp JOIN runs r USING (run_id)
                 WHERE rp.portal_id = ?1 ORDER BY rp.run_id DESC LIMIT 1",
                [portal_id],
                |r| {
                    Ok((
                        r.get(1)?,
                        PortalOutcome {
                            portal_id: portal_id.to_string(),
                            pass: r.get(2)?,
                            outcome: r.get(3)?,
                            rows: r.get(4)?,
                            pages: r.get(5)?,
                            error: r.get(6)?,
                        },
                    ))
                },
            )
            .optional()?)
    }

    /// The portals whose newest recorded outcome is `unlisted` (a run's discovery did not list
    /// them, though this state or the archive knew them), each with that run's id and start
    /// (epoch ms), by portal id. A later run that archives the portal again ends it.
    pub fn unlisted_portals(&self) -> Result<Vec<(String, i64, i64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT rp.portal_id, rp.run_id, r.started_at
             FROM run_portals rp JOIN runs r USING (run_id)
             WHERE rp.outcome = 'unlisted'
               AND rp.run_id = (SELECT max(run_id) FROM run_portals x WHERE x.portal_id = rp.portal_id)
             ORDER BY rp.portal_id",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// When each command last ended `ok` (epoch ms), and per portal when a run or backfill
    /// last archived it without error (the start of that run).
    pub fn last_successes(&self) -> Result<LastSuccesses> {
        let mut stmt = self.conn.prepare(
            "SELECT command, max(ended_at) FROM runs WHERE outcome = 'ok' GROUP BY command",
        )?;
        let per_command = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT rp.portal_id, max(r.started_at) FROM run_portals rp JOIN runs r USING (run_id)
             WHERE rp.outcome = 'ok' GROUP BY rp.portal_id",
        )?;
        let per_portal = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(LastSuccesses {
            per_command,
            per_portal,
        })
    }
}

/// When each command, and each portal's work, last succeeded (epoch ms).
#[derive(Clone, Debug, Default)]
pub struct LastSuccesses {
    /// By command as the history names it: `run`, `backfill`, `compact`, `verify --repair`.
    pub per_command: BTreeMap<String, i64>,
    pub per_portal: HashMap<String, i64>,
}

/// A row of the run history.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunRow {
    pub run_id: i64,
    pub command: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub outcome: String,
    pub detail: Option<String>,
}

/// What one portal's work in a run came to.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PortalOutcome {
    pub portal_id: String,
    pub pass: Option<String>,
    pub outcome: String,
    pub rows: i64,
    pub pages: i64,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::{PortalOutcome, State};

    fn outcome(portal: &str, outcome: &str) -> PortalOutcome {
        PortalOutcome {
            portal_id: portal.into(),
            pass: None,
            outcome: outcome.into(),
            rows: 0,
            pages: 0,
            error: None,
        }
    }

    #[test]
    fn a_portal_is_unlisted_until_a_later_run_works_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(&dir.path().join("s.db")).unwrap();
        let first = st.start_run("run").unwrap();
        st.record_portal_outcome(first, &outcome("a", "unlisted"))
            .unwrap();
        st.record_portal_outcome(first, &outcome("b", "unlisted"))
            .unwrap();
        st.record_portal_outcome(first, &outcome("c", "ok"))
            .unwrap();
        let second = st.start_run("run").unwrap();
        st.record_portal_outcome(second, &outcome("b", "ok"))
            .unwrap();
        // A run that did not look (a failed discovery, `--portal-id`) changes nothing.
        st.start_run("run").unwrap();
        let unlisted: Vec<(String, i64)> = st
            .unlisted_portals()
            .unwrap()
            .into_iter()
            .map(|(p, run, _)| (p, run))
            .collect();
        assert_eq!(unlisted, [("a".to_string(), first)]);
    }
}
