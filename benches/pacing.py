#!/usr/bin/env python3
"""Does archiver pace itself to a rate limit, without a storm of throttled calls?

    benches/pacing.py [--limits 5,20,50] [--portals 1,8] [--seconds 20] [--no-build]

For each limit L and portal count P: start `archiver simulator --rate-limit L --portals P`
(a token bucket over all API calls: L calls/s, bursts of L; a call above it gets 429
ThrottlingException with `Retry-After: 1`), sized so that the listing takes about --seconds at
the limit, run `archiver run` over all P portals (default --concurrency), and report from the
simulator's own counters (GET /_sim/stats):

- calls/s: calls answered without a fault / the archiver's wall time (the simulator answers
  at most L a second, plus the bucket's first burst of L);
- vs limit: that over L (1.00 = the whole limit used);
- throttled: throttled calls / all calls.

Needs only the standard library; builds the release binary first unless --no-build. Pass
--binary to compare another build (e.g. one without pacing).
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


def one(args, limit: float, portals: int) -> dict:
    # Pages of 100: L calls/s for --seconds, spread over the portals (at least 5 pages each).
    pages = max(5, int(limit * args.seconds / portals))
    sim_args = [
        "--seed", "7", "--active-per-portal", "0", "--portals", str(portals),
        "--sessions-per-portal", str(pages * 100), "--rate-limit", str(limit),
    ]
    tmp = tempfile.mkdtemp(prefix="archiver-pacing-")
    ok = False
    try:
        sim = Simulator(args.binary, sim_args, os.path.join(tmp, "simulator.log"), 60)
        try:
            argv = [args.binary, "--state", os.path.join(tmp, "state.db"), "--output", os.path.join(tmp, "archive"), "run"]
            with open(os.path.join(tmp, "archiver.log"), "wb") as err:
                t = time.monotonic()
                r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=aws_env(sim.endpoint), timeout=args.timeout)
                wall = time.monotonic() - t
            if r.returncode != 0:
                raise RuntimeError(f"archiver exited with {r.returncode} (log in {tmp})")
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
    good = calls - s["throttled"] - s["server_errors"]
    return {"wall": wall, "calls": calls, "good": good, "throttled": s["throttled"], "rate": good / wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limits", default="5,20,50", help="simulator rate limits, calls/s (default %(default)s)")
    ap.add_argument("--portals", default="1,8", help="portal counts (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=20, help="listing length at the limit (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; medians (default %(default)s)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "archiver"))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "archiver"], cwd=REPO, check=True)
    body = []
    for limit in [float(x) for x in args.limits.split(",")]:
        for portals in [int(x) for x in args.portals.split(",")]:
            runs = []
            for i in range(args.repeat):
                r = one(args, limit, portals)
                log(
                    f"limit {limit:g}, {portals} portal(s), run {i + 1}: {r['wall']:.1f}s, {r['good']} calls answered, "
                    f"{r['throttled']} throttled, {r['rate']:.2f} calls/s"
                )
                runs.append(r)
            rate = statistics.median(r["rate"] for r in runs)
            frac = statistics.median(r["throttled"] / r["calls"] for r in runs)
            body.append(
                [
                    f"{limit:g}",
                    f"{portals}",
                    f"{statistics.median(r['wall'] for r in runs):.1f}",
                    f"{statistics.median(r['good'] for r in runs):.0f}",
                    f"{rate:.2f}",
                    f"{rate / limit:.2f}",
                    f"{statistics.median(r['throttled'] for r in runs):.0f}",
                    f"{100 * frac:.1f}%",
                ]
            )
    print(f"archiver run against `simulator --rate-limit L`, about {args.seconds:g}s of calls at the limit, {args.repeat} run(s) each, {args.binary}")
    print(table(body, ["limit calls/s", "portals", "wall s", "calls answered", "calls/s", "vs limit", "throttled", "throttled share"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
