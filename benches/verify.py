#!/usr/bin/env python3
"""Cost of `archiver verify` and `verify --offline` next to the backfill of the same sessions
(the targets: at 1,000,000 sessions in one portal, each verify's peak RSS within 128 MiB; CPU
within 2x the backfill's for `verify`, within 1x for `verify --offline`).

    benches/verify.py [--sessions 1000000] [--no-build] [--binary PATH]

Starts `archiver simulator --portals 1 --sessions-per-portal N --active-per-portal 20` on
127.0.0.1, makes a signing key (`archiver keygen`) and its public key (`archiver public-key`),
backfills the portal into a fresh temporary state and archive with `--sign-key`, then runs
`archiver verify --json` and `archiver verify --offline --public-key` on it, measuring each
archiver process alone with wait4: wall time, user+sys CPU and peak RSS. Checks that both
found the archive intact (exit 0, every listed session archived) and prints one table and the
CPU ratios. Needs only the standard library; the release binary is built first unless
--no-build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backfill_memory import Simulator, aws_env, table  # noqa: E402

MIB = 1024 * 1024


def log(msg: str) -> None:
    print(f"verify: {msg}", file=sys.stderr, flush=True)


def measure(argv: list[str], env: dict[str, str], out_path: str, err_path: str, timeout: float) -> dict:
    """Run `argv` to its end; its exit code, wall time, CPU and peak RSS (from wait4)."""
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
    return {
        "code": os.waitstatus_to_exitcode(status),
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss * 1024 / MIB,  # ru_maxrss is KiB on Linux
    }


def tail(path: str) -> str:
    with open(path, "rb") as f:
        return f.read()[-3000:].decode(errors="replace")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=lambda s: int(s.replace("_", "")), default=1_000_000)
    ap.add_argument("--active", type=int, default=20, help="active sessions in the portal (default %(default)s)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "archiver"))
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed per command (default %(default)s)")
    ap.add_argument("--limit-mib", type=float, default=128, help="peak RSS target of verify (default %(default)s)")
    ap.add_argument("--max-cpu-ratio", type=float, default=2.0, help="verify CPU / backfill CPU target (default %(default)s)")
    ap.add_argument("--max-offline-ratio", type=float, default=1.0, help="verify --offline CPU / backfill CPU target (default %(default)s)")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, state, archive)")
    args = ap.parse_args()

    if not args.no_build:
        log("cargo build --release")
        subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True)
    if not os.access(args.binary, os.X_OK):
        log(f"no executable {args.binary}; build it with `cargo build --release`")
        return 1

    n = args.sessions
    tmp = tempfile.mkdtemp(prefix=f"archiver-verify-{n}-")
    ok = False
    try:
        sim_args = ["--portals", "1", "--sessions-per-portal", str(n), "--active-per-portal", str(args.active)]
        sim = Simulator(args.binary, sim_args, os.path.join(tmp, "simulator.log"), 600)
        try:
            portal = sim.portal_ids[0]
            env = aws_env(sim.endpoint)
            key, public = os.path.join(tmp, "sign.pem"), os.path.join(tmp, "public.pem")
            for argv in [["keygen", "--out", key], ["public-key", "--sign-key", key, "--out", public]]:
                subprocess.run([args.binary, *argv], check=True, stdout=subprocess.DEVNULL, env=env)
            archive = os.path.join(tmp, "archive")
            base = [args.binary, "--state", os.path.join(tmp, "state.db"), "--output", archive]
            results = {}
            for step, argv in [
                ("backfill", [*base, "--sign-key", key, "backfill", "--portal-id", portal]),
                ("verify", [*base, "--sign-key", key, "verify", "--json", "--portal-id", portal]),
                ("verify --offline", [args.binary, "--output", archive, "verify", "--offline", "--json", "--public-key", public]),
            ]:
                name = step.replace(" --", "-")
                out, err = os.path.join(tmp, f"{name}.out"), os.path.join(tmp, f"{name}.log")
                r = measure(argv, env, out, err, args.timeout)
                if r["code"] != 0:
                    raise RuntimeError(f"{step} exited with {r['code']}:\n{tail(err)}")
                log(f"{step}: {r['wall']:.2f}s wall, {r['cpu']:.2f}s CPU, {r['rss_mib']:.1f} MiB peak RSS")
                results[step] = r
            with open(os.path.join(tmp, "verify.out")) as f:
                report = json.load(f)["portals"][0]
            if report["archived"] != report["listed"] - report["active"]:
                raise RuntimeError(f"verify's counts do not add up: {report}")
        finally:
            sim.stop()
        ok = True
    except RuntimeError as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        if args.keep or not ok:
            log(f"kept {tmp} (logs, state, archive)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    body = [
        [step, f"{r['wall']:.2f}", f"{r['cpu']:.2f}", f"{r['rss_mib']:.1f}"]
        for step, r in results.items()
    ]
    backfill_cpu = max(results["backfill"]["cpu"], 1e-9)
    print(f"{n} sessions in one portal ({report['listed']} listed, {report['archived']} archived), {os.cpu_count()} CPUs, {args.binary}")
    print(table(body, ["step", "wall s", "CPU s", "peak RSS MiB"]))
    missed = False
    for step, limit in [("verify", args.max_cpu_ratio), ("verify --offline", args.max_offline_ratio)]:
        ratio = results[step]["cpu"] / backfill_cpu
        rss = results[step]["rss_mib"]
        print(
            f"{step} CPU / backfill CPU: {ratio:.2f} ({'within' if ratio <= limit else 'OVER'} {limit:g}); "
            f"peak RSS {rss:.1f} MiB ({'within' if rss <= args.limit_mib else 'OVER'} {args.limit_mib:g} MiB)"
        )
        missed |= ratio > limit or rss > args.limit_mib
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
