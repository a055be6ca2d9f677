"""Small helpers shared by tests/py/read_archive.py and benches/backfill_memory.py.

Only the standard library at import time; pyarrow is imported where it is needed, so the
bench can run (without its row column) in an interpreter that lacks it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

SESSIONS = "sessions"
PARTITION_RE = re.compile(r"^portal_id=(?P<portal_id>[^/=]+)/start_date=(?P<start_date>\d{4}-\d{2}-\d{2})$")
DAY_MS = 86_400_000


@dataclass
class DatasetListing:
    """What is under `<archive>/sessions`, sorted by path (relative to the sessions folder)."""

    root: str
    parquet_files: list[str] = field(default_factory=list)
    # Directories whose name ends in `.parquet`: a reader globbing `*.parquet` would trip on them.
    parquet_dirs: list[str] = field(default_factory=list)
    # Files not ending in `.parquet` that Hive-style readers (Spark, Hive, Athena) would still
    # read, because no component of their path starts with `.` or `_`.
    visible_other_files: list[str] = field(default_factory=list)
    # Files not ending in `.parquet` under a `.`/`_`-prefixed name: ignored by those readers.
    hidden_other_files: list[str] = field(default_factory=list)


def is_hidden(rel_path: str) -> bool:
    """Hadoop's rule (Spark, Hive, Athena): a path component starting with `.` or `_` is skipped."""
    return any(part.startswith((".", "_")) for part in rel_path.split("/"))


def list_dataset(archive: str) -> DatasetListing:
    root = os.path.join(archive, SESSIONS)
    listing = DatasetListing(root=root)
    if not os.path.isdir(root):
        return listing
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel = (lambda name: name) if rel_dir == "." else (lambda name: f"{rel_dir}/{name}")
        for d in dirnames:
            if d.endswith(".parquet"):
                listing.parquet_dirs.append(rel(d))
        for f in filenames:
            path = rel(f)
            if f.endswith(".parquet"):
                listing.parquet_files.append(path)
            elif is_hidden(path):
                listing.hidden_other_files.append(path)
            else:
                listing.visible_other_files.append(path)
    for paths in (
        listing.parquet_files,
        listing.parquet_dirs,
        listing.visible_other_files,
        listing.hidden_other_files,
    ):
        paths.sort()
    return listing


def count_rows(archive: str) -> int:
    """Rows in the dataset, from the Parquet footers only (no data pages decoded)."""
    import pyarrow.parquet as pq

    listing = list_dataset(archive)
    return sum(
        pq.ParquetFile(os.path.join(listing.root, f)).metadata.num_rows
        for f in listing.parquet_files
    )


def portal_id_of_arn(arn: str) -> str:
    """`arn:aws:workspaces-web:<region>:<account>:portal/<id>` -> `<id>`."""
    return arn.rsplit("/", 1)[-1]
