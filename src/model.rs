//! The domain values every step shares: a WorkSpaces Web session as listed by the service
//! (or one it sent unusably, quarantined), the portal id it belongs to, and the kinds of pass
//! that list them.

use std::fmt;
use std::sync::Arc;

use crate::error::UsageError;

/// A WorkSpaces Web portal id: exactly 36 characters of `[a-zA-Z0-9-]`, as the service model
/// requires. Checked before any call, because the SDK sends whatever it is given.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortalId(String);

impl PortalId {
    pub fn parse(s: &str) -> Result<PortalId, UsageError> {
        let ok = s.len() == 36 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(PortalId(s.to_string()))
        } else {
            Err(UsageError(format!(
                "invalid portal id {:?}: expected 36 characters of [a-zA-Z0-9-]",
                s.chars().take(80).collect::<String>()
            )))
        }
    }

    /// The id at the end of a portal ARN (`arn:aws:workspaces-web:REGION:ACCOUNT:portal/ID`).
    pub fn from_arn(arn: &str) -> Result<PortalId, UsageError> {
        let id = arn.rsplit('/').next().unwrap_or_default();
        PortalId::parse(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PortalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A time range a pass needed to cover and could not: the service no longer listed sessions
/// that old, so any session that started in it was not archived. Epoch ms, `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl Gap {
    pub fn seconds(&self) -> f64 {
        (self.to_ms - self.from_ms) as f64 / 1000.0
    }
}

/// What kind of pass lists a portal's sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PassKind {
    /// Oldest-first listing of everything.
    Backfill,
    /// Newest-first listing that stops once past what is already archived.
    Incremental,
}

impl PassKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PassKind::Backfill => "backfill",
            PassKind::Incremental => "incremental",
        }
    }

    pub fn parse(s: &str) -> Option<PassKind> {
        match s {
            "backfill" => Some(PassKind::Backfill),
            "incremental" => Some(PassKind::Incremental),
            _ => None,
        }
    }
}

/// A session's status as the service reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    Active,
    Terminated,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "Active",
            SessionStatus::Terminated => "Terminated",
        }
    }
}

/// One session. Timestamps are epoch milliseconds (UTC).
///
/// `Debug` leaves the username and client IPs out: they are personal data and must never
/// reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// Shared by every session of a page: one allocation, not one per row.
    pub portal_arn: Arc<str>,
    pub session_id: String,
    pub username: Option<String>,
    pub status: SessionStatus,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    /// From GetSession, with `--with-client-ips` only. Personal data, like the username.
    pub client_ips: Option<Vec<String>>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("session_id", &self.session_id)
            .field("status", &self.status)
            .field("start_ms", &self.start_ms)
            .field("end_ms", &self.end_ms)
            .field("username", &self.username.as_ref().map(|_| "<redacted>"))
            .field(
                "client_ips",
                &self
                    .client_ips
                    .as_ref()
                    .map(|ips| format!("<{} redacted>", ips.len())),
            )
            .finish()
    }
}

/// A session the service sent that cannot be archived faithfully as it is (an unknown status,
/// no start time, another portal's ARN, a GetSession answer for another session): it is
/// quarantined in the state, and archived once the service sends it usably.
///
/// It holds no username and no client IP: the state keeps it as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OddSession {
    pub session_id: String,
    /// Why it cannot be archived, in a few words (`unknown status "Pending"`, `no startTime`).
    pub reason: String,
    /// Its start, when the reply had a usable one.
    pub start_ms: Option<i64>,
    /// The fields as received.
    pub raw: RawFields,
}

/// A session's fields as the service sent them, for the operator to look at: the status as a
/// string, the times as epoch seconds (`1764150000.123`). Never the username or client IPs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawFields {
    pub portal_arn: Option<String>,
    pub status: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_ids_are_validated_locally() {
        assert!(PortalId::parse("0a1b2c3d-0000-4000-8000-123456789abc").is_ok());
        for bad in [
            "",
            "short",
            "0a1b2c3d-0000-4000-8000-123456789abcd",
            "0a1b2c3d-0000-4000-8000-12345678/abc",
            "0a1b2c3d 0000-4000-8000-123456789abc",
            "0a1b2c3d-0000-4000-8000-12345678é9a",
        ] {
            assert!(PortalId::parse(bad).is_err(), "{bad:?} accepted");
        }
        let id = PortalId::from_arn(
            "arn:aws:workspaces-web:us-east-1:123456789012:portal/0a1b2c3d-0000-4000-8000-123456789abc",
        )
        .unwrap();
        assert_eq!(id.as_str(), "0a1b2c3d-0000-4000-8000-123456789abc");
    }
}
