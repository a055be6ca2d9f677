//! Where files go, and how they get there without ever exposing a partial or uncommitted one.
//!
//! The protocol for every flush (see `pass`):
//! 1. **stage**: write each file under `_staging/` (outside `sessions/`, and hidden from Hive
//!    and Athena by its leading underscore), durably;
//! 2. **commit**: record the files and the checkpoint in the state, in one transaction;
//! 3. **publish**: move each staged file to its final `.parquet` name under `sessions/`.
//!
//! Recovery at the start of every portal's work publishes what was committed but not yet
//! published and deletes staged files that were never committed. So a name ending in
//! `.parquet` under `sessions/` always holds a complete, committed file.
//!
//! Names are deterministic from what is committed (state id, portal, flush sequence, date), so
//! replaying a step after a crash overwrites or finds its own file, never a second copy.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::{Output, PortalId, S3Options};
use crate::s3::S3Sink;

/// Root folder of the dataset inside the output.
pub const DATASET: &str = "sessions";
/// Root folder of staged (uncommitted or unpublished) files inside the output.
pub const STAGING: &str = "_staging";

/// Final key of a flush's file for one partition, relative to the output root.
pub fn final_key(portal: &PortalId, date: &str, state_id: &str, seq: i64) -> String {
    format!("{DATASET}/portal_id={portal}/start_date={date}/part-{state_id}-{seq:010}.parquet")
}

/// The id of the state that wrote a file, from its [`final_key`] name.
pub fn writer_of(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?;
    name.strip_prefix("part-")?.split('-').next()
}

/// Staging key of the same file. It also carries a tag unique to this process, so two runs
/// that both believe they own a state (one whose S3 lease expired under it) never write the
/// same staged object; the state records the staging key it committed.
pub fn staging_key(portal: &PortalId, date: &str, state_id: &str, seq: i64) -> String {
    format!(
        "{}/part-{state_id}-{seq:010}-{date}-{}.tmp",
        staging_prefix(portal),
        run_tag()
    )
}

/// Unique to this process: pid and start time.
fn run_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("{:x}{:x}", std::process::id(), t.as_micros())
    })
}

/// The staging folder of one portal, relative to the output root.
pub fn staging_prefix(portal: &PortalId) -> String {
    format!("{STAGING}/portal_id={portal}")
}

/// A sink: a local folder or an S3 prefix, with the same protocol.
#[derive(Clone, Debug)]
pub enum Sink {
    Local(LocalSink),
    S3(S3Sink),
}

impl Sink {
    /// The sink for an output. An S3 output needs the run's S3 client.
    pub fn new(output: &Output, s3: Option<&aws_sdk_s3::Client>, opts: &S3Options) -> Result<Sink> {
        Ok(match output {
            Output::Local(root) => Sink::Local(LocalSink { root: root.clone() }),
            Output::S3(url) => {
                let client = s3.ok_or_else(|| anyhow::anyhow!("no S3 client for {url}"))?;
                Sink::S3(S3Sink::new(client.clone(), url.clone(), opts.clone()))
            }
        })
    }

    /// A local folder.
    pub fn local(root: &Path) -> Sink {
        Sink::Local(LocalSink {
            root: root.to_path_buf(),
        })
    }

    /// Fail early, naming the place, if the output cannot be written.
    pub async fn check_writable(&self) -> Result<()> {
        match self {
            Sink::Local(s) => blocking(s.clone(), |s| s.check_writable()).await,
            Sink::S3(s) => s.check_writable().await,
        }
    }

    /// Write a file under its staging key, durably. Replaces an earlier staged copy.
    pub async fn stage(&self, key: String, bytes: Vec<u8>) -> Result<()> {
        match self {
            Sink::Local(s) => blocking(s.clone(), move |s| s.stage(&key, &bytes)).await,
            Sink::S3(s) => s.stage(key, bytes).await,
        }
    }

    /// Move a committed file from its staging key to its final key. Idempotent: a file already
    /// published is left as it is.
    pub async fn publish(&self, staging: String, key: String) -> Result<()> {
        match self {
            Sink::Local(s) => blocking(s.clone(), move |s| s.publish(&staging, &key)).await,
            Sink::S3(s) => s.publish(staging, key).await,
        }
    }

    /// Staged keys under a prefix. For S3, multipart uploads a killed run left under it are
    /// aborted first (they are invisible, but billed until aborted).
    pub async fn list_staged(&self, prefix: String) -> Result<Vec<String>> {
        match self {
            Sink::Local(s) => blocking(s.clone(), move |s| s.list_staged(&prefix)).await,
            Sink::S3(s) => {
                let aborted = s.abort_uploads(&prefix).await?;
                if aborted > 0 {
                    tracing::info!(
                        aborted,
                        "aborted multipart uploads left by an interrupted run"
                    );
                }
                s.list_staged(prefix).await
            }
        }
    }

    /// Delete a key, staged or published (no error if it is gone).
    pub async fn delete(&self, key: String) -> Result<()> {
        match self {
            Sink::Local(s) => blocking(s.clone(), move |s| s.delete(&key)).await,
            Sink::S3(s) => s.delete(key).await,
        }
    }

    /// Publish a committed file and delete the files it replaces, back to back, syncing only
    /// afterwards: readers can see both for just the time between the rename and the last
    /// unlink, which is returned. Idempotent, like `publish` and `delete`.
    pub async fn replace(
        &self,
        staging: String,
        key: String,
        replaced: Vec<String>,
    ) -> Result<std::time::Duration> {
        match self {
            Sink::Local(s) => {
                blocking(s.clone(), move |s| s.replace(&staging, &key, &replaced)).await
            }
            Sink::S3(s) => s.replace(staging, key, replaced).await,
        }
    }

    /// Delete several keys back to back, then make the deletes durable (one sync per folder):
    /// readers see them gone as soon as each returns.
    pub async fn delete_all(&self, keys: Vec<String>) -> Result<()> {
        match self {
            Sink::Local(s) => blocking(s.clone(), move |s| s.delete_all(&keys)).await,
            Sink::S3(s) => s.delete_all(keys).await,
        }
    }

    /// The published files of one portal, by partition date: `(date, keys)`, sorted.
    pub async fn partitions(&self, portal: &PortalId) -> Result<Vec<(String, Vec<String>)>> {
        let prefix = format!("{DATASET}/portal_id={portal}");
        match self {
            Sink::Local(s) => blocking(s.clone(), move |s| s.partitions(&prefix)).await,
            Sink::S3(s) => s.partitions(&prefix).await,
        }
    }

    /// A whole object's bytes.
    pub async fn read(&self, key: String) -> Result<Vec<u8>> {
        match self {
            Sink::Local(s) => {
                blocking(s.clone(), move |s| {
                    let path = s.path(&key);
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
                })
                .await
            }
            Sink::S3(s) => s.read(key).await,
        }
    }
}

async fn blocking<T: Send + 'static>(
    s: LocalSink,
    f: impl FnOnce(LocalSink) -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || f(s))
        .await
        .context("sink task panicked")?
}

/// A folder on local disk.
#[derive(Clone, Debug)]
pub struct LocalSink {
    root: PathBuf,
}

impl LocalSink {
    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn check_writable(&self) -> Result<()> {
        let root = &self.root;
        if root.exists() && !root.is_dir() {
            bail!("output {} is not a folder", root.display());
        }
        let staging = root.join(STAGING);
        std::fs::create_dir_all(&staging)
            .with_context(|| format!("output {} is not writable", root.display()))?;
        let probe = staging.join(format!(".probe-{}", std::process::id()));
        std::fs::write(&probe, b"probe")
            .with_context(|| format!("output {} is not writable", root.display()))?;
        // Ours, and any a killed run left behind.
        for e in std::fs::read_dir(&staging)?.flatten() {
            if e.file_name().to_string_lossy().starts_with(".probe-") {
                std::fs::remove_file(e.path()).ok();
            }
        }
        Ok(())
    }

    fn stage(&self, key: &str, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let path = self.path(key);
        let dir = path.parent().expect("staging keys have a folder");
        create_dir_all_synced(dir)?;
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        sync_dir(dir)?;
        Ok(())
    }

    fn publish(&self, staging: &str, key: &str) -> Result<()> {
        let from = self.path(staging);
        let to = self.path(key);
        let dir = to.parent().expect("final keys have a folder");
        if !from.exists() {
            if to.exists() {
                return Ok(()); // published before a crash
            }
            bail!(
                "committed file {} is missing from staging ({}); the output was changed outside archiver",
                to.display(),
                from.display()
            );
        }
        create_dir_all_synced(dir)?;
        std::fs::rename(&from, &to)
            .with_context(|| format!("publishing {} as {}", from.display(), to.display()))?;
        sync_dir(dir)?;
        sync_dir(from.parent().expect("staging keys have a folder"))?;
        Ok(())
    }

    fn list_staged(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.path(prefix);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        let mut keys = Vec::new();
        for e in entries {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            if e.file_type()?.is_file() {
                keys.push(format!("{prefix}/{}", e.file_name().to_string_lossy()));
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn replace(
        &self,
        staging: &str,
        key: &str,
        replaced: &[String],
    ) -> Result<std::time::Duration> {
        let (from, to) = (self.path(staging), self.path(key));
        if from.exists() {
            std::fs::rename(&from, &to)
                .with_context(|| format!("publishing {} as {}", from.display(), to.display()))?;
        } else if !to.exists() {
            bail!("committed file {} is missing from staging", to.display());
        }
        let visible = std::time::Instant::now();
        crate::failpoint::hit("compact_mid_replace");
        let mut dirs = std::collections::BTreeSet::new();
        for k in replaced {
            let path = self.path(k);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("deleting {}", path.display())),
            }
            dirs.insert(path.parent().expect("keys have a folder").to_path_buf());
        }
        let window = visible.elapsed();
        dirs.insert(to.parent().expect("keys have a folder").to_path_buf());
        dirs.insert(from.parent().expect("keys have a folder").to_path_buf());
        dirs.iter().try_for_each(|d| sync_dir(d))?;
        Ok(window)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.delete_all(&[key.to_string()])
    }

    fn delete_all(&self, keys: &[String]) -> Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for key in keys {
            let path = self.path(key);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    dirs.insert(path.parent().expect("keys have a folder").to_path_buf());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("deleting {}", path.display())),
            }
        }
        dirs.iter().try_for_each(|d| sync_dir(d))
    }

    fn partitions(&self, prefix: &str) -> Result<Vec<(String, Vec<String>)>> {
        let dir = self.path(prefix);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(date) = name.strip_prefix("start_date=") else {
                continue;
            };
            let mut keys = Vec::new();
            for f in std::fs::read_dir(e.path())? {
                let file = f?.file_name().to_string_lossy().into_owned();
                if file.ends_with(".parquet") {
                    keys.push(format!("{prefix}/{name}/{file}"));
                }
            }
            keys.sort();
            out.push((date.to_string(), keys));
        }
        out.sort();
        Ok(out)
    }
}

/// `mkdir -p`, syncing each parent whose entry was created, so a new partition folder survives
/// a power loss along with the file in it.
fn create_dir_all_synced(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_synced(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    let d = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(d)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing folder {}", d.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal() -> PortalId {
        PortalId::parse("0a1b2c3d-0000-4000-8000-123456789abc").unwrap()
    }

    #[test]
    fn names_are_hive_partitioned_and_deterministic() {
        let k = final_key(&portal(), "2026-11-26", "abc", 7);
        assert_eq!(
            k,
            "sessions/portal_id=0a1b2c3d-0000-4000-8000-123456789abc/start_date=2026-11-26/part-abc-0000000007.parquet"
        );
        assert_eq!(writer_of(&k), Some("abc"));
        assert_eq!(writer_of("sessions/x/other.parquet"), None);
        let s = staging_key(&portal(), "2026-11-26", "abc", 7);
        assert!(s.starts_with("_staging/"));
        assert!(!s.ends_with(".parquet"));
        assert_ne!(s, staging_key(&portal(), "2026-11-27", "abc", 7));
    }

    #[tokio::test]
    async fn stage_then_publish_is_idempotent_and_never_shows_a_partial_name() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::local(dir.path());
        sink.check_writable().await.unwrap();
        let st = staging_key(&portal(), "2026-01-01", "x", 1);
        let fin = final_key(&portal(), "2026-01-01", "x", 1);
        sink.stage(st.clone(), b"data".to_vec()).await.unwrap();
        assert!(!dir.path().join(&fin).exists());
        assert_eq!(
            sink.list_staged(staging_prefix(&portal())).await.unwrap(),
            vec![st.clone()]
        );
        sink.publish(st.clone(), fin.clone()).await.unwrap();
        sink.publish(st.clone(), fin.clone()).await.unwrap();
        assert_eq!(
            sink.partitions(&portal()).await.unwrap(),
            vec![("2026-01-01".to_string(), vec![fin.clone()])]
        );
        assert_eq!(std::fs::read(dir.path().join(&fin)).unwrap(), b"data");
        assert!(sink
            .list_staged(staging_prefix(&portal()))
            .await
            .unwrap()
            .is_empty());
        // Neither staged nor published: an error naming the file.
        let err = sink
            .publish("_staging/none.tmp".into(), "sessions/none.parquet".into())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("none.parquet"));
    }

    #[tokio::test]
    async fn an_output_that_is_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = Sink::local(&file).check_writable().await.unwrap_err();
        assert!(format!("{err:#}").contains("not a folder"), "{err:#}");
    }
}
