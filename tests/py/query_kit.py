#!/usr/bin/env python3
"""Runs the DuckDB query kit (sql/duckdb/) on an archive and checks every answer exactly against
the same answers computed in plain Python from the simulator's record.

    query_kit.py --archive DIR --expected FILE.json --sql-dir sql/duckdb [--top-n N]
                 [--timezone TZ]

FILE.json: a JSON array of objects with keys portalId, portalArn, sessionId, username (may be
null), status, startTimeMs, endTimeMs (may be null): exactly the sessions the archive holds.

The view (SQL_DIR/views.sql) is loaded with its ARCHIVE placeholder replaced by DIR, then each
query of SQL_DIR/queries/ runs with its parameters set as DuckDB variables (SET VARIABLE), the
scheme the query files document. Parameters are picked from the data so that answers are not
trivial and sit on the boundaries: the window [from, to) starts exactly at some session's end
(which must be left out) and ends exactly at some session's start (left out too); the first
point in time is the start of a session (included) where the most sessions are open, the
second is the end of one of those (that one left out). The DuckDB connection runs in a time
zone far from UTC (--timezone) to show that the queries do not depend on it.

Prints one summary line and exits 0 when every answer matches; otherwise prints each mismatch
as `query_kit: FAIL: ...` on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone

sys.dont_write_bytecode = True  # no __pycache__ in the work tree

try:
    import duckdb
except ImportError as e:  # pragma: no cover - environment problem, not a check
    sys.exit(
        f"query_kit: {e}; run with the test venv's python "
        "(tests/run sets ARCHIVER_TEST_PYTHON; packages in tests/requirements.txt)"
    )

PROG = "query_kit"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MS = timedelta(milliseconds=1)
HOUR_MS = 3_600_000
QUERIES = (
    "sessions_per_user_per_day",
    "longest_sessions",
    "sessions_in_window",
    "concurrent_at",
)
MAX_SHOWN = 5


class Session:
    __slots__ = ("portal_id", "session_id", "portal_arn", "username", "status", "start", "end")

    def __init__(self, o: dict) -> None:
        self.portal_id: str = o["portalId"]
        self.session_id: str = o["sessionId"]
        self.portal_arn: str = o["portalArn"]
        self.username: str | None = o["username"]
        self.status: str = o["status"]
        self.start: int = o["startTimeMs"]
        self.end: int | None = o["endTimeMs"]


def utc_date(ms: int) -> str:
    return (EPOCH + ms * MS).date().isoformat()


def sql_instant(ms: int) -> str:
    """An instant as a string DuckDB casts to TIMESTAMPTZ, with an explicit UTC offset."""
    return (EPOCH + ms * MS).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+00"


def fmt_ms(ms: int | None) -> str:
    return "null" if ms is None else (EPOCH + ms * MS).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def to_ms(value) -> int | None:
    """A TIMESTAMPTZ from DuckDB (an aware datetime) as epoch milliseconds, exactly."""
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise TypeError(f"expected a TIMESTAMP WITH TIME ZONE, got {value!r}")
    delta = value - EPOCH
    if delta % MS:
        raise ValueError(f"{value!r} is not a whole millisecond")
    return delta // MS


def to_day(value) -> str:
    return value.isoformat()


# ---- answers in plain Python -------------------------------------------------------------


def per_user_per_day(sessions: list[Session]) -> list[tuple]:
    counts = Counter((s.portal_id, s.username, utc_date(s.start)) for s in sessions)
    rows = [(p, u, d, n) for (p, u, d), n in counts.items()]
    rows.sort(key=lambda r: (r[0], r[2], r[1] is None, r[1] or ""))
    return rows


def longest(sessions: list[Session], top_n: int) -> list[tuple]:
    ended = [s for s in sessions if s.end is not None]
    ended.sort(key=lambda s: (-(s.end - s.start), s.session_id))
    return [
        (s.portal_id, s.session_id, s.username, s.start, s.end, s.end - s.start)
        for s in ended[:top_n]
    ]


def in_window(sessions: list[Session], lo: int, hi: int) -> list[tuple]:
    hits = [s for s in sessions if s.start < hi and (s.end is None or s.end > lo)]
    hits.sort(key=lambda s: (s.start, s.session_id))
    return [(s.portal_id, s.session_id, s.username, s.start, s.end) for s in hits]


def open_at(sessions: list[Session], t: int) -> list[tuple]:
    hits = [s for s in sessions if s.start <= t and (s.end is None or s.end > t)]
    hits.sort(key=lambda s: (s.portal_id, s.start, s.session_id))
    return [(s.portal_id, s.session_id, s.username, s.start, s.end) for s in hits]


# ---- parameters picked from the data -----------------------------------------------------


def pick_points(sessions: list[Session]) -> tuple[int, int]:
    """(t1, t2): t1 the start of a session where the most sessions are open (earliest such);
    t2 the earliest end among the sessions open at t1."""
    events = []
    for s in sessions:
        events.append((s.start, 1))
        if s.end is not None:
            events.append((s.end, -1))
    # At equal instants an end comes first: a session ending at t is not open at t.
    events.sort(key=lambda e: (e[0], e[1]))
    best_t, best_n, n = None, -1, 0
    for t, d in events:
        n += d
        if d == 1 and n > best_n:
            best_t, best_n = t, n
    assert best_t is not None
    ends = [s.end for s in sessions if s.start <= best_t and s.end is not None and s.end > best_t]
    t2 = min(ends) if ends else best_t + HOUR_MS
    return best_t, t2


def pick_window(sessions: list[Session]) -> tuple[int, int]:
    """[lo, hi): lo the median end time, hi the first start at least 4 hours after it."""
    ends = sorted(s.end for s in sessions if s.end is not None)
    lo = ends[len(ends) // 2]
    starts = sorted(s.start for s in sessions if s.start >= lo + 4 * HOUR_MS)
    hi = starts[0] if starts else lo + 4 * HOUR_MS
    return lo, hi


# ---- DuckDB ------------------------------------------------------------------------------


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def load_view(con, sql_dir: str, archive: str) -> None:
    text = read(os.path.join(sql_dir, "views.sql"))
    placeholder = "'ARCHIVE/sessions/"
    if text.count(placeholder) != 1:
        raise SystemExit(f"{PROG}: FAIL: views.sql must hold the placeholder {placeholder} once")
    root = os.path.abspath(archive).replace("'", "''")
    con.execute(text.replace(placeholder, f"'{root}/sessions/"))


def run_query(con, sql_dir: str, name: str, variables: dict) -> tuple[list[str], list[tuple]]:
    for k, v in variables.items():
        con.execute(f"SET VARIABLE {k} = ?", [v])
    try:
        cur = con.execute(read(os.path.join(sql_dir, "queries", f"{name}.sql")))
        rows = cur.fetchall()
        cols = [d[0] for d in cur.description]
    finally:
        for k in variables:
            con.execute(f"RESET VARIABLE {k}")
    return cols, rows


def expect_columns(failures: list[str], name: str, cols: list[str], want: list[str]) -> bool:
    if cols[: len(want)] != want:
        failures.append(f"{name}: columns {cols}, want {want} first")
        return False
    return True


def compare(failures: list[str], name: str, got: list[tuple], want: list[tuple], show) -> None:
    if got == want:
        return
    got_set, want_set = set(got), set(want)
    missing = [r for r in want if r not in got_set]
    extra = [r for r in got if r not in want_set]
    msg = f"{name}: DuckDB gave {len(got)} rows, plain Python {len(want)}"
    if missing:
        msg += f"; missing {[show(r) for r in missing[:MAX_SHOWN]]}"
    if extra:
        msg += f"; extra {[show(r) for r in extra[:MAX_SHOWN]]}"
    if not missing and not extra:
        first = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
        msg += f"; same rows, order differs first at row {first}: {show(got[first])} vs {show(want[first])}"
    failures.append(msg)


def show_session(r: tuple) -> str:
    return f"({r[0]}, {r[1]}, {r[2]!r}, {fmt_ms(r[3])}, {fmt_ms(r[4])})"


def main() -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--archive", required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--sql-dir", required=True, help="the sql/duckdb folder")
    ap.add_argument("--top-n", type=int, default=10)
    ap.add_argument("--timezone", default="Pacific/Kiritimati", help="the DuckDB session's TimeZone")
    args = ap.parse_args()

    with open(args.expected, encoding="utf-8") as f:
        sessions = [Session(o) for o in json.load(f)]
    failures: list[str] = []
    if not sessions:
        print(f"{PROG}: FAIL: {args.expected} holds no sessions", file=sys.stderr)
        return 1

    t1, t2 = pick_points(sessions)
    lo, hi = pick_window(sessions)
    want_day = per_user_per_day(sessions)
    want_long = longest(sessions, args.top_n)
    want_window = in_window(sessions, lo, hi)
    want_t1 = open_at(sessions, t1)
    want_t2 = open_at(sessions, t2)

    # The parameters must make the answers worth checking, and sit on the boundaries.
    if not 0 < len(want_window) < len(sessions):
        failures.append(f"window [{fmt_ms(lo)}, {fmt_ms(hi)}) holds {len(want_window)} sessions of {len(sessions)}")
    if not any(s.end == lo for s in sessions) or not any(s.start == hi for s in sessions):
        failures.append("window bounds are not on a session end and a session start")
    if len(want_t1) < 2 or not any(s.start == t1 for s in sessions):
        failures.append(f"{len(want_t1)} sessions open at {fmt_ms(t1)} (want 2 or more, one starting then)")
    if not any(s.end == t2 for s in sessions):
        failures.append(f"no session ends at {fmt_ms(t2)}")
    if len(want_long) != min(args.top_n, sum(s.end is not None for s in sessions)):
        failures.append(f"longest: {len(want_long)} sessions for top {args.top_n}")
    if len({u for _, u, _, _ in want_day}) < 2 or max(n for *_, n in want_day) < 2:
        failures.append("per-user counts are trivial: under two usernames, or no user with two sessions a day")

    con = duckdb.connect()
    con.execute("SET TimeZone = ?", [args.timezone])
    load_view(con, args.sql_dir, args.archive)
    total = con.execute("SELECT count(*) FROM sessions").fetchone()[0]
    if total != len(sessions):
        failures.append(f"the view holds {total} rows, expected {len(sessions)}")

    # (a) sessions per user per day
    cols, rows = run_query(con, args.sql_dir, "sessions_per_user_per_day", {})
    if expect_columns(failures, "sessions_per_user_per_day", cols, ["portal_id", "username", "day", "sessions"]):
        got = [(p, u, to_day(d), n) for p, u, d, n in rows]
        compare(failures, "sessions_per_user_per_day", got, want_day, repr)

    # (b) longest sessions
    cols, rows = run_query(con, args.sql_dir, "longest_sessions", {"top_n": args.top_n})
    want_cols = ["portal_id", "session_id", "username", "start_time", "end_time", "duration_ms"]
    if expect_columns(failures, "longest_sessions", cols, want_cols):
        got = [(r[0], r[1], r[2], to_ms(r[3]), to_ms(r[4]), r[5]) for r in rows]
        compare(failures, "longest_sessions", got, want_long, lambda r: show_session(r) + f" {r[5]} ms")
        if "duration" in cols:
            i = cols.index("duration")
            for r in rows:
                if r[i] != (r[4] - r[3]):
                    failures.append(f"longest_sessions: duration {r[i]} of {r[1]} is not end_time - start_time")
                    break

    session_cols = ["portal_id", "session_id", "username", "start_time", "end_time"]

    # (c) sessions in a window
    cols, rows = run_query(
        con, args.sql_dir, "sessions_in_window", {"window_from": sql_instant(lo), "window_to": sql_instant(hi)}
    )
    if expect_columns(failures, "sessions_in_window", cols, session_cols):
        got = [(r[0], r[1], r[2], to_ms(r[3]), to_ms(r[4])) for r in rows]
        compare(failures, f"sessions_in_window [{fmt_ms(lo)}, {fmt_ms(hi)})", got, want_window, show_session)

    # (d) concurrent sessions at two points in time
    for t, want in ((t1, want_t1), (t2, want_t2)):
        cols, rows = run_query(con, args.sql_dir, "concurrent_at", {"at_time": sql_instant(t)})
        if expect_columns(failures, "concurrent_at", cols, session_cols):
            got = [(r[0], r[1], r[2], to_ms(r[3]), to_ms(r[4])) for r in rows]
            compare(failures, f"concurrent_at {fmt_ms(t)}", got, want, show_session)

    if failures:
        for f in failures:
            print(f"{PROG}: FAIL: {f}", file=sys.stderr)
        return 1
    print(
        f"{PROG}: ok: duckdb {duckdb.__version__}, TimeZone {args.timezone}, {len(sessions)} sessions "
        f"({sum(s.username is None for s in sessions)} without username): "
        f"{len(want_day)} (portal, user, day) counts (most {max(n for *_, n in want_day)}); "
        f"top {len(want_long)} longest "
        f"(longest {want_long[0][5] // 1000} s); {len(want_window)} sessions in "
        f"[{fmt_ms(lo)}, {fmt_ms(hi)}); {len(want_t1)} open at {fmt_ms(t1)}, "
        f"{len(want_t2)} at {fmt_ms(t2)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
