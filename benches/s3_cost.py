#!/usr/bin/env python3
"""What S3 costs next to local disk, for the same backfill.

    benches/s3_cost.py [--sessions 100000] [--repeat 3] [--flush-rows 100000] [--no-build]

For each repetition and each set-up, a fresh simulator (`archiver simulator --portals 1`,
no Active sessions) and a fresh moto S3 server (`moto_server`, from the test venv's PATH)
on 127.0.0.1, then `archiver backfill` of the portal with:

- local:     --state DIR/state.db     --output DIR/archive
- s3-output: --state DIR/state.db     --output s3://bench/archive
- s3-both:   --state s3://bench/state.db --output s3://bench/archive

and then one incremental `run` after 500 new sessions. It reports the archiver process alone
(wait4: wall, user+sys CPU, peak RSS), the size of the state (the local file, or the S3 object
after the run: what every checkpoint uploads) and the number of Parquet objects. moto is a
Python server, so wall times with S3 measure moto as much as archiver; CPU and RSS are
archiver's own. Run it from the test venv (it has moto):

    ~/.cache/archiver/test-venv/bin/python benches/s3_cost.py
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benches"))
from backfill_memory import Simulator, aws_env, MIB  # noqa: E402


def start_moto(log_path: str) -> tuple[subprocess.Popen, str]:
    log = open(log_path, "w+b")
    proc = subprocess.Popen(
        ["moto_server", "-H", "127.0.0.1", "-p", "0"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        log.seek(0)
        m = re.search(rb"http://127\.0\.0\.1:(\d+)", log.read())
        if m:
            return proc, f"http://127.0.0.1:{m.group(1).decode()}"
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto_server did not start")


def s3(endpoint: str):
    import boto3  # the test venv has it

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def measure(cmd: list[str], env: dict[str, str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode()[-3000:]}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss": ru.ru_maxrss * 1024}


def one(binary: str, setup: str, sessions: int, flush_rows: int, work: str) -> dict:
    sim = Simulator(
        binary,
        ["--portals", "1", "--sessions-per-portal", str(sessions), "--active-per-portal", "0"],
        os.path.join(work, "sim.log"),
        120,
    )
    moto, endpoint = start_moto(os.path.join(work, "moto.log"))
    try:
        client = s3(endpoint)
        client.create_bucket(Bucket="bench")
        env = aws_env(sim.endpoint)
        env["AWS_ENDPOINT_URL_S3"] = endpoint
        env["TMPDIR"] = work
        state = os.path.join(work, "state.db") if setup != "s3-both" else "s3://bench/state.db"
        output = os.path.join(work, "archive") if setup == "local" else "s3://bench/archive"
        base = [binary, "--state", state, "--output", output, "--flush-rows", str(flush_rows)]
        portal = sim.portal_ids[0]
        back = measure(base + ["backfill", "--portal-id", portal], env)
        urllib.request.urlopen(
            urllib.request.Request(
                f"{sim.endpoint}/_sim/activity",
                data=f'{{"portal_id": "{portal}", "new_sessions": 500, "new_active": 0, "end_active": 0}}'.encode(),
                method="POST",
                headers={"content-type": "application/json"},
            )
        ).read()
        inc = measure(base + ["run"], env)
        if setup == "s3-both":
            state_bytes = client.head_object(Bucket="bench", Key="state.db")["ContentLength"]
        else:
            state_bytes = os.path.getsize(state)
        if setup == "local":
            files = sum(
                1 for _, _, fs in os.walk(os.path.join(work, "archive", "sessions")) for f in fs if f.endswith(".parquet")
            )
        else:
            files = 0
            for page in client.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="archive/sessions/"):
                files += sum(1 for o in page.get("Contents", []) if o["Key"].endswith(".parquet"))
        return {"backfill": back, "incremental": inc, "state_bytes": state_bytes, "files": files}
    finally:
        sim.stop()
        moto.kill()
        moto.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--flush-rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "archiver"], cwd=REPO, check=True)
    binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release", "archiver")
    setups = ["local", "s3-output", "s3-both"]
    results: dict[str, list[dict]] = {s: [] for s in setups}
    for r in range(a.repeat):
        for setup in setups:  # interleaved: drift on a shared machine hits all alike
            work = tempfile.mkdtemp(prefix=f"s3cost-{setup}-")
            try:
                results[setup].append(one(binary, setup, a.sessions, a.flush_rows, work))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(f"s3_cost: run {r + 1}/{a.repeat} {setup} done", file=sys.stderr, flush=True)
    med = lambda xs: statistics.median(xs)  # noqa: E731
    print(f"\n{a.sessions:,} sessions, 1 portal, --flush-rows {a.flush_rows:,}; medians of {a.repeat} runs\n")
    print("| set-up | backfill wall s | backfill CPU s | peak RSS MiB | incremental wall s | incremental CPU s | state bytes | parquet files |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in setups:
        rs = results[s]
        print(
            f"| {s} | {med([x['backfill']['wall'] for x in rs]):.2f} | {med([x['backfill']['cpu'] for x in rs]):.2f} "
            f"| {med([x['backfill']['rss'] for x in rs]) / MIB:.1f} | {med([x['incremental']['wall'] for x in rs]):.2f} "
            f"| {med([x['incremental']['cpu'] for x in rs]):.2f} | {med([x['state_bytes'] for x in rs]):,.0f} "
            f"| {med([x['files'] for x in rs]):.0f} |"
        )


if __name__ == "__main__":
    main()
