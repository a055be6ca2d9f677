-- Sessions per user per day: how many sessions each user started on each UTC day, per portal.
--
-- Parameters: none. Needs the `sessions` view (sql/duckdb/views.sql).
-- A day is the UTC date of the session start (the start_date partition). Sessions without a
-- username are counted under username NULL.
SELECT
    portal_id,
    username,
    start_date AS day,
    count(*) AS sessions
FROM sessions
GROUP BY portal_id, username, start_date
ORDER BY portal_id, day, username NULLS LAST;
