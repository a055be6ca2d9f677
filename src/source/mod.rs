//! The source: WorkSpaces Web over the AWS SDK. ListPortals (discover), ListSessions pages
//! with an explicit `nextToken` (so the token can be checkpointed), and GetSession.
//!
//! - [`retry`]: one retry loop for every call, honouring `Retry-After`;
//! - [`pacer`]: adaptive pacing of a client's calls once throttles exceed the noise;
//! - [`wire`]: the client's settings, and the SDK's session shape turned into the model.

mod pacer;
mod retry;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use aws_sdk_workspacesweb::types::SessionSortBy;
use aws_sdk_workspacesweb::Client;

pub use pacer::Pacer;
pub use retry::backoff;
pub use wire::client_config;

use crate::aws::AwsError;
use crate::model::{OddSession, PortalId, Session};
use wire::{raw_fields, session_from_wire};

/// Sort order of a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    OldestFirst,
    NewestFirst,
}

/// One page of ListSessions.
#[derive(Debug)]
pub struct Page {
    pub sessions: Vec<Session>,
    /// Sessions of the page that cannot be archived as sent (to quarantine).
    pub odd: Vec<OddSession>,
    pub next_token: Option<String>,
}

/// What GetSession answered about one session.
#[derive(Debug)]
pub enum Got {
    Session(Session),
    /// An answer that cannot be archived as sent: its fields (see [`OddSession`]), or a
    /// session other than the one asked for.
    Odd(OddSession),
    /// The service no longer knows it (or its portal).
    NotFound,
}

/// Why a call failed, as far as the caller cares.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The service refused a saved `nextToken` (expired or invalid): restart the pass.
    #[error("the service rejected the pagination token: {0}")]
    TokenRejected(String),
    #[error("portal {0} does not exist (ResourceNotFoundException)")]
    PortalNotFound(String),
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Still failing after every attempt.
    #[error("{op} gave up after {attempts} attempts")]
    Exhausted {
        op: &'static str,
        attempts: u32,
        #[source]
        last: AwsError,
    },
    /// A reply the archiver cannot trust as a whole (a session without an id; a body that is
    /// not the operation's shape). A single session it cannot archive is an [`OddSession`].
    #[error("unusable reply from the service: {what}")]
    InvalidReply {
        what: String,
        #[source]
        source: Option<AwsError>,
    },
    /// Any other failure of the call (not retried).
    #[error(transparent)]
    Call(#[from] AwsError),
    /// A stop was requested (SIGTERM/SIGINT) while waiting to retry.
    #[error("stopped while waiting to retry")]
    Stopped,
}

/// Counters across all calls (for the run summary and benchmarks).
#[derive(Debug, Default)]
pub struct CallStats {
    pub calls: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
}

/// The WorkSpaces Web source. Clones share the client, the counters, the pacer and the row
/// budget: one `Source` per process, cloned into every portal's task.
#[derive(Clone)]
pub struct Source {
    client: Client,
    max_attempts: u32,
    pub stats: Arc<CallStats>,
    /// Set on SIGTERM/SIGINT: waits between retries end at once.
    stop: Arc<AtomicBool>,
    pacer: Arc<Pacer>,
}

impl Source {
    /// A client from the SDK's standard configuration chain (env, profiles, IRSA, ECS, IMDS),
    /// with `AWS_ENDPOINT_URL_WORKSPACES_WEB` and friends honoured by the SDK itself.
    pub fn new(sdk: &aws_config::SdkConfig, max_attempts: u32, stop: Arc<AtomicBool>) -> Source {
        Source {
            client: Client::from_conf(client_config(sdk)),
            max_attempts,
            stats: Arc::default(),
            stop,
            pacer: Arc::default(),
        }
    }

    /// This source counting its calls into `stats` (shared by several sources: the run's
    /// totals) instead of its own.
    pub fn counting_into(mut self, stats: Arc<CallStats>) -> Source {
        self.stats = stats;
        self
    }

    /// The pacing shared by every clone of this source.
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// Every portal in the account and region: (id, ARN).
    pub async fn list_portals(&self) -> Result<Vec<(PortalId, String)>, FetchError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let t = token.clone();
            let resp = self
                .call("ListPortals", t.is_some(), || {
                    self.client
                        .list_portals()
                        .max_results(100)
                        .set_next_token(t.clone())
                        .send()
                })
                .await?;
            for p in resp.portals() {
                let arn = p.portal_arn();
                let id = PortalId::from_arn(arn).map_err(|e| FetchError::InvalidReply {
                    what: format!("ListPortals returned portal ARN {arn:?}: {e}"),
                    source: None,
                })?;
                out.push((id, arn.to_string()));
            }
            match resp.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// One page of a portal's sessions.
    pub async fn list_sessions(
        &self,
        portal: &PortalId,
        order: Order,
        token: Option<&str>,
        page_size: usize,
    ) -> Result<Page, FetchError> {
        let sort = match order {
            Order::OldestFirst => SessionSortBy::StartTimeAscending,
            Order::NewestFirst => SessionSortBy::StartTimeDescending,
        };
        let resp = self
            .call("ListSessions", token.is_some(), || {
                self.client
                    .list_sessions()
                    .portal_id(portal.as_str())
                    .sort_by(sort.clone())
                    .max_results(page_size as i32)
                    .set_next_token(token.map(str::to_string))
                    .send()
            })
            .await
            .map_err(|e| match e {
                FetchError::PortalNotFound(_) => FetchError::PortalNotFound(portal.to_string()),
                other => other,
            })?;
        let mut arn: Option<Arc<str>> = None;
        let mut sessions = Vec::with_capacity(resp.sessions.len());
        let mut odd = Vec::new();
        // The reply's strings move into the rows: no copy per session.
        for s in resp.sessions {
            match session_from_wire(
                &mut arn,
                portal,
                s.portal_arn.as_deref(),
                s.session_id,
                s.username,
                s.status.as_ref(),
                s.start_time.as_ref(),
                s.end_time.as_ref(),
            )? {
                Ok(session) => sessions.push(session),
                Err(o) => odd.push(o),
            }
        }
        let next_token = resp.next_token.filter(|t| !t.is_empty());
        Ok(Page {
            sessions,
            odd,
            next_token,
        })
    }

    /// One session by id, with its client IPs. An answer for another session than the one
    /// asked for is [`Got::Odd`], filed under the id asked for: never taken for it.
    pub async fn get_session(
        &self,
        portal: &PortalId,
        session_id: &str,
    ) -> Result<Got, FetchError> {
        let resp = self
            .call("GetSession", false, || {
                self.client
                    .get_session()
                    .portal_id(portal.as_str())
                    .session_id(session_id)
                    .send()
            })
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(FetchError::PortalNotFound(_)) => return Ok(Got::NotFound),
            Err(e) => return Err(e),
        };
        let Some(s) = resp.session() else {
            return Ok(Got::NotFound);
        };
        let answered = s.session_id().unwrap_or_default();
        let got = session_from_wire(
            &mut None,
            portal,
            s.portal_arn(),
            Some(session_id.to_string()),
            s.username().map(str::to_string),
            s.status(),
            s.start_time(),
            s.end_time(),
        )?;
        Ok(match got {
            Ok(_) if answered != session_id => Got::Odd(OddSession {
                session_id: session_id.to_string(),
                reason: format!("GetSession answered for another session ({answered:?})"),
                start_ms: None,
                raw: raw_fields(s.portal_arn(), s.status(), s.start_time(), s.end_time()),
            }),
            Ok(mut session) => {
                session.client_ips = Some(s.client_ip_addresses().to_vec());
                Got::Session(session)
            }
            Err(mut odd) => {
                if answered != session_id {
                    odd.reason = format!(
                        "GetSession answered for another session ({answered:?}); {}",
                        odd.reason
                    );
                    odd.start_ms = None;
                }
                Got::Odd(odd)
            }
        })
    }
}
