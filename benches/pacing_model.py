#!/usr/bin/env python3
"""The pacing alternatives in a model: simulated time, no archiver, no sockets.

    benches/pacing_model.py [--callers 8] [--latency-ms 10] [--seconds 60] [--seeds 3]

Callers that each send one call at a time (an answer after --latency-ms), through a pacer, to
a service with a token bucket (L calls/s, bursts of L) that also refuses a share P of the calls
it lets through at random; a throttled caller waits its 1 s Retry-After. The pacers:

- unpaced: every call at once;
- aimd: archiver's former pacer (+0.02 calls/s per paced success, x0.9 per throttle);
- sdk: the AWS SDKs' adaptive retry mode (botocore `retries/adaptive.py`, aws-smithy's
  `client_rate_limiter.rs`): a token bucket, the measured send rate (half-second buckets,
  smoothed 0.8), CUBIC with beta 0.7 and scale 0.4 calls/s^3, at most twice the measured rate;
- goodput: archiver's pacer without its noise share (every excess of throttles over 5% cuts);
- archiver: src/source/pacer.rs, the same arithmetic.

For each case it prints calls answered per second (median over --seeds) and the throttled
share; "lift" is the seconds, after a limit of 10 with 5% random refusals is lifted at 20 s,
until a second answers 5 x 10 calls. The figures model the shape of each pacer, not
archiver's absolute speed: benches/pacing.py measures the real thing.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
from collections import deque


class Unpaced:
    def reserve(self, now):
        return 0.0, None

    def resume(self, t, now):
        return 0.0, t

    def ok(self, t, now):
        pass

    def thr(self, t, now):
        pass


class Aimd(Unpaced):
    def __init__(self):
        self.rate, self.next, self.last_cut, self.slow, self.recent = None, 0.0, None, False, deque()

    def reserve(self, now):
        if self.rate is None:
            self.recent.append(now)
            while self.recent and now - self.recent[0] > 1:
                self.recent.popleft()
            return 0.0, (now, False)
        iv = 1 / self.rate
        paced = self.next + iv / 2 > now
        slot = max(self.next, now)
        self.next = slot + iv
        return slot - now, (slot, paced)

    def ok(self, t, now):
        if self.rate is not None and t[1]:
            self.rate = self.rate * 1.1 if self.slow else self.rate + 0.02

    def thr(self, t, now):
        if self.rate is None:
            sent = sum(1 for x in self.recent if now - x <= 1)
            self.slow, new = sent < 3, sent * 0.9
        elif self.last_cut is not None and t[0] < self.last_cut:
            return
        else:
            new, self.slow = self.rate * (0.5 if self.slow else 0.9), False
        self.rate, self.last_cut, self.next = max(new, 0.5), now, max(self.next, now)


class Sdk(Unpaced):
    BETA, SCALE, SMOOTH, MIN = 0.7, 0.4, 0.8, 0.5

    def __init__(self):
        self.enabled, self.fill, self.cap, self.tokens, self.last = False, self.MIN, 1.0, 0.0, None
        self.tx, self.bucket, self.count, self.wmax, self.tlast = 0.0, 0.0, 0, 0.0, 0.0

    def refill(self, now):
        if self.last is not None:
            self.tokens = min(self.cap, self.tokens + (now - self.last) * self.fill)
        self.last = now

    def reserve(self, now):
        if not self.enabled:
            return 0.0, None
        self.refill(now)
        wait = (1 - self.tokens) / self.fill if self.tokens < 1 else 0.0
        self.tokens -= 1
        return wait, None

    def update(self, now, throttled):
        b = math.floor(now * 2) / 2
        self.count += 1
        if b > self.bucket:
            self.tx = self.count / (b - self.bucket) * self.SMOOTH + self.tx * (1 - self.SMOOTH)
            self.count, self.bucket = 0, b
        if throttled:
            use = min(self.tx, self.fill) if self.enabled else self.tx
            self.wmax, self.tlast, self.enabled = use, now, True
            new = use * self.BETA
        else:
            k = (self.wmax * (1 - self.BETA) / self.SCALE) ** (1 / 3)
            new = self.SCALE * (now - self.tlast - k) ** 3 + self.wmax
        new = min(new, 2 * self.tx)
        self.refill(now)
        self.fill, self.cap = max(new, self.MIN), max(new, 1.0)
        self.tokens = min(self.tokens, self.cap)

    def ok(self, t, now):
        self.update(now, False)

    def thr(self, t, now):
        self.update(now, True)


class Archiver(Unpaced):
    """src/source/pacer.rs (its one-second windows kept as exact lists here)."""

    BETA = 0.7
    SCALE, DROP, EXCESS, NOISE_MIN, MEMORY, PRIOR, AHEAD, MIN, SLOW_BELOW = 0.04, 0.1, 2.0, 0.05, 200.0, 10.0, 2.0, 0.5, 20.0

    def __init__(self, noise=True):
        self.use_noise = noise
        self.limit, self.cut_at, self.next, self.gen, self.excess, self.raised = None, 0.0, 0.0, 0, 0.0, False
        self.n_calls = self.n_thr = 0.0
        self.sent, self.answered = deque(), deque()
        self.k = (self.DROP / self.SCALE) ** (1 / 3)

    @staticmethod
    def count(q, now):
        while q and now - q[0] > 1.0:
            q.popleft()
        return len(q)

    def noise(self):
        return self.n_thr / (self.n_calls + self.PRIOR) if self.use_noise else 0.0

    def clock(self, now):
        return (now - self.cut_at) * min(1.0, self.limit / self.SLOW_BELOW)

    def rate(self, now):
        cubic = self.limit * (1 + self.SCALE * (self.clock(now) - self.k) ** 3)
        return max(min(cubic, max(self.AHEAD * self.count(self.sent, now), self.limit)), self.MIN)

    def slot(self, now):
        if self.limit is None:
            return 0.0, (now, self.gen)
        s = max(self.next, now)
        self.next = s + 1 / self.rate(now)
        return s - now, (s, self.gen)

    def reserve(self, now):
        self.sent.append(now)
        return self.slot(now)

    def resume(self, t, now):
        return (0.0, t) if t[1] == self.gen else self.slot(now)

    def answer(self, t, x):
        if t[1] != self.gen:
            return False
        if self.limit is not None and not self.raised and self.clock(t[0]) < self.k:
            keep = 1 - 1 / self.MEMORY
            self.n_calls, self.n_thr = self.n_calls * keep + 1, self.n_thr * keep + x
        self.excess = max(0.0, self.excess + x - max(2 * self.noise(), self.NOISE_MIN))
        return True

    def ok(self, t, now):
        self.answered.append(now)
        self.answer(t, 0)

    def thr(self, t, now):
        if not self.answer(t, 1) or self.excess < self.EXCESS:
            return
        limit = float(self.count(self.answered, now))
        if self.limit is not None:
            rate = self.rate(now)
            limit = min(max(limit, self.BETA * rate), rate)
        limit = max(limit, self.MIN)
        self.raised = self.limit is not None and limit > self.limit
        self.limit, self.cut_at, self.next, self.gen, self.excess = limit, now, now, self.gen + 1, 0.0


def run(pacer, limit, p, callers, lat, secs, seed, lift_at=None):
    rng = random.Random(seed)
    tokens, last, seq, ev = (limit or 0), 0.0, 0, []

    def push(t, *a):
        nonlocal seq
        seq += 1
        heapq.heappush(ev, (t, seq) + a)

    for i in range(callers):
        push(0.0, "ready", None)
    ok = thr = calls = 0
    bins: dict[int, int] = {}
    while ev:
        now, _, kind, arg = heapq.heappop(ev)
        if now >= secs:
            continue
        if kind == "ready":
            wait, t = pacer.reserve(now)
            push(now + wait, "send", t)
        elif kind == "send":
            wait, t = pacer.resume(arg, now)
            if wait > 0:
                push(now + wait, "send", t)
                continue
            calls += 1
            lim = limit if lift_at is None or now < lift_at else None
            refused = False
            if lim:
                tokens, last = min(lim, tokens + (now - last) * lim), now
                if tokens >= 1:
                    tokens -= 1
                else:
                    refused = True
            refused = refused or (p > 0 and rng.random() < p)
            push(now + lat, "answer", (t, refused))
        else:
            t, refused = arg
            if refused:
                thr += 1
                pacer.thr(t, now)
                push(now + 1.0 + rng.random() * 0.05, "ready", None)
            else:
                ok += 1
                pacer.ok(t, now)
                bins[int(now)] = bins.get(int(now), 0) + 1
                push(now, "ready", None)
    return ok / secs, thr / max(calls, 1), bins


PACERS = {"unpaced": Unpaced, "aimd": Aimd, "sdk": Sdk, "goodput": lambda: Archiver(noise=False), "archiver": Archiver}
CASES = [(10, 0.05), (10, 0.0), (5, 0.0), (50, 0.0), (50, 0.05), (None, 0.05), (None, 0.2)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--callers", type=int, default=8)
    ap.add_argument("--latency-ms", type=float, default=10)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    lat, seeds = args.latency_ms / 1000, range(1, args.seeds + 1)
    header = ["pacer"] + [f"L {'none' if l is None else l} P {100 * p:g}%" for l, p in CASES] + ["lift s"]
    rows = []
    for name, make in PACERS.items():
        row = [name]
        for limit, p in CASES:
            runs = [run(make(), limit, p, args.callers, lat, args.seconds, s) for s in seeds]
            row.append(f"{statistics.median(r[0] for r in runs):.1f} ({100 * statistics.median(r[1] for r in runs):.0f}%)")
        lifts = []
        for s in seeds:
            bins = run(make(), 10, 0.05, args.callers, lat, args.seconds, s, lift_at=20)[2]
            lifts.append(next((x - 20 for x in range(20, int(args.seconds)) if bins.get(x, 0) > 50), math.inf))
        m = statistics.median(lifts)
        row.append("never" if m == math.inf else f"{m:g}")
        rows.append(row)
        print(f"pacing_model: {name} done", file=sys.stderr, flush=True)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print(f"calls answered/s (throttled share); {args.callers} callers, {args.latency_ms:g} ms a call, {args.seconds:g} s, median of {args.seeds} seeds")
    print("\n".join([line(header), "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|", *(line(r) for r in rows)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
