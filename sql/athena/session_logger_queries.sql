-- The three Session Logger queries of sql/duckdb/queries/ (urls_loaded_by_user,
-- sessions_with_downloads, prints_on_portal), in Athena (engine v3) SQL: the view
-- session_logger_events (session_logger_view.sql) joined by session id to the archive's table
-- archiver_sessions (create_table.sql). Run them one at a time. Events of sessions the archive
-- does not hold are left out; portal and username are the archive's.
--
-- Placeholders, written as example literals followed by a comment naming them:
--   PORTAL_ID, PORTAL_IDS   the portal(s): portal_id = '...' or portal_id IN ('...', '...').
--                           Required by the `injected` projection of archiver_sessions (see
--                           create_table.sql); with an `enum` projection (archiver's
--                           `--glue-table`) PORTAL_IDS may be dropped to query every portal.
--   USERNAME                a username, as the archive holds it
--   WINDOW_FROM, WINDOW_TO  instants in UTC: TIMESTAMP 'YYYY-MM-DD HH:MM:SS[.mmm]'; the window
--                           is [WINDOW_FROM, WINDOW_TO)
--   WINDOW_TO_DATE          the UTC date of WINDOW_TO (prunes start_date partitions: a session
--                           with an event before WINDOW_TO started on or before that date)
--   FROM_DAY, TO_DAY        the logger's date folders to read, in the table's day format: the
--                           day before WINDOW_FROM's date and the day after WINDOW_TO's (what a
--                           folder's date stands for is not documented, hence the margin). The
--                           `day IS NULL` half keeps a Flat table (no date folders) working.
-- event_time, start_time and end_time are `timestamp` values holding UTC.


-- (a) URLs a user loaded: every URL load (event UrlLoad, or UrlVisit as AWS's event table names
--     it) in [WINDOW_FROM, WINDOW_TO) in the sessions the archive holds for USERNAME on PORTAL_ID.
SELECT s.portal_id, s.username, s.session_id, e.event_time, e.url, e.hostname, e.path, e.event_type
FROM session_logger_events AS e
JOIN archiver_sessions AS s ON s.session_id = e.session_id
WHERE s.portal_id = 'PORTAL-ID-1'                                         -- PORTAL_ID
  AND s.username = 'jane.doe@example.com'                                 -- USERNAME
  AND s.start_date <= DATE '2026-11-01'                                   -- WINDOW_TO_DATE
  AND (e.day IS NULL OR e.day BETWEEN '2026/09/30' AND '2026/11/02')      -- FROM_DAY, TO_DAY
  AND e.event_type IN ('UrlLoad', 'UrlVisit')
  AND e.event_time >= TIMESTAMP '2026-10-01 00:00:00'                     -- WINDOW_FROM
  AND e.event_time <  TIMESTAMP '2026-11-01 00:00:00'                     -- WINDOW_TO
ORDER BY e.event_time, s.session_id, e.url;


-- (b) Sessions with file downloads: every archived session with a download event in
--     [WINDOW_FROM, WINDOW_TO), with its start, end and duration. to_remote_disk counts
--     FileDownloadFromSecureBrowserToRemoteDisk (by its name, a file saved from a website to the
--     secure browser's disk), to_local_disk FileTransferFromRemoteToLocalDisk (a file moved out
--     to the user's own computer).
SELECT s.portal_id, s.session_id, s.username, s.start_time, s.end_time,
       date_diff('millisecond', s.start_time, s.end_time) AS duration_ms,
       count(*) FILTER (WHERE e.event_type = 'FileDownloadFromSecureBrowserToRemoteDisk') AS to_remote_disk,
       count(*) FILTER (WHERE e.event_type = 'FileTransferFromRemoteToLocalDisk') AS to_local_disk,
       min(e.event_time) AS first_download,
       max(e.event_time) AS last_download
FROM session_logger_events AS e
JOIN archiver_sessions AS s ON s.session_id = e.session_id
WHERE s.portal_id IN ('PORTAL-ID-1', 'PORTAL-ID-2')                       -- PORTAL_IDS
  AND s.start_date <= DATE '2026-11-01'                                   -- WINDOW_TO_DATE
  AND (e.day IS NULL OR e.day BETWEEN '2026/09/30' AND '2026/11/02')      -- FROM_DAY, TO_DAY
  AND e.event_type IN ('FileDownloadFromSecureBrowserToRemoteDisk', 'FileTransferFromRemoteToLocalDisk')
  AND e.event_time >= TIMESTAMP '2026-10-01 00:00:00'                     -- WINDOW_FROM
  AND e.event_time <  TIMESTAMP '2026-11-01 00:00:00'                     -- WINDOW_TO
GROUP BY s.portal_id, s.session_id, s.username, s.start_time, s.end_time
ORDER BY s.start_time, s.session_id;


-- (c) Who printed from a portal, and when: every print job (event PrintJobSubmit) in
--     [WINDOW_FROM, WINDOW_TO) in PORTAL_ID's archived sessions.
SELECT s.portal_id, s.username, s.session_id, e.event_time AS printed_at, s.start_time, s.end_time
FROM session_logger_events AS e
JOIN archiver_sessions AS s ON s.session_id = e.session_id
WHERE s.portal_id = 'PORTAL-ID-1'                                         -- PORTAL_ID
  AND s.start_date <= DATE '2026-11-01'                                   -- WINDOW_TO_DATE
  AND (e.day IS NULL OR e.day BETWEEN '2026/09/30' AND '2026/11/02')      -- FROM_DAY, TO_DAY
  AND e.event_type = 'PrintJobSubmit'
  AND e.event_time >= TIMESTAMP '2026-10-01 00:00:00'                     -- WINDOW_FROM
  AND e.event_time <  TIMESTAMP '2026-11-01 00:00:00'                     -- WINDOW_TO
ORDER BY e.event_time, s.session_id;
-- For the number per user: SELECT username, count(*) FROM (...) GROUP BY username.
