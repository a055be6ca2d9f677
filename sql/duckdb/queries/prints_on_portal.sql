-- Who printed from a portal, and when: every print job (Session Logger event PrintJobSubmit) in
-- [window_from, window_to) in the portal's archived sessions, with the archive's username.
-- Events of sessions the archive does not hold are left out (they are matched by session id).
--
-- Parameters (DuckDB variables, set in the same connection before running this file; give
-- the UTC offset, or the session's TimeZone setting applies):
--   SET VARIABLE portal_id   = 'PORTAL-ID';
--   SET VARIABLE window_from = '2026-10-01 00:00:00+00';
--   SET VARIABLE window_to   = '2026-11-01 00:00:00+00';
-- Needs the `sessions` view (sql/duckdb/views.sql) and the `session_logger_events` view
-- (sql/duckdb/session_logger_views.sql). The start_date condition only prunes partitions.
-- For the number per user: SELECT username, count(*) FROM (...) GROUP BY username.
SELECT
    s.portal_id,
    s.username,
    s.session_id,
    e.event_time AS printed_at,
    s.start_time,
    s.end_time
FROM session_logger_events AS e
JOIN sessions AS s ON s.session_id = e.session_id
WHERE s.portal_id = getvariable('portal_id')
  AND s.start_date <= (getvariable('window_to')::TIMESTAMPTZ AT TIME ZONE 'UTC')::DATE
  AND e.event_type = 'PrintJobSubmit'
  AND e.event_time >= getvariable('window_from')::TIMESTAMPTZ
  AND e.event_time < getvariable('window_to')::TIMESTAMPTZ
ORDER BY e.event_time, s.session_id;
