-- archiver state, digests: the chain of signed digests (see src/digest and docs/audit.md).
--
-- manifests: every manifest this state wrote, with the SHA-256 of its exact bytes, recorded
-- by the one function that writes them, right after the write. `digest_seq` is the digest
-- that lists it; NULL until one does (a command killed before its digest leaves its
-- manifests here for the next command's digest). A row leaves once its digest is written and
-- its flush is published (recovery can no longer write it again), so the table does not grow
-- with the history.
CREATE TABLE manifests (
    key        TEXT PRIMARY KEY,          -- relative to the output root
    portal_id  TEXT NOT NULL,
    seq        INTEGER NOT NULL,          -- the flush's (or compaction's) sequence
    sha256     TEXT NOT NULL,             -- 64 lowercase hex digits
    written_at INTEGER NOT NULL,          -- epoch ms
    digest_seq INTEGER                    -- NULL: not listed by a digest yet
);
CREATE INDEX manifests_undigested ON manifests (digest_seq) WHERE digest_seq IS NULL;

-- digests: the newest digest of the chain (older rows leave once a newer one is written),
-- and a digest stored but not yet written to the digest location: its exact bytes, which
-- the next command writes first.
CREATE TABLE digests (
    seq        INTEGER PRIMARY KEY,       -- 1, 2, … without gaps
    key        TEXT NOT NULL,             -- relative to the digest root
    sha256     TEXT NOT NULL,             -- of the whole file
    signature  TEXT,                      -- base64; NULL: unsigned
    created_at TEXT NOT NULL,             -- RFC 3339 UTC, as in the body
    bytes      BLOB,                      -- the file; NULL once written
    written    INTEGER NOT NULL DEFAULT 0
);

-- The state's creation, where the first digest's range starts: its oldest run still in
-- the history, or now for a new state.
INSERT INTO meta (key, value) VALUES ('created_at_ms',
    CAST(coalesce((SELECT min(started_at) FROM runs),
                  (julianday('now') - 2440587.5) * 86400000) AS INTEGER));
-- A state that archived before digests existed: its manifests were never recorded here. Its
-- first digest lists those of its manifests the output holds (read and hashed then).
INSERT INTO meta (key, value)
    SELECT 'digest_import', '1' WHERE EXISTS (SELECT 1 FROM portals WHERE flush_seq > 0);
