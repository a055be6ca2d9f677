//! Where files go, and how they get there without ever exposing a partial or uncommitted one.
//!
//! The protocol for every flush (see `run::flush`):
//! 1. **stage**: write each file under `_staging/` (outside `sessions/`, and hidden from Hive
//!    and Athena by its leading underscore), durably;
//! 2. **commit**: record the files and the checkpoint in the state, in one transaction;
//! 3. **manifest**: write the flush's manifest under `_manifest/` (see [`manifest`]);
//! 4. **publish**: give each staged file its final `.parquet` name under `sessions/`.
//!
//! Recovery at the start of every portal's work publishes what was committed but not yet
//! published and deletes staged files that were never committed. So a name ending in
//! `.parquet` under `sessions/` always holds a complete, committed file, listed in a manifest.
//!
//! Publishing never overwrites: a final name (or manifest) that already exists with other
//! content is a [`clash`], and the run stops without touching it.
//!
//! - [`layout`]: the keys (pure naming); [`manifest`]: the manifests' content; [`local`] and
//!   [`s3`]: the two places.

pub mod layout;
mod local;
pub mod lock;
pub mod manifest;
mod s3;

use std::path::Path;

use anyhow::{Context, Result};

pub use layout::{
    final_key, manifest_key, manifest_staging_key, staged_writer_of, staging_key, staging_prefix,
    writer_of, DATASET, MANIFEST, STAGING,
};
pub use local::LocalSink;
pub use s3::{dataset_url, Role, S3Sink};

use crate::config::{Output, S3Options};
use crate::model::PortalId;

/// A sink: a local folder or an S3 prefix, with the same protocol.
#[derive(Clone, Debug)]
pub enum Sink {
    Local(LocalSink),
    S3(Box<S3Sink>),
}

impl Sink {
    /// The sink for an output. An S3 output needs the run's S3 client.
    pub fn new(output: &Output, s3: Option<&aws_sdk_s3::Client>, opts: &S3Options) -> Result<Sink> {
        Ok(match output {
            Output::Local(root) => Sink::Local(LocalSink::new(root)),
            Output::S3(url) => {
                let client = s3.ok_or_else(|| anyhow::anyhow!("no S3 client for {url}"))?;
                Sink::S3(Box::new(S3Sink::new(
                    client.clone(),
                    url.clone(),
                    opts.clone(),
                )))
            }
        })
    }

    /// The sink for an output, opened for `role`: on S3, the bucket's Object Lock is found
    /// and, for the output, where files are staged (see [`S3Sink::open`]).
    pub async fn open(
        output: &Output,
        s3: Option<&aws_sdk_s3::Client>,
        opts: &S3Options,
        role: Role,
    ) -> Result<Sink> {
        Ok(match output {
            Output::Local(root) => Sink::Local(LocalSink::new(root)),
            Output::S3(url) => {
                let client = s3.ok_or_else(|| anyhow::anyhow!("no S3 client for {url}"))?;
                Sink::S3(Box::new(
                    S3Sink::open(client.clone(), url.clone(), opts.clone(), role).await?,
                ))
            }
        })
    }

    /// The Object Lock of an S3 output's bucket, if it has one (found by [`Sink::open`]).
    pub fn lock(&self) -> Option<&lock::Lock> {
        match self {
            Sink::Local(_) => None,
            Sink::S3(s) => s.lock(),
        }
    }

    /// Under a lock, the archived objects (data, manifests, claims, digests) delete markers
    /// hide: `(key, the version ids of its markers)`. Without a lock, none are looked for.
    pub async fn hidden(&self) -> Result<Vec<(String, Vec<String>)>> {
        match self {
            Sink::S3(s) if s.lock().is_some() => {
                s.hidden(&[
                    DATASET,
                    MANIFEST,
                    layout::CLAIM,
                    crate::digest::format::DIGEST,
                ])
                .await
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Remove a delete marker found by [`Sink::hidden`].
    pub async fn remove_marker(&self, key: &str, version_id: &str) -> Result<()> {
        match self {
            Sink::S3(s) => s.remove_marker(key, version_id).await,
            Sink::Local(_) => Ok(()),
        }
    }

    /// A local folder.
    pub fn local(root: &Path) -> Sink {
        Sink::Local(LocalSink::new(root))
    }

    /// Fail early, naming the place, if the output cannot be written.
    pub async fn check_writable(&self) -> Result<()> {
        match self {
            Sink::Local(s) => blocking(s.clone(), |s| s.check_writable()).await,
            Sink::S3(s) => s.check_writable().await,
        }
    }

    /// Write a file under its staging key, durably. Replaces an earlier staged copy. `sha256`
    /// (hex) is the bytes' SHA-256: S3 verifies the upload against it.
    pub async fn stage(&self, key: String, bytes: Vec<u8>, sha256: &str) -> Result<()> {
        match self {
            Sink::Local(s) => blocking(s.clone(), move |s| s.stage(&key, &bytes)).await,
            Sink::S3(s) => s.stage(key, bytes, sha256).await,
        }
    }

    /// Whether a key exists (staged or published).
    pub async fn exists(&self, key: String) -> Result<bool> {
        match self {
            Sink::Local(s) => blocking(s.clone(), move |s| s.exists(&key)).await,
            Sink::S3(s) => s.exists_rel(&key).await,
        }
    }

    /// Write a small file under `key` if no file has that name; a file already there with the
    /// same bytes (a replayed write) is fine, one with other bytes is a [`clash`]. A local
    /// output writes it durably under `staging` first, then links it.
    pub async fn put_new(&self, key: String, staging: String, bytes: Vec<u8>) -> Result<()> {
        match self {
            Sink::Local(s) => {
                blocking(s.clone(), move |s| {
                    s.stage(&staging, &bytes)?;
                    s.publish(&staging, &key)
                })
                .await
            }
            Sink::S3(s) => s.put_new(key, bytes).await,
        }
    }

    /// Give a committed file its final key, from its staging key. Never overwrites: a
    /// different file under the final key is a [`clash`]. Idempotent: a file already
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
                s.list_keys(prefix).await
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

    /// Publish a committed file (never overwriting, like `publish`) and delete the files it
    /// replaces, back to back, syncing only afterwards: readers can see both for just the time
    /// between the publish and the last
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

    /// The partition dates of one portal that hold a published file, sorted. On S3 a delimited
    /// listing (one call per 1000 days, whatever the number of files); on a local output the
    /// `start_date=` folders holding a `.parquet` file.
    pub async fn dates(&self, portal: &PortalId) -> Result<Vec<String>> {
        let prefix = format!("{DATASET}/portal_id={portal}");
        let dates: Vec<String> = match self {
            Sink::Local(s) => blocking(s.clone(), move |s| s.partitions(&prefix))
                .await?
                .into_iter()
                .filter(|(_, keys)| !keys.is_empty())
                .map(|(date, _)| date)
                .collect(),
            Sink::S3(s) => s
                .folders(&prefix)
                .await?
                .into_iter()
                .filter_map(|name| name.strip_prefix("start_date=").map(str::to_string))
                .collect(),
        };
        Ok(dates.into_iter().filter(|d| is_date(d)).collect())
    }

    /// The portals the output holds anything of: a `portal_id=ID` folder under `sessions/`
    /// (files) or `_manifest/` (manifests, which outlive files deleted by mistake), each once,
    /// sorted. Reads only; on S3 a delimited listing of those two folders, not of the files.
    pub async fn portals(&self) -> Result<Vec<PortalId>> {
        let mut out = std::collections::BTreeSet::new();
        for root in [DATASET, MANIFEST] {
            let names = match self {
                Sink::Local(s) => blocking(s.clone(), move |s| s.folders(root)).await?,
                Sink::S3(s) => s.folders(root).await?,
            };
            out.extend(
                names
                    .iter()
                    .filter_map(|n| n.strip_prefix("portal_id="))
                    .filter_map(|id| PortalId::parse(id).ok()),
            );
        }
        Ok(out.into_iter().collect())
    }

    /// The files directly under a folder (local) or every key under a prefix (S3), sorted;
    /// nothing is changed.
    pub async fn list(&self, prefix: String) -> Result<Vec<String>> {
        match self {
            Sink::Local(s) => blocking(s.clone(), move |s| s.list_staged(&prefix)).await,
            Sink::S3(s) => s.list_keys(prefix).await,
        }
    }

    /// Every key under a prefix, at any depth, sorted (a local output's folders are walked;
    /// S3's listing is flat already). Nothing is changed.
    pub async fn list_tree(&self, prefix: String) -> Result<Vec<String>> {
        match self {
            Sink::Local(s) => blocking(s.clone(), move |s| s.list_tree(&prefix)).await,
            Sink::S3(s) => s.list_keys(prefix).await,
        }
    }

    /// A whole object's bytes.
    pub async fn read(&self, key: String) -> Result<Vec<u8>> {
        match self {
            Sink::Local(s) => blocking(s.clone(), move |s| s.read(&key)).await,
            Sink::S3(s) => s.read(key).await,
        }
    }
}

/// The error for a final name (file or manifest) that is already taken by another file:
/// nothing is overwritten, and the run stops (exit 1).
pub fn clash(key: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{key} already exists in the output, and archiver never overwrites a published file: \
         this state is older than the archive (restored from an older copy?), or another \
         state with the same id writes to this output. Nothing was overwritten; run \
         with the newest copy of the state (see docs/design.md, \"Publishing never overwrites\")"
    )
}

async fn blocking<T: Send + 'static>(
    s: LocalSink,
    f: impl FnOnce(LocalSink) -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || f(s))
        .await
        .context("sink task panicked")?
}

/// A partition date as the layout writes it: `YYYY-MM-DD`.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}
