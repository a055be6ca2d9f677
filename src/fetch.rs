//! The source: WorkSpaces Web over the AWS SDK. ListPortals discovery, ListSessions paging with
//! an explicit `nextToken` (so the token can be checkpointed), GetSession, and one retry loop
//! for all of them.
//!
//! The SDK's own retries are off: this loop retries throttling, 5xx, timeouts and dropped
//! connections with capped exponential backoff and full jitter, and honours the `Retry-After`
//! header that the SDK ignores.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_workspacesweb::config::http::HttpResponse;
use aws_sdk_workspacesweb::config::retry::RetryConfig;
use aws_sdk_workspacesweb::config::timeout::TimeoutConfig;
use aws_sdk_workspacesweb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_workspacesweb::primitives::DateTime;
use aws_sdk_workspacesweb::types::{SessionSortBy, SessionStatus as WireStatus};
use aws_sdk_workspacesweb::Client;
use tracing::{debug, warn};

use crate::config::PortalId;
use crate::model::{Session, SessionStatus};

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
    pub next_token: Option<String>,
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
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    /// A reply the archiver cannot trust (missing fields, unknown values).
    #[error("unusable reply from the service: {0}")]
    InvalidReply(String),
    #[error("{0}")]
    Other(String),
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

/// The WorkSpaces Web source.
#[derive(Clone)]
pub struct Source {
    client: Client,
    max_attempts: u32,
    pub stats: Arc<CallStats>,
    /// Set on SIGTERM/SIGINT: waits between retries end at once.
    stop: Arc<AtomicBool>,
}

/// What one failed attempt means.
enum Attempt {
    Retry {
        after: Option<Duration>,
        why: String,
    },
    Fail(FetchError),
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
        }
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
                let id = PortalId::from_arn(arn).map_err(|e| {
                    FetchError::InvalidReply(format!(
                        "ListPortals returned portal ARN {arn:?}: {e}"
                    ))
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
        let sessions = resp
            .sessions()
            .iter()
            .map(|s| {
                session_from_wire(
                    &mut arn,
                    s.portal_arn(),
                    s.session_id(),
                    s.username(),
                    s.status(),
                    s.start_time(),
                    s.end_time(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next_token = resp
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        Ok(Page {
            sessions,
            next_token,
        })
    }

    /// One session by id; `None` if the service no longer knows it.
    pub async fn get_session(
        &self,
        portal: &PortalId,
        session_id: &str,
    ) -> Result<Option<Session>, FetchError> {
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
            Err(FetchError::PortalNotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(s) = resp.session() else {
            return Ok(None);
        };
        let mut session = session_from_wire(
            &mut None,
            s.portal_arn(),
            s.session_id(),
            s.username(),
            s.status(),
            s.start_time(),
            s.end_time(),
        )?;
        session.client_ips = Some(s.client_ip_addresses().to_vec());
        Ok(Some(session))
    }

    /// Run one API call with retries.
    async fn call<T, E, F, Fut>(
        &self,
        op: &'static str,
        sent_token: bool,
        mut f: F,
    ) -> Result<T, FetchError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            let err = match f().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match classify(&err, sent_token) {
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { after, why } => {
                    if why.starts_with("ThrottlingException") {
                        self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                    }
                    if attempt >= self.max_attempts {
                        return Err(FetchError::Exhausted {
                            attempts: attempt,
                            last: format!("{op}: {why}"),
                        });
                    }
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff(attempt, after);
                    debug!(op, attempt, wait_ms = wait.as_millis() as u64, why = %why, "retrying");
                    self.sleep_unless_stopped(wait).await?;
                }
            }
        }
    }
}

/// The WorkSpaces Web client settings: the SDK's own retries off (this module retries), and
/// connect, read and attempt timeouts. Public so that the benchmark's floor pages with exactly
/// the same client.
pub fn client_config(sdk: &aws_config::SdkConfig) -> aws_sdk_workspacesweb::Config {
    aws_sdk_workspacesweb::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(30))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
        .build()
}

impl Source {
    async fn sleep_unless_stopped(&self, wait: Duration) -> Result<(), FetchError> {
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            if self.stop.load(Ordering::Relaxed) {
                return Err(FetchError::Stopped);
            }
            let step = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(step.min(Duration::from_millis(100))).await;
        }
        Ok(())
    }
}

fn classify<E>(err: &SdkError<E, HttpResponse>, sent_token: bool) -> Attempt
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let retry_after = err
        .raw_response()
        .and_then(|r| r.headers().get("retry-after"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(300.0)));
    match err {
        SdkError::TimeoutError(_) => Attempt::Retry {
            after: None,
            why: "timeout".into(),
        },
        SdkError::DispatchFailure(d) => {
            if d.is_user() {
                Attempt::Fail(FetchError::Other(format!(
                    "request not sent: {}",
                    error_chain(err)
                )))
            } else {
                Attempt::Retry {
                    after: None,
                    why: format!("connection failed: {}", error_chain(err)),
                }
            }
        }
        SdkError::ResponseError(_) => Attempt::Retry {
            after: None,
            why: format!("unreadable response: {}", error_chain(err)),
        },
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = err.code().unwrap_or("").to_string();
            let msg = err.message().unwrap_or("").to_string();
            let why = if code.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("{code} (HTTP {status}): {msg}")
            };
            match code.as_str() {
                "ThrottlingException"
                | "TooManyRequestsException"
                | "ServiceUnavailableException"
                | "InternalServerException" => Attempt::Retry {
                    after: retry_after,
                    why,
                },
                "ValidationException" if sent_token => {
                    Attempt::Fail(FetchError::TokenRejected(msg))
                }
                "ResourceNotFoundException" => Attempt::Fail(FetchError::PortalNotFound(msg)),
                "AccessDeniedException" => Attempt::Fail(FetchError::AccessDenied(msg)),
                _ if status == 429 || status >= 500 => Attempt::Retry {
                    after: retry_after,
                    why,
                },
                // A success status with a body the SDK could not parse: a reply not to trust.
                "" if (200..300).contains(&status) => {
                    Attempt::Fail(FetchError::InvalidReply(format!(
                        "HTTP {status} with an unparseable body: {}",
                        error_chain(err)
                    )))
                }
                _ => Attempt::Fail(FetchError::Other(why)),
            }
        }
        _ => Attempt::Fail(FetchError::Other(error_chain(err))),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Capped exponential backoff with full jitter, never shorter than the server's `Retry-After`.
pub fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let cap_ms = 20_000u64;
    let exp_ms = (100u64 << attempt.min(16)).min(cap_ms);
    let jittered = Duration::from_millis(jitter(exp_ms));
    match retry_after {
        Some(ra) => ra.max(jittered.min(ra + Duration::from_millis(exp_ms / 4))),
        None => jittered,
    }
}

fn jitter(upto_ms: u64) -> u64 {
    static SEED: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut x =
        SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ (crate::clock::now_ms() as u64);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    x % (upto_ms + 1)
}

/// Epoch milliseconds, rounded to the nearest: the wire carries fractional epoch seconds, which
/// the SDK parses through an `f64`, so `….632` arrives as `….631999969` (truncating would lose
/// a millisecond).
fn to_millis(t: &DateTime) -> Option<i64> {
    let rounded = (i64::from(t.subsec_nanos()) + 500_000) / 1_000_000;
    t.secs().checked_mul(1000)?.checked_add(rounded)
}

/// A wire session → the model, refusing what cannot be archived faithfully.
fn session_from_wire(
    interned_arn: &mut Option<Arc<str>>,
    portal_arn: Option<&str>,
    session_id: Option<&str>,
    username: Option<&str>,
    status: Option<&WireStatus>,
    start: Option<&DateTime>,
    end: Option<&DateTime>,
) -> Result<Session, FetchError> {
    let id = session_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| FetchError::InvalidReply("a session without sessionId".into()))?;
    let bad = |what: &str| FetchError::InvalidReply(format!("session {id}: {what}"));
    let portal_arn = portal_arn
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("no portalArn"))?;
    let status = match status {
        Some(WireStatus::Active) => SessionStatus::Active,
        Some(WireStatus::Terminated) => SessionStatus::Terminated,
        Some(other) => return Err(bad(&format!("unknown status {:?}", other.as_str()))),
        None => return Err(bad("no status")),
    };
    let millis = |t: &DateTime| to_millis(t).ok_or_else(|| bad("timestamp out of range"));
    let start_ms = millis(start.ok_or_else(|| bad("no startTime"))?)?;
    let end_ms = end.map(millis).transpose()?;
    if status == SessionStatus::Terminated && end_ms.is_none() {
        warn!(
            session_id = id,
            "terminated session without endTime; archived with a null end_time"
        );
    }
    let portal_arn = match interned_arn {
        Some(a) if **a == *portal_arn => a.clone(),
        _ => interned_arn.insert(Arc::from(portal_arn)).clone(),
    };
    Ok(Session {
        portal_arn,
        session_id: id.to_string(),
        username: username.map(str::to_string),
        status,
        start_ms,
        end_ms,
        client_ips: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_seconds_round_to_the_nearest_millisecond() {
        for ms in [
            1_794_011_860_632i64,
            1_794_011_860_999,
            1_700_000_000_001,
            0,
            5,
        ] {
            let parsed = DateTime::from_fractional_secs(
                ms.div_euclid(1000),
                (ms.rem_euclid(1000) as f64) / 1000.0,
            );
            let via_f64 = DateTime::from_secs_f64(ms as f64 / 1000.0);
            assert_eq!(to_millis(&parsed), Some(ms));
            assert_eq!(to_millis(&via_f64), Some(ms), "{ms}");
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        for attempt in 1..30 {
            let d = backoff(attempt, None);
            assert!(d <= Duration::from_millis(20_000), "{attempt}: {d:?}");
        }
        for attempt in 1..10 {
            let d = backoff(attempt, Some(Duration::from_secs(3)));
            assert!(d >= Duration::from_secs(3), "{attempt}: {d:?}");
        }
    }

    #[test]
    fn wire_sessions_missing_fields_or_with_unknown_status_are_refused() {
        let t = DateTime::from_millis(1_700_000_000_123);
        let ok = session_from_wire(
            &mut None,
            Some("arn"),
            Some("id"),
            None,
            Some(&WireStatus::Terminated),
            Some(&t),
            Some(&t),
        )
        .unwrap();
        assert_eq!(ok.start_ms, 1_700_000_000_123);
        let unknown = WireStatus::from("Hibernating");
        for (arn, id, st, start) in [
            (None, Some("id"), Some(&WireStatus::Active), Some(&t)),
            (Some("arn"), None, Some(&WireStatus::Active), Some(&t)),
            (Some("arn"), Some("id"), None, Some(&t)),
            (Some("arn"), Some("id"), Some(&unknown), Some(&t)),
            (Some("arn"), Some("id"), Some(&WireStatus::Active), None),
        ] {
            assert!(
                matches!(
                    session_from_wire(&mut None, arn, id, None, st, start, None),
                    Err(FetchError::InvalidReply(_))
                ),
                "{arn:?} {id:?} {st:?} {start:?}"
            );
        }
    }
}
