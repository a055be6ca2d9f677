#!/usr/bin/env python3
"""Does archiver find a rate limit and stay there, without a storm of throttled calls, and do
throttles that do not follow the call rate (a share refused at random) cost little?

    benches/pacing.py [--limits 5,20,50] [--random 0] [--portals 1,8] [--seconds 20]
                      [--client-ips] [--sessions N] [--lift-after S] [--binary [LABEL=]PATH ...]
                      [--repeat N] [--no-build]

For each binary, limit L (`none`: no limit), random share P and portal count: start
`archiver simulator --rate-limit L --throttle-rate P --portals ...` (a token bucket over all
API calls, L calls/s in bursts of L; of the calls it lets through, a share P is refused at
random; both answer 429 ThrottlingException with `Retry-After: 1`), run `archiver run` over
all portals (default --concurrency; with --client-ips also `--with-client-ips`: a GetSession
call per session, four in flight per portal), and report from the simulator's own counters
(GET /_sim/stats):

- calls/s: calls answered without a fault / the archiver's wall time;
- vs limit: that over L (with a limit), or over the same binary's unthrottled run (no limit:
  `--random 0` must be among the shares; with P > 0 a throttled call waits its second of
  `Retry-After`, so even unpaced calls cannot all go on);
- throttled: throttled calls / all calls.

Sizes: --sessions per portal if given; else enough for about --seconds of calls at the limit
(at least 5 pages of 100 per portal), and 3,000 a portal without a limit. Lifted runs have
their own size (below).

--lift-after S adds, for each limit and each P > 0, a run that starts with the limit and P and
after S seconds keeps only P (POST /_sim/faults): "recovery" is the seconds from then until
a second answers more than 5 L calls, and "after lift" the calls/s answered from then to the
end. Sized for about S seconds at the limit and 30 s after; stopped (SIGTERM) 30 s after the
lift if not done.

Needs only the standard library; builds the release binary first unless --no-build. Pass
--binary (repeatable, LABEL=PATH) to compare builds in one table (e.g. one with another
pacer).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.modules.setdefault("pyarrow", None)  # type: ignore[arg-type]
from backfill_memory import Simulator, aws_env, table  # noqa: E402


def log(msg: str) -> None:
    print(f"pacing: {msg}", file=sys.stderr, flush=True)


def stats(endpoint: str) -> dict:
    with urllib.request.urlopen(f"{endpoint}/_sim/stats", timeout=10) as r:
        return json.load(r)


def set_faults(endpoint: str, faults: dict) -> None:
    req = urllib.request.Request(
        f"{endpoint}/_sim/faults", data=json.dumps(faults).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def answered(s: dict) -> int:
    calls = s["list_portals_calls"] + s["list_sessions_calls"] + s["get_session_calls"]
    return calls - s["throttled"] - s["server_errors"]


def one(args, binary: str, limit: float | None, random: float, portals: int, lift: float | None) -> dict:
    if lift is not None:
        # S seconds at the limit, then 30 s at well over it.
        sessions = int((limit * lift + 150 * 30) / portals)
    elif args.sessions:
        sessions = args.sessions
    elif limit is None:
        sessions = 3000
    elif args.client_ips:
        # About one GetSession call per session.
        sessions = max(50, int(limit * args.seconds / portals))
    else:
        # Pages of 100, at least 5 a portal.
        sessions = max(5, int(limit * args.seconds / portals)) * 100
    sim_args = ["--seed", "7", "--active-per-portal", "0", "--portals", str(portals), "--sessions-per-portal", str(sessions)]
    if limit is not None:
        sim_args += ["--rate-limit", str(limit)]
    if random:
        sim_args += ["--throttle-rate", str(random)]
    tmp = tempfile.mkdtemp(prefix="archiver-pacing-")
    ok = False
    series: list[tuple[float, int]] = []
    try:
        sim = Simulator(binary, sim_args, os.path.join(tmp, "simulator.log"), 60)
        try:
            argv = [binary, "--state", os.path.join(tmp, "state.db"), "--output", os.path.join(tmp, "archive"), "run"]
            if args.client_ips:
                argv.append("--with-client-ips")
            done = threading.Event()
            t = time.monotonic()

            def watch() -> None:
                # Answered calls every 0.25 s; the limit is lifted after `lift` seconds.
                lifted = lift is None
                while not done.wait(0.25):
                    now = time.monotonic() - t
                    if not lifted and now >= lift:
                        set_faults(sim.endpoint, {"throttle_rate": random})
                        lifted = True
                    series.append((now, answered(stats(sim.endpoint))))

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            with open(os.path.join(tmp, "archiver.log"), "wb") as err:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=aws_env(sim.endpoint))
                try:
                    # A lifted run is stopped (SIGTERM: it saves its progress and exits 1)
                    # 30 s after the lift if it has not finished.
                    code = proc.wait(timeout=args.timeout if lift is None else lift + 30)
                except subprocess.TimeoutExpired:
                    if lift is None:
                        proc.kill()
                        raise
                    proc.terminate()
                    code = proc.wait(timeout=30)
                    code = 0 if code == 1 else code
            wall = time.monotonic() - t
            done.set()
            watcher.join()
            if code != 0:
                raise RuntimeError(f"archiver exited with {code} (log in {tmp})")
            s = stats(sim.endpoint)
        finally:
            sim.stop()
        ok = True
    finally:
        if args.keep or not ok:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    calls = s["list_portals_calls"] + s["list_sessions_calls"] + s["get_session_calls"]
    good = answered(s)
    out = {"wall": wall, "calls": calls, "good": good, "throttled": s["throttled"], "rate": good / wall}
    if lift is not None:
        series.append((wall, good))
        at_lift = next((n for x, n in series if x >= lift), good)
        out["after"] = (good - at_lift) / max(wall - lift, 1e-9)
        # The first whole second after the lift that answered more than 5 L calls.
        out["recovery"] = None
        for i, (x, n) in enumerate(series):
            if x < lift:
                continue
            later = next(((y, m) for y, m in series[i:] if y >= x + 1.0), None)
            if later and (later[1] - n) / (later[0] - x) > 5 * limit:
                out["recovery"] = x - lift
                break
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limits", default="5,20,50", help="simulator rate limits, calls/s, or none (default %(default)s)")
    ap.add_argument("--random", default="0", help="shares of calls throttled at random (default %(default)s)")
    ap.add_argument("--portals", default="1,8", help="portal counts (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=20, help="listing length at the limit (default %(default)s)")
    ap.add_argument("--sessions", type=int, help="sessions per portal (default: from --seconds)")
    ap.add_argument("--client-ips", action="store_true", help="run --with-client-ips")
    ap.add_argument("--lift-after", type=float, help="also runs whose limit is lifted after this many seconds")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; medians (default %(default)s)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--binary", action="append", help="[LABEL=]PATH, repeatable (default target/release/archiver)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "archiver"], cwd=REPO, check=True)
    binaries = []
    for b in args.binary or [os.path.join(REPO, "target", "release", "archiver")]:
        label, _, path = b.rpartition("=")
        binaries.append((label or os.path.basename(os.path.dirname(os.path.dirname(path))) or path, path))
    limits = [None if x == "none" else float(x) for x in args.limits.split(",")]
    shares = [float(x) for x in args.random.split(",")]
    cases = [(l, p, n, None) for l in limits for p in shares for n in [int(x) for x in args.portals.split(",")]]
    if args.lift_after is not None:
        cases += [(l, p, n, args.lift_after) for l in limits if l is not None for p in shares if p > 0 for n in [int(x) for x in args.portals.split(",")]]
    body, lifted = [], []
    for label, binary in binaries:
        unthrottled: dict[int, float] = {}
        # Unthrottled runs first: the rows without a limit are compared with them.
        for limit, random, portals, lift in sorted(cases, key=lambda c: (c[0] is not None, c[1] > 0)):
            runs = []
            for i in range(args.repeat):
                r = one(args, binary, limit, random, portals, lift)
                log(
                    f"{label}: limit {limit}, random {random:g}, {portals} portal(s), lift {lift}, run {i + 1}: {r['wall']:.1f}s, "
                    f"{r['good']} calls answered, {r['throttled']} throttled, {r['rate']:.2f} calls/s"
                    + (f", {r['after']:.1f} calls/s after the lift, recovery {r['recovery']}" if lift is not None else "")
                )
                runs.append(r)
            rate = statistics.median(r["rate"] for r in runs)
            frac = statistics.median(r["throttled"] / r["calls"] for r in runs)
            if limit is None and random == 0:
                unthrottled[portals] = rate
            ref = limit if limit is not None else unthrottled.get(portals)
            row = [
                label,
                "none" if limit is None else f"{limit:g}",
                f"{100 * random:g}%",
                f"{portals}",
            ]
            if lift is not None:
                recs = [r["recovery"] for r in runs]
                rec = statistics.median([x if x is not None else float("inf") for x in recs])
                lifted.append(
                    row
                    + [
                        f"{lift:g}",
                        "never" if rec == float("inf") else f"{rec:.1f}",
                        f"{statistics.median(r['after'] for r in runs):.1f}",
                        f"{statistics.median(r['throttled'] for r in runs):.0f}",
                    ]
                )
                continue
            body.append(
                row
                + [
                    f"{statistics.median(r['wall'] for r in runs):.1f}",
                    f"{statistics.median(r['good'] for r in runs):.0f}",
                    f"{rate:.2f}",
                    f"{rate / ref:.2f}" if ref else "-",
                    f"{statistics.median(r['throttled'] for r in runs):.0f}",
                    f"{100 * frac:.1f}%",
                ]
            )
    what = "run --with-client-ips" if args.client_ips else "run"
    print(f"archiver {what} against `simulator --rate-limit L --throttle-rate P`, {args.repeat} run(s) each")
    print(
        table(
            body,
            ["binary", "limit calls/s", "random", "portals", "wall s", "calls answered", "calls/s", "vs limit or unthrottled", "throttled", "throttled share"],
        )
    )
    if lifted:
        print()
        print(table(lifted, ["binary", "limit calls/s", "random", "portals", "lifted at s", "recovery s", "after lift calls/s", "throttled"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
