//! Adaptive pacing of one client's calls, shared by every portal paged with it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::debug;

/// Adaptive pacing of every call of one client (all portals together), so that a rate limit
/// is found and held without a storm of throttled calls, while throttles that do not follow
/// the call rate (a busy service refusing a share of calls at random) cost little.
///
/// - **Unpaced until throttles exceed the noise.** Every answered call updates an excess
///   count `S = max(0, S + throttled - r)`, where `throttled` is 1 or 0 and `r` is twice the
///   noise share below (at least `NOISE_MIN`). Calls go out at once until `S` reaches
///   `EXCESS`: about three throttles close together. A single 429 among many successes
///   does not start pacing.
/// - **A cut goes to the goodput.** When `S` reaches `EXCESS`, the limit estimate `w` becomes
///   the calls answered without a throttle in the last second (never above the current rate,
///   once paced never below `BETA` of it, never below `MIN_RATE`): against a rate limit that
///   is the limit itself (a few cuts if far above it); under random throttling it is the rate
///   less the throttled share. `S` starts again from 0 and counts only calls reserved after
///   the cut.
/// - **CUBIC back up and beyond.** After a cut the rate is
///   `w * (1 + SCALE * (t - K)^3)`, `t` seconds after the cut, `K = cbrt(DROP / SCALE)`:
///   it starts `DROP` below `w`, is back at `w` after `K` (1.36 s), stays near it for a few
///   seconds and then probes above it ever faster (+4% one second past `K`, +32% after two,
///   x2 after three). This is the SDKs' adaptive-mode CUBIC, relative to `w` so that the
///   recovery takes the same seconds at any rate from `SLOW_BELOW` up (below it, its clock
///   runs `w / SLOW_BELOW` as fast: the same number of calls). It never runs more than twice
///   ahead of the calls actually sent in the last second, nor below `MIN_RATE`.
/// - **The noise share.** Calls reserved during the `K` seconds after a cut (on the cubic's
///   clock) are sent at or below the goodput the rate was cut to; a rate limit throttles few
///   of them, random throttling as many as ever. Their throttled share (decaying over
///   `NOISE_MEMORY` such calls, starting from `NOISE_PRIOR` successes) is the noise share,
///   and only throttles beyond twice it add up to a cut. A cut that raised the estimate may rest on a burst the
///   service let through (a token bucket's): the calls after it are left out.
/// - **Slots.** Calls are spaced `1/rate` apart, whoever asks first goes first. A call
///   reserved before a cut and still waiting takes a new slot at the new rate
///   ([`Pacer::resume`]), so the queue of slots given out at the old rate does not overrun the
///   limit just found. A throttled call still waits its own `Retry-After` before it is
///   retried (the retry layer).
#[derive(Debug)]
pub struct Pacer {
    st: Mutex<PacerState>,
}

#[derive(Debug)]
struct PacerState {
    /// Set at the first cut; `None` while unpaced.
    paced: Option<Paced>,
    /// Cuts so far: a ticket of an older generation was reserved before the last cut.
    generation: u64,
    /// The excess count `S`.
    excess: f64,
    /// The last cut set a higher limit estimate than the one before: its goodput may have
    /// rested on a burst the service let through, so the calls after it do not count as noise.
    raised: bool,
    /// Decayed calls and throttles reserved within `K` of a cut.
    noise_calls: f64,
    noise_throttled: f64,
    /// Calls reserved, and calls answered without a throttle, in the last second.
    sent: PerSecond,
    answered: PerSecond,
}

#[derive(Clone, Copy, Debug)]
struct Paced {
    /// The limit estimate `w` (calls/s): the goodput at the last cut.
    limit: f64,
    cut_at: Instant,
    /// When the next call may be sent.
    next: Instant,
}

/// A call's place in the pacing: when it may be sent, and the cut generation it was
/// reserved in.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    sent: Instant,
    generation: u64,
}

impl Pacer {
    /// CUBIC's scale, relative to the limit estimate (1/s³): the SDKs' 0.4 calls/s³ at
    /// 10 calls/s.
    pub const SCALE: f64 = 0.04;
    /// How far below the goodput a cut starts.
    pub const DROP: f64 = 0.1;
    /// A paced cut sets the estimate no lower than this share of the rate (the SDKs' beta):
    /// a caller waiting out a `Retry-After` answers nothing meanwhile, and with few callers
    /// the calls answered in the last second understate what the service allows.
    pub const BETA: f64 = 0.7;
    /// The excess count that cuts the rate.
    pub const EXCESS: f64 = 2.0;
    /// The smallest throttled share taken as noise in the excess count.
    pub const NOISE_MIN: f64 = 0.05;
    /// Over how many calls (reserved after cuts) the noise share decays, and how many
    /// successes it starts from.
    pub const NOISE_MEMORY: f64 = 200.0;
    pub const NOISE_PRIOR: f64 = 10.0;
    /// The rate never runs more than this many times ahead of the calls sent in the last
    /// second.
    pub const AHEAD: f64 = 2.0;
    /// Never slower than this (calls/s).
    pub const MIN_RATE: f64 = 0.5;
    /// Below this limit estimate (calls/s) the cubic's clock runs slower, in proportion: a
    /// recovery and the plateau after it hold as many calls as at this rate, so that the few
    /// throttles that end a plateau stay a small share of the calls.
    pub const SLOW_BELOW: f64 = 20.0;

    pub fn new() -> Pacer {
        Pacer {
            st: Mutex::new(PacerState {
                paced: None,
                generation: 0,
                excess: 0.0,
                raised: false,
                noise_calls: 0.0,
                noise_throttled: 0.0,
                sent: PerSecond::default(),
                answered: PerSecond::default(),
            }),
        }
    }

    /// Seconds from a cut until the rate is back at the limit estimate (on the cubic's clock:
    /// longer below `SLOW_BELOW`).
    pub fn recovery() -> Duration {
        Duration::from_secs_f64((Self::DROP / Self::SCALE).cbrt())
    }

    /// The current rate (calls/s), `None` while unpaced.
    pub fn rate(&self, now: Instant) -> Option<f64> {
        let st = self.st.lock().expect("pacer lock");
        st.paced.map(|p| st.rate(&p, now))
    }

    /// The limit estimate (calls/s), `None` while unpaced.
    pub fn limit(&self) -> Option<f64> {
        self.st.lock().expect("pacer lock").paced.map(|p| p.limit)
    }

    /// The throttled share taken as noise.
    pub fn noise(&self) -> f64 {
        self.st.lock().expect("pacer lock").noise()
    }

    /// Take the next slot: how long to wait before sending, and the call's ticket. After
    /// waiting, call [`Pacer::resume`].
    pub fn reserve(&self, now: Instant) -> (Duration, Ticket) {
        let mut st = self.st.lock().expect("pacer lock");
        st.sent.add(now, 1.0);
        st.reserve(now)
    }

    /// At the end of a wait: `Duration::ZERO` and the same ticket if the call may go now, or a
    /// new wait and ticket if the rate was cut since it was reserved.
    pub fn resume(&self, t: Ticket, now: Instant) -> (Duration, Ticket) {
        let mut st = self.st.lock().expect("pacer lock");
        if t.generation == st.generation {
            return (Duration::ZERO, t);
        }
        st.reserve(now)
    }

    pub fn succeeded(&self, t: Ticket, now: Instant) {
        let mut st = self.st.lock().expect("pacer lock");
        st.answered.add(now, 1.0);
        st.answer(t, false);
    }

    pub fn throttled(&self, t: Ticket, now: Instant) {
        let mut st = self.st.lock().expect("pacer lock");
        if !st.answer(t, true) || st.excess < Self::EXCESS {
            return;
        }
        // The calls answered in the last second, never above the rate they were sent at nor
        // below BETA of it.
        let mut limit = st.answered.count(now);
        if let Some(p) = st.paced {
            let rate = st.rate(&p, now);
            limit = limit.clamp(Self::BETA * rate, rate);
        }
        let limit = limit.max(Self::MIN_RATE);
        st.raised = st.paced.is_some_and(|p| limit > p.limit);
        st.paced = Some(Paced {
            limit,
            cut_at: now,
            next: now,
        });
        st.generation += 1;
        st.excess = 0.0;
        debug!(
            limit,
            noise = st.noise(),
            "throttles above the noise: pacing to the calls answered in the last second"
        );
    }
}

impl PacerState {
    fn noise(&self) -> f64 {
        self.noise_throttled / (self.noise_calls + Pacer::NOISE_PRIOR)
    }

    fn rate(&self, p: &Paced, now: Instant) -> f64 {
        let t = p.clock(now);
        let k = Pacer::recovery().as_secs_f64();
        let cubic = p.limit * (1.0 + Pacer::SCALE * (t - k).powi(3));
        let ahead = (Pacer::AHEAD * self.sent.count(now)).max(p.limit);
        cubic.min(ahead).max(Pacer::MIN_RATE)
    }

    /// The next slot (a call already counted as sent).
    fn reserve(&mut self, now: Instant) -> (Duration, Ticket) {
        let generation = self.generation;
        let Some(p) = self.paced else {
            return (
                Duration::ZERO,
                Ticket {
                    sent: now,
                    generation,
                },
            );
        };
        let rate = self.rate(&p, now);
        let slot = p.next.max(now);
        self.paced = Some(Paced {
            next: slot + Duration::from_secs_f64(1.0 / rate),
            ..p
        });
        (
            slot - now,
            Ticket {
                sent: slot,
                generation,
            },
        )
    }

    /// Counts one answer; false if the call was reserved before the last cut (it says
    /// nothing about the current rate).
    fn answer(&mut self, t: Ticket, throttled: bool) -> bool {
        if t.generation != self.generation {
            return false;
        }
        let x = if throttled { 1.0 } else { 0.0 };
        if let Some(p) = self.paced.filter(|_| !self.raised) {
            if p.clock(t.sent) < Pacer::recovery().as_secs_f64() {
                let keep = 1.0 - 1.0 / Pacer::NOISE_MEMORY;
                self.noise_calls = self.noise_calls * keep + 1.0;
                self.noise_throttled = self.noise_throttled * keep + x;
            }
        }
        let r = (2.0 * self.noise()).max(Pacer::NOISE_MIN);
        self.excess = (self.excess + x - r).max(0.0);
        true
    }
}

impl Paced {
    /// The cubic's clock: seconds since the cut, slowed below `SLOW_BELOW` calls/s.
    fn clock(&self, now: Instant) -> f64 {
        let t = now.saturating_duration_since(self.cut_at).as_secs_f64();
        t * (self.limit / Pacer::SLOW_BELOW).min(1.0)
    }
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new()
    }
}

/// Events in the last second: slices of 100 ms, the current one and the ten before it, the
/// oldest counted in proportion to the part of it still within the second.
#[derive(Debug, Default)]
struct PerSecond {
    start: Option<Instant>,
    /// The latest slice (100 ms since `start`) that was touched; slice `i` is
    /// `amounts[i % 11]`.
    last: u64,
    amounts: [f64; 11],
}

impl PerSecond {
    const SLICE: Duration = Duration::from_millis(100);
    const SLICES: u64 = 11;

    /// The slice of `now`, and how far into it `now` is (0..1).
    fn slice(&self, now: Instant) -> (u64, f64) {
        let Some(start) = self.start else {
            return (0, 0.0);
        };
        let since = now.saturating_duration_since(start).as_nanos();
        let slice = Self::SLICE.as_nanos();
        let into = (since % slice) as f64 / slice as f64;
        ((since / slice) as u64, into)
    }

    /// The amount in slice `i`, if it is one of the last `SLICES` touched.
    fn get(&self, i: u64) -> f64 {
        if i <= self.last && i + Self::SLICES > self.last {
            self.amounts[(i % Self::SLICES) as usize]
        } else {
            0.0
        }
    }

    fn add(&mut self, now: Instant, amount: f64) {
        self.start.get_or_insert(now);
        let (s, _) = self.slice(now);
        if s > self.last {
            // Empty the slices that passed without events.
            for i in (self.last + 1)..=s.min(self.last + Self::SLICES) {
                self.amounts[(i % Self::SLICES) as usize] = 0.0;
            }
            self.last = s;
        }
        if s + Self::SLICES > self.last {
            self.amounts[(s % Self::SLICES) as usize] += amount;
        }
    }

    fn count(&self, now: Instant) -> f64 {
        let (s, into) = self.slice(now);
        let full: f64 = (0..Self::SLICES - 1)
            .filter(|i| *i <= s)
            .map(|i| self.get(s - i))
            .sum();
        let oldest = match s.checked_sub(Self::SLICES - 1) {
            Some(i) => self.get(i) * (1.0 - into),
            None => 0.0,
        };
        full + oldest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn assert_near(got: Option<f64>, want: f64) {
        assert!(
            got.is_some_and(|g| (g - want).abs() < 1e-6),
            "{got:?}, not {want}"
        );
    }

    /// `n` throttled answers to calls reserved at `now`.
    fn throttle(p: &Pacer, now: Instant, n: usize) {
        for _ in 0..n {
            let (_, t) = p.reserve(now);
            p.throttled(t, now);
        }
    }

    #[test]
    fn unpaced_until_throttles_exceed_the_noise() {
        let p = Pacer::new();
        let t0 = Instant::now();
        for i in 0..100 {
            let (wait, t) = p.reserve(t0 + secs(i as f64 * 0.01));
            assert_eq!(wait, Duration::ZERO);
            p.succeeded(t, t0 + secs(i as f64 * 0.01));
        }
        assert_eq!(p.limit(), None);
        // Single throttles among successes: S = 0.95, then 19 successes bring it back to 0.
        let mut now = t0 + secs(1.0);
        for _ in 0..10 {
            throttle(&p, now, 1);
            for _ in 0..19 {
                let (wait, t) = p.reserve(now);
                assert_eq!(wait, Duration::ZERO);
                p.succeeded(t, now);
                now += secs(0.01);
            }
        }
        assert_eq!(p.limit(), None);
        // Two in a row: S = 1.9 < 2; the third cuts.
        throttle(&p, now, 2);
        assert_eq!(p.limit(), None);
        throttle(&p, now, 1);
        assert!(p.limit().is_some());
    }

    /// Calls one after another, each answered without a throttle `1 / per_sec` after it was
    /// reserved, from `from` until `until`.
    fn answered(p: &Pacer, from: Instant, until: Instant, per_sec: f64) {
        let mut at = from;
        while at + secs(0.5 / per_sec) < until {
            let (_, t) = p.reserve(at);
            at += secs(1.0 / per_sec);
            p.succeeded(t, at);
        }
    }

    #[test]
    fn a_cut_goes_to_the_goodput_of_the_last_second() {
        let p = Pacer::new();
        let t0 = Instant::now();
        // 50 calls/s for a second, then 25 calls/s for two: 25 answered in the last second.
        answered(&p, t0, t0 + secs(1.0), 50.0);
        answered(&p, t0 + secs(1.0), t0 + secs(3.0), 25.0);
        let now = t0 + secs(3.0);
        throttle(&p, now, 3);
        let limit = p.limit().unwrap();
        assert!((limit - 25.0).abs() <= 1.0, "{limit}");
        // It starts DROP below the goodput.
        let rate = p.rate(now).unwrap();
        assert!((rate - 0.9 * limit).abs() < 1e-6, "{rate} vs {limit}");
        // Nothing answered: the floor.
        let p = Pacer::new();
        throttle(&p, now, 3);
        assert_eq!(p.limit(), Some(Pacer::MIN_RATE));
    }

    #[test]
    fn a_paced_cut_goes_no_lower_than_beta_of_the_rate() {
        let p = Pacer::new();
        let t0 = Instant::now();
        answered(&p, t0, t0 + secs(1.0), 40.0);
        throttle(&p, t0 + secs(1.0), 3);
        assert_near(p.limit(), 40.0);
        // Ten seconds later nothing answered in the last second (say, every caller waiting
        // out a Retry-After): the cut keeps 0.7 of the rate (40: no call sent in the last
        // second holds it at the estimate).
        let now = t0 + secs(11.0);
        let rate = p.rate(now).unwrap();
        assert_near(Some(rate), 40.0);
        throttle(&p, now, 3);
        assert_near(p.limit(), 0.7 * rate);
    }

    #[test]
    fn the_rate_follows_the_cubic_from_the_cut() {
        let p = Pacer::new();
        let t0 = Instant::now();
        // 20 calls/s answered for a second, then a cut.
        answered(&p, t0, t0 + secs(1.0), 20.0);
        let cut = t0 + secs(0.99);
        throttle(&p, cut, 3);
        let w = p.limit().unwrap();
        assert_near(Some(w), 20.0);
        let k = Pacer::recovery().as_secs_f64();
        assert!((k - 1.357).abs() < 0.001, "{k}");
        // Keep the calls flowing at the rate so that the cap (twice the calls sent in the last
        // second) stays out of the way, and read the rate at a few points.
        let mut now = cut;
        let mut seen = Vec::new();
        for at in [0.0, k / 2.0, k, k + 1.0, k + 2.0] {
            while now < cut + secs(at) {
                let (wait, t) = p.reserve(now);
                now += wait;
                let (again, t) = p.resume(t, now);
                assert_eq!(again, Duration::ZERO);
                p.succeeded(t, now);
            }
            seen.push(p.rate(cut + secs(at)).unwrap() / w);
        }
        let want = [0.9, 1.0 - 0.1 / 8.0, 1.0, 1.04, 1.32];
        for (got, want) in seen.iter().zip(want) {
            assert!((got - want).abs() < 0.01, "{seen:?} vs {want:?}");
        }
    }

    #[test]
    fn the_rate_never_runs_far_ahead_of_the_calls() {
        let p = Pacer::new();
        let t0 = Instant::now();
        answered(&p, t0, t0 + secs(1.0), 10.0);
        let now = t0 + secs(1.0);
        throttle(&p, now, 3);
        assert_near(p.limit(), 10.0);
        // Ten seconds on (5 on the cubic's clock at 10 calls/s), the cubic alone would be
        // 10 * (1 + 0.04 * 3.64^3) = 29 calls/s, but no call was sent in the last second: the
        // limit estimate holds.
        let later = now + secs(10.0);
        assert_near(p.rate(later), 10.0);
        // Twice the calls sent in the last second.
        for _ in 0..10 {
            p.reserve(later);
        }
        assert_near(p.rate(later), 20.0);
    }

    #[test]
    fn below_twenty_calls_a_second_the_cubic_counts_calls() {
        let p = Pacer::new();
        let t0 = Instant::now();
        answered(&p, t0, t0 + secs(1.0), 10.0);
        let now = t0 + secs(1.0);
        throttle(&p, now, 3);
        assert_near(p.limit(), 10.0);
        // At 10 calls/s the clock runs half as fast: back at the estimate after 2K.
        let k = Pacer::recovery().as_secs_f64();
        let rate = p.rate(now + secs(k)).unwrap();
        assert!((rate - 10.0 * (1.0 - 0.1 / 8.0)).abs() < 1e-6, "{rate}");
        assert!((p.rate(now + secs(2.0 * k)).unwrap() - 10.0).abs() < 1e-6);
    }

    #[test]
    fn calls_reserved_before_a_cut_take_new_slots_and_do_not_count() {
        let p = Pacer::new();
        let t0 = Instant::now();
        answered(&p, t0, t0 + secs(1.0), 10.0);
        let now = t0 + secs(1.0);
        throttle(&p, now, 3);
        assert_near(p.limit(), 10.0);
        // Slots 1/9 s apart, in the order asked.
        let (w1, t1) = p.reserve(now);
        let (w2, t2) = p.reserve(now);
        let (w3, t3) = p.reserve(now);
        let (w4, t4) = p.reserve(now);
        assert_eq!(w1, Duration::ZERO);
        assert!((w2.as_secs_f64() - 1.0 / 9.0).abs() < 1e-6, "{w2:?}");
        assert!(w3 > w2 && w4 > w3);
        // At its slot, a ticket reserved since the last cut goes as it is.
        let (again, t) = p.resume(t2, now + w2);
        assert_eq!(again, Duration::ZERO);
        assert_eq!(t.generation, t2.generation);
        // Another cut (nothing answered since: to BETA of the rate): the tickets reserved
        // before it take new slots at the new rate, the first at once.
        let later = now + secs(2.0);
        let rate = p.rate(later).unwrap();
        throttle(&p, later, 3);
        assert_near(p.limit(), Pacer::BETA * rate);
        let (again, t) = p.resume(t3, later);
        assert_eq!(again, Duration::ZERO);
        assert_ne!(t.generation, t3.generation);
        let (again, _) = p.resume(t4, later);
        let want = 1.0 / (0.9 * Pacer::BETA * rate);
        assert!((again.as_secs_f64() - want).abs() < 1e-6, "{again:?}");
        // Throttles of calls reserved before the cut count for nothing: neither in the noise
        // share nor towards a cut.
        let noise = p.noise();
        let (_, t5) = p.reserve(later);
        for _ in 0..5 {
            p.throttled(t1, later);
        }
        assert_eq!(p.noise(), noise);
        assert_eq!(p.resume(t5, later).1.generation, t5.generation);
        // One reserved since does (the cut went down: it is in the noise share).
        let (_, t) = p.reserve(later);
        p.throttled(t, later);
        assert!(p.noise() > noise);
    }

    #[test]
    fn throttles_right_after_a_cut_raise_the_noise_share_and_are_tolerated() {
        let p = Pacer::new();
        let t0 = Instant::now();
        // A cut to 100 calls/s: the next 100 slots are within K (1.36 s) of it.
        answered(&p, t0, t0 + secs(1.0), 100.0);
        let now = t0 + secs(1.0);
        throttle(&p, now, 3);
        assert_eq!(p.noise(), 0.0);
        let limit = p.limit();
        // 1 throttle in 10 calls, 10 times.
        let round = |at: Instant, calls: usize| {
            let (_, t) = p.reserve(at);
            p.throttled(t, at);
            for _ in 1..calls {
                let (_, t) = p.reserve(at);
                p.succeeded(t, at);
            }
        };
        for _ in 0..10 {
            round(now, 10);
        }
        // 10 throttles (decayed) over 100 calls (decayed) and the prior of 10 successes.
        let keep = 1.0 - 1.0 / Pacer::NOISE_MEMORY;
        let calls: f64 = (0..100).map(|i| keep.powi(i)).sum();
        let throttled: f64 = (0..10).map(|i| keep.powi(9 + 10 * i)).sum();
        let want = throttled / (calls + Pacer::NOISE_PRIOR);
        assert!((p.noise() - want).abs() < 1e-9, "{} vs {want}", p.noise());
        assert!((0.08..0.1).contains(&want), "{want}");
        // None of these cut: at most 1 - 2 * 0.09 per 10 calls.
        assert_eq!(p.limit(), limit);
        // Later, the same share of throttles never cuts, and no longer changes the noise share.
        let later = now + secs(5.0);
        for _ in 0..100 {
            round(later, 10);
        }
        assert_eq!(p.limit(), limit);
        assert!((p.noise() - want).abs() < 1e-9);
        // One in three adds up: 1 - 3 * 0.18 a round, and 1 - 0.18 at each throttle: a cut in
        // the fourth round.
        for _ in 0..3 {
            round(later, 3);
        }
        assert_eq!(p.limit(), limit);
        round(later, 3);
        assert_ne!(p.limit(), limit);
    }

    #[test]
    fn after_a_cut_that_raised_the_estimate_throttles_are_not_noise() {
        let p = Pacer::new();
        let t0 = Instant::now();
        answered(&p, t0, t0 + secs(1.0), 30.0);
        throttle(&p, t0 + secs(1.0), 3);
        assert!((p.limit().unwrap() - 30.0).abs() <= 1.0, "{:?}", p.limit());
        // 50 calls/s answered (a burst the bucket had saved), then a cut: a higher estimate.
        answered(&p, t0 + secs(5.0), t0 + secs(6.0), 50.0);
        let now = t0 + secs(6.0);
        throttle(&p, now, 3);
        assert!(p.limit().unwrap() > 30.0, "{:?}", p.limit());
        // Throttles right after it leave the noise share alone, and add up to the next cut.
        let limit = p.limit();
        let (_, t) = p.reserve(now);
        p.throttled(t, now);
        assert_eq!(p.noise(), 0.0);
        throttle(&p, now, 2);
        assert_ne!(p.limit(), limit);
        // That cut went down: the calls after it count again.
        let (_, t) = p.reserve(now);
        p.throttled(t, now);
        assert!(p.noise() > 0.0);
    }

    #[test]
    fn per_second_counts_the_last_second() {
        let mut w = PerSecond::default();
        let t0 = Instant::now();
        // The first event starts the slices of 100 ms; event i is in the middle of slice i.
        let at = |i: usize| match i {
            0 => t0,
            i => t0 + secs(0.1 * i as f64 + 0.05),
        };
        for i in 0..5 {
            w.add(at(i), 1.0);
        }
        assert_eq!(w.count(t0 + secs(0.45)), 5.0);
        for i in 5..20 {
            w.add(at(i), 1.0);
        }
        // Slices 10..19 in full, and half of slice 9.
        assert!((w.count(t0 + secs(1.95)) - 10.5).abs() < 1e-9);
        // Slices 11..20 (none in 20), half of 10.
        assert!((w.count(t0 + secs(2.05)) - 9.5).abs() < 1e-9);
        assert_eq!(w.count(t0 + secs(60.0)), 0.0);
        w.add(t0 + secs(60.0), 1.0);
        assert_eq!(w.count(t0 + secs(60.05)), 1.0);
        // Slices that passed without events are emptied when a later one is used.
        w.add(t0 + secs(60.45), 1.0);
        assert_eq!(w.count(t0 + secs(60.55)), 2.0);
    }

    /// Callers one after another (each waits for its answer, 2 ms), against a token bucket of
    /// `limit` calls/s (bursts of `limit`) that also throttles a share `random` of the calls
    /// it lets through; a throttled call waits its 1 s `Retry-After`. Simulated time. Returns
    /// the calls answered per second over the last two thirds, and the throttled share.
    fn paced_against(limit: Option<f64>, random: f64, callers: usize, secs: f64) -> (f64, f64) {
        against(Some(Pacer::new()), limit, random, callers, secs)
    }

    /// As [`paced_against`], with no pacer if `pacer` is `None`.
    fn against(
        pacer: Option<Pacer>,
        limit: Option<f64>,
        random: f64,
        callers: usize,
        secs: f64,
    ) -> (f64, f64) {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let cap = limit.unwrap_or(0.0);
        let (mut tokens, mut last) = (cap, 0.0f64);
        // A fixed sequence for the random throttles (xorshift).
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut coin = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        // Each caller's next free instant and its ticket if it is waiting for a slot.
        let mut free: Vec<(f64, Option<Ticket>)> = vec![(0.0, None); callers];
        let (mut ok_late, mut throttled, mut calls) = (0usize, 0usize, 0usize);
        loop {
            let (i, &(now, waiting)) = free
                .iter()
                .enumerate()
                .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
                .unwrap();
            if now >= secs {
                break;
            }
            let (wait, ticket) = match (&pacer, waiting) {
                (None, _) => (Duration::ZERO, None),
                (Some(p), None) => {
                    let (w, t) = p.reserve(at(now));
                    (w, Some(t))
                }
                (Some(p), Some(t)) => {
                    let (w, t) = p.resume(t, at(now));
                    (w, Some(t))
                }
            };
            if !wait.is_zero() {
                free[i] = (now + wait.as_secs_f64(), ticket);
                continue;
            }
            calls += 1;
            let done = now + 0.002;
            let mut ok = true;
            if let Some(limit) = limit {
                tokens = (tokens + (now - last).max(0.0) * limit).min(cap);
                last = last.max(now);
                ok = tokens >= 1.0;
                if ok {
                    tokens -= 1.0;
                }
            }
            ok = ok && coin() >= random;
            if ok {
                if let (Some(p), Some(t)) = (&pacer, ticket) {
                    p.succeeded(t, at(done));
                }
                if done > secs / 3.0 {
                    ok_late += 1;
                }
                free[i] = (done, None);
            } else {
                throttled += 1;
                if let (Some(p), Some(t)) = (&pacer, ticket) {
                    p.throttled(t, at(done));
                }
                free[i] = (done + 1.0, None);
            }
        }
        (
            ok_late as f64 / (secs * 2.0 / 3.0),
            throttled as f64 / calls as f64,
        )
    }

    #[test]
    fn the_pacer_settles_near_a_rate_limit_without_a_throttling_storm() {
        let mut seen = Vec::new();
        for limit in [5.0, 20.0, 50.0] {
            for callers in [1, 8] {
                let (rate, share) = paced_against(Some(limit), 0.0, callers, 90.0);
                seen.push(format!(
                    "limit {limit}, {callers} callers: {rate:.2} calls/s, {:.1}% throttled",
                    100.0 * share
                ));
                // A single caller at 5 calls/s comes closest to the share: each throttle parks
                // it for its Retry-After while the bucket fills, and the next throttle of the
                // excess comes a second later (about 11%).
                let good = rate >= 0.9 * limit && rate <= 1.05 * limit && share <= 0.12;
                if !good {
                    seen.push("^ out of bounds".into());
                }
            }
        }
        assert!(!seen.iter().any(|l| l.starts_with('^')), "{seen:#?}");
    }

    #[test]
    fn random_throttling_costs_little_with_or_without_a_limit() {
        // 5% of the calls the limit lets through are throttled at random: at most 9.5 calls/s
        // are answered.
        let (rate, _) = paced_against(Some(10.0), 0.05, 8, 90.0);
        assert!(rate >= 8.5, "{rate:.2} calls/s");
        // No limit: each throttle parks a caller for its second of Retry-After, so even
        // unpaced the 8 callers make about 8 * 0.95 / (0.002 + 0.05) = 146 calls/s.
        let (unpaced, _) = against(None, None, 0.05, 8, 90.0);
        let (rate, share) = paced_against(None, 0.05, 8, 90.0);
        eprintln!("{rate:.1} calls/s paced, {unpaced:.1} unpaced");
        assert!(
            rate >= 0.5 * unpaced,
            "{rate:.1} calls/s, {unpaced:.1} unpaced"
        );
        assert!((0.04..0.06).contains(&share), "{share}");
    }
}
