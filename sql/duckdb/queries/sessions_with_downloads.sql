-- Sessions with file downloads: every archived session with at least one download event in
-- [window_from, window_to), with the archive's start, end and duration, and its downloads:
--   to_remote_disk  FileDownloadFromSecureBrowserToRemoteDisk (by its name, a file saved from
--                   a website to the secure browser's disk)
--   to_local_disk   FileTransferFromRemoteToLocalDisk (a file moved out of the secure browser
--                   to the user's own computer)
-- Events of sessions the archive does not hold are left out (they are matched by session id).
--
-- Parameters (DuckDB variables, set in the same connection before running this file; give
-- the UTC offset, or the session's TimeZone setting applies):
--   SET VARIABLE window_from = '2026-10-01 00:00:00+00';
--   SET VARIABLE window_to   = '2026-11-01 00:00:00+00';
-- Needs the `sessions` view (sql/duckdb/views.sql) and the `session_logger_events` view
-- (sql/duckdb/session_logger_views.sql). The start_date condition only prunes partitions.
SELECT
    s.portal_id,
    s.session_id,
    s.username,
    s.start_time,
    s.end_time,
    epoch_ms(s.end_time) - epoch_ms(s.start_time) AS duration_ms,
    count(*) FILTER (WHERE e.event_type = 'FileDownloadFromSecureBrowserToRemoteDisk') AS to_remote_disk,
    count(*) FILTER (WHERE e.event_type = 'FileTransferFromRemoteToLocalDisk') AS to_local_disk,
    min(e.event_time) AS first_download,
    max(e.event_time) AS last_download
FROM session_logger_events AS e
JOIN sessions AS s ON s.session_id = e.session_id
WHERE e.event_type IN ('FileDownloadFromSecureBrowserToRemoteDisk', 'FileTransferFromRemoteToLocalDisk')
  AND e.event_time >= getvariable('window_from')::TIMESTAMPTZ
  AND e.event_time < getvariable('window_to')::TIMESTAMPTZ
  AND s.start_date <= (getvariable('window_to')::TIMESTAMPTZ AT TIME ZONE 'UTC')::DATE
GROUP BY s.portal_id, s.session_id, s.username, s.start_time, s.end_time
ORDER BY s.start_time, s.session_id;
