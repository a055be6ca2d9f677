#!/usr/bin/env python3
"""The peer of the comparative benchmark (benches/compare.py): the script a user would write
instead of running archiver. A boto3 `workspaces-web` paginator over ListSessions (oldest
first, 100 per page) and pyarrow writing one zstd Parquet file every 100,000 rows, timestamps
as timestamp[ms, tz=UTC]. No state, no dedup, no partitioning, no resume.

    python benches/peer_boto3.py --portal-id ID --out DIR

Needs boto3 and pyarrow (the test venv has both: ~/.cache/archiver/test-venv/bin/python).
The endpoint, region and credentials come from the usual AWS environment, e.g.
AWS_ENDPOINT_URL_WORKSPACES_WEB for the simulator. Prints one JSON line:
{"pages": .., "rows": .., "files": ..}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

import boto3
import pyarrow as pa
import pyarrow.parquet as pq

FLUSH_ROWS = 100_000
TS = pa.timestamp("ms", tz="UTC")
SCHEMA = pa.schema(
    [
        pa.field("portal_arn", pa.string(), nullable=False),
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("username", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("start_time", TS, nullable=False),
        pa.field("end_time", TS),
        pa.field("archived_at", TS, nullable=False),
    ]
)


def write(out: str, seq: int, rows: list[dict]) -> None:
    archived_at = dt.datetime.now(dt.timezone.utc)
    table = pa.table(
        {
            "portal_arn": [r["portalArn"] for r in rows],
            "session_id": [r["sessionId"] for r in rows],
            "username": [r.get("username") for r in rows],
            "status": [r["status"] for r in rows],
            # boto3 parses the epoch-second timestamps into aware datetimes.
            "start_time": [r["startTime"] for r in rows],
            "end_time": [r.get("endTime") for r in rows],
            "archived_at": [archived_at] * len(rows),
        },
        schema=SCHEMA,
    )
    pq.write_table(table, os.path.join(out, f"part-{seq:05}.parquet"), compression="zstd")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portal-id", required=True)
    ap.add_argument("--out", required=True, help="folder for the Parquet files (created if missing)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    # botocore reads AWS_DEFAULT_REGION; the Rust SDK (and archiver) read AWS_REGION.
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    client = boto3.client("workspaces-web", region_name=region)
    paginator = client.get_paginator("list_sessions")
    rows: list[dict] = []
    pages = total = files = 0
    for page in paginator.paginate(
        portalId=args.portal_id,
        sortBy="StartTimeAscending",
        PaginationConfig={"PageSize": 100},
    ):
        pages += 1
        rows.extend(page.get("sessions", []))
        if len(rows) >= FLUSH_ROWS:
            write(args.out, files, rows)
            files += 1
            total += len(rows)
            rows = []
    if rows:
        write(args.out, files, rows)
        files += 1
        total += len(rows)
    print(json.dumps({"pages": pages, "rows": total, "files": files}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
