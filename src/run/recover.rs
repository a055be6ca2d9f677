//! Recovery, at the start of every portal's work and of every compaction: finish what an
//! interrupted run committed, drop what it did not.

use anyhow::{bail, Context, Result};
use tracing::{info, warn};

use super::flush::write_manifest;
use crate::aws::AwsError;
use crate::model::PortalId;
use crate::sink::manifest::sha256_hex;
use crate::sink::{staging_prefix, writer_of, Sink};
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

/// Write the manifests and publish the files committed but not published, delete files a
/// committed compaction replaced, delete staged files never committed. Returns how many files
/// were published.
pub async fn recover(
    sink: &Sink,
    state: &StateHandle,
    portal: &PortalId,
    mode: Retired,
) -> Result<u64> {
    let id = portal.to_string();
    let mut unpublished = state.db(move |st| st.unpublished(&id)).await?;
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
        write_manifest(sink, state.state_id(), portal, seq, seq_files, &replaces)
            .await
            .with_context(|| format!("recovering flush {seq} of portal {portal}"))?;
        for f in seq_files {
            state.guard()?;
            sink.publish(f.staging.clone(), f.path.clone())
                .await
                .with_context(|| format!("recovering flush {} of portal {portal}", f.seq))?;
        }
        let id = portal.to_string();
        state.db(move |st| st.mark_published(&id, seq)).await?;
    }
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
    let leftovers = sink.list_staged(staging_prefix(portal)).await?;
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
    Ok(unpublished.len() as u64)
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
