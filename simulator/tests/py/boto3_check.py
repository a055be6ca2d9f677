#!/usr/bin/env python3
"""Checks the WorkSpaces Web simulator with boto3's real workspaces-web client.

Usage: boto3_check.py ENDPOINT   (e.g. http://127.0.0.1:PORT)

Pages through ListPortals and ListSessions (paginators, both sort orders, filters), calls
GetSession, and provokes modeled errors (ResourceNotFoundException, ValidationException,
ThrottlingException via /_sim/faults); every answer is compared with GET /_sim/record, the
simulator's own truth. Exits non-zero with a clear message on the first mismatch; prints one
summary line on success. Run by simulator/tests/sdk.rs.
"""

import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from simcheck import Mismatch, check, control

PAGE = 7


def make_client(endpoint, retries):
    return boto3.client(
        "workspaces-web",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"mode": "standard", "total_max_attempts": retries}),
    )


def ms(dt):
    return round(dt.timestamp() * 1000)


def expected(record, portal_id, cutoff, descending, status=None, username=None, session_id=None):
    rows = [
        s
        for s in record
        if s["portalId"] == portal_id
        and s["startTimeMs"] >= cutoff
        and (status is None or s["status"] == status)
        and (username is None or s.get("username") == username)
        and (session_id is None or s["sessionId"] == session_id)
    ]
    rows.sort(key=lambda s: (s["startTimeMs"], s["sessionId"]), reverse=descending)
    return rows


def compare(got, want, what):
    got_ids = [s.get("sessionId") for s in got]
    want_ids = [s["sessionId"] for s in want]
    if got_ids != want_ids:
        raise Mismatch(f"{what}: got {len(got_ids)} ids, want {len(want_ids)}; first difference at "
                       f"{next((i for i, (a, b) in enumerate(zip(got_ids, want_ids)) if a != b), min(len(got_ids), len(want_ids)))}")
    for g, w in zip(got, want):
        sid = w["sessionId"]
        check(g.get("portalArn") == w["portalArn"], f"{what}: portalArn of {sid}")
        check(g.get("username") == w.get("username"), f"{what}: username of {sid}")
        check(g.get("status") == w["status"], f"{what}: status of {sid}")
        check(ms(g["startTime"]) == w["startTimeMs"], f"{what}: startTime of {sid}")
        end = g.get("endTime")
        check((None if end is None else ms(end)) == w.get("endTimeMs"), f"{what}: endTime of {sid}")


def list_sessions(client, portal_id, **params):
    pages = client.get_paginator("list_sessions").paginate(
        portalId=portal_id, PaginationConfig={"PageSize": PAGE}, **params
    )
    out = []
    n = 0
    for page in pages:
        n += 1
        check(len(page["sessions"]) <= PAGE, "page larger than maxResults")
        out.extend(page["sessions"])
    return out, n


def expect_error(code, fn, what):
    try:
        fn()
    except ClientError as e:
        got = e.response["Error"]["Code"]
        check(got == code, f"{what}: expected {code}, got {got}")
        return e
    raise Mismatch(f"{what}: expected {code}, call succeeded")


def main():
    if len(sys.argv) != 2:
        print("usage: boto3_check.py ENDPOINT", file=sys.stderr)
        return 2
    endpoint = sys.argv[1].rstrip("/")
    record = control(endpoint, "GET", "/_sim/record")
    info = control(endpoint, "GET", "/_sim/info")
    cutoff = info["retention_cutoff_ms"]
    client = make_client(endpoint, retries=1)
    calls = 0

    # ListPortals: boto3 has no paginator for it; page by hand.
    arns, token = [], None
    while True:
        kwargs = {"maxResults": 1}
        if token:
            kwargs["nextToken"] = token
        out = client.list_portals(**kwargs)
        calls += 1
        arns.extend(p["portalArn"] for p in out["portals"])
        token = out.get("nextToken")
        if not token:
            break
    want_arns = [
        f"arn:aws:workspaces-web:{info['region']}:{info['account_id']}:portal/{pid}"
        for pid in info["portal_ids"]
    ]
    check(arns == want_arns, f"ListPortals: {arns} vs {want_arns}")
    check({s["portalArn"] for s in record} <= set(arns), "every portal in the record is listed")

    portal_ids = info["portal_ids"]
    for pid in portal_ids:
        for descending in (False, True):
            sort_by = "StartTimeDescending" if descending else "StartTimeAscending"
            got, n = list_sessions(client, pid, sortBy=sort_by)
            calls += n
            compare(got, expected(record, pid, cutoff, descending), f"{pid} {sort_by}")
        got, n = list_sessions(client, pid)
        calls += n
        compare(got, expected(record, pid, cutoff, True), f"{pid} default order")

    pid = portal_ids[0]
    listable = expected(record, pid, cutoff, False)
    users = sorted({s["username"] for s in listable if s.get("username")})
    filters = [
        {"status": "Active"},
        {"status": "Terminated"},
        {"username": users[0]},
        {"username": users[-1], "status": "Terminated"},
        {"sessionId": listable[len(listable) // 2]["sessionId"]},
    ]
    for f in filters:
        for descending in (False, True):
            sort_by = "StartTimeDescending" if descending else "StartTimeAscending"
            got, n = list_sessions(client, pid, sortBy=sort_by, **f)
            calls += n
            want_kwargs = {
                "status": f.get("status"),
                "username": f.get("username"),
                "session_id": f.get("sessionId"),
            }
            compare(got, expected(record, pid, cutoff, descending, **want_kwargs), f"filter {sorted(f)} {sort_by}")

    # GetSession, with client IPs.
    for s in listable[:: max(1, len(listable) // 10)]:
        g = client.get_session(portalId=pid, sessionId=s["sessionId"])["session"]
        calls += 1
        check(g["sessionId"] == s["sessionId"], "GetSession id")
        check(g.get("clientIpAddresses") == s["clientIpAddresses"], f"GetSession IPs of {s['sessionId']}")
        check(g.get("username") == s.get("username"), "GetSession username")
        check(ms(g["startTime"]) == s["startTimeMs"], "GetSession startTime")
        end = g.get("endTime")
        check((None if end is None else ms(end)) == s.get("endTimeMs"), "GetSession endTime")

    # Modeled errors.
    missing = "00000000-0000-4000-8000-000000000000"
    e = expect_error("ResourceNotFoundException",
                     lambda: client.list_sessions(portalId=missing), "unknown portal")
    check(e.response["ResponseMetadata"]["HTTPStatusCode"] == 404, "404 for unknown portal")
    check(e.response.get("resourceId") == missing, f"resourceId: {e.response}")
    expect_error("ResourceNotFoundException",
                 lambda: client.get_session(portalId=pid, sessionId=missing), "unknown session")
    expect_error("ValidationException",
                 lambda: client.list_sessions(portalId=pid, maxResults=101), "maxResults 101")
    expect_error("ValidationException",
                 lambda: client.list_sessions(portalId=pid, nextToken="deadbeef"), "forged token")
    token = client.list_sessions(portalId=pid, maxResults=2)["nextToken"]
    control(endpoint, "POST", "/_sim/expire-tokens")
    e = expect_error("ValidationException",
                     lambda: client.list_sessions(portalId=pid, nextToken=token), "expired token")
    check("invalid or expired" in e.response["Error"]["Message"], "expired-token message")
    calls += 6

    control(endpoint, "POST", "/_sim/faults", {"throttle_rate": 1.0, "retry_after_secs": 3})
    try:
        e = expect_error("ThrottlingException",
                         lambda: client.list_sessions(portalId=pid), "throttled")
        check(e.response["ResponseMetadata"]["HTTPStatusCode"] == 429, "429 for throttling")
        check(e.response["ResponseMetadata"]["HTTPHeaders"].get("retry-after") == "3", "Retry-After header")
        control(endpoint, "POST", "/_sim/faults", {"error_rate": 1.0})
        expect_error("InternalServerException",
                     lambda: client.list_sessions(portalId=pid), "server error")
        control(endpoint, "POST", "/_sim/faults", {"deny_portals": [pid]})
        expect_error("AccessDeniedException",
                     lambda: client.list_sessions(portalId=pid), "denied portal")
        calls += 3
    finally:
        control(endpoint, "POST", "/_sim/faults", {})

    # Retries: boto3 retries throttling and 500s by itself and still gets every session.
    control(endpoint, "POST", "/_sim/faults", {"throttle_rate": 0.05, "error_rate": 0.05, "retry_after_secs": 0})
    try:
        retrying = make_client(endpoint, retries=10)
        got, _ = list_sessions(retrying, portal_ids[-1], sortBy="StartTimeAscending")
        compare(got, expected(record, portal_ids[-1], cutoff, False), "with retries")
    finally:
        control(endpoint, "POST", "/_sim/faults", {})

    stats = control(endpoint, "GET", "/_sim/stats")
    check(stats["list_sessions_calls"] > 0 and stats["throttled"] >= 1 and stats["server_errors"] >= 1,
          f"stats: {stats}")
    print(f"boto3 check ok: {len(portal_ids)} portals, {len(record)} sessions held, "
          f"{info.get('token_mode', 'keyset')} tokens, {calls}+ calls compared against the record")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Mismatch as m:
        print(f"boto3 check FAILED: {m}", file=sys.stderr)
        sys.exit(1)
