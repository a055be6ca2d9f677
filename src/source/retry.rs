//! One retry loop for every WorkSpaces Web call. The SDK's own retries are off: this loop
//! retries throttling, 5xx, timeouts and dropped connections with capped exponential backoff
//! and full jitter, honours the `Retry-After` header that the SDK ignores, and paces the
//! client once the service throttles (see [`super::Pacer`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aws_sdk_workspacesweb::error::{ProvideErrorMetadata, SdkError};
use tracing::debug;

use super::{FetchError, Source};
use crate::aws::{AwsError, HttpResponse};

/// What one failed attempt means.
enum Attempt {
    Retry {
        after: Option<Duration>,
        err: AwsError,
    },
    Fail(FetchError),
}

impl Source {
    /// Run one API call with retries. `sent_token`: the call carried a saved `nextToken`, so a
    /// ValidationException means the token was refused.
    pub(super) async fn call<T, E, F, Fut>(
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
            let (mut wait, mut ticket) = self.pacer.reserve(Instant::now());
            while !wait.is_zero() {
                self.sleep_unless_stopped(wait).await?;
                (wait, ticket) = self.pacer.resume(ticket, Instant::now());
            }
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            let err = match f().await {
                Ok(v) => {
                    self.pacer.succeeded(ticket, Instant::now());
                    return Ok(v);
                }
                Err(e) => e,
            };
            let throttled = is_throttle(&err);
            let (after, err) = match classify(err, sent_token) {
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { after, err } => (after, err),
            };
            if throttled {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                self.pacer.throttled(ticket, Instant::now());
            }
            if attempt >= self.max_attempts {
                return Err(FetchError::Exhausted {
                    op,
                    attempts: attempt,
                    last: err,
                });
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            let wait = backoff(attempt, after);
            debug!(op, attempt, wait_ms = wait.as_millis() as u64, why = %err, "retrying");
            self.sleep_unless_stopped(wait).await?;
        }
    }

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

fn classify<E>(err: SdkError<E, HttpResponse>, sent_token: bool) -> Attempt
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let retry_after = err
        .raw_response()
        .and_then(|r| r.headers().get("retry-after"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(300.0)));
    let retry = |after: Option<Duration>, err| Attempt::Retry { after, err };
    match &err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => retry(None, AwsError::new(err)),
        // A request the client could not even build or send: no retry will change that.
        SdkError::DispatchFailure(d) if d.is_user() || no_credentials(&err) => {
            Attempt::Fail(FetchError::Call(AwsError::new(err)))
        }
        SdkError::DispatchFailure(_) => retry(None, AwsError::new(err)),
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = err.code().unwrap_or("").to_string();
            let msg = err.message().unwrap_or("").to_string();
            match code.as_str() {
                "ThrottlingException"
                | "TooManyRequestsException"
                | "ServiceUnavailableException"
                | "InternalServerException" => retry(retry_after, AwsError::new(err)),
                "ValidationException" if sent_token => {
                    Attempt::Fail(FetchError::TokenRejected(msg))
                }
                "ResourceNotFoundException" => Attempt::Fail(FetchError::PortalNotFound(msg)),
                "AccessDeniedException" => Attempt::Fail(FetchError::AccessDenied(msg)),
                _ if status == 429 || status >= 500 => retry(retry_after, AwsError::new(err)),
                // A success status with a body the SDK could not parse: a reply not to trust.
                "" if (200..300).contains(&status) => Attempt::Fail(FetchError::InvalidReply {
                    what: format!("HTTP {status} with an unparseable body"),
                    source: Some(AwsError::new(err)),
                }),
                _ => Attempt::Fail(FetchError::Call(AwsError::new(err))),
            }
        }
        _ => Attempt::Fail(FetchError::Call(AwsError::new(err))),
    }
}

/// The call was not sent because the credentials chain has nothing to offer (no provider
/// configured, or a malformed profile): a retry would only ask the same empty chain again. A
/// provider that timed out or failed (STS throttling an AssumeRole) may do better next time.
fn no_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cause = err.source();
    while let Some(e) = cause {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return matches!(
                c,
                CredentialsError::CredentialsNotLoaded(_)
                    | CredentialsError::InvalidConfiguration(_)
            );
        }
        cause = e.source();
    }
    false
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
    crate::ids::random_u64() % (upto_ms + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
