#!/usr/bin/env python3
"""What S3 Object Lock costs in S3 requests, per flush and per file, against an unlocked output.

    benches/worm_cost.py [--sessions 3000] [--flush-rows 300] [--binary PATH]

Each set-up gets a fresh simulator (one portal, no Active sessions) and a fresh moto S3 server
on 127.0.0.1, then `archiver backfill` of the portal with the state in s3://ops/state.db:

- unlocked:        --output s3://archive/ws, a bucket without Object Lock (staging under it)
- locked-default:  --output s3://locked/ws, Object Lock with a default retention (governance,
                   1 day); files staged in the state's folder of s3://ops
- locked-explicit: the same bucket with --retain-for 400d --lock-mode compliance

Requests are counted from moto's own access log (method, bucket, operation), so the count is
what reached the server, retries included. They are split into the output bucket, staging (the
other bucket, state excluded) and the state (its object and its lease, uploaded at every
commit in every set-up). It prints one table of requests per flush and per file, and one of
the operations that make up the difference. Run it from the test venv (it has moto):

    ~/.cache/archiver/test-venv/bin/python benches/worm_cost.py
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benches"))
from backfill_memory import Simulator, aws_env  # noqa: E402
from s3_cost import measure, s3, start_moto  # noqa: E402

# moto colours the lines of some answers (deletes, errors) with ANSI escapes.
LINE = re.compile(rb'"(?:\x1b\[[0-9;]*m)*(GET|PUT|POST|DELETE|HEAD) /([^/? ]+)(/[^? ]*)?(\?[^ ]*)? HTTP/1\.1[^"]*" (\d+)')


def operation(method: str, key: str, query: str) -> str:
    q = query.lstrip("?")
    params = dict(p.split("=", 1) if "=" in p else (p, "") for p in q.split("&") if p)
    if "x-id" in params:
        name = params["x-id"]
        return f"{name}(version)" if name == "DeleteObject" and "versionId" in params else name
    if method == "GET" and not key:
        for flag, name in [
            ("object-lock", "GetObjectLockConfiguration"),
            ("versions", "ListObjectVersions"),
            ("uploads", "ListMultipartUploads"),
            ("list-type", "ListObjectsV2"),
        ]:
            if flag in params:
                return name
        return "ListObjects"
    if method == "HEAD":
        return "HeadObject" if key else "HeadBucket"
    if method == "POST" and "uploads" in params:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in params:
        return "CompleteMultipartUpload"
    return {"GET": "GetObject", "PUT": "PutObject", "DELETE": "DeleteObject"}[method]


def count(log_path: str) -> collections.Counter:
    """(place, operation) -> requests, from moto's access log."""
    out: collections.Counter = collections.Counter()
    with open(log_path, "rb") as f:
        for m in LINE.finditer(f.read()):
            method, bucket, key, query = (g.decode() if g else "" for g in m.groups()[:4])
            key = key.lstrip("/")
            if bucket == "ops" and key.startswith("state.db"):
                place = "state"
            elif bucket == "ops":
                place = "staging"
            else:
                place = "output"
            out[(place, operation(method, key, query))] += 1
    return out


def one(binary: str, setup: str, sessions: int, flush_rows: int, work: str) -> dict:
    sim = Simulator(
        binary,
        ["--portals", "1", "--sessions-per-portal", str(sessions), "--active-per-portal", "0"],
        os.path.join(work, "sim.log"),
        120,
    )
    moto_log = os.path.join(work, "moto.log")
    moto, endpoint = start_moto(moto_log)
    try:
        c = s3(endpoint)
        c.create_bucket(Bucket="ops")
        bucket = "archive" if setup == "unlocked" else "locked"
        if setup == "unlocked":
            c.create_bucket(Bucket=bucket)
        else:
            c.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
            c.put_object_lock_configuration(
                Bucket=bucket,
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
                },
            )
        before = count(moto_log)
        env = aws_env(sim.endpoint)
        env["AWS_ENDPOINT_URL_S3"] = endpoint
        env["TMPDIR"] = work
        cmd = [binary, "--state", "s3://ops/state.db", "--output", f"s3://{bucket}/ws", "--flush-rows", str(flush_rows)]
        if setup == "locked-explicit":
            cmd += ["--retain-for", "400d", "--lock-mode", "compliance"]
        run = measure(cmd + ["backfill", "--portal-id", sim.portal_ids[0]], env)
        calls = count(moto_log) - before
        keys = [o["Key"] for p in c.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in p.get("Contents", [])]
        flushes = sum(1 for k in keys if "/_manifest/" in k)
        files = sum(1 for k in keys if k.endswith(".parquet"))
        return {"calls": calls, "flushes": flushes, "files": files, "cpu": run["cpu"]}
    finally:
        sim.stop()
        moto.kill()
        moto.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=3000)
    ap.add_argument("--flush-rows", type=int, default=300)
    ap.add_argument("--binary", help="an archiver binary (default: a release build, built now)")
    a = ap.parse_args()
    binary = a.binary
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "--bin", "archiver"], cwd=REPO, check=True)
        binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release", "archiver")
    setups = ["unlocked", "locked-default", "locked-explicit"]
    results = {}
    for setup in setups:
        work = tempfile.mkdtemp(prefix=f"wormcost-{setup}-")
        try:
            results[setup] = one(binary, setup, a.sessions, a.flush_rows, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{a.sessions:,} sessions, 1 portal, --flush-rows {a.flush_rows:,}, state in S3; S3 requests counted by moto\n")
    print("| set-up | flushes | files | output calls | staging calls | state calls | all calls | per flush | per file (output + staging) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in setups:
        r = results[s]
        by = collections.Counter()
        for (place, _), n in r["calls"].items():
            by[place] += n
        total = sum(by.values())
        print(
            f"| {s} | {r['flushes']} | {r['files']} | {by['output']} | {by['staging']} | {by['state']} | {total} "
            f"| {total / max(r['flushes'], 1):.1f} | {(by['output'] + by['staging']) / max(r['files'], 1):.2f} |"
        )
    ops = sorted({k for r in results.values() for k in r["calls"]})
    print("\n| place | operation | " + " | ".join(setups) + " |")
    print("|---|---|" + "---:|" * len(setups))
    for place, op in ops:
        print(f"| {place} | {op} | " + " | ".join(str(results[s]["calls"].get((place, op), 0)) for s in setups) + " |")


if __name__ == "__main__":
    main()
