//! The wire: the WorkSpaces Web client's settings, and the SDK's session shape turned into
//! the model's [`Session`], refusing what cannot be archived faithfully.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_workspacesweb::config::retry::RetryConfig;
use aws_sdk_workspacesweb::config::timeout::TimeoutConfig;
use aws_sdk_workspacesweb::primitives::DateTime;
use aws_sdk_workspacesweb::types::SessionStatus as WireStatus;
use tracing::warn;

use super::FetchError;
use crate::model::{Session, SessionStatus};

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

/// Epoch milliseconds, rounded to the nearest: the wire carries fractional epoch seconds, which
/// the SDK parses through an `f64`, so `….632` arrives as `….631999969` (truncating would lose
/// a millisecond).
pub(crate) fn to_millis(t: &DateTime) -> Option<i64> {
    let rounded = (i64::from(t.subsec_nanos()) + 500_000) / 1_000_000;
    t.secs().checked_mul(1000)?.checked_add(rounded)
}

/// A wire session → the model, refusing what cannot be archived faithfully.
pub(crate) fn session_from_wire(
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
        .ok_or_else(|| FetchError::InvalidReply {
            what: "a session without sessionId".into(),
            source: None,
        })?;
    let bad = |what: &str| FetchError::InvalidReply {
        what: format!("session {id}: {what}"),
        source: None,
    };
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
                    Err(FetchError::InvalidReply { .. })
                ),
                "{arn:?} {id:?} {st:?} {start:?}"
            );
        }
    }
}
