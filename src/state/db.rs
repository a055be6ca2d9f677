//! The SQLite database: open, check that the file is an archiver state, migrate.
//!
//! Schema changes are numbered files in `migrations/`, applied in order and tracked with
//! `PRAGMA user_version`. A file that is not an archiver state, or comes from a newer
//! archiver, is refused and never modified.
//!
//! Every method is blocking; async callers go through [`super::StateHandle::db`].

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};

use crate::error::StateRefused;

/// `PRAGMA application_id` of an archiver state ('ARCH').
const APPLICATION_ID: i64 = 0x4152_4348;

/// Migrations in order; migration N brings the schema to `user_version` N.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../../migrations/0001_init.sql")),
    (
        "0002_compaction",
        include_str!("../../migrations/0002_compaction.sql"),
    ),
    (
        "0003_totals",
        include_str!("../../migrations/0003_totals.sql"),
    ),
    (
        "0004_exactness",
        include_str!("../../migrations/0004_exactness.sql"),
    ),
    (
        "0005_manifest",
        include_str!("../../migrations/0005_manifest.sql"),
    ),
    (
        "0006_quarantine",
        include_str!("../../migrations/0006_quarantine.sql"),
    ),
    (
        "0007_glue_partitions",
        include_str!("../../migrations/0007_glue_partitions.sql"),
    ),
    (
        "0008_digests",
        include_str!("../../migrations/0008_digests.sql"),
    ),
    (
        "0009_kept_duplicates",
        include_str!("../../migrations/0009_kept_duplicates.sql"),
    ),
];

/// The state database.
pub struct State {
    pub(super) conn: Connection,
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
                    [crate::ids::state_id()],
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_state_that_archived_before_digests_imports_its_manifests_into_its_first_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        // A schema v7 state, as an archiver before digests left it.
        let conn = Connection::open(&path).unwrap();
        for (_, sql) in &MIGRATIONS[..7] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 7;
             INSERT INTO meta (key, value) VALUES ('state_id', 'old');
             INSERT INTO portals (portal_id, flush_seq) VALUES ('p', 3);
             INSERT INTO runs (command, pid, started_at, outcome) VALUES ('run', 1, 1000, 'ok');",
        )
        .unwrap();
        drop(conn);
        let st = State::open(&path).unwrap();
        let basis = st.digest_basis().unwrap();
        assert!(basis.import);
        assert_eq!(basis.created_at_ms, 1000);
        assert!(basis.previous.is_none() && basis.manifests.is_empty());
        // A new state imports nothing, and starts now.
        let new = State::open(&dir.path().join("new.db")).unwrap();
        let basis = new.digest_basis().unwrap();
        assert!(!basis.import);
        assert!((crate::clock::now_ms() - basis.created_at_ms).abs() < 600_000);
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
