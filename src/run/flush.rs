//! A flush, the exactly-once protocol that every write goes through (the pass's flushes and
//! compaction alike):
//! 1. **encode** the rows as one Parquet file per partition (UTC start date);
//! 2. **stage** each file under its staging key, durably (hidden from readers);
//! 3. **commit** the files together with what they mean (ids, pending changes, the checkpoint;
//!    or, for compaction, the files they replace) in one state transaction, then make the
//!    commit durable where the state lives;
//! 4. **publish** each file under its final `.parquet` key.
//!
//! Killed between any two steps, the next run's recovery (see [`super::recover`]) finishes the
//! publish of what was committed or drops what was only staged. Paused between two steps long
//! enough for an S3 state's lease to expire, the run stops at the next step (see
//! [`StateHandle::guard`]): a successor may have taken over.

use anyhow::{Context, Result};

use crate::encode::encode;
use crate::failpoint;
use crate::model::{PortalId, Session};
use crate::sink::{final_key, staging_key, Sink};
use crate::state::{FileRecord, State, StateHandle};

/// One file to write: its partition date, rows and bytes.
pub struct Encoded {
    pub date: String,
    pub rows: usize,
    pub bytes: Vec<u8>,
}

/// The crash points of one kind of flush, for the crash-safety tests.
pub struct Points {
    pub staged: &'static str,
    pub committed_locally: &'static str,
    pub committed: &'static str,
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
        rows.sort_unstable_by_key(|s| s.start_ms);
        let mut files = Vec::new();
        let mut rest = &rows[..];
        while let Some(first) = rest.first() {
            let date = crate::clock::utc_date(first.start_ms);
            let n = rest.partition_point(|s| crate::clock::utc_date(s.start_ms) == date);
            let (day, tail) = rest.split_at(n);
            files.push(Encoded {
                rows: day.len(),
                bytes: encode(day, archived_at_ms)?,
                date,
            });
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
    pub async fn stage(&self, seq: i64, files: Vec<Encoded>) -> Result<Vec<FileRecord>> {
        let (portal, state_id) = (self.portal, self.state.state_id());
        let mut records = Vec::with_capacity(files.len());
        for f in files {
            self.state.guard()?;
            let staging = staging_key(portal, &f.date, state_id, seq);
            let path = final_key(portal, &f.date, state_id, seq);
            let bytes = f.bytes.len() as i64;
            self.sink
                .stage(staging.clone(), f.bytes)
                .await
                .with_context(|| format!("portal {portal}: staging {staging}"))?;
            records.push(FileRecord {
                seq,
                path,
                staging,
                rows: f.rows as i64,
                bytes,
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

    /// Publish each committed file of flush `seq`, then record the flush as published.
    pub async fn publish(&self, seq: i64, files: &[FileRecord]) -> Result<()> {
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
