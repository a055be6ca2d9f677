//! The state: one SQLite database per job, and where it lives.
//!
//! - [`db`]: open, check and migrate the database;
//! - [`portals`]: per-portal checkpoints, watermarks, pending sessions, dedup ids;
//! - [`quarantine`]: sessions sent in a form that cannot be archived faithfully;
//! - [`commit`]: a flush's or a compaction's commit, and what recovery needs of it;
//! - [`runs`]: the history of runs;
//! - [`digests`]: the manifests' SHA-256 and the newest digest of the chain;
//! - [`glue`]: the partitions awaiting registration in a `--glue-table`;
//! - where it lives: a local file under the run lock ([`lock`]), or an object in S3 under a
//!   lease ([`lease`]), worked on as a local copy and uploaded after every commit
//!   ([`remote`]).
//!
//! [`StateHandle`] is the one handle every command shares: it holds the lock or lease for as
//! long as it lives, runs every database call off the async runtime, and owns the durability
//! step that follows each commit.

mod commit;
mod db;
mod digests;
mod glue;
mod kept;
mod lease;
pub mod lock;
mod portals;
mod quarantine;
mod remote;
mod runs;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::Client;

pub use commit::{FileRecord, FlushCommit};
pub use db::State;
pub use digests::{DigestBasis, DigestRow, ManifestRow, NewDigest, Unwritten};
pub use portals::{PassCheckpoint, PendingRow, PortalState};
pub use quarantine::QuarantineRow;
pub use runs::{LastSuccesses, PortalOutcome, RunRow};

use crate::config::{Config, StateLoc};
use remote::Remote;

/// The state of a command, opened and held. Clones share it.
#[derive(Clone)]
pub struct StateHandle {
    inner: Arc<Inner>,
}

struct Inner {
    // Declared first, so the connection closes before the home (and its folder) goes.
    db: Mutex<State>,
    state_id: String,
    home: Home,
}

/// Where the state lives, and what keeps it ours.
enum Home {
    /// A local file under the run lock (released when the handle goes, or the process dies).
    Local { _lock: lock::RunLock },
    /// A working copy of an S3 state under a lease, uploaded after every commit.
    S3 {
        remote: Arc<Remote>,
        renewer: Renewer,
        _dir: tempfile::TempDir,
    },
    /// A read-only view (status, dry runs): no lock, no lease, nothing written. An S3 state
    /// is a downloaded copy in a private folder.
    ReadOnly { _dir: Option<tempfile::TempDir> },
}

/// The lease renewal task, stopped when the handle goes.
struct Renewer(tokio::task::JoinHandle<()>);

impl Drop for Renewer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl StateHandle {
    /// Lock a local state, or lease and download an S3 one, then open and migrate it. A state
    /// refused at open (foreign, corrupt, newer) is left as it is, locally and in S3. `stop`
    /// is set if the S3 lease is lost.
    pub async fn open(
        cfg: &Config,
        command: &str,
        s3: Option<&Client>,
        stop: Arc<AtomicBool>,
    ) -> Result<StateHandle> {
        match &cfg.state {
            StateLoc::Local(path) => {
                let lock = lock::acquire(path, command)?;
                let path = path.clone();
                let db = blocking(move || State::open(&path)).await?;
                StateHandle::new(db, Home::Local { _lock: lock })
            }
            StateLoc::S3(url) => {
                let client = s3.ok_or_else(|| anyhow!("no S3 client for {url}"))?;
                let dir = private_dir()?;
                let path = dir.path().join("state.db");
                let remote =
                    Remote::acquire(client, url, &cfg.s3, command, cfg.lease_ttl, path).await?;
                let local = remote.local.clone();
                let db = match blocking(move || State::open(&local)).await {
                    Ok(db) => db,
                    Err(e) => {
                        remote.release().await;
                        return Err(e);
                    }
                };
                // Before anything else (recovery deletes staged files): make the takeover
                // visible, so an older holder still alive can no longer commit.
                if let Err(e) = remote.claim().await {
                    remote.release().await;
                    return Err(e);
                }
                let remote = Arc::new(remote);
                let renewer = Renewer(tokio::spawn(remote::renew(
                    remote.clone(),
                    cfg.lease_ttl,
                    stop,
                )));
                StateHandle::new(
                    db,
                    Home::S3 {
                        remote,
                        renewer,
                        _dir: dir,
                    },
                )
            }
        }
    }

    /// Whether a state exists where `cfg` says (a local file, or an S3 object).
    pub async fn exists(cfg: &Config, s3: Option<&Client>) -> Result<bool> {
        match &cfg.state {
            StateLoc::Local(p) => Ok(p.exists()),
            StateLoc::S3(url) => {
                let client = s3.ok_or_else(|| anyhow!("no S3 client for {url}"))?;
                remote::exists(client, url, &cfg.s3).await
            }
        }
    }

    /// The state read-only, without lock or lease (an S3 state is downloaded to a private
    /// copy). `None` when there is no state yet.
    pub async fn open_readonly(cfg: &Config, s3: Option<&Client>) -> Result<Option<StateHandle>> {
        let (path, dir) = match &cfg.state {
            StateLoc::Local(p) if !p.exists() => return Ok(None),
            StateLoc::Local(p) => (p.clone(), None),
            StateLoc::S3(url) => {
                let client = s3.ok_or_else(|| anyhow!("no S3 client for {url}"))?;
                let dir = private_dir()?;
                let path = dir.path().join("state.db");
                if remote::fetch(client, url, &cfg.s3, &path).await?.is_none() {
                    return Ok(None);
                }
                (path, Some(dir))
            }
        };
        let db = blocking(move || State::open_readonly(&path)).await?;
        StateHandle::new(db, Home::ReadOnly { _dir: dir }).map(Some)
    }

    fn new(db: State, home: Home) -> Result<StateHandle> {
        let state_id = db.state_id()?;
        Ok(StateHandle {
            inner: Arc::new(Inner {
                db: Mutex::new(db),
                state_id,
                home,
            }),
        })
    }

    /// The id fixed at the state's creation: part of every file name it writes.
    pub fn state_id(&self) -> &str {
        &self.inner.state_id
    }

    /// Run `f` on the database on a blocking thread (SQLite calls block).
    pub async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut db = inner
                .db
                .lock()
                .map_err(|_| anyhow!("state lock poisoned"))?;
            f(&mut db)
        })
        .await
    }

    /// After a commit: returns once the commit is durable where the state lives. A local
    /// commit already is; an S3 state is uploaded (refused if another run wrote it since).
    pub async fn checkpoint(&self) -> Result<()> {
        match &self.inner.home {
            Home::S3 { remote, .. } => remote.checkpoint().await,
            Home::Local { .. } => Ok(()),
            Home::ReadOnly { .. } => bail!("the state was opened read-only"),
        }
    }

    /// Before writing to or deleting from the output (staging, publishing, recovery): an S3
    /// state's lease must still be this run's, with a margin before its expiry. A local
    /// state's lock holds for as long as the process lives.
    pub fn guard(&self) -> Result<()> {
        match &self.inner.home {
            Home::S3 { remote, .. } => remote.check_lease(),
            Home::Local { .. } => Ok(()),
            Home::ReadOnly { .. } => bail!("the state was opened read-only"),
        }
    }

    /// At the end of a command: make the final state durable (run history) and release an S3
    /// lease. A lost lease is an error here, whatever else happened. The local lock goes with
    /// the last clone of the handle.
    pub async fn finish(&self) -> Result<()> {
        match &self.inner.home {
            Home::S3 {
                remote, renewer, ..
            } => {
                // Never mid-renewal: a cancelled PUT may still land, after the release.
                remote.while_no_renewal(|| renewer.0.abort()).await;
                remote.finish().await
            }
            Home::Local { .. } | Home::ReadOnly { .. } => Ok(()),
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("state task panicked")?
}

/// A private (0700) temporary folder for an S3 state's working copy, removed when dropped.
fn private_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("archiver-state-")
        .tempdir()
        .context("creating a temporary folder for the state")
}
