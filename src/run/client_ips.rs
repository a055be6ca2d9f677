//! `--with-client-ips`: each written session's client IP addresses, from GetSession.

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use tracing::debug;

use crate::error::Interrupted;
use crate::model::{OddSession, PortalId, Session};
use crate::source::{FetchError, Got, Source};

/// GetSession for every row without client IPs, a few calls in flight at a time (each
/// with the retry loop's backoff on throttling). Returns the rows whose answer cannot be taken
/// for them (an answer for another session, or in a form that cannot be archived): the caller
/// quarantines those instead of writing them.
pub async fn fetch_client_ips(
    source: &Source,
    portal: &PortalId,
    rows: &mut [Session],
) -> Result<Vec<OddSession>> {
    const IN_FLIGHT: usize = 4;
    let mut todo = rows
        .iter()
        .filter(|s| s.client_ips.is_none())
        .map(|s| s.session_id.clone())
        .collect::<Vec<_>>()
        .into_iter();
    let mut found: HashMap<String, Vec<String>> = HashMap::new();
    let mut odd = Vec::new();
    let mut calls = tokio::task::JoinSet::new();
    loop {
        while calls.len() < IN_FLIGHT {
            let Some(id) = todo.next() else { break };
            let (source, portal) = (source.clone(), portal.clone());
            calls.spawn(async move {
                let r = source.get_session(&portal, &id).await;
                (id, r)
            });
        }
        let Some(joined) = calls.join_next().await else {
            break;
        };
        let (id, result) = joined.context("GetSession task panicked")?;
        match result {
            Ok(Got::Session(s)) => {
                found.insert(id, s.client_ips.unwrap_or_default());
            }
            Ok(Got::Odd(o)) => odd.push(o),
            Ok(Got::NotFound) => {
                debug!(portal_id = %portal, session_id = %id, "no longer known to GetSession; archived without client IPs");
            }
            Err(FetchError::Stopped) => return Err(Interrupted.into()),
            Err(e) => {
                return Err(anyhow!(e).context(format!(
                    "portal {}: GetSession for the client IPs of session {id}",
                    portal
                )))
            }
        }
    }
    for s in rows.iter_mut() {
        if let Some(ips) = found.remove(&s.session_id) {
            s.client_ips = Some(ips);
        }
    }
    Ok(odd)
}
