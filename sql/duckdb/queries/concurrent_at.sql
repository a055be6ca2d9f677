-- Concurrent sessions at a point in time: every session open at at_time, i.e.
-- start_time <= at_time < end_time (a session without an end_time counts as still open).
-- Wrap it in SELECT count(*) FROM (...) for the number alone.
--
-- Parameters (DuckDB variables, set in the same connection before running this file; give
-- the UTC offset, or the session's TimeZone setting applies):
--   SET VARIABLE at_time = '2026-11-20 12:00:00+00';
-- Needs the `sessions` view (sql/duckdb/views.sql). The start_date condition only prunes
-- partitions.
SELECT
    portal_id,
    session_id,
    username,
    start_time,
    end_time
FROM sessions
WHERE start_date <= (getvariable('at_time')::TIMESTAMPTZ AT TIME ZONE 'UTC')::DATE
  AND start_time <= getvariable('at_time')::TIMESTAMPTZ
  AND (end_time IS NULL OR end_time > getvariable('at_time')::TIMESTAMPTZ)
ORDER BY portal_id, start_time, session_id;
