#!/usr/bin/env python3
"""What digests and signing add to a nightly run: CPU per `archiver run`, and KMS calls per run.

    benches/digests.py --before /tmp/old/target/release/archiver [--after target/release/archiver]
                       [--portals 20] [--sessions 2000] [--rounds 7] [--kms]

Starts `archiver simulator --portals P --sessions-per-portal S` on 127.0.0.1. Each contender
gets its own state and archive and a first `run` (the backfill of every portal, not measured);
then, round by round and interleaved (so drift on a shared machine hits all alike), each runs
one more `run` (an incremental pass of every portal, which writes a digest), measured alone
with wait4 (user + system CPU). Contenders:

- `before`: a build without digests (--before), the base of the ratios;
- `unsigned`: this build, digests chained by SHA-256;
- `signed (file)`: this build with `--sign-key` a local key (`archiver keygen`);
- `signed (KMS)` with --kms: this build with `--sign-key` an ECC_NIST_P256 key of moto's KMS
  (`moto_server` on PATH), reached through a counting proxy on 127.0.0.1 that tallies the KMS
  calls by `X-Amz-Target`. (The unmeasured backfill of this contender is unsigned: moto signs
  messages over 4 KiB wrongly.)

Every run must exit 0. Prints one Markdown table: median, min and max CPU, the ratio to
`before`, and KMS calls per run.
"""
import argparse
import http.client
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backfill_memory import Simulator, aws_env  # noqa: E402


class CountingProxy:
    """A loopback HTTP proxy in front of `upstream` (host, port) that counts requests by their
    `X-Amz-Target` header."""

    def __init__(self, upstream: tuple[str, int]):
        counts: Counter = Counter()
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    counts[self.headers.get("X-Amz-Target", "?")] += 1
                conn = http.client.HTTPConnection(*upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"{upstream[0]}:{upstream[1]}"
                conn.request("POST", self.path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.counts = counts
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def calls(self) -> int:
        return sum(self.counts.values())


def start_moto(tmp: str):
    """moto_server on a free loopback port; returns (process, port)."""
    log = open(os.path.join(tmp, "moto.log"), "wb")
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", "0"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(os.path.join(tmp, "moto.log"), "rb") as f:
            text = f.read().decode(errors="replace")
        for word in text.split():
            if word.startswith("http://127.0.0.1:"):
                return proc, int(word.rsplit(":", 1)[1].strip("/"))
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("digests: moto_server did not start (is the test venv's bin/ on PATH?)")


def create_kms_key(port: int, env: dict) -> str:
    """A new ECC_NIST_P256 SIGN_VERIFY key in moto's KMS; its ARN."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"KeyUsage": "SIGN_VERIFY", "KeySpec": "ECC_NIST_P256"})
    conn.request("POST", "/", body=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.CreateKey",
        "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kms/aws4_request, "
                         "SignedHeaders=host, Signature=0"})
    r = conn.getresponse()
    data = json.loads(r.read())
    if r.status != 200:
        raise SystemExit(f"digests: CreateKey failed: {data}")
    return data["KeyMetadata"]["Arn"]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="a release build without digests")
    ap.add_argument("--after", default=os.path.join(REPO, "target", "release", "archiver"))
    ap.add_argument("--portals", type=int, default=20, help="portals (default %(default)s; with --kms, at most about 25: a digest body over 4 KiB meets the moto bug above)")
    ap.add_argument("--sessions", type=int, default=2000, help="sessions per portal")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--kms", action="store_true", help="also sign with moto's KMS (moto_server on PATH)")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="archiver-digests-")
    moto = None
    try:
        sim = Simulator(a.after, ["--portals", str(a.portals), "--sessions-per-portal", str(a.sessions),
                                  "--active-per-portal", "2"], os.path.join(tmp, "simulator.log"), 600)
        env = aws_env(sim.endpoint)
        key = os.path.join(tmp, "sign.pem")
        subprocess.run([a.after, "keygen", "--out", key], check=True, stdout=subprocess.DEVNULL, env=env)
        contenders = [("before", a.before, []), ("unsigned", a.after, []),
                      ("signed (file)", a.after, ["--sign-key", key])]
        proxy = None
        if a.kms:
            moto, port = start_moto(tmp)
            arn = create_kms_key(port, env)
            proxy = CountingProxy(("127.0.0.1", port))
            env["AWS_ENDPOINT_URL_KMS"] = proxy.endpoint
            contenders.append(("signed (KMS)", a.after, ["--sign-key", arn]))
        cpu = {name: [] for name, _, _ in contenders}
        kms_calls = []

        def run(name, binary, extra):
            d = os.path.join(tmp, slug(name))
            argv = [binary, "--state", d + "/state.db", "--output", d + "/out", *extra, "run"]
            before = proxy.calls() if proxy else 0
            p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=open(d + ".log", "ab"))
            _, status, ru = os.wait4(p.pid, 0)
            if status != 0:
                with open(d + ".log", "rb") as f:
                    tail = f.read()[-2000:].decode(errors="replace")
                raise SystemExit(f"digests: {name} exited with status {status}:\n{tail}")
            if proxy and "KMS" in name:
                kms_calls.append(proxy.calls() - before)
            return ru.ru_utime + ru.ru_stime

        for name, binary, extra in contenders:
            os.makedirs(os.path.join(tmp, slug(name)), exist_ok=True)
            # The backfill, not measured. moto's KMS signs a message over 4 KiB wrongly (it
            # ignores MessageType=DIGEST, which archiver's own check of the signature then
            # refuses), and the backfill's digest lists every portal's manifest: it is unsigned
            # there, the measured runs' digests are signed.
            run(name, binary, [] if "KMS" in name else extra)
        kms_calls.clear()
        for _ in range(a.rounds):
            for name, binary, extra in contenders:
                cpu[name].append(run(name, binary, extra))
        sim.stop()
    finally:
        if moto:
            moto.terminate()
        shutil.rmtree(tmp, ignore_errors=True)

    base = statistics.median(cpu["before"])
    print(f"| `run` over {a.portals} portals ({a.sessions:,} sessions each), nothing new, "
          f"{a.rounds} interleaved rounds | median CPU s | min | max | ratio to before | KMS calls per run |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, _ in contenders:
        m = statistics.median(cpu[name])
        calls = f"{statistics.median(kms_calls):g}" if "KMS" in name else "0"
        print(f"| {name} | {m:.3f} | {min(cpu[name]):.3f} | {max(cpu[name]):.3f} | {m / base:.2f} | {calls} |")


if __name__ == "__main__":
    main()
