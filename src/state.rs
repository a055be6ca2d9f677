//! The SQLite state: per-portal checkpoints and watermarks, pending (still active) sessions,
//! the ids needed to deduplicate, the files each flush wrote, and the history of runs.
//!
//! Schema changes are numbered files in `migrations/`, applied in order and tracked with
//! `PRAGMA user_version`. A file that is not an archiver state, or comes from a newer
//! archiver, is refused and never modified.
//!
//! Every method is blocking; async callers go through `spawn_blocking`.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::clock::now_ms;
use crate::error::StateRefused;

/// `PRAGMA application_id` of an archiver state ('ARCH').
const APPLICATION_ID: i64 = 0x4152_4348;

/// Migrations in order; migration N brings the schema to `user_version` N.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../migrations/0001_init.sql")),
    (
        "0002_compaction",
        include_str!("../migrations/0002_compaction.sql"),
    ),
    ("0003_totals", include_str!("../migrations/0003_totals.sql")),
];

/// Published files stay listed in `flush_files` this long (for inspection); recovery needs
/// only the unpublished ones, so the table does not grow with the history.
const PUBLISHED_FILES_KEPT_MS: i64 = 86_400_000;

/// Runs kept in the history; older ones are pruned.
const RUNS_KEPT: i64 = 500;

/// What kind of pass a checkpoint belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PassKind {
    /// Oldest-first listing of everything.
    Backfill,
    /// Newest-first listing that stops once past what is already archived.
    Incremental,
}

impl PassKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PassKind::Backfill => "backfill",
            PassKind::Incremental => "incremental",
        }
    }

    fn parse(s: &str) -> Result<PassKind> {
        match s {
            "backfill" => Ok(PassKind::Backfill),
            "incremental" => Ok(PassKind::Incremental),
            other => anyhow::bail!("unknown pass kind {other:?} in state"),
        }
    }
}

/// A pass in progress: where to continue from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassCheckpoint {
    pub kind: PassKind,
    /// NextToken of the next page to fetch; `None` means the pass's first page.
    pub token: Option<String>,
    pub stop_before_ms: Option<i64>,
    pub high_ms: Option<i64>,
    pub pages: i64,
    pub started_at: i64,
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
}

/// A file of a flush: staged, then committed here, then published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub seq: i64,
    pub path: String,
    pub staging: String,
    pub rows: i64,
    pub bytes: i64,
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
}

/// The state database.
pub struct State {
    conn: Connection,
    path: PathBuf,
}

impl State {
    /// Open (creating if missing) and migrate. Refuses foreign, corrupt or newer files
    /// without writing to them.
    pub fn open(path: &Path) -> Result<State> {
        let fresh = !path.exists();
        if fresh {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the state folder {}", dir.display()))?;
            }
            // Owner-only from the first byte: the state names sessions.
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating state file {}", path.display()))?;
        }
        let state = State::connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE, 60)?;
        state.conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed checkpoint survives power loss, not only a killed process.
        state.conn.pragma_update(None, "synchronous", "FULL")?;
        state.conn.pragma_update(None, "foreign_keys", "ON")?;
        state.migrate()?;
        Ok(state)
    }

    /// Open an existing state read-only (for `status`): no lock, no migration, no writes.
    pub fn open_readonly(path: &Path) -> Result<State> {
        if !path.exists() {
            anyhow::bail!(
                "no state file at {} (nothing archived yet with this --state)",
                path.display()
            );
        }
        let state = State::connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY, 10)?;
        let v = state.user_version()?;
        if v < MIGRATIONS.len() as i64 {
            anyhow::bail!(
                "state file {} has schema v{v}; run `archiver run` once to upgrade it",
                path.display()
            );
        }
        Ok(state)
    }

    /// Open a connection and check the file is ours, before anything writes to it.
    fn connect(path: &Path, flags: OpenFlags, busy_secs: u64) -> Result<State> {
        let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_context(|| format!("opening state file {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(busy_secs))?;
        let state = State {
            conn,
            path: path.to_path_buf(),
        };
        state.check_identity()?;
        Ok(state)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn user_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Is this file ours? Reads only.
    fn check_identity(&self) -> Result<()> {
        let shown = self.path.display();
        let probe = (|| -> rusqlite::Result<(i64, i64, i64)> {
            let app: i64 = self
                .conn
                .query_row("PRAGMA application_id", [], |r| r.get(0))?;
            let ver: i64 = self
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let objects: i64 =
                self.conn
                    .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
            Ok((app, ver, objects))
        })();
        let (app, ver, objects) = match probe {
            Ok(v) => v,
            Err(e) => {
                return Err(StateRefused(format!(
                    "state file {shown} is not an archiver state (not a readable SQLite database: {e}); \
                     it was left untouched"
                ))
                .into())
            }
        };
        if app == 0 && ver == 0 && objects == 0 {
            return Ok(()); // empty: a new state
        }
        if app != APPLICATION_ID {
            return Err(StateRefused(format!(
                "state file {shown} is not an archiver state (a SQLite database of another application); \
                 it was left untouched"
            ))
            .into());
        }
        let known = MIGRATIONS.len() as i64;
        if ver > known {
            return Err(StateRefused(format!(
                "state file {shown} has schema v{ver}, newer than this archiver understands (v{known}); \
                 upgrade archiver. The file was left untouched"
            ))
            .into());
        }
        Ok(())
    }

    fn migrate(&self) -> Result<()> {
        let mut ver = self.user_version()?;
        while (ver as usize) < MIGRATIONS.len() {
            let (name, sql) = MIGRATIONS[ver as usize];
            let tx = self.conn.unchecked_transaction()?;
            tx.execute_batch(sql)
                .with_context(|| format!("applying state migration {name}"))?;
            if ver == 0 {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('state_id', ?1)",
                    [new_state_id()],
                )?;
            }
            ver += 1;
            tx.pragma_update(None, "user_version", ver)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// A random id fixed at creation: part of every file name, so that two states can never
    /// write the same object name.
    pub fn state_id(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'state_id'", [], |r| {
                r.get(0)
            })?)
    }

    /// The portal's row, created if it does not exist.
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
                        pass_high_ms, pass_pages, pass_started_at, updated_at
                 FROM portals WHERE portal_id = ?1",
                [portal_id],
                portal_from_row,
            )
            .optional()?;
        row.map(|(mut p, kind)| {
            if let (Some(kind), Some(pass)) = (kind, p.pass.as_mut()) {
                pass.kind = PassKind::parse(&kind)?;
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
        self.conn.execute(
            "UPDATE portals SET pass_kind = ?2, pass_token = ?3, pass_stop_before_ms = ?4,
                    pass_high_ms = ?5, pass_pages = ?6, pass_started_at = ?7, updated_at = ?8
             WHERE portal_id = ?1",
            params![
                portal_id,
                pass.kind.as_str(),
                pass.token,
                pass.stop_before_ms,
                pass.high_ms,
                pass.pages,
                pass.started_at,
                now_ms()
            ],
        )?;
        Ok(())
    }

    /// Pending sessions of a portal: id → (start_ms, seen_at).
    pub fn pending(&self, portal_id: &str) -> Result<HashMap<String, (i64, i64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT session_id, start_ms, seen_at FROM pending WHERE portal_id = ?1",
        )?;
        let rows = stmt.query_map([portal_id], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
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
            }
            let mut up = tx.prepare_cached(
                "INSERT INTO pending (portal_id, session_id, start_ms, seen_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (portal_id, session_id) DO UPDATE SET seen_at = excluded.seen_at",
            )?;
            for (id, start) in &c.pending_upsert {
                up.execute(params![portal_id, id, start, now])?;
            }
            let mut del =
                tx.prepare_cached("DELETE FROM pending WHERE portal_id = ?1 AND session_id = ?2")?;
            for id in &c.pending_remove {
                del.execute(params![portal_id, id])?;
            }
            let mut file = tx.prepare_cached(
                "INSERT INTO flush_files (portal_id, seq, path, staging, rows, bytes, committed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for f in &c.files {
                file.execute(params![
                    portal_id, f.seq, f.path, f.staging, f.rows, f.bytes, now
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
        match (&c.pass, c.complete) {
            (Some(pass), false) => {
                tx.execute(
                    "UPDATE portals SET pass_kind = ?2, pass_token = ?3, pass_stop_before_ms = ?4,
                            pass_high_ms = ?5, pass_pages = ?6, pass_started_at = ?7
                     WHERE portal_id = ?1",
                    params![
                        portal_id,
                        pass.kind.as_str(),
                        pass.token,
                        pass.stop_before_ms,
                        pass.high_ms,
                        pass.pages,
                        pass.started_at
                    ],
                )?;
            }
            (Some(pass), true) => {
                tx.execute(
                    "UPDATE portals SET
                        backfill_done = backfill_done OR ?2,
                        high_watermark_ms = CASE
                            WHEN ?3 IS NULL THEN high_watermark_ms
                            WHEN high_watermark_ms IS NULL THEN ?3
                            ELSE max(high_watermark_ms, ?3) END,
                        pass_kind = NULL, pass_token = NULL, pass_stop_before_ms = NULL,
                        pass_high_ms = NULL, pass_pages = 0, pass_started_at = NULL
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
                "INSERT INTO flush_files (portal_id, seq, path, staging, rows, bytes, committed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for f in files {
                file.execute(params![
                    portal_id, seq, f.path, f.staging, f.rows, f.bytes, now
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

    /// Committed files not yet published under their final name.
    pub fn unpublished(&self, portal_id: &str) -> Result<Vec<FileRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, path, staging, rows, bytes FROM flush_files
             WHERE portal_id = ?1 AND published = 0 ORDER BY seq, path",
        )?;
        let rows = stmt.query_map([portal_id], |r| {
            Ok(FileRecord {
                seq: r.get(0)?,
                path: r.get(1)?,
                staging: r.get(2)?,
                rows: r.get(3)?,
                bytes: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A flush's files are published; published files listed longer than a day are forgotten.
    pub fn mark_published(&self, portal_id: &str, seq: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE flush_files SET published = 1 WHERE portal_id = ?1 AND seq = ?2",
            params![portal_id, seq],
        )?;
        self.conn.execute(
            "DELETE FROM flush_files
             WHERE portal_id = ?1 AND published = 1 AND committed_at < ?2
               AND NOT EXISTS (SELECT 1 FROM retired_files r
                               WHERE r.portal_id = flush_files.portal_id AND r.seq = flush_files.seq)",
            params![portal_id, now_ms() - PUBLISHED_FILES_KEPT_MS],
        )?;
        Ok(())
    }

    /// Rows written by flushes and files published (flushes and compactions), ever.
    pub fn file_totals(&self, portal_id: &str) -> Result<(i64, i64)> {
        Ok(self.conn.query_row(
            "SELECT rows_written, files_written FROM portals WHERE portal_id = ?1",
            [portal_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

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

    /// A portal's row, if this state knows the portal. Reads only.
    pub fn find(&self, portal_id: &str) -> Result<Option<PortalState>> {
        self.find_portal(portal_id)
    }

    /// When a run last ended `ok` (epoch ms), and per portal when its work last ended `ok`
    /// (the start of that run).
    pub fn last_successes(&self) -> Result<(Option<i64>, HashMap<String, i64>)> {
        let run: Option<i64> = self.conn.query_row(
            "SELECT max(ended_at) FROM runs WHERE outcome = 'ok'",
            [],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare(
            "SELECT rp.portal_id, max(r.started_at) FROM run_portals rp JOIN runs r USING (run_id)
             WHERE rp.outcome = 'ok' GROUP BY rp.portal_id",
        )?;
        let per_portal = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok((run, per_portal))
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

type PortalRow = (PortalState, Option<String>);

fn portal_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PortalRow> {
    let kind: Option<String> = r.get(7)?;
    let pass = kind.as_ref().map(|_| -> rusqlite::Result<PassCheckpoint> {
        Ok(PassCheckpoint {
            kind: PassKind::Backfill, // replaced by the parsed kind
            token: r.get(8)?,
            stop_before_ms: r.get(9)?,
            high_ms: r.get(10)?,
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
        },
        kind,
    ))
}

fn new_state_id() -> String {
    // 48 bits from the clock and the process: unique enough to keep two states' file names apart.
    let mut x = (now_ms() as u64) ^ ((std::process::id() as u64) << 40);
    let addr = &x as *const u64 as u64;
    x ^= addr.rotate_left(17);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    format!("{:012x}", x & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(kind: PassKind, token: Option<&str>) -> PassCheckpoint {
        PassCheckpoint {
            kind,
            token: token.map(str::to_string),
            stop_before_ms: None,
            high_ms: Some(100),
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
        assert_eq!(st.unpublished("p").unwrap().len(), 1);
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

    #[test]
    fn foreign_corrupt_and_newer_files_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        // Not SQLite at all.
        let junk = dir.path().join("junk.db");
        std::fs::write(
            &junk,
            b"this is not a database, it is a shopping list\n".repeat(200),
        )
        .unwrap();
        let before = std::fs::read(&junk).unwrap();
        let err = State::open(&junk).err().unwrap();
        assert!(
            format!("{err:#}").contains("not an archiver state"),
            "{err:#}"
        );
        assert_eq!(std::fs::read(&junk).unwrap(), before);

        // Another application's SQLite database.
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let before = std::fs::read(&other).unwrap();
        let err = State::open(&other).err().unwrap();
        assert!(
            format!("{err:#}").contains("another application"),
            "{err:#}"
        );
        assert_eq!(std::fs::read(&other).unwrap(), before);

        // Ours, from a newer schema.
        let newer = dir.path().join("newer.db");
        drop(State::open(&newer).unwrap());
        Connection::open(&newer)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = State::open(&newer).err().unwrap();
        assert!(format!("{err:#}").contains("newer"), "{err:#}");
    }

    #[test]
    fn the_state_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(State::open(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }
}
