-- The `sessions` view over an archiver dataset, for DuckDB (1.1 or newer).
--
-- Placeholder: ARCHIVE, the archive folder (the `--output` given to archiver), in the
-- read_parquet path below. Replace it before running, e.g.
--
--   sed "s|'ARCHIVE/|'/srv/archive/|" sql/duckdb/views.sql | duckdb sessions.duckdb
--
-- (an S3 archive works the same way with DuckDB's httpfs extension: 's3://bucket/prefix/').
--
-- The partition keys exist only in the folder names
-- (sessions/portal_id=<id>/start_date=<YYYY-MM-DD>/); hive_types gives them fixed types
-- instead of DuckDB's guesses. Only files under sessions/ are read, so the writer's
-- _staging/ folder is never seen, and every *.parquet file there is complete.
-- union_by_name keeps the view working when newer files carry more columns.
--
-- Columns: portal_id VARCHAR, start_date DATE (UTC date of start_time), portal_arn,
-- session_id, username (NULL when unknown), status ('Terminated'), start_time, end_time,
-- archived_at (TIMESTAMP WITH TIME ZONE, millisecond precision).
CREATE OR REPLACE VIEW sessions AS
SELECT
    portal_id,
    start_date,
    portal_arn,
    session_id,
    username,
    status,
    start_time,
    end_time,
    archived_at
FROM read_parquet(
    'ARCHIVE/sessions/**/*.parquet',
    hive_partitioning = true,
    hive_types = {'portal_id': VARCHAR, 'start_date': DATE},
    union_by_name = true
);
