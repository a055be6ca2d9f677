-- archiver state, schema version 2: compaction.
-- Files a compaction replaced, to delete once the compacted file (a flush_files row of the
-- same seq) is published. Recovery finishes what a killed compaction left.
CREATE TABLE retired_files (
    portal_id TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    path      TEXT NOT NULL,             -- relative to the output root
    PRIMARY KEY (portal_id, path)
);
