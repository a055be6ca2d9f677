-- archiver state, kept duplicates: under S3 Object Lock, sessions with more than one row in
-- locked files, which `verify --repair` cannot rewrite (a locked file cannot be deleted until
-- its retention ends). Recorded by the repair that found them; `verify` then counts them as
-- `kept_duplicates`, not as differences. One row per session, never more than such sessions.
CREATE TABLE kept_duplicates (
    portal_id   TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    start_date  TEXT NOT NULL,              -- YYYY-MM-DD, the partition holding the rows
    recorded_ms INTEGER NOT NULL,
    PRIMARY KEY (portal_id, session_id)
) WITHOUT ROWID;
