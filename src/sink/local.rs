//! A sink in a folder on local disk: staged files are written durably (temp name, fsync,
//! rename, folder fsync), published by a hard link to the final name (which fails if that
//! name exists: publishing never overwrites) and an unlink of the staged name, and deleted
//! with a folder sync after.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::clash;
use super::layout::STAGING;
use crate::fsio::{create_dir_all_synced, sync_dir, write_atomic};

/// A folder on local disk.
#[derive(Clone, Debug)]
pub struct LocalSink {
    root: PathBuf,
}

impl LocalSink {
    pub fn new(root: &Path) -> LocalSink {
        LocalSink {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub(super) fn read(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    }

    pub(super) fn check_writable(&self) -> Result<()> {
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

    pub(super) fn stage(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().expect("staging keys have a folder");
        create_dir_all_synced(dir)?;
        // Owner and group only: the files hold usernames and client IPs.
        write_atomic(&path, bytes, 0o640)
    }

    pub(super) fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key);
        path.try_exists()
            .with_context(|| format!("checking {}", path.display()))
    }

    pub(super) fn publish(&self, staging: &str, key: &str) -> Result<()> {
        let (from, to) = (self.path(staging), self.path(key));
        if self.link(&from, &to, key)? {
            sync_dir(to.parent().expect("final keys have a folder"))?;
            self.unlink_staged(&from)?;
        }
        Ok(())
    }

    /// Give the staged file `from` its final name `to` with a hard link, which never replaces
    /// an existing `to`. Returns whether `from` is still there to unlink (false: published
    /// before a crash). `to` already there is ours if it is the same inode (killed between
    /// the link and the unlink) or holds the same bytes; anything else is a clash.
    fn link(&self, from: &Path, to: &Path, key: &str) -> Result<bool> {
        if !from.exists() {
            if to.exists() {
                return Ok(false); // published before a crash
            }
            bail!(
                "committed file {} is missing from staging ({}); the output was changed outside archiver",
                to.display(),
                from.display()
            );
        }
        create_dir_all_synced(to.parent().expect("final keys have a folder"))?;
        match std::fs::hard_link(from, to) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if same_file(from, to)? {
                    return Ok(true);
                }
                let same_bytes = std::fs::read(from).ok().zip(std::fs::read(to).ok());
                match same_bytes {
                    Some((a, b)) if a == b => Ok(true),
                    _ => Err(clash(key)),
                }
            }
            Err(e) => {
                Err(e).with_context(|| format!("publishing {} as {}", from.display(), to.display()))
            }
        }
    }

    fn unlink_staged(&self, from: &Path) -> Result<()> {
        match std::fs::remove_file(from) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("deleting {}", from.display())),
        }
        sync_dir(from.parent().expect("staging keys have a folder"))
    }

    pub(super) fn list_staged(&self, prefix: &str) -> Result<Vec<String>> {
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

    pub(super) fn replace(
        &self,
        staging: &str,
        key: &str,
        replaced: &[String],
    ) -> Result<std::time::Duration> {
        let (from, to) = (self.path(staging), self.path(key));
        let staged = self.link(&from, &to, key)?;
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
        dirs.iter().try_for_each(|d| sync_dir(d))?;
        if staged {
            self.unlink_staged(&from)?;
        }
        Ok(window)
    }

    pub(super) fn delete(&self, key: &str) -> Result<()> {
        self.delete_all(&[key.to_string()])
    }

    pub(super) fn delete_all(&self, keys: &[String]) -> Result<()> {
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

    /// The names of the folders directly under `prefix` (none if it does not exist), sorted.
    /// Every file under a folder, at any depth, as keys relative to the root, sorted.
    pub(super) fn list_tree(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut dirs = vec![prefix.trim_end_matches('/').to_string()];
        while let Some(rel) = dirs.pop() {
            let dir = self.path(&rel);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
            };
            for e in entries {
                let e = e.with_context(|| format!("listing {}", dir.display()))?;
                let key = format!("{rel}/{}", e.file_name().to_string_lossy());
                let kind = e.file_type()?;
                if kind.is_dir() {
                    dirs.push(key);
                } else if kind.is_file() {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    pub(super) fn folders(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.path(prefix);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            if e.file_type()?.is_dir() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    pub(super) fn partitions(&self, prefix: &str) -> Result<Vec<(String, Vec<String>)>> {
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

/// Whether two paths name the same file (inode).
fn same_file(a: &Path, b: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let meta = |p: &Path| std::fs::metadata(p).with_context(|| format!("reading {}", p.display()));
    let (a, b) = (meta(a)?, meta(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

#[cfg(test)]
mod tests {
    use super::super::{final_key, staging_key, staging_prefix, Sink};
    use crate::model::PortalId;

    fn portal() -> PortalId {
        PortalId::parse("0a1b2c3d-0000-4000-8000-123456789abc").unwrap()
    }

    #[tokio::test]
    async fn the_portals_of_an_output_are_those_with_files_or_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::local(dir.path());
        assert!(sink.portals().await.unwrap().is_empty(), "no output yet");
        let other = PortalId::parse("ffffffff-0000-4000-8000-123456789abc").unwrap();
        for d in [
            format!("sessions/portal_id={}/start_date=2026-01-01", portal()),
            format!("_manifest/portal_id={other}"),
            format!("_manifest/portal_id={}", portal()),
            "sessions/portal_id=not-a-portal-id".to_string(),
            format!(
                "_staging/portal_id={}",
                "eeeeeeee-0000-4000-8000-123456789abc"
            ),
        ] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        assert_eq!(sink.portals().await.unwrap(), [portal(), other]);
    }

    #[tokio::test]
    async fn stage_then_publish_is_idempotent_and_never_shows_a_partial_name() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::local(dir.path());
        sink.check_writable().await.unwrap();
        let st = staging_key(&portal(), "2026-01-01", "x", 1);
        let fin = final_key(&portal(), "2026-01-01", "x", 1);
        sink.stage(st.clone(), b"data".to_vec(), "").await.unwrap();
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
    async fn publishing_never_overwrites_but_finishes_a_link_left_by_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::local(dir.path());
        sink.check_writable().await.unwrap();
        let st = staging_key(&portal(), "2026-01-01", "x", 1);
        let fin = final_key(&portal(), "2026-01-01", "x", 1);
        sink.stage(st.clone(), b"new".to_vec(), "").await.unwrap();
        // Killed between the link and the unlink: the same inode under both names.
        std::fs::create_dir_all(dir.path().join(&fin).parent().unwrap()).unwrap();
        std::fs::hard_link(dir.path().join(&st), dir.path().join(&fin)).unwrap();
        sink.publish(st.clone(), fin.clone()).await.unwrap();
        assert!(!dir.path().join(&st).exists());
        assert_eq!(std::fs::read(dir.path().join(&fin)).unwrap(), b"new");
        // A different file under the final name: a clash, and both files are left as they are.
        let fin2 = final_key(&portal(), "2026-01-01", "x", 2);
        let st2 = staging_key(&portal(), "2026-01-01", "x", 2);
        std::fs::write(dir.path().join(&fin2), b"published earlier").unwrap();
        sink.stage(st2.clone(), b"other".to_vec(), "")
            .await
            .unwrap();
        assert!(sink.exists(fin2.clone()).await.unwrap());
        let err = sink.publish(st2.clone(), fin2.clone()).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&fin2) && msg.contains("already exists"),
            "{msg}"
        );
        assert_eq!(
            std::fs::read(dir.path().join(&fin2)).unwrap(),
            b"published earlier"
        );
        assert!(dir.path().join(&st2).exists());
        // So does compaction's replace, and it deletes nothing then.
        let err = sink
            .replace(st2.clone(), fin2.clone(), vec![fin.clone()])
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("already exists"));
        assert!(dir.path().join(&fin).exists());
        // A small file written once: the same bytes again are fine, other bytes a clash.
        let m = "_manifest/portal_id=p/x-0000000001.json".to_string();
        let tmp = staging_key(&portal(), "m", "x", 1);
        sink.put_new(m.clone(), tmp.clone(), b"{}".to_vec())
            .await
            .unwrap();
        sink.put_new(m.clone(), tmp.clone(), b"{}".to_vec())
            .await
            .unwrap();
        let err = sink
            .put_new(m.clone(), tmp.clone(), b"{\"a\":1}".to_vec())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("already exists"));
        assert_eq!(std::fs::read(dir.path().join(&m)).unwrap(), b"{}");
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
