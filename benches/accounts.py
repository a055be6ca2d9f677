#!/usr/bin/env python3
"""What archiving many accounts costs: the same portals in one account, or spread over N
accounts reached through STS AssumeRole.

    benches/accounts.py [--n 1,10,50] [--sessions 50] [--latency-ms 50] [--repeat 3] [--no-build]
                        [--regions 1] [--portals M] [--with-portals K]

For each N and each repetition, three configurations, each against a fresh `archiver
simulator` (seed 7, M portals of --sessions sessions, none Active, --latency-ms, --regions R
regions) and a fresh temporary state and archive. M is --portals, by default N x R: one
portal in each account and region.

- own: every portal in the simulator's home account; `archiver run`, no account options;
- accounts: the simulator with `--accounts` of N accounts (the home account 123456789012
  first, then generated 12-digit ids), the portals in the first K of them
  (`--accounts-with-portals K`, --with-portals, default all N): portal k in region k mod R and
  account (k div R) mod K; `archiver run --accounts <all N> --account-role archiver-read`;
- organization: the same simulator; `archiver run --organization --account-role archiver-read`
  (Organizations ListAccounts lists the home, management, account first: it is one of the N,
  so every listed account can be assumed).

Each run is measured alone with os.wait4 (wall time, user+sys CPU, peak RSS); the calls come
from the simulator's /_sim/stats (AssumeRole, ListAccounts, ListPortals, ListSessions). A run
must exit 0 with every account reached and N x --sessions rows written (its --summary-json).
The simulator's --latency-ms delays WorkSpaces Web calls only (ListPortals, ListSessions,
GetSession); it answers STS and Organizations at once. Prints the setup, a table of medians
per N and configuration, and the per-account overhead, (accounts - own) / N and
(organization - own) / N.

Needs only the standard library; reuses benches/backfill_memory.py's helpers. Builds the
release binary first unless --no-build (into $CARGO_TARGET_DIR when set, where the default
--binary is looked for too).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# backfill_memory imports pyarrow when it can; keep it out of this process: a child's peak RSS
# starts at its parent's peak.
sys.modules.setdefault("pyarrow", None)  # type: ignore[arg-type]
from backfill_memory import MIB, Simulator, aws_env, same_or_range, table  # noqa: E402

SEED = 7
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2", "us-west-2", "eu-central-1", "ap-northeast-1"]
HOME = "123456789012"  # the simulator's home (management) account; the job's own keys
ROLE = "archiver-read"
MODES = ["own", "accounts", "organization"]
CALLS = [
    ("assume_role_calls", "AssumeRole"),
    ("list_accounts_calls", "ListAccounts"),
    ("list_portals_calls", "ListPortals"),
    ("list_sessions_calls", "ListSessions"),
]


def log(msg: str) -> None:
    print(f"accounts: {msg}", file=sys.stderr, flush=True)


def account_ids(n: int) -> list[str]:
    """N distinct 12-digit ids, the home account first (ListAccounts lists it with the members)."""
    return [HOME] + [f"{210000000000 + 1000 * i:012d}" for i in range(1, n)]


def portals_of(args, n: int) -> int:
    """The portals of a run over N accounts: --portals, or one per account and region."""
    return args.portals or n * args.regions


def stats(endpoint: str) -> dict:
    with urllib.request.urlopen(f"{endpoint}/_sim/stats", timeout=10) as r:
        return json.load(r)


def one_run(args, mode: str, n: int) -> dict:
    """A fresh simulator and folder, one `archiver run`, measured alone; the simulator's calls."""
    tmp = tempfile.mkdtemp(prefix=f"archiver-accounts-{mode}-{n}-")
    ok = False
    try:
        ids = account_ids(n)
        portals = portals_of(args, n)
        sim_args = [
            "--seed", str(SEED), "--portals", str(portals), "--sessions-per-portal", str(args.sessions),
            "--active-per-portal", "0", "--latency-ms", str(args.latency_ms),
        ]
        if args.regions > 1:
            sim_args += ["--regions", ",".join(REGIONS[: args.regions])]
        if mode != "own":
            sim_args += ["--accounts", ",".join(ids)]
            if args.with_portals:
                sim_args += ["--accounts-with-portals", str(args.with_portals)]
        sim = Simulator(args.binary, sim_args, os.path.join(tmp, "simulator.log"), args.timeout)
        try:
            if len(sim.portal_ids) != portals:
                raise RuntimeError(f"simulator reports {len(sim.portal_ids)} portals, expected {portals}")
            env = aws_env(sim.endpoint)
            env.update(AWS_ENDPOINT_URL_STS=sim.endpoint, AWS_ENDPOINT_URL_ORGANIZATIONS=sim.endpoint)
            summary_path = os.path.join(tmp, "summary.json")
            argv = [
                args.binary, "--state", os.path.join(tmp, "state.db"), "--output", os.path.join(tmp, "archive"),
                "--summary-json", summary_path, *args.extra,
            ]
            if args.regions > 1:
                argv += ["--region", ",".join(REGIONS[: args.regions])]
            if mode == "accounts":
                argv += ["--accounts", ",".join(ids), "--account-role", ROLE]
            elif mode == "organization":
                argv += ["--organization", "--account-role", ROLE]
            argv.append("run")
            err_path = os.path.join(tmp, "archiver.log")
            with open(err_path, "wb") as err:
                start = time.monotonic()
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
                timer = threading.Timer(args.timeout, proc.kill)
                timer.start()
                try:
                    _, status, usage = os.wait4(proc.pid, 0)  # this process's own rusage
                finally:
                    timer.cancel()
                wall = time.monotonic() - start
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                with open(err_path, "rb") as f:
                    tail = f.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"archiver run ({mode}, N={n}) exited with {code}:\n{tail}")
            s = stats(sim.endpoint)
        finally:
            sim.stop()
        with open(summary_path) as f:
            totals = json.load(f)["totals"]
        want = portals * args.sessions
        rows, accounts_failed, failed = (totals.get(k, 0) for k in ("rows_written", "accounts_failed", "failed"))
        if rows != want or accounts_failed or failed:
            raise RuntimeError(
                f"archiver run ({mode}, N={n}): {rows} rows (expected {want}), "
                f"{accounts_failed} accounts and {failed} portals failed"
            )
        if s.get("client_errors") or s.get("throttled") or s.get("server_errors"):
            log(
                f"{mode}, N={n}: the simulator answered {s.get('client_errors')} client errors, "
                f"{s.get('throttled')} throttles, {s.get('server_errors')} server errors"
            )
        r = {
            "wall": wall,
            "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mib": usage.ru_maxrss * 1024 / MIB,  # ru_maxrss is KiB on Linux
        }
        for key, _ in CALLS:
            r[key] = int(s.get(key, 0))
        ok = True
        return r
    finally:
        if args.keep or not ok:
            log(f"kept {tmp} (logs, state, archive)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def git_head() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True)
        return head.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def main() -> int:
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="1,10,50", help="comma-separated numbers of portals / accounts (default %(default)s)")
    ap.add_argument("--sessions", type=int, default=50, help="sessions per portal (default %(default)s)")
    ap.add_argument("--regions", type=int, default=1, help=f"regions, the first R of {','.join(REGIONS)} (default %(default)s)")
    ap.add_argument("--portals", type=int, default=0, help="portals in all (default: N x --regions, one per account and region)")
    ap.add_argument("--with-portals", type=int, default=0, help="accounts holding the portals, the first K (default: all N)")
    ap.add_argument("--latency-ms", type=int, default=50, help="simulator delay per WorkSpaces Web call (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration; tables show medians (default %(default)s)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of own,accounts,organization (default all)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--binary", default=os.path.join(target, "release", "archiver"), help="default: %(default)s")
    ap.add_argument("--extra", default="", help="further archiver options for every run, e.g. '--concurrency 16'")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed per run (default %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep each run's temporary folder")
    args = ap.parse_args()
    args.extra = shlex.split(args.extra)
    ns = [int(x.replace("_", "")) for x in args.n.split(",") if x]
    modes = [m for m in args.modes.split(",") if m]
    if not ns or min(ns) < 1 or args.sessions < 1 or args.repeat < 1 or args.latency_ms < 0 or not set(modes) <= set(MODES):
        ap.error("need --n values >= 1, --sessions and --repeat >= 1, --latency-ms >= 0, modes among own,accounts,organization")
    if not 1 <= args.regions <= len(REGIONS) or args.portals < 0 or args.with_portals < 0:
        ap.error(f"need 1 <= --regions <= {len(REGIONS)}, --portals and --with-portals >= 0")

    if not args.no_build:
        log("cargo build --release --bin archiver")
        subprocess.run(["cargo", "build", "--release", "--bin", "archiver"], cwd=REPO, check=True)
    if not os.access(args.binary, os.X_OK):
        log(f"no executable {args.binary}; build with `cargo build --release --bin archiver` or pass --binary")
        return 1

    results: dict[tuple[int, str], list[dict]] = {}
    started = time.monotonic()
    for n in ns:
        for i in range(args.repeat):
            for mode in modes:  # interleaved, so drift on a shared machine hits all alike
                try:
                    r = one_run(args, mode, n)
                except RuntimeError as e:
                    log(f"FAILED: {e}")
                    return 1
                results.setdefault((n, mode), []).append(r)
                calls = ", ".join(f"{r[k]} {label}" for k, label in CALLS)
                log(
                    f"N={n} {mode}, run {i + 1}/{args.repeat}: {r['wall']:.2f}s wall, {r['cpu']:.3f}s CPU, "
                    f"{r['rss_mib']:.1f} MiB, {calls}"
                )
    elapsed = time.monotonic() - started

    cmd = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    parent_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB
    print(f"`{cmd}` (commit {git_head()}, {args.binary})")
    spread = "one portal in each account" + (f" and region ({args.regions} regions)" if args.regions > 1 else "")
    if args.portals or args.with_portals:
        spread = (
            f"{args.portals or 'N x ' + str(args.regions)} portals in "
            f"{'the first ' + str(args.with_portals) if args.with_portals else 'all'} of the N accounts"
            + (f", {args.regions} regions" if args.regions > 1 else "")
        )
    print(
        f"Portals of {args.sessions} sessions (none Active); own: the same portals in one account; accounts / "
        f"organization: N accounts, {spread}, `--account-role {ROLE}`"
        + (f"; archiver options `{' '.join(args.extra)}`" if args.extra else "")
        + "."
    )
    print(
        f"Simulator --latency-ms {args.latency_ms} on WorkSpaces Web calls only (ListPortals, ListSessions, "
        f"GetSession); STS AssumeRole and Organizations ListAccounts answer at once."
    )
    print(
        f"Medians of {args.repeat} run(s) each, fresh simulator, state and archive per run; {os.cpu_count()} CPUs; "
        f"{elapsed:.0f} s in all; peak RSS never reads below this script's own {parent_mib:.1f} MiB."
    )
    print()
    body = []
    for (n, mode), runs in results.items():
        body.append(
            [
                str(n),
                mode,
                f"{median(runs, 'wall'):.2f}",
                f"{median(runs, 'cpu'):.3f}",
                f"{median(runs, 'rss_mib'):.1f}",
                *(same_or_range([r[k] for r in runs]) for k, _ in CALLS),
            ]
        )
    print(table(body, ["N", "config", "wall s", "CPU s", "peak RSS MiB", *(label for _, label in CALLS)]))

    if "own" not in modes or len(modes) < 2:
        return 0
    print()
    print("Per-account overhead: (config - own) / N, medians of each; calls from the medians of their counts.")
    print()
    body = []
    for n in ns:
        own = results[(n, "own")]
        for mode in modes:
            if mode == "own":
                continue
            runs = results[(n, mode)]
            per = lambda key: (median(runs, key) - median(own, key)) / n  # noqa: E731
            body.append(
                [
                    str(n),
                    mode,
                    f"{per('wall'):.3f}",
                    f"{per('cpu') * 1000:.1f}",
                    f"{per('rss_mib'):.2f}",
                    *(f"{per(k):.2f}" for k, _ in CALLS),
                ]
            )
    print(
        table(
            body,
            ["N", "config", "wall s / account", "CPU ms / account", "RSS MiB / account", *(f"{label} / account" for _, label in CALLS)],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
