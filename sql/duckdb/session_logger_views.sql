-- The `session_logger_events` view over the files WorkSpaces Secure Browser's Session Logger
-- delivers to S3, for DuckDB (tested with 2.0.1), to join with the `sessions` view of
-- sql/duckdb/views.sql by session id (the queries in sql/duckdb/queries/ that need it say so).
--
-- Placeholder: LOGGER, the folder the logger writes to (its bucket and key prefix, or a local
-- copy of it), in the read_json path below. Replace it before running, e.g.
--
--   sed "s|'LOGGER/|'/srv/session-logs/|" sql/duckdb/session_logger_views.sql | duckdb sessions.duckdb
--
-- (in S3 with DuckDB's httpfs extension: 's3://my-logger-bucket/my-key-prefix/'). Every file
-- under it is read, at any depth, so the Flat and the NestedByDate folder structures read alike,
-- and several loggers' prefixes can sit under one folder. Point it at the logger's own prefix:
-- any other file there must be JSON too. Files ending in .gz are decompressed.
--
-- What AWS documents of the files, and what it leaves open, is in docs/dataset.md (Session
-- Logger). In short: the documentation names the fields (Time, Username, Portal ID, Portal IP,
-- Client IP, Session ID; Hostname, path, URL for page events) and the event types, but not the
-- JSON keys, their nesting, the time format, or whether a Json file is an array. So this view
-- reads defensively:
--   * a file may hold JSON Lines, a JSON array of events (on one line or pretty-printed), or
--     events one after another; read_json's format 'auto' tells them apart file by file;
--   * each event is kept whole, as JSON (column `event`), and no key is required: an event
--     lacking a field reads NULL there, and a file with a key nobody expected still loads;
--   * a field is found by its name with case and every character other than a letter or digit
--     ignored (`sessionId`, `SessionId`, `session_id` and `Session ID` all name the session
--     id), at the top level of the event first, then one level down (in `details`, or any
--     other object), the first match in the file's key order winning;
--   * the time may be an ISO-8601 string (without an offset it is taken as UTC) or a number,
--     or a string of digits: epoch milliseconds when 12 digits or more, else epoch seconds.
--     A time that parses as none of these reads NULL (look for `event_time IS NULL`).
--
-- Columns:
--   event_time   TIMESTAMP WITH TIME ZONE   key `time`, `timestamp` or `eventTime`
--   event_type   VARCHAR                    key `eventType` or `eventName`: SessionStart,
--                                            SessionConnect, UrlLoad, TabOpen, PrintJobSubmit, ...
--                                            (URL loads are named both UrlLoad and UrlVisit in
--                                            AWS's pages: queries accept both)
--   session_id   VARCHAR                    key `sessionId`; joins sessions.session_id
--   username     VARCHAR                    key `username`
--   portal_id    VARCHAR                    key `portalId`, else the end of `portalArn`
--   portal_ip, client_ip, hostname, path, url   VARCHAR, keys of the same names
--   event        JSON                       the event as delivered (every other field is here:
--                                            event ->> '$.fileName', ...)
--   source_file  VARCHAR                    the file it came from
CREATE OR REPLACE VIEW session_logger_events AS
WITH delivered AS (
    SELECT
        row_number() OVER () AS event_no,
        event,
        filename AS source_file
    FROM read_json(
        'LOGGER/**/*',
        format = 'auto',
        records = false,
        columns = {'event': 'JSON'},
        filename = true
    )
),
-- Every key of an event, and every key of an object one level down, with its value.
members AS (
    SELECT d.event_no, t.key, t.value, 0 AS depth, t.id AS pos, 0 AS sub
    FROM delivered AS d, json_each(d.event) AS t
    UNION ALL
    SELECT d.event_no, n.key, n.value, 1 AS depth, t.id AS pos, n.id AS sub
    FROM delivered AS d, json_each(d.event) AS t, json_each(t.value) AS n
    WHERE t.type = 'OBJECT'
),
named AS (
    SELECT
        event_no,
        lower(regexp_replace(key, '[^A-Za-z0-9]', '', 'g')) AS name,
        value ->> '$' AS text,
        depth, pos, sub
    FROM members
    WHERE key IS NOT NULL
),
fields AS (
    SELECT
        event_no,
        first(text ORDER BY depth, pos, sub) FILTER (WHERE name IN ('time', 'timestamp', 'eventtime') AND text IS NOT NULL) AS time_text,
        first(text ORDER BY depth, pos, sub) FILTER (WHERE name IN ('eventtype', 'eventname') AND text IS NOT NULL) AS event_type,
        first(text ORDER BY depth, pos, sub) FILTER (WHERE name = 'sessionid' AND text IS NOT NULL) AS session_id,
        first(text ORDER BY depth, pos, sub) FILTER (WHERE name = 'username' AND text IS NOT NULL) AS username,
        first(text ORDER BY depth, pos, sub) FILTER (WHERE name = 'portalid' AND text IS NOT NULL) AS portal_id,
        first(text ORDER BY depth, pos, sub) FILTER (WHERE name = 'portalarn' AND text IS NOT NULL) AS portal_arn,
        first(text ORDER BY depth, pos, sub) FILTER (WHERE name = 'portalip' AND text IS NOT NULL) AS portal_ip,
        first(text ORDER BY depth, pos, sub) FILTER (WHERE name = 'clientip' AND text IS NOT NULL) AS client_ip,
        first(text ORDER BY depth, pos, sub) FILTER (WHERE name = 'hostname' AND text IS NOT NULL) AS hostname,
        first(text ORDER BY depth, pos, sub) FILTER (WHERE name = 'path' AND text IS NOT NULL) AS path,
        first(text ORDER BY depth, pos, sub) FILTER (WHERE name = 'url' AND text IS NOT NULL) AS url
    FROM named
    GROUP BY event_no
)
SELECT
    CASE
        WHEN regexp_full_match(f.time_text, '[0-9]{12,}')
            THEN timezone('UTC', epoch_ms(f.time_text::BIGINT))
        WHEN regexp_full_match(f.time_text, '[0-9]{1,11}')
            THEN to_timestamp(f.time_text::BIGINT)
        WHEN regexp_matches(f.time_text, ':[0-9]{2}([.,][0-9]+)?\s*(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$')
            THEN TRY_CAST(f.time_text AS TIMESTAMPTZ)
        ELSE timezone('UTC', TRY_CAST(f.time_text AS TIMESTAMP))
    END AS event_time,
    f.event_type,
    f.session_id,
    f.username,
    coalesce(f.portal_id, regexp_extract(f.portal_arn, '[^/]+$')) AS portal_id,
    f.portal_ip,
    f.client_ip,
    f.hostname,
    f.path,
    f.url,
    d.event,
    d.source_file
FROM delivered AS d
LEFT JOIN fields AS f USING (event_no);
