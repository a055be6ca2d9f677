-- The four queries of sql/duckdb/queries/, in Athena (engine v3) SQL, over the table of
-- sql/athena/create_table.sql. Run them one at a time (console, or
-- `aws athena start-query-execution --query-string file://...`).
--
-- Placeholders, written as example literals followed by a comment naming them:
--   PORTAL_IDS   the portals to query: portal_id IN ('...', '...'). Required by the
--                `injected` projection of portal_id (see create_table.sql). With an `enum`
--                projection (kept current by archiver's `--glue-table`), drop the condition
--                to query every portal, or keep it to query some.
--   WINDOW_FROM, WINDOW_TO, AT_TIME   instants in UTC: TIMESTAMP 'YYYY-MM-DD HH:MM:SS[.mmm]'
--   *_DATE       the UTC date of the instant next to it (prunes start_date partitions; a
--                session starting before an instant starts on or before its UTC date)
--   TOP_N        a row count
-- start_time and end_time are `timestamp` values holding UTC; compare them with UTC literals.


-- (a) Sessions per user per day (UTC date of the start), per portal.
SELECT portal_id, username, start_date AS day, count(*) AS sessions
FROM archiver_sessions
WHERE portal_id IN ('PORTAL-ID-1', 'PORTAL-ID-2')                        -- PORTAL_IDS
GROUP BY portal_id, username, start_date
ORDER BY portal_id, day, username NULLS LAST;


-- (b) Longest sessions: the TOP_N longest, ties broken by session_id.
SELECT portal_id, session_id, username, start_time, end_time,
       date_diff('millisecond', start_time, end_time) AS duration_ms
FROM archiver_sessions
WHERE portal_id IN ('PORTAL-ID-1', 'PORTAL-ID-2')                        -- PORTAL_IDS
  AND end_time IS NOT NULL
ORDER BY duration_ms DESC, session_id
LIMIT 20;                                                                 -- TOP_N


-- (c) Sessions overlapping the window [WINDOW_FROM, WINDOW_TO).
SELECT portal_id, session_id, username, start_time, end_time
FROM archiver_sessions
WHERE portal_id IN ('PORTAL-ID-1', 'PORTAL-ID-2')                        -- PORTAL_IDS
  AND start_date <= DATE '2026-11-20'                                     -- WINDOW_TO_DATE
  AND start_time <  TIMESTAMP '2026-11-20 18:00:00'                       -- WINDOW_TO
  AND (end_time IS NULL OR end_time > TIMESTAMP '2026-11-20 08:00:00')    -- WINDOW_FROM
ORDER BY start_time, session_id;


-- (d) Concurrent sessions at AT_TIME: start_time <= AT_TIME < end_time.
SELECT portal_id, session_id, username, start_time, end_time
FROM archiver_sessions
WHERE portal_id IN ('PORTAL-ID-1', 'PORTAL-ID-2')                        -- PORTAL_IDS
  AND start_date <= DATE '2026-11-20'                                     -- AT_TIME_DATE
  AND start_time <= TIMESTAMP '2026-11-20 12:00:00'                       -- AT_TIME
  AND (end_time IS NULL OR end_time > TIMESTAMP '2026-11-20 12:00:00')    -- AT_TIME
ORDER BY portal_id, start_time, session_id;
-- For the number alone: SELECT portal_id, count(*) ... GROUP BY portal_id.
