//! Fault injection: throttling, server errors, latency, a rate limit, denied portals,
//! dropped connections, sessions hidden from listings, hostile listing bodies and single
//! sessions served oddly, all settable at run time. Random decisions come from a seeded PRNG, so a run with the same
//! seed and the same call sequence fails the same calls.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::IdSet;
use crate::rng::{parse_uuid, SplitMix64};

/// The values `Faults::corrupt_listing` accepts.
pub const CORRUPT_LISTING_MODES: [&str; 5] = [
    "missing_session_id",
    "missing_start_time",
    "unknown_status",
    "missing_portal_arn",
    "bad_json",
];

/// The values `Faults::odd_sessions` accepts.
pub const ODD_SESSION_MODES: [&str; 4] = [
    "unknown_status",
    "missing_start_time",
    "foreign_portal_arn",
    "get_session_other_id",
];

/// Fault knobs. Every field has a default, so a JSON body may set only some of them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Fraction (0..=1) of API calls answered `429 ThrottlingException`.
    pub throttle_rate: f64,
    /// Fraction (0..=1) of API calls answered `500 InternalServerException`.
    pub error_rate: f64,
    /// Delay before every API answer.
    pub latency_ms: u64,
    /// The `Retry-After` header (seconds) sent with every `ThrottlingException`. Default 1.
    pub retry_after_secs: u64,
    /// Token bucket over all API calls: calls above this rate are throttled.
    pub rate_limit_per_sec: Option<f64>,
    /// Portal ids whose ListSessions and GetSession calls get `403 AccessDeniedException`.
    pub deny_portals: Vec<String>,
    /// Account ids whose callers' ListPortals calls get `403 AccessDeniedException` (a role
    /// without `workspaces-web:ListPortals`); the job's own account is `SimConfig::account_id`.
    pub deny_list_portals: Vec<String>,
    /// The next this many STS and Organizations calls are throttled (STS `400 Throttling`,
    /// Organizations `400 TooManyRequestsException`), one fewer after each.
    pub throttle_rpc_calls: u32,
    /// Session ids ListSessions leaves out (an inconsistent listing) while GetSession still
    /// returns them. Pages stay full: the next matching sessions take their place.
    pub hide_from_listing: Vec<String>,
    /// Makes every ListSessions reply hostile in one way, on the first session of each
    /// non-empty page: one of [`CORRUPT_LISTING_MODES`]. `missing_session_id`,
    /// `missing_start_time` and `missing_portal_arn` omit that member, `unknown_status` sends
    /// status `"Hibernating"`, `bad_json` cuts the body off inside that session (still 200).
    /// Empty pages are sent intact.
    pub corrupt_listing: Option<String>,
    /// Single sessions served oddly, by session id, each in one of [`ODD_SESSION_MODES`], in
    /// ListSessions and GetSession alike, wherever they fall in a listing: `unknown_status`
    /// sends status `"Pending"` (a value the service model does not know), `missing_start_time`
    /// omits `startTime`, `foreign_portal_arn` sends another portal's ARN (the next portal's,
    /// or a made-up one with a single portal); `get_session_other_id` leaves the listing
    /// intact and makes GetSession for that id answer with a neighbouring session of the
    /// portal. Ids that are not UUIDs match no session. Removing an id serves it normally again.
    pub odd_sessions: BTreeMap<String, String>,
    /// Fraction (0..=1) of API calls where the server reads the request and then closes the
    /// connection without answering.
    pub drop_rate: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            throttle_rate: 0.0,
            error_rate: 0.0,
            latency_ms: 0,
            retry_after_secs: 1,
            rate_limit_per_sec: None,
            deny_portals: Vec::new(),
            deny_list_portals: Vec::new(),
            throttle_rpc_calls: 0,
            hide_from_listing: Vec::new(),
            corrupt_listing: None,
            odd_sessions: BTreeMap::new(),
            drop_rate: 0.0,
        }
    }
}

impl Faults {
    /// Checks the knobs that have a closed set of values: `corrupt_listing` must be one of
    /// [`CORRUPT_LISTING_MODES`], each mode of `odd_sessions` one of [`ODD_SESSION_MODES`],
    /// and `drop_rate` within 0..=1.
    pub fn validate(&self) -> Result<(), String> {
        for (id, mode) in &self.odd_sessions {
            if Oddity::parse(mode).is_none() {
                return Err(format!(
                    "odd_sessions[{id:?}] must be one of {}, got {mode:?}",
                    ODD_SESSION_MODES.join(", ")
                ));
            }
        }
        if let Some(mode) = &self.corrupt_listing {
            if Corruption::parse(mode).is_none() {
                return Err(format!(
                    "corrupt_listing must be one of {}, got {mode:?}",
                    CORRUPT_LISTING_MODES.join(", ")
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.drop_rate) {
            return Err(format!(
                "drop_rate must be between 0 and 1, got {}",
                self.drop_rate
            ));
        }
        Ok(())
    }
}

/// How ListSessions replies are corrupted; see [`Faults::corrupt_listing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Corruption {
    MissingSessionId,
    MissingStartTime,
    UnknownStatus,
    MissingPortalArn,
    BadJson,
}

impl Corruption {
    pub(crate) fn parse(mode: &str) -> Option<Corruption> {
        Some(match mode {
            "missing_session_id" => Corruption::MissingSessionId,
            "missing_start_time" => Corruption::MissingStartTime,
            "unknown_status" => Corruption::UnknownStatus,
            "missing_portal_arn" => Corruption::MissingPortalArn,
            "bad_json" => Corruption::BadJson,
            _ => return None,
        })
    }
}

/// How one session is served oddly; see [`Faults::odd_sessions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Oddity {
    UnknownStatus,
    MissingStartTime,
    ForeignPortalArn,
    GetSessionOtherId,
}

impl Oddity {
    pub(crate) fn parse(mode: &str) -> Option<Oddity> {
        Some(match mode {
            "unknown_status" => Oddity::UnknownStatus,
            "missing_start_time" => Oddity::MissingStartTime,
            "foreign_portal_arn" => Oddity::ForeignPortalArn,
            "get_session_other_id" => Oddity::GetSessionOtherId,
            _ => return None,
        })
    }
}

/// What to answer a call with instead of its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Injected {
    Nothing,
    Throttle,
    ServerError,
    /// Close the connection without an answer.
    Drop,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Bucket {
        let capacity = rate.max(1.0);
        Bucket {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
pub(crate) struct FaultState {
    pub faults: Faults,
    rng: SplitMix64,
    bucket: Option<Bucket>,
    /// `faults.hide_from_listing`, parsed; ids that are not UUIDs match no session.
    hidden: Arc<IdSet>,
    /// `faults.corrupt_listing`, parsed; an unknown mode (possible only in process, the
    /// control API refuses it) corrupts nothing.
    corruption: Option<Corruption>,
    /// `faults.odd_sessions`, parsed; unknown modes and ids that are not UUIDs are left out.
    odd: Arc<HashMap<u128, Oddity>>,
}

impl FaultState {
    pub(crate) fn new(seed: u64) -> FaultState {
        FaultState {
            faults: Faults::default(),
            rng: SplitMix64::new(seed),
            bucket: None,
            hidden: Arc::default(),
            corruption: None,
            odd: Arc::default(),
        }
    }

    /// Replaces the knobs; a new rate limit starts with a full bucket.
    pub(crate) fn set(&mut self, faults: Faults, now: Instant) {
        self.bucket = faults
            .rate_limit_per_sec
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Bucket::new(r, now));
        self.hidden = Arc::new(
            faults
                .hide_from_listing
                .iter()
                .filter_map(|id| parse_uuid(id))
                .collect(),
        );
        self.corruption = faults.corrupt_listing.as_deref().and_then(|mode| {
            let c = Corruption::parse(mode);
            if c.is_none() {
                tracing::warn!(mode, "unknown corrupt_listing mode ignored");
            }
            c
        });
        self.odd = Arc::new(
            faults
                .odd_sessions
                .iter()
                .filter_map(|(id, mode)| Some((parse_uuid(id)?, Oddity::parse(mode)?)))
                .collect(),
        );
        self.faults = faults;
    }

    /// A dropped connection is decided first: it never reaches the rate limiter.
    pub(crate) fn decide(&mut self, now: Instant) -> Injected {
        if self.faults.drop_rate > 0.0 && self.rng.unit_f64() < self.faults.drop_rate {
            return Injected::Drop;
        }
        if let Some(bucket) = &mut self.bucket {
            if !bucket.try_take(now) {
                return Injected::Throttle;
            }
        }
        if self.faults.throttle_rate > 0.0 && self.rng.unit_f64() < self.faults.throttle_rate {
            return Injected::Throttle;
        }
        if self.faults.error_rate > 0.0 && self.rng.unit_f64() < self.faults.error_rate {
            return Injected::ServerError;
        }
        Injected::Nothing
    }

    pub(crate) fn denied(&self, portal_id: &str) -> bool {
        self.faults.deny_portals.iter().any(|p| p == portal_id)
    }

    /// Whether this STS or Organizations call is throttled (counting it down if so).
    pub(crate) fn throttle_rpc(&mut self) -> bool {
        let throttle = self.faults.throttle_rpc_calls > 0;
        if throttle {
            self.faults.throttle_rpc_calls -= 1;
        }
        throttle
    }

    pub(crate) fn listing_denied(&self, account: &str) -> bool {
        self.faults.deny_list_portals.iter().any(|a| a == account)
    }

    pub(crate) fn hidden(&self) -> Arc<IdSet> {
        self.hidden.clone()
    }

    pub(crate) fn corruption(&self) -> Option<Corruption> {
        self.corruption
    }

    pub(crate) fn odd(&self) -> Arc<HashMap<u128, Oddity>> {
        self.odd.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_are_roughly_respected() {
        let mut f = FaultState::new(5);
        let now = Instant::now();
        f.set(
            Faults {
                throttle_rate: 0.25,
                error_rate: 0.5,
                ..Faults::default()
            },
            now,
        );
        let mut throttled = 0;
        let mut errors = 0;
        for _ in 0..10_000 {
            match f.decide(now) {
                Injected::Throttle => throttled += 1,
                Injected::ServerError => errors += 1,
                Injected::Nothing => {}
                Injected::Drop => unreachable!("drop_rate is 0"),
            }
        }
        assert!((2_200..2_800).contains(&throttled), "{throttled}");
        // Half of the calls that were not throttled.
        assert!((3_400..4_100).contains(&errors), "{errors}");
    }

    #[test]
    fn token_bucket_limits_bursts_and_refills() {
        let mut f = FaultState::new(1);
        let t0 = Instant::now();
        f.set(
            Faults {
                rate_limit_per_sec: Some(5.0),
                ..Faults::default()
            },
            t0,
        );
        let passed = (0..20)
            .filter(|_| f.decide(t0) == Injected::Nothing)
            .count();
        assert_eq!(passed, 5);
        let t1 = t0 + Duration::from_millis(400);
        let passed = (0..20)
            .filter(|_| f.decide(t1) == Injected::Nothing)
            .count();
        assert_eq!(passed, 2);
    }

    #[test]
    fn partial_json_keeps_defaults() {
        let f: Faults = serde_json::from_str(r#"{"throttle_rate": 1.0}"#).unwrap();
        assert_eq!(f.retry_after_secs, 1);
        assert_eq!(f.throttle_rate, 1.0);
        assert!(f.hide_from_listing.is_empty());
        assert_eq!(f.corrupt_listing, None);
        assert_eq!(f.drop_rate, 0.0);
    }

    #[test]
    fn drops_come_first_and_are_seeded() {
        let now = Instant::now();
        let run = |seed| {
            let mut f = FaultState::new(seed);
            f.set(
                Faults {
                    drop_rate: 0.3,
                    throttle_rate: 1.0,
                    ..Faults::default()
                },
                now,
            );
            (0..1_000).map(|_| f.decide(now)).collect::<Vec<_>>()
        };
        let a = run(3);
        assert_eq!(a, run(3));
        let dropped = a.iter().filter(|&&i| i == Injected::Drop).count();
        assert!((240..360).contains(&dropped), "{dropped}");
        assert!(a
            .iter()
            .all(|&i| i == Injected::Drop || i == Injected::Throttle));
    }

    #[test]
    fn listing_knobs_are_parsed_and_validated() {
        let mut f = FaultState::new(1);
        let id = "0f0e0d0c-0b0a-4908-8706-050403020100";
        let faults: Faults = serde_json::from_str(&format!(
            r#"{{"hide_from_listing": ["{id}", "not-a-uuid"], "corrupt_listing": "unknown_status"}}"#
        ))
        .unwrap();
        assert_eq!(faults.validate(), Ok(()));
        f.set(faults, Instant::now());
        assert_eq!(f.hidden().len(), 1);
        assert!(f.hidden().contains(&parse_uuid(id).unwrap()));
        assert_eq!(f.corruption(), Some(Corruption::UnknownStatus));
        for mode in CORRUPT_LISTING_MODES {
            assert!(Corruption::parse(mode).is_some(), "{mode}");
        }
        let bad = Faults {
            corrupt_listing: Some("sideways".to_owned()),
            ..Faults::default()
        };
        assert!(bad.validate().unwrap_err().contains("sideways"));
        f.set(bad, Instant::now());
        assert_eq!(f.corruption(), None);
        let mut odd = Faults::default();
        odd.odd_sessions
            .insert(id.to_owned(), "unknown_status".to_owned());
        odd.odd_sessions
            .insert("not-a-uuid".to_owned(), "missing_start_time".to_owned());
        assert_eq!(odd.validate(), Ok(()));
        f.set(odd.clone(), Instant::now());
        assert_eq!(f.odd().len(), 1);
        assert_eq!(
            f.odd().get(&parse_uuid(id).unwrap()),
            Some(&Oddity::UnknownStatus)
        );
        for mode in ODD_SESSION_MODES {
            assert!(Oddity::parse(mode).is_some(), "{mode}");
        }
        odd.odd_sessions
            .insert(id.to_owned(), "sideways".to_owned());
        assert!(odd.validate().unwrap_err().contains("sideways"));
        for rate in [-0.1, 1.5, f64::NAN] {
            let bad = Faults {
                drop_rate: rate,
                ..Faults::default()
            };
            assert!(bad.validate().is_err(), "{rate}");
        }
    }
}
