"""The rows digest of docs/dataset.md, computed independently of archiver (pyarrow + hashlib).

usage: rows_digest.py PATH...   each PATH a .parquet file or a folder (all .parquet below it)
prints {"PATH": {"rows": n, "rows_sha256": "<64 hex>"}} as JSON.
"""

import hashlib
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

COLUMNS = [
    "portal_arn",
    "session_id",
    "username",
    "status",
    "start_time",
    "end_time",
    "archived_at",
    "client_ip_addresses",
]
TIMESTAMPS = {"start_time", "end_time", "archived_at"}


def string(v):
    b = v.encode("utf-8")
    return b"\x01" + len(b).to_bytes(4, "big") + b


def encode(row):
    out = bytearray()
    for c in COLUMNS:
        v = row.get(c)
        if v is None:
            out += b"\x00"
        elif c in TIMESTAMPS:
            out += b"\x01" + int(v).to_bytes(8, "big", signed=True)
        elif c == "client_ip_addresses":
            out += b"\x01" + len(v).to_bytes(4, "big")
            for item in v:
                out += b"\x00" if item is None else string(item)
        else:
            out += string(v)
    return bytes(out)


def files(path):
    if os.path.isfile(path):
        return [path]
    found = []
    for root, _, names in os.walk(path):
        found += [os.path.join(root, n) for n in names if n.endswith(".parquet")]
    return sorted(found)


def digest(path):
    total, rows = 0, 0
    for f in files(path):
        table = pq.read_table(f)
        for c in TIMESTAMPS & set(table.column_names):
            i = table.column_names.index(c)
            table = table.set_column(i, c, table.column(c).cast(pa.int64()))
        for row in table.to_pylist():
            total += int.from_bytes(hashlib.sha256(encode(row)).digest(), "big")
            rows += 1
    return {"rows": rows, "rows_sha256": format(total % (1 << 256), "064x")}


print(json.dumps({p: digest(p) for p in sys.argv[1:]}))
