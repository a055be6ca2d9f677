//! Recovery, at the start of every portal's work and of every compaction: finish what an
//! interrupted run committed, drop what it did not.

use anyhow::{bail, Context, Result};
use tracing::info;

use crate::model::PortalId;
use crate::sink::{staging_prefix, writer_of, Sink};
use crate::state::StateHandle;

/// Publish files committed but not published, delete files a committed compaction replaced,
/// delete staged files never committed. Returns how many files were published.
pub async fn recover(sink: &Sink, state: &StateHandle, portal: &PortalId) -> Result<u64> {
    let id = portal.to_string();
    let unpublished = state.db(move |st| st.unpublished(&id)).await?;
    let mut seqs: Vec<i64> = unpublished.iter().map(|f| f.seq).collect();
    seqs.dedup();
    for f in &unpublished {
        state.guard()?;
        sink.publish(f.staging.clone(), f.path.clone())
            .await
            .with_context(|| format!("recovering flush {} of portal {portal}", f.seq))?;
    }
    for seq in seqs {
        let id = portal.to_string();
        state.db(move |st| st.mark_published(&id, seq)).await?;
    }
    // Files a committed compaction replaced: their replacement is published now.
    let id = portal.to_string();
    let retired = state.db(move |st| st.retired(&id)).await?;
    if !retired.is_empty() {
        state.guard()?;
        sink.delete_all(retired.clone()).await?;
        let (id, paths) = (portal.to_string(), retired.clone());
        state.db(move |st| st.forget_retired(&id, &paths)).await?;
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
