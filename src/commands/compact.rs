//! `archiver compact`: rewrite each old partition's files into one, through the flushes'
//! exactly-once protocol (see [`crate::run::flush`]). Per partition: read and re-encode its
//! files → stage the new file → commit it together with the list of files it replaces (one
//! transaction) → publish it → delete the replaced files. Killed at any point, the next run's
//! or compaction's recovery finishes the publish and the deletes, or drops the uncommitted
//! stage.
//!
//! Before anything is written, every input file is checked against its portal's manifests
//! (bytes, SHA-256, rows): an altered file, one in no manifest, or a live one missing stops
//! the compaction, the partition untouched. The manifest records the inputs and the rows
//! digest (see [`crate::rows_digest`]) of the output, computed over the inputs and over the
//! output read back: they must be equal, or nothing is published.
//!
//! Readers can see both the new file and some old ones only between the publish (a rename)
//! and the last delete, done back to back before any sync: measured and reported.
//! Nothing is ever missing: old files go only after the new one is in place.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tracing::info;

use crate::clock::{date_start_ms, now_ms};
use crate::config::Config;
use crate::digest::{Digests, Pass};
use crate::encode::rewrite;
use crate::error::Interrupted;
use crate::failpoint;
use crate::model::PortalId;
use crate::report::outcome_of;
use crate::rows_digest::{prove, read_input, InputRead};
use crate::run::flush::{Encoded, Points, Target};
use crate::run::recover::{recover, Retired};
use crate::sink::layout::DATASET;
use crate::sink::manifest::Proof;
use crate::sink::{Role, Sink};
use crate::state::StateHandle;
use crate::verify::{input_problem, live_files, missing_from, ManifestFile};

use super::verify::read_manifests;

/// The crash points of a compaction.
const POINTS: Points = Points {
    staged: "compact_after_stage",
    committed_locally: "compact_after_local_commit",
    committed: "compact_after_commit",
    manifested: "compact_after_manifest",
};

/// What a compaction did.
#[derive(Debug, Default, serde::Serialize)]
pub struct CompactSummary {
    pub partitions: u64,
    pub files_before: u64,
    pub files_after: u64,
    pub rows: u64,
    pub bytes_after: u64,
    /// Longest time any reader could see a new file beside the ones it replaces.
    pub max_overlap_ms: f64,
}

/// Is the partition of `date` (YYYY-MM-DD) old enough: did its day end at least `older_than`
/// before `now_ms`?
pub fn old_enough(date: &str, older_than: Duration, now_ms: i64) -> bool {
    date_start_ms(date)
        .is_some_and(|start| start + 86_400_000 + older_than.as_millis() as i64 <= now_ms)
}

/// Compact every portal of this state (and shard). `stop` (SIGTERM, SIGINT, a lost lease)
/// ends it between two partitions: what is done stays done, the state is saved and its lock
/// or lease released, and the next `compact` goes on.
pub async fn compact(
    cfg: &Config,
    older_than: Duration,
    stop: Arc<AtomicBool>,
) -> Result<CompactSummary> {
    let s3 = super::s3_client(cfg, cfg.uses_s3()).await?;
    let state = StateHandle::open(cfg, "compact", s3.as_ref(), stop.clone()).await?;
    let result = compact_on(cfg, older_than, s3.as_ref(), &state, &stop).await;
    let finished = state.finish().await;
    let summary = result?;
    finished?;
    Ok(summary)
}

async fn compact_on(
    cfg: &Config,
    older_than: Duration,
    s3: Option<&aws_sdk_s3::Client>,
    state: &StateHandle,
    stop: &AtomicBool,
) -> Result<CompactSummary> {
    let shard = cfg.shard;
    let portals: Vec<PortalId> = state
        .db(move |st| {
            Ok(st
                .portals()?
                .into_iter()
                .filter_map(|p| PortalId::parse(&p.portal_id).ok())
                .filter(|p| shard.owns(p))
                .collect())
        })
        .await?;
    let sink = Sink::open(&cfg.output, s3, &cfg.s3, Role::Output).await?;
    if sink.lock().is_some() {
        bail!(
            "compact: {} has Object Lock: compaction deletes the files it replaces, and a \
             locked file cannot be deleted until its retention ends; nothing was changed",
            cfg.output
        );
    }
    sink.check_writable().await?;
    let digests = Digests::open(cfg, s3, None, state).await?;
    digests.recover(state).await?;
    let run_id = state.db(|st| st.start_run("compact")).await?;
    let mut summary = CompactSummary::default();
    let now = now_ms();
    // What each portal's compaction came to, for the digest; failed until it is done.
    let mut passes: Vec<Pass> = Vec::new();
    let result = async {
        for portal in &portals {
            passes.push(Pass {
                portal_id: portal.to_string(),
                pass: "compaction".into(),
                ok: false,
                rows: 0,
            });
            let rows_before = summary.rows;
            recover(&sink, state, portal, Retired::Delete).await?;
            let target = Target {
                sink: &sink,
                state,
                portal,
                points: &POINTS,
            };
            let mut live: Option<Option<Live>> = None;
            for (date, keys) in sink.partitions(portal).await? {
                if keys.len() < 2 || !old_enough(&date, older_than, now) {
                    continue;
                }
                if stop.load(Ordering::SeqCst) {
                    return Err(Interrupted.into());
                }
                // Read once per portal, when it has a partition to compact: each compaction
                // only replaces files of its own partition.
                if live.is_none() {
                    let l = live_files_of(&sink, portal)
                        .await
                        .with_context(|| format!("compacting portal {portal}"))?;
                    live = Some(l);
                }
                let live = live.as_ref().and_then(Option::as_ref);
                compact_partition(&target, live, &date, keys, &mut summary)
                    .await
                    .with_context(|| format!("compacting portal {portal} partition {date}"))?;
            }
            if let Some(p) = passes.last_mut() {
                p.ok = true;
                p.rows = summary.rows - rows_before;
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    // The digest, whatever the outcome: it lists the manifests the compaction wrote.
    let result = match (result, digests.write(state, "compact", passes).await) {
        (result, Ok(_)) => result,
        (Ok(()), Err(e)) => Err(e),
        (Err(e), Err(w)) => {
            tracing::error!(error = %format!("{w:#}"), "writing the digest failed");
            Err(e)
        }
    };
    let (outcome, detail) = outcome_of(&result);
    state
        .db(move |st| st.finish_run(run_id, outcome, detail.as_deref()))
        .await?;
    result?;
    info!(
        partitions = summary.partitions,
        files_before = summary.files_before,
        files_after = summary.files_after,
        rows = summary.rows,
        max_overlap_ms = summary.max_overlap_ms,
        "compaction finished"
    );
    Ok(summary)
}

async fn compact_partition(
    target: &Target<'_>,
    live: Option<&Live>,
    date: &str,
    keys: Vec<String>,
    summary: &mut CompactSummary,
) -> Result<()> {
    let (sink, state, portal) = (target.sink, target.state, target.portal);
    let mut inputs = Vec::with_capacity(keys.len());
    for k in &keys {
        inputs.push(bytes::Bytes::from(sink.read(k.clone()).await?));
    }
    let names = keys.clone();
    let date_owned = date.to_string();
    let live = live.map(|l| partition_of(l, portal, date));
    let (encoded, proof) = tokio::task::spawn_blocking(move || -> Result<(Encoded, Proof)> {
        let read = check_inputs(&inputs, &names, live.as_ref(), true)?;
        let inputs = inputs.into_iter().map(Vec::from).collect();
        let (bytes, rows) = rewrite(inputs, &names)?;
        let bytes = bytes::Bytes::from(bytes);
        let proof = prove(&read, bytes.clone(), "the compacted file")?;
        if proof.removed_rows != 0 || proof.removed_rows_sha256 != "0".repeat(64) {
            bail!("the compacted file's rows differ from its inputs' (their rows digests differ): nothing was published");
        }
        Ok((
            Encoded::new(date_owned, rows as usize, Vec::from(bytes)),
            proof,
        ))
    })
    .await
    .context("compaction task panicked")??;
    let (len, rows) = (encoded.bytes.len() as u64, encoded.rows as u64);
    let id = portal.to_string();
    let seq = state
        .db(move |st| Ok(st.portal(&id)?.flush_seq + 1))
        .await?;
    let mut files = target.stage(seq, vec![encoded]).await?;
    let file = files.pop().expect("one file staged");
    let (id, f, retired) = (portal.to_string(), file.clone(), keys.clone());
    target
        .commit(seq, move |st| {
            st.commit_compaction(&id, seq, std::slice::from_ref(&f), &retired)
        })
        .await?;
    target
        .proved_manifest(seq, std::slice::from_ref(&file), &keys, Some(&proof))
        .await?;
    state.guard()?;
    let window = sink.replace(file.staging, file.path, keys.clone()).await?;
    failpoint::hit("compact_after_replace");
    let overlap = window.as_secs_f64() * 1000.0;
    let (id, retired) = (portal.to_string(), keys.clone());
    state
        .db(move |st| st.finish_replace(&id, seq, &retired))
        .await?;
    failpoint::hit("compact_after_forget");
    summary.partitions += 1;
    summary.files_before += keys.len() as u64;
    summary.files_after += 1;
    summary.rows += rows;
    summary.bytes_after += len;
    summary.max_overlap_ms = summary.max_overlap_ms.max(overlap);
    info!(portal_id = %portal, date, files = keys.len(), rows, overlap_ms = overlap, "compacted partition");
    Ok(())
}

/// The live files of a portal, as its manifests record them.
pub(crate) type Live = BTreeMap<String, ManifestFile>;

/// The live files of `portal` by its manifests; `None` if it has none (files written by an
/// archiver before manifests: nothing to check them against). A manifest that cannot be read
/// is an error naming it: a rewrite could not be checked.
pub(crate) async fn live_files_of(sink: &Sink, portal: &PortalId) -> Result<Option<Live>> {
    let (manifests, errors) = read_manifests(sink, portal).await?;
    if let Some(e) = errors.first() {
        bail!("cannot check the files against their manifests: {e}");
    }
    if manifests.is_empty() {
        return Ok(None);
    }
    let manifests: Vec<_> = manifests.into_iter().map(|(_, m)| m).collect();
    Ok(Some(live_files(&manifests)))
}

/// The live files of one partition: those under its folder, keyed as in the output.
pub(crate) fn partition_of(live: &Live, portal: &PortalId, date: &str) -> (String, Live) {
    let prefix = format!("{DATASET}/portal_id={portal}/start_date={date}/");
    let files = live
        .range(prefix.clone()..)
        .take_while(|(p, _)| p.starts_with(&prefix))
        .map(|(p, f)| (p.clone(), f.clone()))
        .collect();
    (prefix, files)
}

/// Read the input files of a rewrite of one partition (`names`, their bytes) and check each
/// against the partition's live files by the manifests (`live`: its folder and files; `None`
/// for a portal without manifests): bytes, SHA-256 and rows. A file altered, or in no
/// manifest, is an error naming it; so is a live file missing from `names` if
/// `missing_is_error`. Call it on a blocking thread.
pub(crate) fn check_inputs(
    inputs: &[bytes::Bytes],
    names: &[String],
    live: Option<&(String, Live)>,
    missing_is_error: bool,
) -> Result<Vec<InputRead>> {
    if let (Some((prefix, files)), true) = (live, missing_is_error) {
        if let Some(m) = missing_from(files, prefix, names).first() {
            bail!("{m}: a manifest lists it, but it is missing from the output; the partition was left untouched");
        }
    }
    let mut read = Vec::with_capacity(inputs.len());
    for (bytes, name) in inputs.iter().zip(names) {
        let input = read_input(name, bytes)?;
        if let Some((_, files)) = live {
            if let Some(problem) =
                input_problem(files, name, input.bytes, &input.sha256, input.rows)
            {
                bail!("{problem}; the partition was left untouched");
            }
        }
        read.push(input);
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_old_enough_once_their_day_ended_long_enough_ago() {
        // 2026-11-26T12:00:00Z
        let now = 1_795_694_400_000;
        assert!(!old_enough("2026-11-26", Duration::ZERO, now));
        assert!(old_enough("2026-11-25", Duration::ZERO, now));
        assert!(!old_enough("2026-11-25", Duration::from_secs(86_400), now));
        assert!(old_enough("2026-11-24", Duration::from_secs(86_400), now));
        assert!(!old_enough("not-a-date", Duration::ZERO, now));
    }
}
