-- Longest sessions: the top_n sessions by duration (end_time - start_time), longest first.
--
-- Parameters (DuckDB variables, set in the same connection before running this file):
--   SET VARIABLE top_n = 20;    -- how many sessions
-- Needs the `sessions` view (sql/duckdb/views.sql). Sessions without an end_time are left
-- out. Ties are broken by session_id, so the answer is deterministic.
SELECT
    portal_id,
    session_id,
    username,
    start_time,
    end_time,
    epoch_ms(end_time) - epoch_ms(start_time) AS duration_ms,
    end_time - start_time AS duration
FROM sessions
WHERE end_time IS NOT NULL
ORDER BY duration_ms DESC, session_id
LIMIT getvariable('top_n');
