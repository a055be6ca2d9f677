//! A flush, the exactly-once protocol that every write goes through (the pass's flushes and
//! compaction alike):
//! 1. **encode** the rows as one Parquet file per partition (UTC start date);
//! 2. **stage** each file under its staging key, durably (hidden from readers);
//! 3. **commit** the files together with what they mean (ids, pending changes, the checkpoint;
//!    or, for compaction, the files they replace) in one state transaction, then make the
//!    commit durable where the state lives;
//! 4. write the flush's **manifest** (its files, with rows and SHA-256), never overwriting one;
//! 5. **publish** each file under its final `.parquet` key, never overwriting one.
//!
//! Killed between any two steps, the next run's recovery (see [`super::recover`]) finishes the
//! manifest and publish of what was committed or drops what was only staged. A final name or
//! manifest that already exists before the commit (a state older than the archive) stops the
//! flush at the stage step, before anything is committed. Paused between two steps long
//! enough for an S3 state's lease to expire, the run stops at the next step (see
//! [`StateHandle::guard`]): a successor may have taken over.

use anyhow::{bail, Context, Result};

use crate::encode::encode;
use crate::failpoint;
use crate::model::{PortalId, Session};
use crate::sink::manifest::{proved_manifest_bytes, sha256_hex, Entry, Proof};
use crate::sink::{clash, final_key, manifest_key, manifest_staging_key, staging_key, Sink};
use crate::state::{FileRecord, State, StateHandle};

/// One file to write: its partition date, rows, bytes and their SHA-256 (hex).
pub struct Encoded {
    pub date: String,
    pub rows: usize,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

impl Encoded {
    /// A file's bytes, hashed here (call it on a blocking thread for a large file).
    pub fn new(date: String, rows: usize, bytes: Vec<u8>) -> Encoded {
        Encoded {
            sha256: sha256_hex(&bytes),
            date,
            rows,
            bytes,
        }
    }
}

/// The crash points of one kind of flush, for the crash-safety tests.
pub struct Points {
    pub staged: &'static str,
    pub committed_locally: &'static str,
    pub committed: &'static str,
    pub manifested: &'static str,
}

/// Where a flush writes: the sink, the state and the portal.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub sink: &'a Sink,
    pub state: &'a StateHandle,
    pub portal: &'a PortalId,
    pub points: &'a Points,
}

/// Encode rows as one file per UTC start date, from slices of the buffer sorted in place (no
/// second copy of the rows), and keep only the ids, `(session_id, start_ms)`, for the commit.
pub async fn encode_days(
    mut rows: Vec<Session>,
    archived_at_ms: i64,
) -> Result<(Vec<Encoded>, Vec<(String, i64)>)> {
    tokio::task::spawn_blocking(move || -> Result<_> {
        // A pass lists newest first, so a batch is usually in descending order already.
        if rows.windows(2).all(|w| w[0].start_ms >= w[1].start_ms) {
            rows.reverse();
        } else {
            rows.sort_unstable_by_key(|s| s.start_ms);
        }
        let mut files = Vec::new();
        let mut rest = &rows[..];
        while let Some(first) = rest.first() {
            let date = crate::clock::utc_date(first.start_ms);
            let n = rest.partition_point(|s| crate::clock::utc_date(s.start_ms) == date);
            let (day, tail) = rest.split_at(n);
            files.push(Encoded::new(date, day.len(), encode(day, archived_at_ms)?));
            rest = tail;
        }
        let ids = rows
            .into_iter()
            .map(|s| (s.session_id, s.start_ms))
            .collect();
        Ok((files, ids))
    })
    .await
    .context("encoder panicked")?
}

impl Target<'_> {
    /// Stage each file of flush `seq` under its staging key; returns the records to commit.
    /// Fails, before anything is committed, if the flush's manifest or a final name already
    /// exists in the output: publishing would have to overwrite it.
    pub async fn stage(&self, seq: i64, files: Vec<Encoded>) -> Result<Vec<FileRecord>> {
        let (portal, state_id) = (self.portal, self.state.state_id());
        if !files.is_empty() {
            let manifest = manifest_key(portal, state_id, seq);
            self.refuse_existing(seq, manifest).await?;
        }
        let mut records = Vec::with_capacity(files.len());
        for f in files {
            self.state.guard()?;
            let staging = staging_key(portal, &f.date, state_id, seq);
            let path = final_key(portal, &f.date, state_id, seq);
            self.refuse_existing(seq, path.clone()).await?;
            let bytes = f.bytes.len() as i64;
            self.sink
                .stage(staging.clone(), f.bytes, &f.sha256)
                .await
                .with_context(|| format!("portal {portal}: staging {staging}"))?;
            records.push(FileRecord {
                seq,
                path,
                staging,
                rows: f.rows as i64,
                bytes,
                sha256: f.sha256,
            });
            failpoint::hit(self.points.staged);
        }
        Ok(records)
    }

    /// Commit with `commit` (one transaction), then make it durable where the state lives.
    pub async fn commit(
        &self,
        seq: i64,
        commit: impl FnOnce(&mut State) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        self.state.db(commit).await?;
        failpoint::hit(self.points.committed_locally);
        self.state.checkpoint().await.with_context(|| {
            format!("portal {}: saving the state after flush {seq}", self.portal)
        })?;
        failpoint::hit(self.points.committed);
        Ok(())
    }

    async fn refuse_existing(&self, seq: i64, key: String) -> Result<()> {
        let exists = self
            .sink
            .exists(key.clone())
            .await
            .with_context(|| format!("portal {}: checking {key}", self.portal))?;
        if exists {
            return Err(clash(&key)).with_context(|| {
                format!(
                    "portal {}: flush {seq} of state {} was already written",
                    self.portal,
                    self.state.state_id()
                )
            });
        }
        Ok(())
    }

    /// Write the manifest of flush `seq` (a compaction if it `replaces` files).
    pub async fn manifest(
        &self,
        seq: i64,
        files: &[FileRecord],
        replaces: &[String],
    ) -> Result<()> {
        self.proved_manifest(seq, files, replaces, None).await
    }

    /// [`Target::manifest`], with a compaction's proof.
    pub async fn proved_manifest(
        &self,
        seq: i64,
        files: &[FileRecord],
        replaces: &[String],
        proof: Option<&Proof>,
    ) -> Result<()> {
        write_proved_manifest(
            self.sink,
            self.state,
            self.portal,
            seq,
            files,
            replaces,
            proof,
        )
        .await?;
        failpoint::hit(self.points.manifested);
        Ok(())
    }

    /// Write the manifest of committed flush `seq`, publish each of its files, then record the
    /// flush as published.
    pub async fn publish(&self, seq: i64, files: &[FileRecord]) -> Result<()> {
        if !files.is_empty() {
            self.manifest(seq, files, &[]).await?;
        }
        for f in files {
            self.state.guard()?;
            self.sink
                .publish(f.staging.clone(), f.path.clone())
                .await
                .with_context(|| format!("portal {}: publishing {}", self.portal, f.path))?;
            failpoint::hit("after_publish");
        }
        if !files.is_empty() {
            self.mark_published(seq).await?;
        }
        Ok(())
    }

    /// Record flush `seq` as published.
    pub async fn mark_published(&self, seq: i64) -> Result<()> {
        let id = self.portal.to_string();
        self.state.db(move |st| st.mark_published(&id, seq)).await
    }
}

/// Write the manifest of committed flush `seq` of `portal`: once, never overwriting another
/// (a replayed write finds the same bytes). A flush without files has none. Once written, its
/// SHA-256 is recorded in the state for the next digest (a replayed write is recorded once).
pub async fn write_manifest(
    sink: &Sink,
    state: &StateHandle,
    portal: &PortalId,
    seq: i64,
    files: &[FileRecord],
    replaces: &[String],
) -> Result<()> {
    write_proved_manifest(sink, state, portal, seq, files, replaces, None).await
}

/// [`write_manifest`], with a compaction's proof (see [`crate::sink::manifest::Proof`]).
pub async fn write_proved_manifest(
    sink: &Sink,
    state: &StateHandle,
    portal: &PortalId,
    seq: i64,
    files: &[FileRecord],
    replaces: &[String],
    proof: Option<&Proof>,
) -> Result<()> {
    // A flush without files writes none; a manifest that only replaces files (a repair
    // recording lost ones) is written.
    if files.is_empty() && replaces.is_empty() {
        return Ok(());
    }
    if let Some(f) = files.iter().find(|f| f.sha256.len() != 64) {
        bail!(
            "portal {portal}: file {} has no SHA-256 for its manifest",
            f.path
        );
    }
    let state_id = state.state_id();
    let key = manifest_key(portal, state_id, seq);
    let entries: Vec<Entry> = files
        .iter()
        .map(|f| Entry {
            path: &f.path,
            rows: f.rows,
            bytes: f.bytes,
            sha256: &f.sha256,
        })
        .collect();
    let bytes = proved_manifest_bytes(
        &portal.to_string(),
        state_id,
        seq,
        &entries,
        replaces,
        proof,
    );
    let sha256 = sha256_hex(&bytes);
    sink.put_new(
        key.clone(),
        manifest_staging_key(portal, state_id, seq),
        bytes,
    )
    .await
    .with_context(|| format!("portal {portal}: writing manifest {key}"))?;
    // Killed before this records it, the flush is not published yet: recovery writes the
    // manifest again (the same bytes) and records it then.
    failpoint::hit("manifest_before_record");
    let id = portal.to_string();
    state
        .db(move |st| st.record_manifest(&key, &id, seq, &sha256))
        .await
}
