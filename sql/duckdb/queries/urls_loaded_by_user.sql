-- URLs a user loaded: every URL load (Session Logger event UrlLoad, or UrlVisit as AWS's event
-- table names it) in [window_from, window_to) in the sessions the archive holds for one
-- username on one portal. Sessions are matched by session id, and the portal and username are
-- the archive's (so events of a session the archive does not hold are left out).
--
-- Parameters (DuckDB variables, set in the same connection before running this file; give
-- the UTC offset, or the session's TimeZone setting applies):
--   SET VARIABLE portal_id   = 'PORTAL-ID';
--   SET VARIABLE username    = 'jane.doe@example.com';
--   SET VARIABLE window_from = '2026-10-01 00:00:00+00';
--   SET VARIABLE window_to   = '2026-11-01 00:00:00+00';
-- Needs the `sessions` view (sql/duckdb/views.sql) and the `session_logger_events` view
-- (sql/duckdb/session_logger_views.sql). The start_date condition only prunes partitions
-- (a session with an event before window_to started on or before its UTC date).
SELECT
    s.portal_id,
    s.username,
    s.session_id,
    e.event_time,
    e.url,
    e.hostname,
    e.path,
    e.event_type
FROM session_logger_events AS e
JOIN sessions AS s ON s.session_id = e.session_id
WHERE s.portal_id = getvariable('portal_id')
  AND s.username = getvariable('username')
  AND s.start_date <= (getvariable('window_to')::TIMESTAMPTZ AT TIME ZONE 'UTC')::DATE
  AND e.event_type IN ('UrlLoad', 'UrlVisit')
  AND e.event_time >= getvariable('window_from')::TIMESTAMPTZ
  AND e.event_time < getvariable('window_to')::TIMESTAMPTZ
ORDER BY e.event_time, s.session_id, e.url;
