-- Sessions in a time window: every session that overlaps [window_from, window_to), i.e.
-- started before window_to and ended after window_from (a session without an end_time
-- counts as still open).
--
-- Parameters (DuckDB variables, set in the same connection before running this file; give
-- the UTC offset, or the session's TimeZone setting applies):
--   SET VARIABLE window_from = '2026-11-20 08:00:00+00';
--   SET VARIABLE window_to   = '2026-11-20 18:00:00+00';
-- Needs the `sessions` view (sql/duckdb/views.sql). The start_date condition only prunes
-- partitions (a session starting before window_to starts on or before its UTC date).
SELECT
    portal_id,
    session_id,
    username,
    start_time,
    end_time
FROM sessions
WHERE start_date <= (getvariable('window_to')::TIMESTAMPTZ AT TIME ZONE 'UTC')::DATE
  AND start_time < getvariable('window_to')::TIMESTAMPTZ
  AND (end_time IS NULL OR end_time > getvariable('window_from')::TIMESTAMPTZ)
ORDER BY start_time, session_id;
