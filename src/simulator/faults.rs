//! Fault injection: throttling, server errors, latency, a rate limit and denied portals,
//! all settable at run time. Random decisions come from a seeded PRNG, so a run with the
//! same seed and the same call sequence fails the same calls.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::rng::SplitMix64;

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
        }
    }
}

/// What to answer a call with instead of its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Injected {
    Nothing,
    Throttle,
    ServerError,
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
}

impl FaultState {
    pub(crate) fn new(seed: u64) -> FaultState {
        FaultState {
            faults: Faults::default(),
            rng: SplitMix64::new(seed),
            bucket: None,
        }
    }

    /// Replaces the knobs; a new rate limit starts with a full bucket.
    pub(crate) fn set(&mut self, faults: Faults, now: Instant) {
        self.bucket = faults
            .rate_limit_per_sec
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Bucket::new(r, now));
        self.faults = faults;
    }

    pub(crate) fn decide(&mut self, now: Instant) -> Injected {
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
    }
}
