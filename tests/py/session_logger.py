#!/usr/bin/env python3
"""Writes WorkSpaces Secure Browser Session Logger files for the sessions an archive holds, runs
the Session Logger part of the DuckDB query kit on them, and checks every answer exactly against
the same answers computed in plain Python from the events written and the simulator's record.

    session_logger.py --archive DIR --expected FILE.json --sql-dir sql/duckdb [--logger-dir DIR]
                      [--seed N] [--timezone TZ]

FILE.json: as for query_kit.py (the sessions the archive holds).

The events: for every archived session, pseudo-random (seeded by --seed and the session id)
SessionStart, SessionConnect, URL loads (named UrlLoad and UrlVisit, both names AWS uses),
tab, website, clipboard, upload and download events, print jobs, SessionDisconnect and
SessionEnd, all within the session; and as many again for sessions the archive does not hold
(same users and portals, overlapping times, some placed exactly on the query windows' bounds),
which must never join, and two events without a session id. They are written under
--logger-dir (default: a temporary folder) by four loggers, one per combination of the
documented folder structures (Flat; NestedByDate, as YYYY/MM/DD folders) and file formats
(JSONLines, some gzipped or with CRLF line ends; Json, as an array, pretty-printed or on one
line), in no particular order. AWS documents the field names but not the JSON keys, so each file
spells them one of four ways (camelCase with an ISO-8601 time, some events also holding another
URL one level down; `timestamp` in epoch milliseconds, `portalArn` and the page fields in
`details`, as User Access logging does; the documented names verbatim, `Session ID` and the
like, with a numeric time; snake_case with a naive UTC time and the page fields in another
nested object), and leaves a null username out or writes it as null:
sql/duckdb/session_logger_views.sql must read them all alike.

Checked: the `session_logger_events` view holds exactly the events written, each with its time,
type, session, user, portal, IPs, host, path and URL; then each query of sql/duckdb/queries/
that joins it to the archive (urls_loaded_by_user, sessions_with_downloads, prints_on_portal)
gives exactly the plain-Python answer, with parameters picked from the data so that each window
starts exactly on an event (included) and ends exactly on one (left out), holds events of
sessions the archive does not hold for the same user and portal (left out), and has an event of a
session that started on the UTC date of the window's end (so pruning start_date by a day too
early, or by the date in the session's time zone, loses it). The DuckDB connection runs in a
time zone 11 hours behind UTC (--timezone).

Prints one summary line and exits 0 when every answer matches; otherwise prints each mismatch
as `session_logger: FAIL: ...` on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import tempfile
import uuid
from collections import Counter, defaultdict

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import query_kit as qk  # noqa: E402  (the archive view, runner and comparison helpers)
from query_kit import EPOCH, HOUR_MS, MS, Session, fmt_ms, sql_instant, to_ms  # noqa: E402

duckdb = qk.duckdb
PROG = "session_logger"

URL_KINDS = ("UrlLoad", "UrlVisit")
DOWNLOAD_KINDS = ("FileDownloadFromSecureBrowserToRemoteDisk", "FileTransferFromRemoteToLocalDisk")
PRINT_KIND = "PrintJobSubmit"
HOSTS = ("intranet.example.com", "mail.example.com", "wiki.example.org", "crm.example.net", "docs.example.com")
LOGGERS = (("flat", "jsonl"), ("flat", "json"), ("nested", "jsonl"), ("nested", "json"))
DIALECTS = ("camel", "access", "prose", "snake")
FILE_EVENTS = 150


class Event:
    """One Session Logger event as this test knows it (the truth the answers are computed from)."""

    __slots__ = ("kind", "session_id", "username", "portal_id", "portal_arn", "t", "hostname", "path",
                 "url", "client_ip", "portal_ip", "archived")

    def __init__(self, kind: str, sess: dict, t: int, archived: bool, page: tuple | None = None) -> None:
        self.kind = kind
        self.session_id = sess["session_id"]
        self.username = sess["username"]
        self.portal_id = sess["portal_id"]
        self.portal_arn = sess["portal_arn"]
        self.t = t
        self.hostname, self.path, self.url = page if page else (None, None, None)
        self.client_ip = sess["client_ip"]
        self.portal_ip = sess["portal_ip"]
        self.archived = archived

    def row(self) -> tuple:
        """What the view must give for this event."""
        return (self.session_id, self.kind, self.t, self.username, self.portal_id, self.client_ip,
                self.portal_ip, self.hostname, self.path, self.url)


# ---- generating events --------------------------------------------------------------------


def random_page(rng: random.Random) -> tuple[str, str, str]:
    host = rng.choice(HOSTS)
    path = "/" + "/".join(rng.choice(("a", "b", "reports", "q", "files", "x-1")) for _ in range(rng.randint(1, 3)))
    url = f"https://{host}{path}"
    if rng.random() < 0.3:
        url += f"?id={rng.randint(1, 999)}"
    return host, path, url


def session_events(rng: random.Random, sess: dict, start: int, end: int, archived: bool) -> list[Event]:
    """Events of one session, all at times in [start, end]; at distinct times inside it."""
    kinds: list[str] = ["SessionConnect"]
    kinds += [rng.choice(URL_KINDS) for _ in range(rng.randint(0, 6))]
    kinds += ["TabOpen"] * rng.randint(0, 2) + ["TabClose"] * rng.randint(0, 1)
    kinds += ["WebsiteInteract"] * rng.randint(0, 2)
    for kind, p, most in (
        ("FileDownloadFromSecureBrowserToRemoteDisk", 0.3, 3),
        ("FileTransferFromRemoteToLocalDisk", 0.2, 2),
        ("FileTransferFromLocalToRemoteDisk", 0.2, 2),
        ("FileUploadFromRemoteDiskToSecureBrowser", 0.2, 2),
        ("ContentCopyFromWebsite", 0.2, 2),
        ("ContentPasteToWebsite", 0.2, 2),
        ("ContentTransferFromLocalToRemoteClipboard", 0.1, 1),
        (PRINT_KIND, 0.25, 2),
        ("SessionDisconnect", 0.1, 1),
    ):
        if rng.random() < p:
            kinds += [kind] * rng.randint(1, most)
    rng.shuffle(kinds)
    inner = end - start - 1  # instants strictly inside (start, end)
    kinds = kinds[: max(inner, 0)]
    times = sorted(rng.sample(range(start + 1, end), len(kinds))) if kinds else []
    out = [Event("SessionStart", sess, start, archived)]
    for kind, t in zip(kinds, times):
        page = None
        if kind in URL_KINDS or kind == "WebsiteInteract" or (kind in ("TabOpen", "TabClose") and rng.random() < 0.5):
            page = random_page(rng)
        out.append(Event(kind, sess, t, archived, page))
    out.append(Event("SessionEnd", sess, end, archived))
    return out


def ip(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"198.51.100.{rng.randint(1, 254)}"
    return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def session_record(rng: random.Random, s: Session, session_id: str | None) -> dict:
    return {"session_id": session_id, "username": s.username, "portal_id": s.portal_id,
            "portal_arn": s.portal_arn, "client_ip": ip(rng), "portal_ip": ip(rng)}


def ghost_id(rng: random.Random, taken: set[str]) -> str:
    while True:
        sid = str(uuid.UUID(int=rng.getrandbits(128)))
        if sid not in taken:
            taken.add(sid)
            return sid


def generate(sessions: list[Session], seed: int) -> tuple[list[Event], set[str]]:
    """Events of every archived session, and of about as many sessions the archive lacks."""
    events: list[Event] = []
    taken = {s.session_id for s in sessions}
    for s in sessions:
        rng = random.Random(f"{seed}:{s.session_id}")
        end = s.end if s.end is not None else s.start + HOUR_MS
        events += session_events(rng, session_record(rng, s, s.session_id), s.start, end, True)
        # A session of the same user on the same portal the archive does not hold, overlapping.
        shift = rng.randint(-HOUR_MS, HOUR_MS)
        ghost = session_record(rng, s, ghost_id(rng, taken))
        events += session_events(rng, ghost, s.start + shift, end + shift, False)
    return events, taken


def targeted_ghosts(rng: random.Random, like: Session, taken: set[str], kind: str, times: list[int]) -> list[Event]:
    """Events of `kind` at `times` in a session the archive lacks, of `like`'s user and portal."""
    ghost = session_record(rng, like, ghost_id(rng, taken))
    page = random_page(rng) if kind in URL_KINDS else None
    return [Event(kind, ghost, t, False, page) for t in times]


# ---- writing the logger's files -----------------------------------------------------------


def iso(ms: int) -> str:
    return (EPOCH + ms * MS).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def naive(ms: int) -> str:
    return (EPOCH + ms * MS).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def encode(e: Event, dialect: str, rng: random.Random) -> dict:
    """The event as a JSON object, keys spelled the `dialect` way."""
    page = {"hostname": e.hostname, "path": e.path, "url": e.url} if e.url is not None else None
    if dialect == "camel":
        o = {"time": iso(e.t), "eventType": e.kind, "sessionId": e.session_id, "username": e.username,
             "portalId": e.portal_id, "portalIp": e.portal_ip, "clientIp": e.client_ip}
        if page:
            o.update(page)
            if rng.random() < 0.3:  # a URL one level down too: the top-level one is the event's
                o["referrer"] = {"url": "https://elsewhere.example/r", "hostname": "elsewhere.example", "path": "/r"}
    elif dialect == "access":  # as User Access logging documents its events
        o = {"timestamp": str(e.t), "eventType": e.kind, "details": page or {}, "portalArn": e.portal_arn,
             "userName": e.username, "sessionId": e.session_id, "clientIp": e.client_ip, "portalIp": e.portal_ip}
    elif dialect == "prose":  # the field names of AWS's event table, verbatim
        o = {"Time": e.t, "EventName": e.kind, "Username": e.username, "Portal ID": e.portal_id,
             "Portal IP": e.portal_ip, "Client IP": e.client_ip, "Session ID": e.session_id}
        if page:
            o.update({"Hostname": e.hostname, "Path": e.path, "URL": e.url})
    else:  # snake_case, naive UTC time, page fields nested in an object not named details
        o = {"event_time": naive(e.t), "event_type": e.kind, "session_id": e.session_id,
             "user_name": e.username, "portal_id": e.portal_id, "client_ip": e.client_ip,
             "portal_ip": e.portal_ip}
        if page:
            o["page"] = {"host_name": e.hostname, "path": e.path, "url": e.url}
    if e.username is None and rng.random() < 0.5:
        for k in ("username", "userName", "Username", "user_name"):
            o.pop(k, None)  # a missing key, not a JSON null
    return o


def write_files(root: str, events: list[Event], seed: int) -> tuple[int, Counter]:
    """Writes every event once, under root/<logger>/..., returns (files, events per dialect)."""
    rng = random.Random(f"{seed}:files")
    by_logger: dict[int, list[Event]] = defaultdict(list)
    for e in events:
        by_logger[random.Random(f"{seed}:{e.session_id}:logger").randrange(len(LOGGERS))].append(e)
    files, per_dialect, n = 0, Counter(), 0
    for li, (layout, fmt) in enumerate(LOGGERS):
        prefix = os.path.join(root, f"{layout}-{fmt}")
        by_day: dict[str, list[Event]] = defaultdict(list)
        for e in by_logger[li]:
            by_day[(EPOCH + e.t * MS).strftime("%Y/%m/%d")].append(e)
        for day, day_events in sorted(by_day.items()):
            rng.shuffle(day_events)  # delivered in no particular order
            folder = os.path.join(prefix, day) if layout == "nested" else prefix
            os.makedirs(folder, exist_ok=True)
            for i in range(0, len(day_events), FILE_EVENTS):
                chunk = day_events[i : i + FILE_EVENTS]
                dialect = DIALECTS[n % len(DIALECTS)]
                n += 1
                objs = [encode(e, dialect, rng) for e in chunk]
                per_dialect[dialect] += len(objs)
                name = f"{day.replace('/', '')}-{i // FILE_EVENTS:03d}-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
                if fmt == "jsonl":
                    eol = "\r\n" if n % 5 == 0 else "\n"
                    data = "".join(json.dumps(o) + eol for o in objs).encode()
                    if n % 3 == 0:
                        with gzip.open(os.path.join(folder, name + ".jsonl.gz"), "wb") as f:
                            f.write(data)
                    else:
                        with open(os.path.join(folder, name + ".jsonl"), "wb") as f:
                            f.write(data)
                else:
                    with open(os.path.join(folder, name + ".json"), "w", encoding="utf-8") as f:
                        json.dump(objs, f, indent=2 if n // len(DIALECTS) % 2 else None)
                files += 1
    return files, per_dialect


# ---- answers in plain Python --------------------------------------------------------------


def urls_loaded(events, by_id, portal, user, lo, hi) -> list[tuple]:
    rows = []
    for e in events:
        s = by_id.get(e.session_id)
        if s and e.kind in URL_KINDS and s.portal_id == portal and s.username == user and lo <= e.t < hi:
            rows.append((s.portal_id, s.username, s.session_id, e.t, e.url, e.hostname, e.path, e.kind))
    rows.sort(key=lambda r: (r[3], r[2], r[4]))
    return rows


def with_downloads(events, by_id, lo, hi) -> list[tuple]:
    per: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        if e.session_id in by_id and e.kind in DOWNLOAD_KINDS and lo <= e.t < hi:
            per[e.session_id].append(e)
    rows = []
    for sid, evs in per.items():
        s = by_id[sid]
        rows.append((s.portal_id, s.session_id, s.username, s.start, s.end,
                     None if s.end is None else s.end - s.start,
                     sum(e.kind == DOWNLOAD_KINDS[0] for e in evs), sum(e.kind == DOWNLOAD_KINDS[1] for e in evs),
                     min(e.t for e in evs), max(e.t for e in evs)))
    rows.sort(key=lambda r: (r[3], r[1]))
    return rows


def prints(events, by_id, portal, lo, hi) -> list[tuple]:
    rows = []
    for e in events:
        s = by_id.get(e.session_id)
        if s and e.kind == PRINT_KIND and s.portal_id == portal and lo <= e.t < hi:
            rows.append((s.portal_id, s.username, s.session_id, e.t, s.start, s.end))
    rows.sort(key=lambda r: (r[3], r[2]))
    return rows


def pick_window(relevant: list[Event], by_id: dict, a: float, b: float) -> tuple[int, int, bool]:
    """[lo, hi) over the instants of `relevant` (events of archived sessions): lo the one at
    fraction a (included). hi an instant of one near fraction b (excluded) whose session started
    on hi's UTC date and has an earlier one at or after lo (included): so a query pruning
    start_date by the day before hi's date loses it; preferably before 11:00 UTC, where hi's
    date in a time zone 11 hours behind UTC is the day before. The flag: such an hi was found."""
    times = sorted({e.t for e in relevant})
    lo, target = times[int(len(times) * a)], times[int(len(times) * b)]
    per: dict[str, list[int]] = defaultdict(list)
    for e in relevant:
        per[e.session_id].append(e.t)
    ends = []
    for sid, ts in per.items():
        day = qk.utc_date(by_id[sid].start)
        ts.sort()
        ends += [t2 for t1, t2 in zip(ts, ts[1:]) if lo <= t1 < t2 and qk.utc_date(t2) == day]
    early = [t for t in ends if t % (24 * HOUR_MS) < 11 * HOUR_MS]
    if not (early or ends):
        return lo, target, False
    return lo, min(early or ends, key=lambda t: (abs(t - target), t)), True


# ---- DuckDB -------------------------------------------------------------------------------


def load_logger_view(con, sql_dir: str, logger_dir: str) -> None:
    text = qk.read(os.path.join(sql_dir, "session_logger_views.sql"))
    placeholder = "'LOGGER/**"
    if text.count(placeholder) != 1:
        raise SystemExit(f"{PROG}: FAIL: session_logger_views.sql must hold the placeholder {placeholder} once")
    root = os.path.abspath(logger_dir).replace("'", "''")
    con.execute(text.replace(placeholder, f"'{root}/**"))


def show_url(r: tuple) -> str:
    return f"({r[0]}, {r[1]!r}, {r[2]}, {fmt_ms(r[3])}, {r[4]}, {r[7]})"


def show_dl(r: tuple) -> str:
    return f"({r[1]}, {r[2]!r}, {fmt_ms(r[3])}-{fmt_ms(r[4])}, {r[6]}+{r[7]} in {fmt_ms(r[8])}..{fmt_ms(r[9])})"


def show_print(r: tuple) -> str:
    return f"({r[0]}, {r[1]!r}, {r[2]}, {fmt_ms(r[3])})"


def main() -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--archive", required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--sql-dir", required=True, help="the sql/duckdb folder")
    ap.add_argument("--logger-dir", help="where to write the logger's files (default: a temporary folder)")
    ap.add_argument("--seed", type=int, default=20261120)
    ap.add_argument("--timezone", default="Pacific/Pago_Pago", help="the DuckDB session's TimeZone")
    args = ap.parse_args()

    with open(args.expected, encoding="utf-8") as f:
        sessions = [Session(o) for o in json.load(f)]
    if not sessions:
        print(f"{PROG}: FAIL: {args.expected} holds no sessions", file=sys.stderr)
        return 1
    by_id = {s.session_id: s for s in sessions}
    failures: list[str] = []

    events, taken = generate(sessions, args.seed)
    archived = [e for e in events if e.archived]
    rng = random.Random(f"{args.seed}:targets")

    # (a) the (portal, user) with the most URL loads; a window over the middle half of them.
    url_counts = Counter((by_id[e.session_id].portal_id, by_id[e.session_id].username)
                         for e in archived if e.kind in URL_KINDS and by_id[e.session_id].username is not None)
    (url_portal, url_user), _ = max(url_counts.items(), key=lambda kv: (kv[1], kv[0]))
    url_events = [e for e in archived if e.kind in URL_KINDS
                  and (by_id[e.session_id].portal_id, by_id[e.session_id].username) == (url_portal, url_user)]
    url_times = sorted({e.t for e in url_events})
    url_lo, url_hi, url_same_day = pick_window(url_events, by_id, 0.25, 0.75)
    like = next(s for s in sessions if (s.portal_id, s.username) == (url_portal, url_user))
    events += targeted_ghosts(rng, like, taken, "UrlLoad", [url_lo, url_lo + 1, url_hi - 1])

    # (b) a window over the middle third of all download instants.
    dl_lo, dl_hi, dl_same_day = pick_window([e for e in archived if e.kind in DOWNLOAD_KINDS], by_id, 1 / 3, 2 / 3)
    events += targeted_ghosts(rng, sessions[0], taken, DOWNLOAD_KINDS[1], [dl_lo, dl_hi - 1])

    # (c) the portal with the most print jobs; a window over the middle half of them.
    print_counts = Counter(by_id[e.session_id].portal_id for e in archived if e.kind == PRINT_KIND)
    pr_portal, _ = max(print_counts.items(), key=lambda kv: (kv[1], kv[0]))
    pr_events = [e for e in archived if e.kind == PRINT_KIND and by_id[e.session_id].portal_id == pr_portal]
    pr_times = sorted({e.t for e in pr_events})
    pr_lo, pr_hi, pr_same_day = pick_window(pr_events, by_id, 0.25, 0.75)
    like = next(s for s in sessions if s.portal_id == pr_portal)
    events += targeted_ghosts(rng, like, taken, PRINT_KIND, [pr_lo, pr_hi - 1])

    # Two events without any session id at all.
    events += [Event(PRINT_KIND, session_record(rng, like, None), pr_lo, False),
               Event("UrlLoad", session_record(rng, like, None), url_lo, False, random_page(rng))]

    want_urls = urls_loaded(events, by_id, url_portal, url_user, url_lo, url_hi)
    want_dl = with_downloads(events, by_id, dl_lo, dl_hi)
    want_pr = prints(events, by_id, pr_portal, pr_lo, pr_hi)

    # The parameters must make the answers worth checking, and sit on the boundaries.
    def ghosts(pred) -> int:
        return sum(1 for e in events if e.session_id not in by_id and pred(e))

    if not (len(url_times) >= 4 and want_urls and want_urls[0][3] == url_lo and len(want_urls) < len(url_times)):
        failures.append(f"urls: window [{fmt_ms(url_lo)}, {fmt_ms(url_hi)}) of {len(url_times)} loads "
                        f"holds {len(want_urls)}, or none at its start")
    if not ghosts(lambda e: e.kind in URL_KINDS and (e.portal_id, e.username) == (url_portal, url_user)
                  and url_lo <= e.t < url_hi):
        failures.append("urls: no event of a session outside the archive in the window")
    if not any(e.kind in URL_KINDS and e.session_id in by_id and e.t == url_hi for e in events):
        failures.append("urls: no load exactly at the window's end")
    dl_sessions = {e.session_id for e in archived if e.kind in DOWNLOAD_KINDS}
    if not (want_dl and 0 < len(want_dl) < len(dl_sessions) and any(r[8] == dl_lo for r in want_dl)):
        failures.append(f"downloads: {len(want_dl)} of {len(dl_sessions)} sessions in the window, "
                        "or none at its start")
    if not ghosts(lambda e: e.kind in DOWNLOAD_KINDS and dl_lo <= e.t < dl_hi):
        failures.append("downloads: no event of a session outside the archive in the window")
    if not (want_pr and want_pr[0][3] == pr_lo and len(want_pr) < len(pr_times)):
        failures.append(f"prints: {len(want_pr)} of {len(pr_times)} print jobs in the window, or none at its start")
    if not ghosts(lambda e: e.kind == PRINT_KIND and e.portal_id == pr_portal and pr_lo <= e.t < pr_hi):
        failures.append("prints: no event of a session outside the archive in the window")
    if len({r[1] for r in want_pr}) < 2:
        failures.append("prints: fewer than two users printed in the window")
    for name, found in (("urls", url_same_day), ("downloads", dl_same_day), ("prints", pr_same_day)):
        if not found:
            failures.append(f"{name}: no window end on the start date of a session with an event before it")

    tmp = None
    logger_dir = args.logger_dir
    if not logger_dir:
        tmp = tempfile.TemporaryDirectory(prefix="session-logger-")
        logger_dir = tmp.name
    try:
        n_files, per_dialect = write_files(logger_dir, events, args.seed)

        con = duckdb.connect()
        con.execute("SET TimeZone = ?", [args.timezone])
        qk.load_view(con, args.sql_dir, args.archive)
        load_logger_view(con, args.sql_dir, logger_dir)

        # The view: every event written, once, with its fields.
        cur = con.execute(
            "SELECT session_id, event_type, event_time, username, portal_id, client_ip, portal_ip, "
            "hostname, path, url FROM session_logger_events"
        )
        got = Counter((r[0], r[1], to_ms(r[2]), *r[3:]) for r in cur.fetchall())
        want = Counter(e.row() for e in events)
        if got != want:
            missing = list((want - got).elements())[: qk.MAX_SHOWN]
            extra = list((got - want).elements())[: qk.MAX_SHOWN]
            failures.append(f"session_logger_events: {sum(got.values())} rows, {sum(want.values())} events written; "
                            f"missing {missing}; extra {extra}")

        # (a) URLs loaded by a user on a portal in a window
        cols, rows = qk.run_query(con, args.sql_dir, "urls_loaded_by_user", {
            "portal_id": url_portal, "username": url_user,
            "window_from": sql_instant(url_lo), "window_to": sql_instant(url_hi)})
        want_cols = ["portal_id", "username", "session_id", "event_time", "url", "hostname", "path", "event_type"]
        if qk.expect_columns(failures, "urls_loaded_by_user", cols, want_cols):
            got_rows = [(r[0], r[1], r[2], to_ms(r[3]), r[4], r[5], r[6], r[7]) for r in rows]
            qk.compare(failures, f"urls_loaded_by_user {url_user} [{fmt_ms(url_lo)}, {fmt_ms(url_hi)})",
                       got_rows, want_urls, show_url)

        # (b) sessions with downloads in a window
        cols, rows = qk.run_query(con, args.sql_dir, "sessions_with_downloads", {
            "window_from": sql_instant(dl_lo), "window_to": sql_instant(dl_hi)})
        want_cols = ["portal_id", "session_id", "username", "start_time", "end_time", "duration_ms",
                     "to_remote_disk", "to_local_disk", "first_download", "last_download"]
        if qk.expect_columns(failures, "sessions_with_downloads", cols, want_cols):
            got_rows = [(r[0], r[1], r[2], to_ms(r[3]), to_ms(r[4]), r[5], r[6], r[7], to_ms(r[8]), to_ms(r[9]))
                        for r in rows]
            qk.compare(failures, f"sessions_with_downloads [{fmt_ms(dl_lo)}, {fmt_ms(dl_hi)})",
                       got_rows, want_dl, show_dl)

        # (c) who printed from a portal, and when
        cols, rows = qk.run_query(con, args.sql_dir, "prints_on_portal", {
            "portal_id": pr_portal, "window_from": sql_instant(pr_lo), "window_to": sql_instant(pr_hi)})
        want_cols = ["portal_id", "username", "session_id", "printed_at", "start_time", "end_time"]
        if qk.expect_columns(failures, "prints_on_portal", cols, want_cols):
            got_rows = [(r[0], r[1], r[2], to_ms(r[3]), to_ms(r[4]), to_ms(r[5])) for r in rows]
            qk.compare(failures, f"prints_on_portal [{fmt_ms(pr_lo)}, {fmt_ms(pr_hi)})",
                       got_rows, want_pr, show_print)
    finally:
        if tmp is not None:
            tmp.cleanup()

    if failures:
        for f in failures:
            print(f"{PROG}: FAIL: {f}", file=sys.stderr)
        return 1
    outside = sum(e.session_id not in by_id for e in events)
    print(
        f"{PROG}: ok: duckdb {duckdb.__version__}, TimeZone {args.timezone}, {len(events)} events "
        f"({outside} of sessions the archive lacks) in {n_files} files of 4 loggers (Flat, NestedByDate "
        f"x JSONLines, Json), keys spelled 4 ways ({', '.join(f'{d} {per_dialect[d]}' for d in DIALECTS)}); "
        f"{len(want_urls)} URL loads of {url_user} in [{fmt_ms(url_lo)}, {fmt_ms(url_hi)}); "
        f"{len(want_dl)} sessions with downloads in [{fmt_ms(dl_lo)}, {fmt_ms(dl_hi)}); "
        f"{len(want_pr)} print jobs by {len({r[1] for r in want_pr})} users in [{fmt_ms(pr_lo)}, {fmt_ms(pr_hi)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
