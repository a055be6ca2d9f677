#!/usr/bin/env python3
"""Peak memory of a backfill as the backfill grows: it must not grow with the number of sessions
(the target: 250,000 sessions under 128 MiB peak RSS).

    benches/backfill_memory.py [--sessions 50000,250000] [--repeat 3] [--no-build]

For each size N and each repetition: start `archiver simulator --portals 1
--sessions-per-portal N --active-per-portal 20` on 127.0.0.1, run `archiver backfill` for its
portal into a fresh temporary state and archive, and measure the archiver process alone: wall
time, user+sys CPU and peak RSS (ru_maxrss from wait4), ListSessions calls (the simulator's
/_sim/stats) and rows archived (Parquet footers, when pyarrow is importable). Prints one table
of medians. Needs only the standard library; the release binary is built first unless
--no-build.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.join(REPO, "tests", "py"))
import archivelib  # noqa: E402

try:
    import pyarrow  # noqa: F401

    HAVE_PYARROW = True
except ImportError:
    HAVE_PYARROW = False

MIB = 1024 * 1024


def log(msg: str) -> None:
    print(f"backfill_memory: {msg}", file=sys.stderr, flush=True)


def aws_env(endpoint: str) -> dict[str, str]:
    # Nothing from the caller's AWS setup may leak in (profiles, real endpoints, tokens).
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL_WORKSPACES_WEB=endpoint,
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


class Simulator:
    """`archiver simulator` in the background; its first stdout line says where it listens."""

    def __init__(self, binary: str, sim_args: list[str], log_path: str, timeout: float):
        """Start `binary simulator *sim_args`; wait up to `timeout` s for its address."""
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "simulator", *sim_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"simulator printed nothing within {timeout:.0f}s (log: {log_path})")
        if not line:
            self.stop()
            raise RuntimeError(f"simulator exited with {self.proc.returncode} before listening (log: {log_path})")
        info = json.loads(line)
        self.endpoint: str = info["endpoint"]
        self.portal_ids: list[str] = info["portal_ids"]

    def list_sessions_calls(self) -> int | None:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/_sim/stats", timeout=10) as r:
                return int(json.load(r)["list_sessions_calls"])
        except Exception as e:  # noqa: BLE001 - a missing number, not a failed run
            log(f"cannot read {self.endpoint}/_sim/stats: {e}")
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run_once(binary: str, sessions: int, active: int, timeout: float, keep: bool, extra: list[str]) -> dict:
    tmp = tempfile.mkdtemp(prefix=f"archiver-bench-{sessions}-")
    ok = False
    try:
        sim_args = ["--portals", "1", "--sessions-per-portal", str(sessions), "--active-per-portal", str(active)]
        sim = Simulator(binary, sim_args, os.path.join(tmp, "simulator.log"), timeout)
        try:
            if len(sim.portal_ids) != 1:
                raise RuntimeError(f"simulator reports portals {sim.portal_ids}, expected one")
            archive = os.path.join(tmp, "archive")
            argv = [
                binary,
                "--state",
                os.path.join(tmp, "state.db"),
                "--output",
                archive,
                *extra,
                "backfill",
                "--portal-id",
                sim.portal_ids[0],
            ]
            err_path = os.path.join(tmp, "archiver.log")
            with open(err_path, "wb") as err:
                start = time.monotonic()
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=aws_env(sim.endpoint))
                timer = threading.Timer(timeout, proc.kill)
                timer.start()
                try:
                    # wait4 reports this process's own rusage, peak RSS included.
                    _, status, usage = os.wait4(proc.pid, 0)
                finally:
                    timer.cancel()
                wall = time.monotonic() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                with open(err_path, "rb") as f:
                    tail = f.read()[-3000:].decode(errors="replace")
                raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}:\n{tail}")
            calls = sim.list_sessions_calls()
        finally:
            sim.stop()
        rows = archivelib.count_rows(archive) if HAVE_PYARROW else None
        ok = True
        return {
            "wall": wall,
            "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mib": usage.ru_maxrss * 1024 / MIB,  # ru_maxrss is KiB on Linux
            "calls": calls,
            "rows": rows,
        }
    finally:
        if keep or not ok:
            log(f"kept {tmp} (logs, state, archive)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def same_or_range(values: list) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    lo, hi = min(known), max(known)
    return f"{lo}" if lo == hi else f"{lo}..{hi}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", default="50000,250000", help="comma-separated backfill sizes (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size; the table shows medians (default %(default)s)")
    ap.add_argument("--active", type=int, default=20, help="active sessions in the portal (default %(default)s)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "archiver"))
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per run (default %(default)s)")
    ap.add_argument("--limit-mib", type=float, default=128, help="peak RSS target (default %(default)s)")
    ap.add_argument("--check", action="store_true", help="exit 1 if any run's peak RSS exceeds --limit-mib")
    ap.add_argument("--keep", action="store_true", help="keep each run's temporary folder (logs, state, archive)")
    ap.add_argument(
        "--archiver-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra global option for the archiver, e.g. --archiver-arg=--flush-rows=10000 (repeatable)",
    )
    args = ap.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sessions.split(",") if s.strip()]
    if not sizes or args.repeat < 1:
        ap.error("need at least one size and --repeat >= 1")

    if not args.no_build:
        log("cargo build --release")
        subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True)
    if not os.access(args.binary, os.X_OK):
        log(f"no executable {args.binary}; build it with `cargo build --release`")
        return 1
    if not HAVE_PYARROW:
        log("pyarrow is not importable here: the rows column is skipped")

    results: dict[int, list[dict]] = {}
    for n in sizes:
        for i in range(args.repeat):
            try:
                r = run_once(args.binary, n, args.active, args.timeout, args.keep, args.archiver_arg)
            except RuntimeError as e:
                log(f"{n} sessions, run {i + 1}: FAILED: {e}")
                return 1
            results.setdefault(n, []).append(r)
            log(
                f"{n} sessions, run {i + 1}/{args.repeat}: {r['wall']:.2f}s wall, {r['cpu']:.2f}s CPU, "
                f"{r['rss_mib']:.1f} MiB peak RSS, {r['calls']} ListSessions calls"
                + ("" if r["rows"] is None else f", {r['rows']} rows")
            )

    header = [
        "sessions",
        "median wall s",
        "median CPU s",
        "CPU s per 1M sessions",
        "median peak RSS MiB",
        "max peak RSS MiB",
        "ListSessions calls",
        "rows",
    ]
    body = []
    worst = 0.0
    for n, runs in results.items():
        cpu = statistics.median(r["cpu"] for r in runs)
        worst = max(worst, max(r["rss_mib"] for r in runs))
        body.append(
            [
                f"{n}",
                f"{statistics.median(r['wall'] for r in runs):.2f}",
                f"{cpu:.2f}",
                f"{cpu / n * 1_000_000:.2f}",
                f"{statistics.median(r['rss_mib'] for r in runs):.1f}",
                f"{max(r['rss_mib'] for r in runs):.1f}",
                same_or_range([r["calls"] for r in runs]),
                same_or_range([r["rows"] for r in runs]) if HAVE_PYARROW else "-",
            ]
        )
    print(f"backfill of one portal, {args.repeat} run(s) per size, {os.cpu_count()} CPUs, {args.binary}")
    print(table(body, header))
    verdict = "within" if worst <= args.limit_mib else "OVER"
    print(f"max peak RSS {worst:.1f} MiB: {verdict} the {args.limit_mib:g} MiB target")
    return 1 if args.check and worst > args.limit_mib else 0


if __name__ == "__main__":
    sys.exit(main())
