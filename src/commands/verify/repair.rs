//! `verify --repair`: write the missing sessions through the flushes' protocol, record lost
//! files as replaced, and rewrite partitions holding duplicated sessions through compaction's.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{Array, BooleanArray, RecordBatch};
use parquet::arrow::ArrowWriter;
use tracing::info;

use super::Repaired;
use crate::clock::now_ms;
use crate::commands::compact::{check_inputs, live_files_of, partition_of};
use crate::encode::{read_in_schema, schema, writer_properties};
use crate::failpoint;
use crate::model::Session;
use crate::rows_digest::prove;
use crate::run::flush::{encode_days, Encoded, Points, Target};
use crate::state::FlushCommit;
use crate::verify::{keep_one, Candidate, Listed};

/// The crash points of a repair's writes.
pub(super) const POINTS: Points = Points {
    staged: "repair_after_stage",
    committed_locally: "repair_after_local_commit",
    committed: "repair_after_commit",
    manifested: "repair_after_manifest",
};

/// What a repair of one portal gathers while verifying, and writes.
pub(super) struct Repairer<'a> {
    target: Target<'a>,
    /// Missing sessions not written yet.
    buffer: Vec<Session>,
    flush_rows: usize,
    /// Files the manifests list as live that are gone from the output.
    pub(super) lost_files: Vec<String>,
    done: Repaired,
}

impl<'a> Repairer<'a> {
    pub(super) fn new(target: Target<'a>, flush_rows: usize) -> Repairer<'a> {
        Repairer {
            target,
            buffer: Vec::new(),
            flush_rows,
            lost_files: Vec::new(),
            done: Repaired::default(),
        }
    }

    pub(super) async fn missing(&mut self, rows: Vec<Session>) -> Result<()> {
        self.buffer.extend(rows);
        if self.buffer.len() >= self.flush_rows {
            self.flush().await?;
        }
        Ok(())
    }

    /// Write the buffered missing sessions: encode → stage → commit (their ids become archived
    /// ids of the state, and leave its pending sessions) → publish.
    async fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.buffer);
        let (state, portal) = (self.target.state, self.target.portal);
        let ids: Vec<String> = rows.iter().map(|s| s.session_id.clone()).collect();
        let id = portal.to_string();
        // Ids the state already counts as archived (their file was lost) are not recorded
        // twice; all of them stop being pending, so no later run writes them again.
        let (seq, known) = state
            .db(move |st| {
                let seq = st.portal(&id)?.flush_seq + 1;
                let known = st.archived_among(&id, ids.iter().map(String::as_str))?;
                Ok((seq, known))
            })
            .await?;
        let n = rows.len() as u64;
        let (encoded, archived) = encode_days(rows, now_ms()).await?;
        let files = self.target.stage(seq, encoded).await?;
        let commit = FlushCommit {
            seq,
            pending_remove: archived.iter().map(|(id, _)| id.clone()).collect(),
            archived: archived
                .into_iter()
                .filter(|(id, _)| !known.contains(id))
                .collect(),
            files: files.clone(),
            ..FlushCommit::default()
        };
        let id = portal.to_string();
        self.target
            .commit(seq, move |st| st.commit_flush(&id, &commit))
            .await?;
        self.target.publish(seq, &files).await?;
        self.done.written += n;
        info!(portal_id = %portal, seq, rows = n, files = files.len(), "wrote missing sessions");
        Ok(())
    }

    /// Write what is left, and record the lost files as replaced.
    pub(super) async fn finish(mut self) -> Result<Repaired> {
        self.flush().await?;
        self.forget_lost_files().await?;
        Ok(self.done)
    }

    /// A partition just compared holds duplicated ids (`expected`: id → listed values):
    /// rewrite it now, with one row each, so a portal's repair holds one partition's ids at a
    /// time.
    pub(super) async fn duplicated(
        &mut self,
        date: &str,
        keys: Vec<String>,
        expected: HashMap<String, Option<Listed>>,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        if self.target.sink.lock().is_some() {
            return self.keep(date, expected.into_keys().collect()).await;
        }
        let removed = self
            .dedup_partition(date, keys, expected)
            .await
            .with_context(|| format!("partition {date}"))?;
        self.done.partitions_rewritten += 1;
        self.done.rows_removed += removed;
        Ok(())
    }

    /// Under Object Lock, a partition's files cannot be replaced: its duplicated sessions are
    /// recorded as kept, and counted so by every later `verify`.
    async fn keep(&mut self, date: &str, mut ids: Vec<String>) -> Result<()> {
        let (state, portal) = (self.target.state, self.target.portal);
        ids.sort();
        let n = ids.len() as u64;
        let (id, day) = (portal.to_string(), date.to_string());
        state
            .db(move |st| st.keep_duplicates(&id, &day, &ids, now_ms()))
            .await?;
        self.done.duplicates_kept += n;
        tracing::warn!(
            portal_id = %portal,
            date,
            sessions = n,
            "sessions with more than one row in locked files: kept (a locked file cannot be \
             replaced until its retention ends) and recorded; queries deduplicate by session_id"
        );
        Ok(())
    }

    /// Files the manifests still list but the output lost: their sessions were written again
    /// (the missing ones above), so a manifest records them as replaced, through compaction's
    /// protocol with no new file: commit them as retired → write the manifest → forget them.
    /// Killed before the manifest, the next `verify --repair` finds them again.
    async fn forget_lost_files(&mut self) -> Result<()> {
        if self.lost_files.is_empty() {
            return Ok(());
        }
        let (state, portal) = (self.target.state, self.target.portal);
        let lost = std::mem::take(&mut self.lost_files);
        let (id, retired) = (portal.to_string(), lost.clone());
        let seq = state
            .db(move |st| {
                let seq = st.portal(&id)?.flush_seq + 1;
                st.commit_compaction(&id, seq, &[], &retired)?;
                Ok(seq)
            })
            .await?;
        state.checkpoint().await?;
        self.target.manifest(seq, &[], &lost).await?;
        let (id, retired) = (portal.to_string(), lost.clone());
        state.db(move |st| st.forget_retired(&id, &retired)).await?;
        self.done.lost_files += lost.len() as u64;
        info!(portal_id = %portal, seq, files = lost.len(), "recorded lost files as replaced in a manifest");
        Ok(())
    }

    /// Rewrite one partition keeping one row per session id, through compaction's protocol:
    /// stage → commit with the partition's files as retired → replace → forget them.
    async fn dedup_partition(
        &self,
        date: &str,
        keys: Vec<String>,
        expected: HashMap<String, Option<Listed>>,
    ) -> Result<u64> {
        let (sink, state, portal) = (self.target.sink, self.target.state, self.target.portal);
        // The inputs are checked against the manifests as a compaction's are; a live file
        // missing from the partition is not a reason to stop (`finish` records it as lost).
        let live = live_files_of(sink, portal)
            .await?
            .map(|l| partition_of(&l, portal, date));
        let mut inputs = Vec::with_capacity(keys.len());
        for k in &keys {
            inputs.push(bytes::Bytes::from(sink.read(k.clone()).await?));
        }
        let names = keys.clone();
        let (bytes, rows, removed, proof) = tokio::task::spawn_blocking(move || -> Result<_> {
            let read = check_inputs(&inputs, &names, live.as_ref(), false)?;
            let inputs = inputs.into_iter().map(Vec::from).collect();
            let (bytes, rows, removed) = rewrite_deduplicated(inputs, &names, &expected)?;
            let bytes = bytes::Bytes::from(bytes);
            let proof = prove(&read, bytes.clone(), "the rewritten file")?;
            if proof.removed_rows != removed {
                bail!(
                    "the rewritten file lacks {} rows of its inputs, not the {removed} duplicated ones",
                    proof.removed_rows
                );
            }
            Ok((Vec::from(bytes), rows, removed, proof))
        })
        .await
        .context("rewrite task panicked")??;
        let id = portal.to_string();
        let seq = state
            .db(move |st| Ok(st.portal(&id)?.flush_seq + 1))
            .await?;
        let encoded = Encoded::new(date.to_string(), rows as usize, bytes);
        let mut files = self.target.stage(seq, vec![encoded]).await?;
        let file = files.pop().expect("one file staged");
        let (id, f, retired) = (portal.to_string(), file.clone(), keys.clone());
        self.target
            .commit(seq, move |st| {
                st.commit_compaction(&id, seq, std::slice::from_ref(&f), &retired)
            })
            .await?;
        self.target
            .proved_manifest(seq, std::slice::from_ref(&file), &keys, Some(&proof))
            .await?;
        state.guard()?;
        sink.replace(file.staging, file.path, keys.clone()).await?;
        failpoint::hit("repair_after_replace");
        let (id, retired) = (portal.to_string(), keys);
        state
            .db(move |st| st.finish_replace(&id, seq, &retired))
            .await?;
        info!(portal_id = %portal, date, rows, removed, "rewrote partition without duplicated rows");
        Ok(removed)
    }
}

/// Re-encode a partition's files as one, keeping one row per session id (see
/// [`keep_one`]). Returns the bytes, the rows kept and the rows removed.
fn rewrite_deduplicated(
    inputs: Vec<Vec<u8>>,
    names: &[String],
    expected: &HashMap<String, Option<Listed>>,
) -> Result<(Vec<u8>, u64, u64)> {
    let target = schema();
    let mut batches = Vec::new();
    for (bytes, name) in inputs.into_iter().zip(names) {
        batches.extend(read_in_schema(bytes, name)?);
    }
    let col = |b: &RecordBatch, n: &str| b.column_by_name(n).expect("schema column").clone();
    let views: Vec<_> = batches
        .iter()
        .map(|b| {
            (
                col(b, "session_id"),
                col(b, "status"),
                col(b, "start_time"),
                col(b, "end_time"),
                col(b, "archived_at"),
            )
        })
        .collect();
    let mut candidates = Vec::new();
    for (ids, status, start, end, at) in &views {
        let (ids, status) = (ids.as_string::<i32>(), status.as_string::<i32>());
        let start = start.as_primitive::<TimestampMillisecondType>();
        let end = end.as_primitive::<TimestampMillisecondType>();
        let at = at.as_primitive::<TimestampMillisecondType>();
        for i in 0..ids.len() {
            let id = ids.value(i);
            let matches_listing = expected.get(id).and_then(Option::as_ref).is_some_and(|l| {
                l.matches(
                    status.value(i),
                    start.value(i),
                    end.is_valid(i).then(|| end.value(i)),
                )
            });
            candidates.push(Candidate {
                session_id: id,
                matches_listing,
                archived_at_ms: at.value(i),
            });
        }
    }
    let keep = keep_one(&candidates);
    let rows_in = keep.len() as u64;
    drop(candidates);
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, target.clone(), Some(writer_properties()))?;
    let mut at = 0;
    for b in &batches {
        let mask = BooleanArray::from(keep[at..at + b.num_rows()].to_vec());
        at += b.num_rows();
        writer.write(&arrow_select::filter::filter_record_batch(b, &mask)?)?;
    }
    let meta = writer.close()?;
    let rows_out = meta.file_metadata().num_rows() as u64;
    let kept = keep.iter().filter(|k| **k).count() as u64;
    if rows_out != kept {
        bail!("rewrote {rows_out} rows of {kept}");
    }
    Ok((out, rows_out, rows_in - rows_out))
}
