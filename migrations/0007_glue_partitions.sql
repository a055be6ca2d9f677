-- archiver state, Glue partitions: for a `--glue-table` whose partitions are registered in Glue
-- (no partition projection), the partitions (portal, UTC day) that flushes committed and that
-- BatchCreatePartition has not registered yet. A flush's rows go in with its commit, before
-- its files are published, so a run killed after publishing leaves them for the next run.
-- Recorded only while meta 'glue_partitions' names the table they are for; a row leaves once
-- Glue holds the partition. Never more rows than partitions awaiting registration.
CREATE TABLE glue_partitions (
    portal_id  TEXT NOT NULL,
    start_date TEXT NOT NULL,               -- YYYY-MM-DD
    PRIMARY KEY (portal_id, start_date)
) WITHOUT ROWID;
