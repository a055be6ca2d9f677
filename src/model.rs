//! The one record the archiver moves: a WorkSpaces Web session as listed by the service.

use std::fmt;
use std::sync::Arc;

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
