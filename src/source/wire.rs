//! The wire: the WorkSpaces Web client's settings, and the SDK's session shape turned into
//! the model's [`Session`], or, when it cannot be archived faithfully, an [`OddSession`].

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_workspacesweb::config::retry::RetryConfig;
use aws_sdk_workspacesweb::config::timeout::TimeoutConfig;
use aws_sdk_workspacesweb::primitives::{DateTime, DateTimeFormat};
use aws_sdk_workspacesweb::types::SessionStatus as WireStatus;
use tracing::warn;

use super::FetchError;
use crate::model::{OddSession, PortalId, RawFields, Session, SessionStatus};

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

/// A session's fields as sent, for the quarantine (never the username or client IPs).
pub(crate) fn raw_fields(
    portal_arn: Option<&str>,
    status: Option<&WireStatus>,
    start: Option<&DateTime>,
    end: Option<&DateTime>,
) -> RawFields {
    let shown = |t: &DateTime| {
        t.fmt(DateTimeFormat::EpochSeconds)
            .unwrap_or_else(|_| format!("{}s", t.secs()))
    };
    RawFields {
        portal_arn: portal_arn.map(str::to_string),
        status: status.map(|s| s.as_str().to_string()),
        start_time: start.map(shown),
        end_time: end.map(shown),
    }
}

/// A wire session → the model: a [`Session`], or an [`OddSession`] to quarantine when it
/// cannot be archived faithfully as sent (no portal ARN or another portal's, no or an unknown
/// status, no or an unreadable start time). Only a session without an id is an error: nothing
/// could remember it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn session_from_wire(
    interned_arn: &mut Option<Arc<str>>,
    portal: &PortalId,
    portal_arn: Option<&str>,
    session_id: Option<String>,
    username: Option<String>,
    status: Option<&WireStatus>,
    start: Option<&DateTime>,
    end: Option<&DateTime>,
) -> Result<Result<Session, OddSession>, FetchError> {
    let id = session_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| FetchError::InvalidReply {
            what: "a session without sessionId".into(),
            source: None,
        })?;
    let mut why: Vec<String> = Vec::new();
    let portal_arn = portal_arn.filter(|s| !s.is_empty());
    match portal_arn {
        None => why.push("no portalArn".into()),
        // The page's ARN is checked once; the portal id is valid, so an ARN ending in it is.
        Some(arn)
            if interned_arn.as_deref() != Some(arn)
                && arn.rsplit('/').next() != Some(portal.as_str()) =>
        {
            why.push(format!("portalArn {arn:?} is not portal {portal}'s"))
        }
        Some(_) => {}
    }
    let status_ok = match status {
        Some(WireStatus::Active) => Some(SessionStatus::Active),
        Some(WireStatus::Terminated) => Some(SessionStatus::Terminated),
        Some(other) => {
            why.push(format!("unknown status {:?}", other.as_str()));
            None
        }
        None => {
            why.push("no status".into());
            None
        }
    };
    let start_ms = match start {
        None => {
            why.push("no startTime".into());
            None
        }
        Some(t) => {
            let ms = to_millis(t);
            if ms.is_none() {
                why.push("startTime out of range".into());
            }
            ms
        }
    };
    let end_ms = match end.map(to_millis) {
        Some(None) => {
            why.push("endTime out of range".into());
            None
        }
        Some(ms) => ms,
        None => None,
    };
    let (Some(portal_arn), Some(status), Some(start_ms), true) =
        (portal_arn, status_ok, start_ms, why.is_empty())
    else {
        return Ok(Err(OddSession {
            session_id: id,
            reason: why.join("; "),
            start_ms,
            raw: raw_fields(portal_arn, status, start, end),
        }));
    };
    if status == SessionStatus::Terminated && end_ms.is_none() {
        warn!(
            session_id = %id,
            "terminated session without endTime; archived with a null end_time"
        );
    }
    let portal_arn = match interned_arn {
        Some(a) if **a == *portal_arn => a.clone(),
        _ => interned_arn.insert(Arc::from(portal_arn)).clone(),
    };
    Ok(Ok(Session {
        portal_arn,
        session_id: id,
        username,
        status,
        start_ms,
        end_ms,
        client_ips: None,
    }))
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

    const PORTAL: &str = "0a1b2c3d-0000-4000-8000-123456789abc";

    fn arn(id: &str) -> String {
        format!("arn:aws:workspaces-web:us-east-1:123456789012:portal/{id}")
    }

    #[test]
    fn wire_sessions_missing_fields_with_an_unknown_status_or_another_portal_are_odd() {
        let portal = PortalId::parse(PORTAL).unwrap();
        let t = DateTime::from_millis(1_700_000_000_123);
        let mine = arn(PORTAL);
        let other = arn("0a1b2c3d-0000-4000-8000-999999999999");
        let ok = session_from_wire(
            &mut None,
            &portal,
            Some(&mine),
            Some("id".into()),
            Some("jane".into()),
            Some(&WireStatus::Terminated),
            Some(&t),
            Some(&t),
        )
        .unwrap()
        .unwrap();
        assert_eq!(ok.start_ms, 1_700_000_000_123);
        // A page's ARN, once seen usable, is not parsed again; another portal's still is odd.
        let mut interned = None;
        for (arn, id) in [(&mine, "a"), (&other, "b")] {
            let got = session_from_wire(
                &mut interned,
                &portal,
                Some(arn),
                Some(id.into()),
                None,
                Some(&WireStatus::Terminated),
                Some(&t),
                Some(&t),
            )
            .unwrap();
            assert_eq!(got.is_ok(), arn == &mine, "{got:?}");
        }
        assert_eq!(interned.as_deref(), Some(mine.as_str()));
        let pending = WireStatus::from("Pending");
        for (arn, st, start, reason) in [
            (None, Some(&WireStatus::Active), Some(&t), "no portalArn"),
            (
                Some(other.as_str()),
                Some(&WireStatus::Active),
                Some(&t),
                "is not portal",
            ),
            (Some(mine.as_str()), None, Some(&t), "no status"),
            (
                Some(mine.as_str()),
                Some(&pending),
                Some(&t),
                "unknown status \"Pending\"",
            ),
            (
                Some(mine.as_str()),
                Some(&WireStatus::Active),
                None,
                "no startTime",
            ),
        ] {
            let odd = session_from_wire(
                &mut None,
                &portal,
                arn,
                Some("id".into()),
                Some("jane".into()),
                st,
                start,
                None,
            )
            .unwrap()
            .unwrap_err();
            assert!(odd.reason.contains(reason), "{odd:?}");
            assert_eq!(odd.session_id, "id");
            assert_eq!(odd.raw.portal_arn.as_deref(), arn);
            assert_eq!(odd.start_ms, start.map(|_| 1_700_000_000_123));
            assert_eq!(
                odd.raw.start_time.as_deref(),
                start.map(|_| "1700000000.123")
            );
            assert!(!format!("{odd:?}").contains("jane"));
        }
        // Without an id nothing can remember it: the reply is refused.
        assert!(matches!(
            session_from_wire(
                &mut None,
                &portal,
                Some(&mine),
                None,
                None,
                Some(&WireStatus::Active),
                Some(&t),
                None
            ),
            Err(FetchError::InvalidReply { .. })
        ));
    }
}
