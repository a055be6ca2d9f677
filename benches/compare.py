#!/usr/bin/env python3
"""How much archiver costs next to the least a program must do, and next to the script a user
would otherwise write.

    benches/compare.py [--sessions 200000] [--portals 1] [--repeat 3] [--no-build]

Contenders, each run against a fresh `archiver simulator` (same seed and size every time, no
Active sessions so every contender writes the same rows), measured alone with os.wait4 (wall
time, user+sys CPU, peak RSS; the simulator's own cost is not counted):

- archiver: `archiver backfill --portal-id ID` into a fresh temporary state and archive
  (`--portals N` > 1: `archiver run`, which discovers and backfills all N);
- floor: `target/release/examples/floor` (examples/floor.rs): ListSessions pages with the
  archiver's SDK client settings, encoded with the archiver's own Parquet writer, one file per
  100,000 rows; no state, dedup, partitioning, retries or fsync. With N portals it runs once
  per portal, one after the other, and the numbers are summed (peak RSS: the largest);
- peer: benches/peer_boto3.py under the test venv's Python (boto3 paginator + pyarrow),
  counted like the floor.

Then a concurrency table: `archiver run` over 8 portals against a simulator answering every
call after --latency-ms (default 50), with the archiver's default --concurrency (8) and with
--concurrency 8, as a ratio to the wall time of one portal of the same size.

Needs only the standard library; reuses benches/backfill_memory.py's helpers. Builds the
release archiver and the floor example first unless --no-build.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# backfill_memory imports pyarrow when it can; keep it out of this process (see rows_archived).
sys.modules.setdefault("pyarrow", None)  # type: ignore[arg-type]
from backfill_memory import MIB, Simulator, aws_env, same_or_range, table  # noqa: E402

DEFAULT_PYTHON = os.path.join(os.path.expanduser("~"), ".cache", "archiver", "test-venv", "bin", "python")
SEED = 7


def log(msg: str) -> None:
    print(f"compare: {msg}", file=sys.stderr, flush=True)


class Sim(Simulator):
    """backfill_memory's Simulator, with this benchmark's seed and no active sessions (so every
    contender writes the same rows)."""

    def __init__(self, binary: str, sim_args: list[str], log_path: str, timeout: float):  # noqa: D107
        super().__init__(binary, ["--seed", str(SEED), "--active-per-portal", "0", *sim_args], log_path, timeout)


def measure(argv: list[str], env: dict[str, str], out_path: str, err_path: str, timeout: float) -> dict:
    """Run argv to completion; its own wall time, CPU and peak RSS (wait4), and its stdout."""
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        with open(err_path, "rb") as f:
            tail = f.read()[-3000:].decode(errors="replace")
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}:\n{tail}")
    with open(out_path, "rb") as f:
        stdout = f.read().decode(errors="replace")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss * 1024 / MIB,  # ru_maxrss is KiB on Linux
        "stdout": stdout,
    }


def rows_printed(stdout: str) -> int | None:
    """The floor and the peer print `{"rows": N, ...}` as their last line."""
    try:
        return int(json.loads(stdout.strip().splitlines()[-1])["rows"])
    except (ValueError, KeyError, IndexError):
        return None


def rows_archived(python: str, archive: str) -> int | None:
    """Rows in an archive, counted by another interpreter: this process must not import
    pyarrow, because a child's peak RSS (ru_maxrss) starts at its parent's peak (Python
    spawns with vfork, and exec carries the old address space's high-water mark over)."""
    code = "import sys; sys.path.insert(0, sys.argv[1]); import archivelib; print(archivelib.count_rows(sys.argv[2]))"
    r = subprocess.run(
        [python, "-B", "-c", code, os.path.join(REPO, "tests", "py"), archive], capture_output=True, text=True
    )
    if r.returncode != 0:
        log(f"cannot count the rows of {archive} with {python}: {r.stderr.strip()[-300:]}")
        return None
    return int(r.stdout.strip())


def run_contender(name: str, args, tmp: str, sim: Sim) -> dict:
    env = aws_env(sim.endpoint)
    if name == "archiver":
        archive = os.path.join(tmp, "archive")
        common = [args.binary, "--state", os.path.join(tmp, "state.db"), "--output", archive]
        if len(sim.portal_ids) == 1:
            argv = [*common, "backfill", "--portal-id", sim.portal_ids[0]]
        else:
            argv = [*common, "run"]
        r = measure(argv, env, os.path.join(tmp, "out.log"), os.path.join(tmp, "err.log"), args.timeout)
        r["rows"] = rows_archived(args.python, archive)
        return r
    total = {"wall": 0.0, "cpu": 0.0, "rss_mib": 0.0, "rows": 0}
    for i, portal in enumerate(sim.portal_ids):
        out = os.path.join(tmp, f"{name}-{i}")
        if name == "floor":
            argv = [args.floor, "--portal-id", portal, "--out", out]
        else:
            argv = [args.python, os.path.join(REPO, "benches", "peer_boto3.py"), "--portal-id", portal, "--out", out]
        r = measure(argv, env, os.path.join(tmp, f"out-{i}.log"), os.path.join(tmp, f"err-{i}.log"), args.timeout)
        total["wall"] += r["wall"]
        total["cpu"] += r["cpu"]
        total["rss_mib"] = max(total["rss_mib"], r["rss_mib"])
        n = rows_printed(r["stdout"])
        total["rows"] = None if n is None or total["rows"] is None else total["rows"] + n
    return total


def one_run(args, name: str, sim_args: list[str], tag: str) -> dict:
    """A fresh simulator and temporary folder, one contender, the simulator's call count."""
    tmp = tempfile.mkdtemp(prefix=f"archiver-compare-{tag}-")
    ok = False
    try:
        sim = Sim(args.binary, sim_args, os.path.join(tmp, "simulator.log"), args.timeout)
        try:
            r = run_contender(name, args, tmp, sim)
            r["calls"] = sim.list_sessions_calls()
        finally:
            sim.stop()
        ok = True
        return r
    finally:
        if args.keep or not ok:
            log(f"kept {tmp} (logs and outputs)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run_concurrency(args, portals: int, concurrency: int | None) -> dict:
    sim_args = ["--portals", str(portals), "--sessions-per-portal", str(args.conc_sessions), "--latency-ms", str(args.latency_ms)]
    tmp = tempfile.mkdtemp(prefix="archiver-compare-conc-")
    ok = False
    try:
        sim = Sim(args.binary, sim_args, os.path.join(tmp, "simulator.log"), args.timeout)
        try:
            extra = [] if concurrency is None else ["--concurrency", str(concurrency)]
            archive = os.path.join(tmp, "archive")
            argv = [args.binary, "--state", os.path.join(tmp, "state.db"), "--output", archive, *extra, "run"]
            r = measure(argv, aws_env(sim.endpoint), os.path.join(tmp, "out.log"), os.path.join(tmp, "err.log"), args.timeout)
            r["calls"] = sim.list_sessions_calls()
        finally:
            sim.stop()
        r["rows"] = rows_archived(args.python, archive)
        ok = True
        return r
    finally:
        if args.keep or not ok:
            log(f"kept {tmp} (logs and outputs)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=200_000, help="sessions per portal (default %(default)s)")
    ap.add_argument("--portals", type=int, default=1, help="portals in the simulator (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per contender; tables show medians (default %(default)s)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binaries")
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "archiver"))
    ap.add_argument("--floor", default=os.path.join(REPO, "target", "release", "examples", "floor"))
    ap.add_argument("--python", default=DEFAULT_PYTHON, help="interpreter with boto3 and pyarrow for the peer")
    ap.add_argument("--contenders", default="archiver,floor,peer", help="comma-separated subset (default %(default)s)")
    ap.add_argument("--conc-sessions", type=int, default=10_000, help="sessions per portal in the concurrency table (default %(default)s)")
    ap.add_argument("--latency-ms", type=int, default=50, help="simulator latency in the concurrency table (default %(default)s)")
    ap.add_argument("--no-concurrency", action="store_true", help="skip the concurrency table")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per run (default %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep each run's temporary folder")
    args = ap.parse_args()
    contenders = [c for c in args.contenders.split(",") if c]
    if args.repeat < 1 or args.sessions < 1 or args.portals < 1 or not set(contenders) <= {"archiver", "floor", "peer"}:
        ap.error("need --repeat, --sessions, --portals >= 1 and contenders among archiver,floor,peer")

    if not args.no_build:
        log("cargo build --release --bin archiver --example floor")
        subprocess.run(["cargo", "build", "--release", "--bin", "archiver", "--example", "floor"], cwd=REPO, check=True)
    for path in [args.binary] + ([args.floor] if "floor" in contenders else []):
        if not os.access(path, os.X_OK):
            log(f"no executable {path}; build with `cargo build --release --bin archiver --example floor`")
            return 1
    if "peer" in contenders:
        probe = subprocess.run([args.python, "-c", "import boto3, pyarrow"], capture_output=True)
        if probe.returncode != 0:
            log(f"{args.python} cannot import boto3 and pyarrow (run tests/run to create the venv, or pass --python)")
            return 1

    sim_args = ["--portals", str(args.portals), "--sessions-per-portal", str(args.sessions)]
    total_sessions = args.sessions * args.portals
    results: dict[str, list[dict]] = {c: [] for c in contenders}
    for i in range(args.repeat):
        for c in contenders:  # interleaved, so drift on a shared machine hits all alike
            try:
                r = one_run(args, c, sim_args, c)
            except RuntimeError as e:
                log(f"{c}, run {i + 1}: FAILED: {e}")
                return 1
            results[c].append(r)
            log(
                f"{c}, run {i + 1}/{args.repeat}: {r['wall']:.2f}s wall, {r['cpu']:.2f}s CPU, "
                f"{r['rss_mib']:.1f} MiB peak RSS, {r['calls']} ListSessions calls, rows {r['rows']}"
            )
            if r["rows"] is not None and r["rows"] != total_sessions:
                log(f"{c}, run {i + 1}: wrote {r['rows']} rows, expected {total_sessions}")
                return 1

    cpu_floor = statistics.median(r["cpu"] for r in results["floor"]) if "floor" in results else None
    header = [
        "contender",
        "median wall s",
        "median CPU s",
        "CPU s per 1M sessions",
        "ratio to floor",
        "median peak RSS MiB",
        "ListSessions calls",
    ]
    body = []
    for c, runs in results.items():
        cpu = statistics.median(r["cpu"] for r in runs)
        body.append(
            [
                c,
                f"{statistics.median(r['wall'] for r in runs):.2f}",
                f"{cpu:.2f}",
                f"{cpu / total_sessions * 1_000_000:.2f}",
                "-" if not cpu_floor else f"{cpu / cpu_floor:.2f}",
                f"{statistics.median(r['rss_mib'] for r in runs):.1f}",
                same_or_range([r["calls"] for r in runs]),
            ]
        )
    parent_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB
    print(
        f"{args.portals} portal(s) x {args.sessions} sessions, {args.repeat} run(s) each, "
        f"{os.cpu_count()} CPUs; ratio to floor = median CPU s / floor's median CPU s; "
        f"peak RSS never reads below this script's own {parent_mib:.1f} MiB"
    )
    print(table(body, header))

    if args.no_concurrency:
        return 0
    cases = [("1 portal", 1, None), ("8 portals, default --concurrency", 8, None), ("8 portals, --concurrency 8", 8, 8)]
    conc: dict[str, list[dict]] = {label: [] for label, _, _ in cases}
    for i in range(args.repeat):
        for label, portals, concurrency in cases:
            try:
                r = run_concurrency(args, portals, concurrency)
            except RuntimeError as e:
                log(f"concurrency {label}, run {i + 1}: FAILED: {e}")
                return 1
            conc[label].append(r)
            log(f"concurrency {label}, run {i + 1}/{args.repeat}: {r['wall']:.2f}s wall, {r['calls']} ListSessions calls, rows {r['rows']}")
            want = portals * args.conc_sessions
            if r["rows"] is not None and r["rows"] != want:
                log(f"concurrency {label}, run {i + 1}: wrote {r['rows']} rows, expected {want}")
                return 1
    one = statistics.median(r["wall"] for r in conc["1 portal"])
    body = [
        [
            label,
            f"{statistics.median(r['wall'] for r in runs):.2f}",
            f"{statistics.median(r['wall'] for r in runs) / one:.2f}",
            same_or_range([r["calls"] for r in runs]),
        ]
        for label, runs in conc.items()
    ]
    print()
    print(
        f"archiver run, {args.conc_sessions} sessions per portal, simulator --latency-ms {args.latency_ms}, "
        f"{args.repeat} run(s) each"
    )
    print(table(body, ["case", "median wall s", "ratio to 1 portal", "ListSessions calls"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
