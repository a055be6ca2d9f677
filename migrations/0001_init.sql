-- archiver state, schema version 1.
-- application_id marks the file as an archiver state ('ARCH').
PRAGMA application_id = 1095910216;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per portal: its watermark and, while a pass is in progress, the checkpoint.
CREATE TABLE portals (
    portal_id           TEXT PRIMARY KEY,
    portal_arn          TEXT,
    backfill_done       INTEGER NOT NULL DEFAULT 0,
    high_watermark_ms   INTEGER,           -- newest session start seen by a completed pass
    archived_max_ms     INTEGER,           -- newest start among archived ids (dedup shortcut)
    dedup_floor_ms      INTEGER,           -- every session starting before this has been seen;
                                           -- ids below it are pruned from `archived`
    flush_seq           INTEGER NOT NULL DEFAULT 0,
    pass_kind           TEXT,              -- NULL: no pass in progress; 'backfill' | 'incremental'
    pass_token          TEXT,              -- NextToken to continue from; NULL: from the pass start
    pass_stop_before_ms INTEGER,           -- incremental: stop once a page reaches below this
    pass_high_ms        INTEGER,           -- newest start seen so far in this pass
    pass_pages          INTEGER NOT NULL DEFAULT 0,
    pass_started_at     INTEGER,           -- epoch ms
    updated_at          INTEGER            -- epoch ms of the last commit
);

-- Sessions seen Active: written once they have ended.
CREATE TABLE pending (
    portal_id  TEXT NOT NULL,
    session_id TEXT NOT NULL,
    start_ms   INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL,            -- epoch ms a pass last saw it Active
    PRIMARY KEY (portal_id, session_id)
) WITHOUT ROWID;

-- Ids of archived sessions within the dedup window (older ones are pruned: see dedup_floor_ms).
CREATE TABLE archived (
    portal_id  TEXT NOT NULL,
    session_id TEXT NOT NULL,
    start_ms   INTEGER NOT NULL,
    PRIMARY KEY (portal_id, session_id)
) WITHOUT ROWID;

-- The files each flush wrote: staged, committed here, then published under their final name.
CREATE TABLE flush_files (
    portal_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    path         TEXT NOT NULL,             -- final key, relative to the output root
    staging      TEXT NOT NULL,             -- staging key, relative to the output root
    rows         INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    published    INTEGER NOT NULL DEFAULT 0,
    committed_at INTEGER NOT NULL,
    PRIMARY KEY (portal_id, seq, path)
);

CREATE TABLE runs (
    run_id     INTEGER PRIMARY KEY,
    command    TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at   INTEGER,
    outcome    TEXT NOT NULL,               -- running | ok | failed | interrupted
    detail     TEXT
);

CREATE TABLE run_portals (
    run_id    INTEGER NOT NULL,
    portal_id TEXT NOT NULL,
    pass      TEXT,
    outcome   TEXT NOT NULL,                -- ok | failed
    rows      INTEGER NOT NULL DEFAULT 0,
    pages     INTEGER NOT NULL DEFAULT 0,
    error     TEXT,
    PRIMARY KEY (run_id, portal_id)
);
