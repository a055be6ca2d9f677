#!/usr/bin/env python3
"""Checks an archive the way its readers will see it, with readers independent of the archiver.

    read_archive.py --archive DIR --expected FILE.json [--spark] [--portal-id ID ...]

FILE.json is the simulator's record of the sessions that must be in the archive, exactly these
and each once: a JSON array of objects with keys portalId, portalArn, sessionId, username (may
be null), status, startTimeMs, endTimeMs (may be null).

The dataset is DIR/sessions/portal_id=<id>/start_date=<YYYY-MM-DD>/*.parquet. Three readers:
  pyarrow  every file's footer: schema, INT64 TIMESTAMP(MILLIS, UTC), ZSTD/SNAPPY column chunks,
           statistics, no page index, created_by; and each row against its partition folder.
  duckdb   the dataset through read_parquet(..., hive_partitioning = true): the exact set of
           sessions, no duplicates, start_time as TIMESTAMP WITH TIME ZONE.
  spark    (--spark) spark.read.parquet(DIR/sessions), parquet-java, the reader family of Hive
           and Athena's older engine: the same set, start_time as TimestampType.

--portal-id restricts the comparison with FILE.json (both sides) to those portals; every file is
still format-checked. Prints one summary line and exits 0 when all holds; otherwise prints each
failure as `read_archive: FAIL: ...` on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import date, datetime, timezone

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import archivelib  # noqa: E402

try:
    import duckdb
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
except ImportError as e:  # pragma: no cover - environment problem, not a check
    sys.exit(
        f"read_archive: {e}; run with the test venv's python "
        "(tests/run sets ARCHIVER_TEST_PYTHON; packages in tests/requirements.txt)"
    )

PROG = "read_archive"
REQUIRED_STRING = ("portal_arn", "session_id", "username", "status")
REQUIRED_TIMESTAMP = ("start_time", "end_time")
NOT_NULL = ("portal_arn", "session_id", "status", "start_time")
UTC_NAMES = ("UTC", "+00:00")
ALLOWED_CODECS = ("ZSTD", "SNAPPY")
STATS_COLUMNS = ("session_id", "start_time")
PARTITION_KEYS = ("portal_id", "start_date")
MAX_LISTED = 5
MAX_FAILURES_SHOWN = 20

# A session as both sides present it:
# (portal_id, session_id, portal_arn, username, status, start epoch ms, end epoch ms).
Key = tuple


class Failures:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def __bool__(self) -> bool:
        return bool(self.items)


def fmt_key(k: Key) -> str:
    portal_id, session_id, portal_arn, username, status, start_ms, end_ms = k
    return (
        f"(portal_id={portal_id}, session_id={session_id}, portal_arn={portal_arn}, "
        f"username={username!r}, status={status}, start={fmt_ms(start_ms)}, end={fmt_ms(end_ms)})"
    )


def fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "null"
    return f"{ms} ({datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()})"


def load_expected(path: str, portal_ids: set[str] | None) -> list[Key]:
    with open(path, encoding="utf-8") as f:
        records = json.load(f)
    if not isinstance(records, list):
        raise SystemExit(f"{PROG}: {path}: expected a JSON array")
    keys = []
    for i, r in enumerate(records):
        try:
            k = (
                str(r["portalId"]),
                str(r["sessionId"]),
                str(r["portalArn"]),
                r.get("username"),
                str(r["status"]),
                int(r["startTimeMs"]),
                None if r.get("endTimeMs") is None else int(r["endTimeMs"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SystemExit(f"{PROG}: {path}: record {i} is malformed ({e!r}): {r!r}")
        if portal_ids is None or k[0] in portal_ids:
            keys.append(k)
    return keys


def compare(reader: str, expected: list[Key], actual: list[Key], failures: Failures) -> None:
    """Exactly the expected sessions, each once."""
    if len(actual) != len(expected):
        failures.add(f"{reader}: {len(actual)} rows, expected {len(expected)}")
    seen: dict[tuple[str, str], int] = {}
    for k in actual:
        seen[(k[0], k[1])] = seen.get((k[0], k[1]), 0) + 1
    dups = sorted((pk, n) for pk, n in seen.items() if n > 1)
    if dups:
        shown = ", ".join(f"portal_id={p} session_id={s} x{n}" for (p, s), n in dups[:MAX_LISTED])
        failures.add(f"{reader}: {len(dups)} duplicated (portal_id, session_id): {shown}")
    exp, act = set(expected), set(actual)
    if len(exp) != len(expected):
        failures.add(f"{reader}: the expected file itself lists {len(expected) - len(exp)} duplicates")
    missing = sorted(exp - act, key=repr)
    extra = sorted(act - exp, key=repr)
    if missing:
        failures.add(
            f"{reader}: {len(missing)} expected sessions missing or different, e.g.\n    "
            + "\n    ".join(fmt_key(k) for k in missing[:MAX_LISTED])
        )
    if extra:
        failures.add(
            f"{reader}: {len(extra)} unexpected rows (extra, or differing from expected), e.g.\n    "
            + "\n    ".join(fmt_key(k) for k in extra[:MAX_LISTED])
        )


# --- pyarrow: every file on its own ----------------------------------------------------------


def check_file(root: str, rel: str, failures: Failures, notes: set[str]) -> int:
    """Footer and partition checks for one file; returns its row count."""
    path = os.path.join(root, rel)
    where = f"pyarrow: {rel}"
    folder = os.path.dirname(rel)
    m = archivelib.PARTITION_RE.match(folder)
    if not m:
        failures.add(f"{where}: not under portal_id=<id>/start_date=<YYYY-MM-DD>/ (folder {folder!r})")
    try:
        pf = pq.ParquetFile(path)
        md = pf.metadata
        schema = pf.schema_arrow
    except Exception as e:  # noqa: BLE001 - any read error is the finding
        failures.add(f"{where}: cannot read footer: {e}")
        return 0

    if not (md.created_by or "").startswith("archiver"):
        failures.add(f"{where}: created_by is {md.created_by!r}, expected it to start with 'archiver'")

    names = schema.names
    for key in PARTITION_KEYS:
        if key in names:
            failures.add(f"{where}: partition key {key!r} is repeated inside the file")
    for col in REQUIRED_STRING:
        if col not in names:
            failures.add(f"{where}: missing column {col!r} (has {names})")
            continue
        t = schema.field(col).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)):
            failures.add(f"{where}: column {col!r} is {t}, expected string")
    for col in REQUIRED_TIMESTAMP:
        if col not in names:
            failures.add(f"{where}: missing column {col!r} (has {names})")
            continue
        t = schema.field(col).type
        if not (pa.types.is_timestamp(t) and t.unit == "ms" and t.tz in UTC_NAMES):
            failures.add(f"{where}: column {col!r} is {t}, expected timestamp[ms, tz=UTC]")

    # Parquet-level types: what Athena, Spark and DuckDB actually decode.
    pschema = md.schema
    leaf = {pschema.column(i).path: i for i in range(len(pschema))}
    for col in REQUIRED_TIMESTAMP:
        if col not in leaf:
            continue
        c = pschema.column(leaf[col])
        lt = json.loads(c.logical_type.to_json()) if c.logical_type is not None else {}
        if not (
            c.physical_type == "INT64"
            and lt.get("Type") == "Timestamp"
            and lt.get("isAdjustedToUTC") is True
            and lt.get("timeUnit") == "milliseconds"
        ):
            failures.add(
                f"{where}: column {col!r} is {c.physical_type} {c.logical_type}, "
                "expected INT64 Timestamp(isAdjustedToUTC=true, timeUnit=milliseconds)"
            )
    for col in REQUIRED_STRING:
        if col in leaf:
            c = pschema.column(leaf[col])
            if c.physical_type != "BYTE_ARRAY" or c.logical_type.type != "STRING":
                failures.add(f"{where}: column {col!r} is {c.physical_type} {c.logical_type}, expected BYTE_ARRAY String")

    page_index_attrs = hasattr(pq.ColumnChunkMetaData, "has_column_index") and hasattr(
        pq.ColumnChunkMetaData, "has_offset_index"
    )
    if not page_index_attrs:
        notes.add(f"page index not checked: pyarrow {pa.__version__} lacks ColumnChunkMetaData.has_column_index")
    # One message per file and problem, naming the column chunks (row group.column).
    codecs: dict[str, list[str]] = {}
    page_index: list[str] = []
    no_stats: list[str] = []
    for rg_i in range(md.num_row_groups):
        rg = md.row_group(rg_i)
        for ci in range(rg.num_columns):
            cc = rg.column(ci)
            at = f"{rg_i}.{cc.path_in_schema}"
            if cc.compression not in ALLOWED_CODECS:
                codecs.setdefault(cc.compression, []).append(at)
            if page_index_attrs and (cc.has_column_index or cc.has_offset_index):
                page_index.append(at)
            if cc.path_in_schema in STATS_COLUMNS and rg.num_rows > 0:
                if not cc.is_stats_set or not cc.statistics.has_min_max:
                    no_stats.append(at)
    for codec, chunks in sorted(codecs.items()):
        failures.add(f"{where}: compression {codec}, expected one of {ALLOWED_CODECS}, in column chunks {chunks}")
    if page_index:
        failures.add(f"{where}: page index (column/offset index) written for column chunks {page_index}; files must have none")
    if no_stats:
        failures.add(f"{where}: no min/max statistics in column chunks {no_stats}")

    # Rows against their partition folder.
    try:
        table = pq.read_table(path, columns=[c for c in ("portal_arn", "start_time") if c in names])
    except Exception as e:  # noqa: BLE001
        failures.add(f"{where}: cannot read rows: {e}")
        return md.num_rows
    if m and table.num_rows > 0:
        if "start_time" in names and pa.types.is_timestamp(table.schema.field("start_time").type):
            st = table.column("start_time")
            if st.null_count:
                failures.add(f"{where}: {st.null_count} rows with null start_time")
            ms = st.cast(pa.timestamp("ms", tz="UTC"), safe=False).cast(pa.int64())
            mm = pc.min_max(ms).as_py()
            day = date.fromisoformat(m["start_date"])
            lo = (day - date(1970, 1, 1)).days * archivelib.DAY_MS
            hi = lo + archivelib.DAY_MS
            if mm["min"] is not None and not (lo <= mm["min"] and mm["max"] < hi):
                failures.add(
                    f"{where}: start_time spans {fmt_ms(mm['min'])} .. {fmt_ms(mm['max'])}, "
                    f"outside its partition start_date={m['start_date']} (UTC)"
                )
        if "portal_arn" in names:
            for arn in pc.unique(table.column("portal_arn")).to_pylist():
                if arn is None or archivelib.portal_id_of_arn(arn) != m["portal_id"]:
                    failures.add(f"{where}: portal_arn {arn!r} does not match partition portal_id={m['portal_id']}")
    return md.num_rows


def check_pyarrow(archive: str, failures: Failures, notes: set[str]) -> tuple[int, int]:
    listing = archivelib.list_dataset(archive)
    if not os.path.isdir(listing.root):
        notes.add(f"no {listing.root}")
    for d in listing.parquet_dirs:
        failures.add(f"pyarrow: {d}: a directory whose name ends in .parquet")
    for f in listing.visible_other_files:
        failures.add(
            f"pyarrow: {f}: not a .parquet file, yet Spark/Hive/Athena would read it "
            "(only names starting with '.' or '_' are skipped)"
        )
    for f in listing.hidden_other_files:
        notes.add(f"non-parquet file {f} (hidden from Hive-style readers)")
    rows = sum(check_file(listing.root, f, failures, notes) for f in listing.parquet_files)
    return rows, len(listing.parquet_files)


# --- duckdb: the dataset as one table ---------------------------------------------------------


def check_duckdb(archive: str, expected: list[Key], portal_ids: set[str] | None, failures: Failures) -> None:
    glob = os.path.join(os.path.abspath(archive), archivelib.SESSIONS, "**", "*.parquet")
    con = duckdb.connect(config={"threads": 2})
    source = (
        "read_parquet($glob, hive_partitioning = true, "
        "hive_types = {'portal_id': VARCHAR, 'start_date': DATE})"
    )
    where = ""
    params: dict = {"glob": glob}
    if portal_ids is not None:
        where = "WHERE portal_id IN (SELECT unnest($ids))"
        params["ids"] = sorted(portal_ids)
    try:
        types = dict(
            (r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {source}", {"glob": glob}).fetchall()
        )
        for col in REQUIRED_TIMESTAMP:
            if types.get(col) != "TIMESTAMP WITH TIME ZONE":
                failures.add(f"duckdb: {col} is {types.get(col)}, expected TIMESTAMP WITH TIME ZONE")
        rows = con.execute(
            f"""
            SELECT portal_id, session_id, portal_arn, username, status,
                   epoch_ms(start_time), epoch_ms(end_time)
            FROM {source} {where}
            """,
            params,
        ).fetchall()
        nulls = con.execute(
            f"SELECT {', '.join(f'count(*) - count({c})' for c in NOT_NULL)} FROM {source}",
            {"glob": glob},
        ).fetchone()
        for col, n in zip(NOT_NULL, nulls):
            if n:
                failures.add(f"duckdb: {n} rows with null {col}")
    except duckdb.Error as e:
        failures.add(f"duckdb: query failed: {e}")
        return
    compare("duckdb", expected, [tuple(r) for r in rows], failures)


# --- spark: parquet-java ----------------------------------------------------------------------

LOG4J2 = """\
rootLogger.level = error
# PySpark's gateway counts as a shell: Spark takes its level from this logger, else WARN
# and a notice on stderr.
logger.repl.name = org.apache.spark.api.python.PythonGatewayServer
logger.repl.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c: %m%n
"""


def spark_error(e: Exception) -> str:
    """The Java exception's own message: py4j's first line only names the call that failed."""
    java = getattr(e, "java_exception", None)
    text = str(java.toString()) if java is not None else str(e)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else repr(e))[:500]


def check_spark(archive: str, expected: list[Key], portal_ids: set[str] | None, failures: Failures) -> None:
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession, functions as F, types as T

    with tempfile.TemporaryDirectory(prefix="read-archive-spark-") as tmp:
        # spark-submit puts SPARK_CONF_DIR on the driver's classpath: log4j2 finds this file
        # before the JVM logs anything, unlike setLogLevel which only acts once Spark is up.
        with open(os.path.join(tmp, "log4j2.properties"), "w") as f:
            f.write(LOG4J2)
        os.environ["SPARK_CONF_DIR"] = tmp
        spark = (
            SparkSession.builder.master("local[1]")
            .appName("read_archive")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.log.level", "ERROR")
            .config("spark.driver.memory", "512m")
            .config("spark.driver.extraJavaOptions", f"-Djava.io.tmpdir={tmp}")
            .config("spark.local.dir", tmp)
            .config("spark.sql.warehouse.dir", os.path.join(tmp, "warehouse"))
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.shuffle.partitions", "1")
            # Partition values stay strings: a numeric-looking portal id must not become a number.
            .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
            .getOrCreate()
        )
        try:
            spark.sparkContext.setLogLevel("ERROR")
            df = spark.read.parquet(os.path.join(os.path.abspath(archive), archivelib.SESSIONS))
            fields = {f.name: f.dataType for f in df.schema.fields}
            for col in REQUIRED_TIMESTAMP:
                if not isinstance(fields.get(col), T.TimestampType):
                    failures.add(f"spark: {col} is {fields.get(col)}, expected TimestampType")
            if portal_ids is not None:
                df = df.where(F.col("portal_id").isin(sorted(portal_ids)))
            counts = df.agg(
                F.count(F.lit(1)).alias("n"),
                F.countDistinct("portal_id", "session_id").alias("distinct"),
            ).first()
            if counts["distinct"] != counts["n"]:
                failures.add(
                    f"spark: {counts['n']} rows but {counts['distinct']} distinct (portal_id, session_id)"
                )
            rows = df.select(
                "portal_id",
                "session_id",
                "portal_arn",
                "username",
                "status",
                F.unix_millis("start_time"),
                F.unix_millis("end_time"),
            ).collect()
        except Exception as e:  # noqa: BLE001 - any reader error is the finding
            failures.add(f"spark: read failed: {spark_error(e)}")
            return
        finally:
            spark.stop()
    compare("spark", expected, [tuple(r) for r in rows], failures)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", required=True, help="the archive folder (holds sessions/)")
    ap.add_argument("--expected", required=True, help="JSON array of the sessions that must be archived")
    ap.add_argument("--spark", action="store_true", help="also read with Spark (parquet-java)")
    ap.add_argument(
        "--portal-id",
        action="append",
        nargs="+",
        default=None,
        metavar="ID",
        help="compare only these portals (repeatable)",
    )
    args = ap.parse_args(argv)
    portal_ids = None if args.portal_id is None else {p for group in args.portal_id for p in group}

    expected = load_expected(args.expected, portal_ids)
    failures = Failures()
    notes: set[str] = set()
    readers = ["pyarrow"]
    rows, files = check_pyarrow(args.archive, failures, notes)
    if files == 0:
        # Readers refuse an empty glob; an empty dataset is right only if nothing is expected.
        if expected:
            failures.add(f"no .parquet files under {os.path.join(args.archive, archivelib.SESSIONS)}, expected {len(expected)} rows")
    else:
        readers.append("duckdb")
        check_duckdb(args.archive, expected, portal_ids, failures)
        if args.spark:
            readers.append("spark")
            check_spark(args.archive, expected, portal_ids, failures)

    for note in sorted(notes):
        print(f"{PROG}: note: {note}", file=sys.stderr)
    if failures:
        for f in failures.items[:MAX_FAILURES_SHOWN]:
            print(f"{PROG}: FAIL: {f}", file=sys.stderr)
        if len(failures.items) > MAX_FAILURES_SHOWN:
            print(f"{PROG}: ... and {len(failures.items) - MAX_FAILURES_SHOWN} more", file=sys.stderr)
        print(f"{PROG}: {len(failures.items)} check(s) failed ({args.archive})", file=sys.stderr)
        return 1
    scope = "" if portal_ids is None else f" ({len(expected)} in portals {', '.join(sorted(portal_ids))})"
    print(f"{PROG}: {rows} rows{scope} in {files} files OK ({', '.join(readers)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
