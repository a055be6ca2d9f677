#!/usr/bin/env python3
"""CPU of several builds side by side: backfills of one portal against one simulator, the
contenders interleaved round by round (so drift on a shared machine hits all alike), each
measured alone with wait4 (user + system CPU). Compares a change with the build before it, and
either with the floor (examples/floor.rs).

    benches/ab.py --sessions 200000 --rounds 7 \
        before=/tmp/old/target/release/archiver after=target/release/archiver \
        floor=target/release/examples/floor

A contender whose name contains "floor" is run as the floor; the others as
`archiver backfill` into a fresh state and output. The last contender is the ratio's base.
Every run must exit 0. Prints one Markdown table.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--simulator", default="target/release/archiver",
                    help="the archiver binary whose `simulator` serves the runs")
    ap.add_argument("contenders", nargs="+", metavar="NAME=BINARY")
    a = ap.parse_args()
    contenders = [c.split("=", 1) for c in a.contenders]
    sim = subprocess.Popen(
        [a.simulator, "simulator", "--seed", "7", "--portals", "1",
         "--sessions-per-portal", str(a.sessions), "--active-per-portal", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        info = json.loads(sim.stdout.readline())
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AWS_REGION": "us-east-1",
               "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_EC2_METADATA_DISABLED": "true",
               "AWS_ENDPOINT_URL_WORKSPACES_WEB": info["endpoint"]}
        portal = info["portal_ids"][0]
        cpu = {name: [] for name, _ in contenders}
        for _ in range(a.rounds):
            for name, path in contenders:
                d = tempfile.mkdtemp(prefix="ab-")
                if "floor" in name:
                    args = [path, "--portal-id", portal, "--out", d + "/out"]
                else:
                    args = [path, "--state", d + "/state.db", "--output", d + "/out",
                            "backfill", "--portal-id", portal]
                p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                _, status, ru = os.wait4(p.pid, 0)
                shutil.rmtree(d)
                if status != 0:
                    raise SystemExit(f"ab: {name} exited with status {status}")
                cpu[name].append(ru.ru_utime + ru.ru_stime)
    finally:
        sim.terminate()
    base = statistics.median(cpu[contenders[-1][0]])
    print(f"| {a.sessions:,} sessions, {a.rounds} interleaved rounds | median CPU s | min | max"
          f" | ratio to {contenders[-1][0]} |")
    print("|---|---:|---:|---:|---:|")
    for name, _ in contenders:
        m = statistics.median(cpu[name])
        print(f"| {name} | {m:.3f} | {min(cpu[name]):.3f} | {max(cpu[name]):.3f} | {m / base:.2f} |")


if __name__ == "__main__":
    main()
