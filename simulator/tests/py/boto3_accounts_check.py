#!/usr/bin/env python3
"""Checks the simulator's STS and Organizations APIs with boto3's real clients.

Usage: boto3_accounts_check.py ENDPOINT EXPIRING_ENDPOINT

ENDPOINT: a simulator with member accounts (SimConfig::accounts) and a suspended member.
EXPIRING_ENDPOINT: one whose AssumeRole credentials live 2 seconds.

Assumes roles and lists portals with the assumed credentials (only that account's portals,
compared with GET /_sim/info), provokes AccessDenied (suspended account, denied role through
/_sim/deny-role, unknown account, wrong external id is covered by the Rust tests) and
ValidationError, pages through ListAccounts, checks that member credentials may not call it,
and that expired credentials get ExpiredTokenException / ExpiredToken. Exits non-zero with a
clear message on the first mismatch; prints one summary line on success. Run by
simulator/tests/sdk.rs.
"""

import datetime
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from simcheck import Mismatch, check, control

EXPIRED = "The security token included in the request is expired"


def client(service, endpoint, key="AKIAHOMEEXAMPLE", secret="home-secret", token=None):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


def expect_error(code, status, fn, what):
    try:
        fn()
    except ClientError as e:
        got = e.response["Error"]["Code"]
        check(got == code, f"{what}: expected {code}, got {got} ({e.response['Error']})")
        got_status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        check(got_status == status, f"{what}: expected HTTP {status}, got {got_status}")
        return e.response["Error"]
    raise Mismatch(f"{what}: expected {code}, call succeeded")


def role(account):
    return f"arn:aws:iam::{account}:role/Archiver"


def assume(endpoint, account, session):
    out = client("sts", endpoint).assume_role(RoleArn=role(account), RoleSessionName=session)
    return out


def member_client(service, endpoint, creds):
    return client(service, endpoint, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])


def portal_arns(ws):
    arns, token = [], None
    while True:
        kwargs = {"maxResults": 1}
        if token:
            kwargs["nextToken"] = token
        out = ws.list_portals(**kwargs)
        arns.extend(p["portalArn"] for p in out["portals"])
        token = out.get("nextToken")
        if not token:
            return arns


def main():
    if len(sys.argv) != 3:
        print("usage: boto3_accounts_check.py ENDPOINT EXPIRING_ENDPOINT", file=sys.stderr)
        return 2
    endpoint = sys.argv[1].rstrip("/")
    expiring = sys.argv[2].rstrip("/")
    info = control(endpoint, "GET", "/_sim/info")
    home = info["account_id"]
    accounts = info["accounts"]
    suspended = info["suspended_accounts"]
    check(len(accounts) >= 2 and suspended, f"needs two accounts and a suspended one: {info}")
    by_account = {}
    for arn in info["portal_arns"]:
        by_account.setdefault(arn.split(":")[4], []).append(arn)

    # AssumeRole, then WorkSpaces Web with the assumed credentials: that account's portals only.
    for account in accounts:
        before = datetime.datetime.now(datetime.timezone.utc)
        out = assume(endpoint, account, "boto3-check")
        creds = out["Credentials"]
        check(creds["AccessKeyId"].startswith("ASIA"), f"access key id {creds['AccessKeyId']}")
        lifetime = (creds["Expiration"] - before).total_seconds()
        check(3590 <= lifetime <= 3601, f"Expiration {creds['Expiration']} is {lifetime} s away")
        user = out["AssumedRoleUser"]
        check(user["Arn"] == f"arn:aws:sts::{account}:assumed-role/Archiver/boto3-check", f"Arn {user}")
        check(out["ResponseMetadata"]["RequestId"], "RequestId")
        ws = member_client("workspaces-web", endpoint, creds)
        got = portal_arns(ws)
        check(got == by_account.get(account, []), f"{account} lists {got}")
        other = next(a for a in accounts if a != account)
        other_portal = by_account[other][0].rsplit("/", 1)[1]
        expect_error("ResourceNotFoundException", 404,
                     lambda: ws.list_sessions(portalId=other_portal), f"{account} lists {other}'s portal")

    # Denials, in STS's words.
    def denied(account):
        return (f"User: arn:aws:iam::{home}:root is not authorized to perform: sts:AssumeRole "
                f"on resource: {role(account)}")

    for account in (suspended[0], "444444444444"):
        err = expect_error("AccessDenied", 403, lambda: assume(endpoint, account, "s1"), f"role in {account}")
        check(err["Message"] == denied(account), f"message {err['Message']!r}")
    control(endpoint, "POST", "/_sim/deny-role", {"account": accounts[1]})
    err = expect_error("AccessDenied", 403, lambda: assume(endpoint, accounts[1], "s1"), "denied role")
    check(err["Message"] == denied(accounts[1]), f"message {err['Message']!r}")
    check(err.get("Type") == "Sender", f"error type {err}")
    control(endpoint, "POST", "/_sim/allow-role", {"account": accounts[1]})
    assume(endpoint, accounts[1], "s1")
    err = expect_error("ValidationError", 400, lambda: assume(endpoint, accounts[0], "has space"), "bad session name")
    check("roleSessionName" in err["Message"], f"message {err['Message']!r}")

    # ListAccounts: every member, paginated, with statuses.
    org = client("organizations", endpoint)
    pages = list(org.get_paginator("list_accounts").paginate())
    check(len(pages) >= 2, f"{len(pages)} ListAccounts pages")
    got = [(a["Id"], a["Status"], a["State"]) for p in pages for a in p["Accounts"]]
    want = ([(home, "ACTIVE", "ACTIVE")] + [(a, "ACTIVE", "ACTIVE") for a in accounts]
            + [(a, "SUSPENDED", "SUSPENDED") for a in suspended])
    check(got == want, f"ListAccounts {got} vs {want}")
    for p in pages:
        for a in p["Accounts"]:
            check(a["Arn"].startswith(f"arn:aws:organizations::{home}:account/o-"), f"Arn {a['Arn']}")
            check(isinstance(a["JoinedTimestamp"], datetime.datetime), f"JoinedTimestamp {a}")
            check(a["JoinedMethod"] == "CREATED" and "@" in a["Email"] and a["Name"], f"account {a}")
    pages = list(org.get_paginator("list_accounts").paginate(PaginationConfig={"PageSize": 1}))
    check([len(p["Accounts"]) for p in pages] == [1] * len(want), "pages of 1")
    expect_error("InvalidInputException", 400, lambda: org.list_accounts(MaxResults=21), "MaxResults 21")
    member = member_client("organizations", endpoint, assume(endpoint, accounts[0], "member")["Credentials"])
    expect_error("AccessDeniedException", 400, lambda: member.list_accounts(), "member lists the organization")

    # Throttling, as each service spells it (faults: the next 2 STS or Organizations calls).
    control(endpoint, "POST", "/_sim/faults", {"throttle_rpc_calls": 2})
    expect_error("Throttling", 400, lambda: assume(endpoint, accounts[0], "s1"), "throttled AssumeRole")
    expect_error("TooManyRequestsException", 400, lambda: org.list_accounts(), "throttled ListAccounts")
    control(endpoint, "POST", "/_sim/faults", {})
    check(org.list_accounts()["Accounts"], "ListAccounts once the throttling is over")

    # Credentials that expire after 2 s.
    creds = assume(expiring, accounts[0], "short")["Credentials"]
    ws = member_client("workspaces-web", expiring, creds)
    portal_arns(ws)
    wait = (creds["Expiration"] - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    check(0 < wait <= 2, f"expires in {wait} s")
    time.sleep(wait + 0.3)
    err = expect_error("ExpiredTokenException", 403, lambda: ws.list_portals(), "expired WorkSpaces Web")
    check(err["Message"] == EXPIRED, f"message {err['Message']!r}")
    sts = member_client("sts", expiring, creds)
    err = expect_error("ExpiredToken", 403,
                       lambda: sts.assume_role(RoleArn=role(accounts[1]), RoleSessionName="chain"), "expired STS")
    check(err["Message"] == EXPIRED, f"message {err['Message']!r}")
    expect_error("ExpiredTokenException", 400,
                 lambda: member_client("organizations", expiring, creds).list_accounts(), "expired Organizations")

    print(f"boto3 accounts check ok: {len(accounts)} accounts, {len(info['portal_arns'])} portals, "
          f"{len(want)} organization members")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Mismatch as m:
        print(f"boto3 accounts check FAILED: {m}", file=sys.stderr)
        sys.exit(1)
