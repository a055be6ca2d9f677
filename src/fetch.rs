//! The source: WorkSpaces Web over the AWS SDK. ListPortals discovery, ListSessions paging with
//! an explicit `nextToken` (so the token can be checkpointed), GetSession, and one retry loop
//! for all of them.
//!
//! The SDK's own retries are off: this loop retries throttling, 5xx, timeouts and dropped
//! connections with capped exponential backoff and full jitter, and honours the `Retry-After`
//! header that the SDK ignores.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Adaptive pacing of every call of one client (all portals together), so that a rate limit
/// is met without a storm of throttled calls: AIMD on the interval between calls.
///
/// No pacing until the service first throttles. Then the rate starts at 90% of the calls sent
/// in the second before, and calls are spaced `1/rate` apart (whoever asks first
/// goes first). Each success of a call the pacer held back adds `INCREASE` calls/s; a
/// throttled call sent after the last decrease cuts the rate by `DECREASE` (calls already in
/// flight when the rate was cut do not cut it again). A throttled call still waits its own
/// `Retry-After` before it is retried.
#[derive(Debug)]
pub struct Pacer {
    st: Mutex<PacerState>,
}

#[derive(Debug)]
struct PacerState {
    /// Calls per second; `None` until the first throttle.
    rate: Option<f64>,
    /// When the next call may be sent.
    next: Instant,
    last_decrease: Option<Instant>,
    /// Climbing multiplicatively (the first estimate rested on too few calls) until the next
    /// throttle.
    slow_start: bool,
    /// When the calls of the last second were sent (only while `rate` is `None`).
    recent: VecDeque<Instant>,
}

/// A call's place in the pacing: when it was sent, and whether the pacer held it back.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    sent: Instant,
    paced: bool,
}

impl Pacer {
    /// Multiplicative decrease on a throttle.
    pub const DECREASE: f64 = 0.9;
    /// Additive increase (calls/s) per paced success: the rate climbs back by 10% in about
    /// `5 × rate` calls, i.e. five seconds at the limit.
    pub const INCREASE: f64 = 0.02;
    /// Multiplicative increase per paced success while the first estimate rests on fewer
    /// than 3 calls (until the next throttle, which halves the rate).
    pub const SLOW_START: f64 = 1.1;
    /// Never slower than this (calls/s).
    pub const MIN_RATE: f64 = 0.5;

    pub fn new() -> Pacer {
        Pacer {
            st: Mutex::new(PacerState {
                rate: None,
                next: Instant::now(),
                last_decrease: None,
                slow_start: false,
                recent: VecDeque::new(),
            }),
        }
    }

    /// The current rate (calls/s), `None` while unpaced.
    pub fn rate(&self) -> Option<f64> {
        self.st.lock().expect("pacer lock").rate
    }

    /// Take the next slot: how long to wait before sending, and the call's ticket.
    pub fn reserve(&self, now: Instant) -> (Duration, Ticket) {
        let mut st = self.st.lock().expect("pacer lock");
        let Some(rate) = st.rate else {
            st.recent.push_back(now);
            while st
                .recent
                .front()
                .is_some_and(|&x| now.saturating_duration_since(x) > Duration::from_secs(1))
            {
                st.recent.pop_front();
            }
            return (
                Duration::ZERO,
                Ticket {
                    sent: now,
                    paced: false,
                },
            );
        };
        let interval = Duration::from_secs_f64(1.0 / rate);
        // Held back if the slot was not free more than half an interval ago: the pacer, not
        // the callers, sets the pace.
        let paced = st.next + interval / 2 > now;
        let slot = st.next.max(now);
        st.next = slot + interval;
        (slot - now, Ticket { sent: slot, paced })
    }

    pub fn succeeded(&self, t: Ticket) {
        let mut st = self.st.lock().expect("pacer lock");
        match st.rate {
            None => {}
            Some(rate) if t.paced && st.slow_start => st.rate = Some(rate * Self::SLOW_START),
            Some(rate) if t.paced => st.rate = Some(rate + Self::INCREASE),
            Some(_) => {}
        }
    }

    pub fn throttled(&self, t: Ticket, now: Instant) {
        let mut st = self.st.lock().expect("pacer lock");
        let new = match st.rate {
            None => {
                // The calls sent in the second before, throttled and in flight included: an
                // overestimate comes down in a few cuts, an underestimate climbs slowly.
                let sent = st
                    .recent
                    .iter()
                    .filter(|&&x| now.saturating_duration_since(x) <= Duration::from_secs(1))
                    .count();
                st.recent = VecDeque::new();
                st.slow_start = sent < 3;
                sent as f64 * Self::DECREASE
            }
            Some(_) if st.last_decrease.is_some_and(|d| t.sent < d) => return,
            Some(rate) => {
                // Slow start overshoots (the service's burst hides it for a while): halve.
                let cut = if st.slow_start { 0.5 } else { Self::DECREASE };
                st.slow_start = false;
                rate * cut
            }
        };
        st.rate = Some(new.max(Self::MIN_RATE));
        st.last_decrease = Some(now);
        st.next = st.next.max(now);
    }
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new()
    }
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
            pacer: Arc::default(),
        }
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
            let (wait, ticket) = self.pacer.reserve(Instant::now());
            if !wait.is_zero() {
                self.sleep_unless_stopped(wait).await?;
            }
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            let err = match f().await {
                Ok(v) => {
                    self.pacer.succeeded(ticket);
                    return Ok(v);
                }
                Err(e) => e,
            };
            match classify(&err, sent_token) {
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { after, why } => {
                    if is_throttle(&err) {
                        self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                        self.pacer.throttled(ticket, Instant::now());
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

/// The service said "too fast" (as opposed to failing).
fn is_throttle<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(se) => {
            se.raw().status().as_u16() == 429
                || matches!(
                    err.code(),
                    Some("ThrottlingException" | "TooManyRequestsException")
                )
        }
        _ => false,
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

    /// One caller at a time, 2 ms per call, against a token bucket of `limit` calls/s (bursts
    /// of `limit`); a throttled call waits its 1 s `Retry-After`. Simulated time.
    fn paced_against_a_bucket(limit: f64, callers: usize, secs: f64) -> (f64, usize, usize) {
        let pacer = Pacer::new();
        let t0 = Instant::now() + Duration::from_secs(1);
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let (mut tokens, mut last) = (limit, 0.0f64);
        // Each caller's next free instant; the earliest goes next.
        let mut free = vec![0.0f64; callers];
        let (mut ok_late, mut throttled, mut calls) = (0usize, 0usize, 0usize);
        loop {
            let (i, &now) = free
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .unwrap();
            if now >= secs {
                break;
            }
            let (wait, ticket) = pacer.reserve(at(now));
            let sent = now + wait.as_secs_f64();
            tokens = (tokens + (sent - last).max(0.0) * limit).min(limit);
            last = last.max(sent);
            calls += 1;
            let done = sent + 0.002;
            if tokens >= 1.0 {
                tokens -= 1.0;
                pacer.succeeded(ticket);
                if done > secs / 3.0 {
                    ok_late += 1;
                }
                free[i] = done;
            } else {
                throttled += 1;
                pacer.throttled(ticket, at(done));
                free[i] = done + 1.0;
            }
        }
        (ok_late as f64 / (secs * 2.0 / 3.0), throttled, calls)
    }

    #[test]
    fn the_pacer_settles_near_a_rate_limit_without_a_throttling_storm() {
        for limit in [5.0, 20.0, 50.0] {
            for callers in [1, 8] {
                let (rate, throttled, calls) = paced_against_a_bucket(limit, callers, 90.0);
                assert!(
                    rate >= 0.9 * limit && rate <= 1.05 * limit,
                    "limit {limit}, {callers} callers: {rate:.2} calls/s"
                );
                assert!(
                    throttled * 20 < calls,
                    "limit {limit}, {callers} callers: {throttled} of {calls} throttled"
                );
            }
        }
    }

    #[test]
    fn the_pacer_does_nothing_until_throttled_and_never_stalls() {
        let p = Pacer::new();
        let now = Instant::now();
        for _ in 0..100 {
            let (wait, t) = p.reserve(now);
            assert_eq!(wait, Duration::ZERO);
            p.succeeded(t);
        }
        assert_eq!(p.rate(), None);
        // Throttled on its first call: a slow start from 90% of one call a second.
        let p = Pacer::new();
        let (_, t) = p.reserve(now);
        p.throttled(t, now);
        assert_eq!(p.rate(), Some(0.9));
        let mut clock = now;
        for _ in 0..100 {
            let (wait, t) = p.reserve(clock);
            clock += wait;
            p.succeeded(t);
        }
        assert!(p.rate().unwrap() > 10.0, "{:?}", p.rate());
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
