//! Adaptive pacing of one client's calls, shared by every portal paged with it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

#[cfg(test)]
mod tests {
    use super::*;
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
}
