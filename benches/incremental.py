#!/usr/bin/env python3
"""What an incremental run costs as the archive grows, for the same amount of change.

    benches/incremental.py [--sessions 20000,200000] [--new 200] [--end 50] [--repeat 3]

For each size N: start `archiver simulator --portals 1 --sessions-per-portal N
--active-per-portal A` (A = --end, so there are sessions to end), backfill it with `archiver
run` (not measured), then for each repetition change the portal through the simulator's
control API (`POST /_sim/activity`: --new new ended sessions, --end of the active ones ended,
as many new active ones; the simulator's clock moves past them), reset the simulator's counters, and
measure one `archiver run` alone (wait4: wall, user+sys CPU) with the calls the simulator
answered (ListSessions, GetSession) and the rows the run wrote (its summary).

The point: calls and CPU follow the change, not the history.
Needs only the standard library; builds the release binary first unless --no-build.
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
from backfill_memory import Simulator, aws_env, same_or_range, table  # noqa: E402


def log(msg: str) -> None:
    print(f"incremental: {msg}", file=sys.stderr, flush=True)


def control(endpoint: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{endpoint}{path}", data=data, method="POST" if body is not None else "GET")
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def run(args, tmp: str, sim: Simulator, tag: str) -> dict:
    summary = os.path.join(tmp, f"summary-{tag}.json")
    argv = [
        args.binary, "--state", os.path.join(tmp, "state.db"), "--output", os.path.join(tmp, "archive"),
        "--summary-json", summary, "run",
    ]
    with open(os.path.join(tmp, f"archiver-{tag}.log"), "wb") as err:
        t = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=aws_env(sim.endpoint))
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"archiver run exited with {os.waitstatus_to_exitcode(status)} (log in {tmp})")
    with open(summary) as f:
        s = json.load(f)
    rows = s.get("totals", {}).get("rows_written", s.get("rows_written"))
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", default="20000,200000", help="archived sessions per portal (default %(default)s)")
    ap.add_argument("--new", type=int, default=200, help="new ended sessions per run (default %(default)s)")
    ap.add_argument("--end", type=int, default=50, help="active sessions ended per run (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=3, help="incremental runs per size; medians (default %(default)s)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "archiver"))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "archiver"], cwd=REPO, check=True)
    body = []
    for n in [int(x.replace("_", "")) for x in args.sessions.split(",")]:
        tmp = tempfile.mkdtemp(prefix=f"archiver-incr-{n}-")
        sim_args = ["--seed", "7", "--portals", "1", "--sessions-per-portal", str(n), "--active-per-portal", str(args.end)]
        ok = False
        try:
            sim = Simulator(args.binary, sim_args, os.path.join(tmp, "simulator.log"), 120)
            try:
                b = run(args, tmp, sim, "backfill")
                log(f"{n}: backfill {b['wall']:.1f}s, {b['cpu']:.2f} CPU s, {b['rows']} rows")
                runs = []
                for i in range(args.repeat):
                    # --new ended + --end active new sessions; --end of the older active ones end.
                    control(sim.endpoint, "/_sim/activity", {
                        "newSessions": args.new + args.end, "newActive": args.end, "endActive": args.end,
                    })
                    control(sim.endpoint, "/_sim/reset-stats", {})
                    r = run(args, tmp, sim, f"incr-{i}")
                    s = control(sim.endpoint, "/_sim/stats")
                    r["list"] = s["list_sessions_calls"]
                    r["get"] = s["get_session_calls"]
                    log(f"{n}: incremental run {i + 1}: {r['wall']:.2f}s, {r['cpu']:.3f} CPU s, {r['list']} ListSessions, {r['get']} GetSession, {r['rows']} rows")
                    runs.append(r)
            finally:
                sim.stop()
            ok = True
        finally:
            if args.keep or not ok:
                log(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        body.append(
            [
                f"{n}",
                f"{args.new} new + {args.end} ended",  # rows expected: new + end
                same_or_range([r["list"] for r in runs]),
                same_or_range([r["get"] for r in runs]),
                same_or_range([r["rows"] for r in runs]),
                f"{statistics.median(r['cpu'] for r in runs):.3f}",
                f"{statistics.median(r['wall'] for r in runs):.2f}",
            ]
        )
    print(f"incremental `archiver run` on one portal, {args.repeat} run(s) per size, {args.binary}")
    print(table(body, ["archived sessions", "change per run", "ListSessions", "GetSession", "rows written", "median CPU s", "median wall s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
