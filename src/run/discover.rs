//! Discover: the portals to archive, each with its region's WorkSpaces Web client.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Result};
use tracing::info;

use crate::config::Config;
use crate::model::PortalId;
use crate::source::Source;
use crate::state::StateHandle;

/// The WorkSpaces Web client of each region to archive: `--region` values, or the SDK chain's
/// region alone.
pub fn regional_sources(
    sdk: &aws_config::SdkConfig,
    cfg: &Config,
    stop: &Arc<AtomicBool>,
) -> Vec<(String, Source)> {
    if cfg.regions.is_empty() {
        let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
        return vec![(region, Source::new(sdk, cfg.max_attempts, stop.clone()))];
    }
    cfg.regions
        .iter()
        .map(|r| {
            let conf = sdk
                .to_builder()
                .region(aws_config::Region::new(r.clone()))
                .build();
            (
                r.clone(),
                Source::new(&conf, cfg.max_attempts, stop.clone()),
            )
        })
        .collect()
}

/// The portals to archive, each with its region's client: the `named` portals, or (`None`)
/// every portal ListPortals returns in each region. With several regions, named portals are
/// looked up in each region's list. With `record`, every discovered portal and its ARN are
/// recorded in the state.
pub async fn discover(
    named: Option<&[PortalId]>,
    sources: &[(String, Source)],
    record: Option<&StateHandle>,
) -> Result<Vec<(PortalId, Source)>> {
    if let (Some(ids), [(_, only)]) = (named, sources) {
        return Ok(ids.iter().map(|p| (p.clone(), only.clone())).collect());
    }
    let mut found: Vec<(PortalId, Source)> = Vec::new();
    for (region, source) in sources {
        let listed = source.list_portals().await.map_err(|e| {
            anyhow::Error::new(e).context(format!("discovering portals in {region} (ListPortals)"))
        })?;
        info!(region = %region, portals = listed.len(), "discovered portals");
        if let (None, Some(state)) = (named, record) {
            let arns: Vec<(String, String)> = listed
                .iter()
                .map(|(id, arn)| (id.to_string(), arn.clone()))
                .collect();
            state
                .db(move |st| {
                    for (id, arn) in &arns {
                        st.portal(id)?;
                        st.set_portal_arn(id, arn)?;
                    }
                    Ok(())
                })
                .await?;
        }
        for (id, _) in listed {
            if named.is_some_and(|ids| !ids.contains(&id)) {
                continue;
            }
            if !found.iter().any(|(p, _)| p == &id) {
                found.push((id, source.clone()));
            }
        }
    }
    if let Some(ids) = named {
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !found.iter().any(|(p, _)| p == *id))
            .map(|id| id.to_string())
            .collect();
        if !missing.is_empty() {
            let regions: Vec<&str> = sources.iter().map(|(r, _)| r.as_str()).collect();
            bail!(
                "portal {} not found in regions {}",
                missing.join(", "),
                regions.join(", ")
            );
        }
        found.sort_by_key(|(p, _)| ids.iter().position(|i| i == p));
    }
    Ok(found)
}
