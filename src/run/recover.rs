//! Recovery, at the start of every portal's work and of every compaction: finish what an
//! interrupted run committed, drop what it did not.

use std::collections::HashSet;

use anyhow::{anyhow, bail, Context, Result};
use tracing::{info, warn};

use super::flush::write_proved_manifest;
use crate::aws::AwsError;
use crate::model::PortalId;
use crate::rows_digest::{prove, read_input};
use crate::sink::layout::{claim_key, claim_staging_key, manifest_key};
use crate::sink::manifest::{sha256_hex, Proof};
use crate::sink::{staged_writer_of, staging_prefix, writer_of, Sink};
use crate::state::FileRecord;
use crate::state::StateHandle;

/// Who runs recovery, which decides what a denied delete of a replaced file means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retired {
    /// `compact` and `verify --repair`: deleting the files a compaction replaced is their
    /// work, and a denied delete fails them.
    Delete,
    /// `run` and `backfill`: the nightly role may not delete published files (only staged
    /// ones). A denied delete is a warning: the files stay recorded, and the next `compact` or
    /// `verify --repair` deletes them. Until then readers see their rows twice.
    DeleteIfAllowed,
}

/// What recovery did for one portal.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Committed files published now.
    pub published: u64,
    /// Committed files found lost: neither their staged copy nor a published one exists.
    pub lost: Vec<LostFile>,
}

/// A committed file lost before it was published (its staging folder lost, an expired
/// lifecycle rule, a cleaned disk).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LostFile {
    pub path: String,
    /// Its partition's day (UTC), `YYYY-MM-DD`.
    pub date: String,
    /// Rows it held.
    pub rows: i64,
    /// Its sessions that no other file holds: no longer recorded as archived, so a later
    /// listing (a pass, or `verify --repair`) writes them again while the service lists them.
    pub unrecorded: u64,
}

/// Write the manifests and publish the files committed but not published, delete files a
/// committed compaction replaced, delete this state's staged files never committed. A
/// committed file whose staged copy is gone is a named loss (see [`LostFile`]), never a
/// reason to stop: the portal goes on.
pub async fn recover(
    sink: &Sink,
    state: &StateHandle,
    portal: &PortalId,
    mode: Retired,
) -> Result<Recovered> {
    let id = portal.to_string();
    let committed = state.db(move |st| st.unpublished(&id)).await?;
    let mut unpublished = Vec::with_capacity(committed.len());
    let mut lost = Vec::new();
    for f in committed {
        if sink.exists(f.staging.clone()).await? || sink.exists(f.path.clone()).await? {
            unpublished.push(f);
        } else {
            lost.push(f);
        }
    }
    let mut recovered = Recovered::default();
    for f in &lost {
        recovered
            .lost
            .push(forget_lost(sink, state, portal, f, &unpublished).await?);
    }
    for f in unpublished.iter_mut().filter(|f| f.sha256.is_empty()) {
        // Committed by an archiver before the manifest: hash the committed bytes.
        let key = if sink.exists(f.staging.clone()).await? {
            f.staging.clone()
        } else {
            f.path.clone()
        };
        f.sha256 = sha256_hex(&sink.read(key).await?);
    }
    for seq_files in unpublished.chunk_by(|a, b| a.seq == b.seq) {
        let seq = seq_files[0].seq;
        let id = portal.to_string();
        let replaces = state.db(move |st| st.retired_of(&id, seq)).await?;
        // A flush that lost a file may have written its manifest before: that manifest stays
        // (it names the lost file, which `verify` then reports, and `verify --repair` records
        // as replaced).
        let manifest = manifest_key(portal, state.state_id(), seq);
        let lost_here = lost.iter().any(|f| f.seq == seq);
        let written = (lost_here || !replaces.is_empty()) && sink.exists(manifest.clone()).await?;
        if written {
            // Written before (perhaps by a run killed before it recorded it): recorded as
            // it is for the next digest, unless it is already.
            let sha256 = sha256_hex(&sink.read(manifest.clone()).await?);
            let id = portal.to_string();
            state
                .db(move |st| st.record_found_manifest(&manifest, &id, seq, &sha256))
                .await?;
        } else {
            // A compaction's manifest proves it: its inputs are still there (they go only
            // after the manifest is written and the output published), and so is its output.
            let proof = match replaces.is_empty() {
                true => None,
                false => prove_again(sink, portal, seq_files, &replaces).await?,
            };
            write_proved_manifest(
                sink,
                state,
                portal,
                seq,
                seq_files,
                &replaces,
                proof.as_ref(),
            )
            .await
            .with_context(|| format!("recovering flush {seq} of portal {portal}"))?;
        }
        for f in seq_files {
            state.guard()?;
            sink.publish(f.staging.clone(), f.path.clone())
                .await
                .with_context(|| format!("recovering flush {} of portal {portal}", f.seq))?;
        }
        let id = portal.to_string();
        state.db(move |st| st.mark_published(&id, seq)).await?;
    }
    recovered.published = unpublished.len() as u64;
    // Files a committed compaction replaced: their replacement is published now.
    let id = portal.to_string();
    let retired = state.db(move |st| st.retired(&id)).await?;
    if !retired.is_empty() {
        state.guard()?;
        match sink.delete_all(retired.clone()).await {
            Ok(()) => {
                let (id, paths) = (portal.to_string(), retired.clone());
                state.db(move |st| st.forget_retired(&id, &paths)).await?;
            }
            Err(e) if mode == Retired::DeleteIfAllowed && is_denied(&e) => warn!(
                portal_id = %portal,
                files = retired.len(),
                error = %format!("{e:#}"),
                "an interrupted compaction's replaced files stay until the next `compact` or `verify --repair`: this role may not delete published files (their rows are in the compacted file too)"
            ),
            Err(e) => return Err(e),
        }
    }
    // Staged files never committed: only this state's (another state's staged files may be
    // committed there, and waiting to be published).
    let leftovers: Vec<String> = sink
        .list_staged(staging_prefix(portal))
        .await?
        .into_iter()
        .filter(|k| staged_writer_of(k) == Some(state.state_id()))
        .collect();
    for key in &leftovers {
        state.guard()?;
        sink.delete(key.clone()).await?;
    }
    crate::failpoint::hit("after_recover");
    if !unpublished.is_empty() || !leftovers.is_empty() || !retired.is_empty() {
        info!(
            portal_id = %portal,
            published = unpublished.len(),
            retired = retired.len(),
            discarded = leftovers.len(),
            "recovered files of an interrupted run"
        );
    }
    Ok(recovered)
}

/// The proof of a committed compaction (or repair's rewrite) whose manifest is not written yet,
/// computed again as it was before its commit: from its inputs (`replaced`) and its output
/// (staged, or published). `None`, with a warning, if an input is gone: the manifest is then
/// written without a proof (the rows were checked before the commit).
async fn prove_again(
    sink: &Sink,
    portal: &PortalId,
    files: &[FileRecord],
    replaced: &[String],
) -> Result<Option<Proof>> {
    let [out] = files else {
        return Ok(None);
    };
    let mut inputs = Vec::with_capacity(replaced.len());
    for key in replaced {
        if !sink.exists(key.clone()).await? {
            warn!(portal_id = %portal, file = %key, "an input of an interrupted compaction is gone: its manifest is written without a proof of its rows");
            return Ok(None);
        }
        inputs.push((
            key.clone(),
            bytes::Bytes::from(sink.read(key.clone()).await?),
        ));
    }
    let key = match sink.exists(out.staging.clone()).await? {
        true => out.staging.clone(),
        false => out.path.clone(),
    };
    let output = bytes::Bytes::from(sink.read(key).await?);
    let name = out.path.clone();
    let proved = tokio::task::spawn_blocking(move || -> Result<Proof> {
        let read = inputs
            .iter()
            .map(|(k, b)| read_input(k, b))
            .collect::<Result<Vec<_>>>()?;
        prove(&read, output, &name)
    })
    .await
    .context("recovery task panicked")?;
    // Only inputs changed since the commit (which checked them) can fail it.
    Ok(proved
        .inspect_err(|e| warn!(portal_id = %portal, error = %format!("{e:#}"), "an interrupted compaction's rows cannot be proved again: its manifest is written without a proof"))
        .ok())
}

/// A committed file lost before it was published: forget it, and un-record its sessions that
/// no other file of its day holds (the day's published files, and the flushes about to be
/// published), in one transaction. Warns naming the portal, the day and the rows.
async fn forget_lost(
    sink: &Sink,
    state: &StateHandle,
    portal: &PortalId,
    f: &FileRecord,
    unpublished: &[FileRecord],
) -> Result<LostFile> {
    let date = f
        .path
        .split('/')
        .find_map(|seg| seg.strip_prefix("start_date="))
        .ok_or_else(|| anyhow!("portal {portal}: committed file {} has no date", f.path))?
        .to_string();
    let day_start = crate::clock::date_start_ms(&date)
        .ok_or_else(|| anyhow!("portal {portal}: committed file {} has no date", f.path))?;
    let mut others: Vec<String> = sink
        .partitions(portal)
        .await?
        .into_iter()
        .filter(|(d, _)| d.strip_prefix("start_date=").unwrap_or(d) == date)
        .flat_map(|(_, keys)| keys)
        .collect();
    for u in unpublished.iter().filter(|u| u.path.contains(&date)) {
        if sink.exists(u.path.clone()).await? {
            others.push(u.path.clone());
        } else {
            others.push(u.staging.clone());
        }
    }
    let mut kept = HashSet::new();
    for key in others {
        let bytes = sink.read(key.clone()).await?;
        kept.extend(session_ids(bytes, &key)?);
    }
    let (id, file) = (portal.to_string(), f.clone());
    let unrecorded = state
        .db(move |st| st.forget_lost_file(&id, &file, (day_start, day_start + 86_400_000), &kept))
        .await?;
    state.checkpoint().await?;
    warn!(
        portal_id = %portal,
        date = %date,
        rows = f.rows,
        unrecorded,
        file = %f.path,
        "a committed file was lost before it was published (its staged copy is gone): its sessions are no longer recorded as archived; `verify --repair` writes those the service still lists"
    );
    Ok(LostFile {
        path: f.path.clone(),
        date,
        rows: f.rows,
        unrecorded,
    })
}

/// The session ids of a Parquet file of the dataset.
fn session_ids(bytes: Vec<u8>, name: &str) -> Result<Vec<String>> {
    use arrow_array::cast::AsArray;
    let mut out = Vec::new();
    for batch in crate::encode::read_in_schema(bytes, name)? {
        let col = batch
            .column_by_name("session_id")
            .ok_or_else(|| anyhow!("{name}: no session_id column"))?;
        out.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    Ok(out)
}

/// A delete refused for want of permission: S3's 403, or a local permission error.
fn is_denied(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<AwsError>()
            .is_some_and(|a| a.status == Some(403))
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    })
}

/// Before a state archives a portal for the first time (before its recovery, which deletes
/// staged files): claim the portal, so that no other state can archive it from then on. The
/// claim is written once (`If-None-Match: *`); one that names another state is refused, like
/// that state's files (see [`check_unclaimed`]). Two states starting one new portal at the
/// same moment: one claim wins, the other state stops before writing anything.
pub async fn claim(sink: &Sink, portal: &PortalId, state_id: &str) -> Result<()> {
    let key = claim_key(portal);
    let body = format!("{{\"portal_id\":\"{portal}\",\"state_id\":\"{state_id}\"}}\n");
    let written = sink
        .put_new(
            key.clone(),
            claim_staging_key(portal, state_id),
            body.into_bytes(),
        )
        .await;
    let Err(e) = written else {
        return Ok(());
    };
    // A local output staged it first: leave nothing behind in the portal's staging folder.
    sink.delete(claim_staging_key(portal, state_id)).await.ok();
    let holder = match sink.read(key.clone()).await {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["state_id"].as_str().map(str::to_string)),
        Err(_) => None,
    };
    match holder {
        Some(other) if other != state_id => bail!(
            "portal {portal}: another state ({other}) has claimed this portal in the output ({key}); \
             archiving it from this state would write its sessions twice. Use the state that claimed it \
             (a changed --shard-count or --state moves portals between states), or, if that state is gone \
             for good, move its files and that claim away first"
        ),
        _ => Err(e.context(format!("portal {portal}: claiming it in the output"))),
    }
}

/// Before a state archives a portal for the first time: refuse if the output already holds
/// files of that portal written by another state (a lost or replaced state, a changed shard
/// count, two job definitions on one output). Archiving it from here would write its listed
/// sessions a second time.
pub async fn check_unclaimed(sink: &Sink, portal: &PortalId, state_id: &str) -> Result<()> {
    for (_, keys) in sink.partitions(portal).await? {
        for k in keys {
            if writer_of(&k) != Some(state_id) {
                bail!(
                    "portal {portal}: the output already holds files of this portal from another state ({k}); \
                     archiving it from this state would write its sessions twice. Use the state that wrote them \
                     (a changed --shard-count or --state moves portals between states), or move those files away first"
                );
            }
        }
    }
    Ok(())
}
