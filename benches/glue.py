#!/usr/bin/env python3
"""`--glue-table` across many portals: the Glue table kept as a portal list (partition
projection, `enum`) or as registered partitions, against moto's Glue.

    benches/glue.py [--portals 100,1000,5000] [--days 3] [--sessions 3] [--no-build]

Run it with the test venv's python (it has boto3 and moto_server):
~/.cache/archiver/test-venv/bin/python benches/glue.py ...

For each N, three designs, each with a fresh `archiver simulator` (seed 7, N portals of
--sessions sessions over --days days, none Active), a fresh moto server (Glue) holding the
table of sql/athena/create_table.sql, and a fresh local state and archive:

- portal_list: the table as create_table.sql makes it (partition projection, portal_id
  `injected`); `--glue-table` keeps its `enum` portal list;
- partitions: the same table with 'projection.enabled' = 'false'; `--glue-table` registers its
  partitions;
- migration: the portal_list table; the first run keeps the list, the second runs with
  `--glue-partitions` (it registers every partition of the archive, then turns projection off).

Two `archiver run`s each: the first archives everything (a backfill), then the simulator adds
one session on a new day to every 1/--share-th portal (`POST /_sim/activity`; most portals see
no session on a given day), and the second archives those (a nightly run). Each run must exit
0 with the rows expected (its --summary-json).

Measured per run: wall time and CPU of the whole run (os.wait4), and the Glue calls by type,
counted by a proxy between archiver and moto, with the time spent in them (the sum of their
durations as the proxy saw them: moto's time, not AWS's). After the second run: the table's
metadata (GetTable's JSON answer, bytes and gzipped bytes) and what a query for the newest day
across all portals reads: the locations Athena would list (portal_list: one per `enum` value;
partitions: those GetPartitions returns for `start_date = 'DAY'`) and how many of them hold a
file. Prints the setup and one table.

moto is a Python server: its time per call is not Glue's. Call counts and sizes are what they
would be against AWS. Builds the release binary first unless --no-build (into
$CARGO_TARGET_DIR when set, where the default --binary is looked for too).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.modules.setdefault("pyarrow", None)  # type: ignore[arg-type]
from backfill_memory import Simulator, aws_env, table  # noqa: E402
from s3_cost import start_moto  # noqa: E402

SEED = 7
DB, TABLE = "archive_db", "archiver_sessions"
LOCATION_ROOT = "s3://archive-bucket/archiver"
DESIGNS = ["portal_list", "partitions", "migration"]
DAY_MS = 86_400_000


def log(msg: str) -> None:
    print(f"glue: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the Glue proxy


class Calls:
    """What the proxy saw: per X-Amz-Target, the count and the seconds spent; the last GetTable
    answer's body."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.count: dict[str, int] = {}
            self.seconds = 0.0
            self.partitions_sent = 0
            self.last_get_table = b""

    def add(self, target: str, seconds: float, request: bytes, answer: bytes) -> None:
        with self.lock:
            self.count[target] = self.count.get(target, 0) + 1
            self.seconds += seconds
            if target == "BatchCreatePartition":
                self.partitions_sent += len(json.loads(request).get("PartitionInputList", []))
            if target == "GetTable":
                self.last_get_table = answer


def start_proxy(upstream: str, calls: Calls) -> tuple[http.server.ThreadingHTTPServer, str]:
    host, port = upstream.removeprefix("http://").split(":")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            target = self.headers.get("X-Amz-Target", "").removeprefix("AWSGlue.")
            start = time.perf_counter()
            conn = http.client.HTTPConnection(host, int(port), timeout=300)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            conn.request("POST", self.path, body=body, headers=headers)
            resp = conn.getresponse()
            answer = resp.read()
            calls.add(target, time.perf_counter() - start, body, answer)
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            conn.close()

        def log_message(self, *a) -> None:  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# ------------------------------------------------------------------ the table


def glue(endpoint: str):
    import boto3  # the test venv has it

    return boto3.client(
        "glue",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def table_input(projected: bool) -> dict:
    """The table of sql/athena/create_table.sql (columns, partition keys, location,
    TBLPROPERTIES), as Athena's DDL creates it in Glue."""
    with open(os.path.join(REPO, "sql", "athena", "create_table.sql")) as f:
        sql = f.read().replace("s3://YOUR-BUCKET/YOUR-PREFIX", LOCATION_ROOT)
    lines = [l.split("--")[0].strip() for l in sql.splitlines()]
    lines = [l for l in lines if l]

    def block(start: str) -> list[str]:
        i = next(i for i, l in enumerate(lines) if l.startswith(start) and l.endswith("("))
        out = []
        for l in lines[i + 1 :]:
            if l.startswith(")"):
                return out
            out.append(l)
        raise ValueError(start)

    def columns(start: str) -> list[dict]:
        return [
            {"Name": l.split(None, 1)[0], "Type": l.split(None, 1)[1].rstrip(",").strip()}
            for l in block(start)
        ]

    params = {}
    for l in block("TBLPROPERTIES"):
        k, v = l.rstrip(",").split("=", 1)
        params[k.strip().strip("'")] = v.strip().strip("'")
    params["EXTERNAL"] = "TRUE"
    if not projected:
        params["projection.enabled"] = "false"
    location = next(l for l in lines if l.startswith("LOCATION ")).split(None, 1)[1].strip("'")
    return {
        "Name": TABLE,
        "TableType": "EXTERNAL_TABLE",
        "PartitionKeys": columns("PARTITIONED BY"),
        "Parameters": params,
        "StorageDescriptor": {
            "Columns": columns("CREATE EXTERNAL TABLE"),
            "Location": location,
            "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "SerdeInfo": {
                "SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                "Parameters": {"serialization.format": "1"},
            },
        },
    }


# ------------------------------------------------------------------ one design


def sim_post(endpoint: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{endpoint}{path}", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def new_day(endpoint: str, portals: list[str]) -> None:
    """One session in each of `portals`, all starting on the day after the history (from 01:00
    UTC), then ended. Added Active, each moves the simulator's clock by at most 30 s (an
    ended one would move it past its end, up to 20 minutes)."""
    with urllib.request.urlopen(f"{endpoint}/_sim/info", timeout=60) as r:
        now = json.load(r)["now_ms"]
    start = (now // DAY_MS + 1) * DAY_MS + 3_600_000
    sim_post(endpoint, "/_sim/advance", {"seconds": (start - now) / 1000})
    for p in portals:
        sim_post(endpoint, "/_sim/activity", {"portalId": p, "newSessions": 1, "newActive": 1})
    sim_post(endpoint, "/_sim/activity", {"endActive": 1})
    with urllib.request.urlopen(f"{endpoint}/_sim/info", timeout=60) as r:
        end = json.load(r)["now_ms"]
    if end // DAY_MS != start // DAY_MS:
        raise RuntimeError(f"the new sessions span more than a day ({start} to {end}): lower --share")


def archive_partitions(archive: str) -> set[tuple[str, str]]:
    """(portal, day) of every partition folder holding a .parquet file."""
    out = set()
    root = os.path.join(archive, "sessions")
    for p in os.listdir(root):
        for d in os.listdir(os.path.join(root, p)):
            if any(f.endswith(".parquet") for f in os.listdir(os.path.join(root, p, d))):
                out.add((p.removeprefix("portal_id="), d.removeprefix("start_date=")))
    return out


def one_design(args, n: int, design: str) -> dict:
    tmp = tempfile.mkdtemp(prefix=f"archiver-glue-{design}-{n}-")
    ok = False
    moto = sim = proxy = None
    try:
        moto, moto_endpoint = start_moto(os.path.join(tmp, "moto.log"))
        g = glue(moto_endpoint)
        g.create_database(DatabaseInput={"Name": DB})
        g.create_table(DatabaseName=DB, TableInput=table_input(projected=design != "partitions"))
        calls = Calls()
        proxy, proxy_endpoint = start_proxy(moto_endpoint, calls)
        sim_args = [
            "--seed", str(SEED), "--portals", str(n), "--sessions-per-portal", str(args.sessions),
            "--active-per-portal", "0", "--history-days", str(args.days),
            # Ten days ago, so the new day's sessions are in the past for archiver too.
            "--now-ms", str((int(time.time() * 1000) // DAY_MS - 10) * DAY_MS + DAY_MS // 2),
        ]
        sim = Simulator(args.binary, sim_args, os.path.join(tmp, "simulator.log"), args.timeout)
        if len(sim.portal_ids) != n:
            raise RuntimeError(f"simulator reports {len(sim.portal_ids)} portals, expected {n}")
        env = aws_env(sim.endpoint)
        env["AWS_ENDPOINT_URL_GLUE"] = proxy_endpoint
        archive = os.path.join(tmp, "archive")
        summary_path = os.path.join(tmp, "summary.json")
        runs = []
        busy = sim.portal_ids[:: max(1, round(1 / args.share))]
        for i, (label, rows) in enumerate([("first", n * args.sessions), ("nightly", len(busy))]):
            if i == 1:
                new_day(sim.endpoint, busy)
            extra = ["--glue-partitions"] if design == "migration" and i == 1 else []
            argv = [
                args.binary, "--state", os.path.join(tmp, "state.db"), "--output", archive,
                "--summary-json", summary_path, "--glue-table", f"{DB}.{TABLE}", *extra, *args.extra, "run",
            ]
            calls.reset()
            err_path = os.path.join(tmp, f"archiver-{label}.log")
            with open(err_path, "wb") as err:
                start = time.monotonic()
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
                timer = threading.Timer(args.timeout, proc.kill)
                timer.start()
                try:
                    _, status, usage = os.wait4(proc.pid, 0)
                finally:
                    timer.cancel()
                wall = time.monotonic() - start
            code = os.waitstatus_to_exitcode(status)
            with open(summary_path) as f:
                summary = json.load(f)
            written = summary["totals"].get("rows_written", 0)
            if code != 0 or written != rows or summary.get("glue", {}).get("error"):
                with open(err_path, "rb") as f:
                    tail = f.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"{design}, N={n}, {label} run: exit {code}, {written} rows (expected {rows}):\n{tail}")
            runs.append({
                "run": label + (" (--glue-partitions)" if extra else ""),
                "wall": wall,
                "cpu": usage.ru_utime + usage.ru_stime,
                "calls": dict(calls.count),
                "glue_s": calls.seconds,
                "sent": calls.partitions_sent,
                "glue": summary.get("glue", {}),
            })
        # The table as Athena reads it, and a query for the newest day across all portals.
        meta = calls.last_get_table
        t = g.get_table(DatabaseName=DB, Name=TABLE)["Table"]
        params = t.get("Parameters", {})
        projected = params.get("projection.enabled", "").strip().lower() == "true"
        present = archive_partitions(archive)
        day = max(d for _, d in present)
        with_files = {p for p, d in present if d == day}
        if projected:
            values = [v for v in params.get("projection.portal_id.values", "").split(",") if v]
            locations = values
        else:
            pages = g.get_paginator("get_partitions").paginate(
                DatabaseName=DB, TableName=TABLE, Expression=f"start_date = '{day}'"
            )
            locations = [p["Values"][0] for page in pages for p in page["Partitions"]]
            registered = {tuple(p["Values"]) for page in g.get_paginator("get_partitions").paginate(
                DatabaseName=DB, TableName=TABLE) for p in page["Partitions"]}
            if registered != present:
                raise RuntimeError(f"{design}, N={n}: Glue holds {len(registered)} partitions, the archive {len(present)}")
        ok = True
        return {
            "runs": runs,
            "meta_bytes": len(meta),
            "meta_gzip": len(gzip.compress(meta)),
            "locations": len(locations),
            "with_files": len([p for p in locations if p in with_files]),
            "partitions": len(present),
            "projected": projected,
        }
    finally:
        for what in (sim,):
            if what is not None:
                what.stop()
        if proxy is not None:
            proxy.shutdown()
        if moto is not None:
            moto.kill()
            moto.wait()
        if args.keep or not ok:
            log(f"kept {tmp} (logs, state, archive)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


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
    ap.add_argument("--portals", default="100,1000", help="comma-separated numbers of portals (default %(default)s)")
    ap.add_argument("--days", type=int, default=3, help="days of history in the simulator (default %(default)s)")
    ap.add_argument("--sessions", type=int, default=3, help="sessions per portal at the start (default %(default)s)")
    ap.add_argument("--share", type=float, default=0.1, help="share of the portals with a session on the new day (default %(default)s)")
    ap.add_argument("--designs", default=",".join(DESIGNS), help="comma-separated subset of %(default)s")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--binary", default=os.path.join(target, "release", "archiver"), help="default: %(default)s")
    ap.add_argument("--extra", default="--concurrency 16", help="archiver options for every run (default %(default)r)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed per run (default %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep each design's temporary folder")
    args = ap.parse_args()
    args.extra = args.extra.split()
    ns = [int(x.replace("_", "")) for x in args.portals.split(",") if x]
    designs = [d for d in args.designs.split(",") if d]
    if not ns or min(ns) < 1 or args.days < 1 or args.sessions < 1 or not set(designs) <= set(DESIGNS):
        ap.error(f"need --portals >= 1, --days and --sessions >= 1, designs among {','.join(DESIGNS)}")
    if shutil.which("moto_server") is None:
        log("no moto_server on PATH: run with the test venv's python (~/.cache/archiver/test-venv/bin/python)")
        return 1
    if not args.no_build:
        log("cargo build --release --bin archiver")
        subprocess.run(["cargo", "build", "--release", "--bin", "archiver"], cwd=REPO, check=True)
    if not os.access(args.binary, os.X_OK):
        log(f"no executable {args.binary}; build with `cargo build --release --bin archiver` or pass --binary")
        return 1

    print(f"$ benches/glue.py {' '.join(sys.argv[1:])}")
    print(f"commit {git_head()}; {os.cpu_count()} CPUs; moto_server (Glue) behind a counting proxy; local archive")
    print(
        f"simulator: seed {SEED}, N portals x {args.sessions} sessions over {args.days} days; "
        f"then 1 session on a new day in {args.share:.0%} of the portals"
    )
    print(f"archiver options: {' '.join(args.extra)}")
    print()
    rows = []
    for n in ns:
        for design in designs:
            log(f"N={n}, {design}")
            r = one_design(args, n, design)
            for i, run in enumerate(r["runs"]):
                c = run["calls"]
                last = i == len(r["runs"]) - 1
                rows.append([
                    f"{n}", design, run["run"], f"{run['wall']:.1f}", f"{run['cpu']:.1f}",
                    str(c.get("GetTable", 0)), str(c.get("UpdateTable", 0)), str(c.get("BatchCreatePartition", 0)),
                    str(run["sent"]), f"{run['glue_s']:.2f}",
                    f"{r['meta_bytes']:,}" if last else "", f"{r['meta_gzip']:,}" if last else "",
                    f"{r['locations']:,} / {r['with_files']:,}" if last else "",
                ])
    print(table(rows, [
        "N", "design", "run", "wall s", "CPU s", "GetTable", "UpdateTable", "BatchCreatePartition",
        "partitions sent", "s in Glue", "table bytes", "gzipped", "newest day: locations / with files",
    ]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
