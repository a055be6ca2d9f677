-- Athena (engine v3) view `session_logger_events`: the Session Logger events in the files of
-- the table of session_logger_table.sql, one row per event, with the same columns as the DuckDB
-- view of sql/duckdb/session_logger_views.sql (plus `day`). Create the table first.
--
-- How it reads (AWS documents the fields by name, not their JSON keys; docs/dataset.md has what
-- is documented and what is not):
--   * a line may hold one event (JSON Lines) or a JSON array of events (a Json file on one
--     line); a line that is not JSON, such as a line of a pretty-printed Json file, is skipped:
--       SELECT count(*) FROM session_logger_raw WHERE try(json_parse(line)) IS NULL;
--     counts them (filter on day to scan less);
--   * a field is found by its name with case and every character other than a letter or digit
--     ignored (`sessionId`, `SessionId`, `session_id` and `Session ID` all name the session
--     id), at the top level of the event first, then one level down (in `details`, or any other
--     object); an event lacking a field reads NULL there;
--   * the time may be an ISO-8601 string (without an offset it is taken as UTC) or a number, or
--     a string of digits: epoch milliseconds when 12 digits or more, else epoch seconds;
--     anything else reads NULL.
--
-- Columns: day (the date folder, as in the table; NULL for a Flat table), event_time
-- (`timestamp`, UTC, from key time, timestamp or eventTime), event_type (eventType or
-- eventName), session_id (sessionId; joins archiver_sessions.session_id), username, portal_id
-- (portalId, else the end of portalArn), portal_ip, client_ip, hostname, path, url (varchar),
-- event (the event as delivered, json: json_extract_scalar(event, '$.fileName') and the like).
CREATE OR REPLACE VIEW session_logger_events AS
WITH parsed AS (
    SELECT day, try(json_parse(line)) AS doc FROM session_logger_raw
    -- FLAT (a table without partitions): use this line instead of the one above.
    -- SELECT CAST(NULL AS varchar) AS day, try(json_parse(line)) AS doc FROM session_logger_raw
),
events AS (
    SELECT p.day, u.event
    FROM parsed AS p
    CROSS JOIN UNNEST(
        IF(json_array_length(p.doc) IS NOT NULL, CAST(p.doc AS array(json)), ARRAY[p.doc])
    ) AS u (event)
    WHERE p.doc IS NOT NULL
),
objects AS (
    SELECT day, event, try_cast(event AS map(varchar, json)) AS top
    FROM events
),
-- The names (lower case, letters and digits only) and values of the event's keys, then of the
-- keys of each object one level down.
members AS (
    SELECT
        day,
        event,
        transform(
            map_keys(top) || flatten(transform(map_values(top), v ->
                map_keys(coalesce(try_cast(v AS map(varchar, json)), CAST(MAP() AS map(varchar, json)))))),
            k -> lower(regexp_replace(k, '[^A-Za-z0-9]', ''))
        ) AS names,
        transform(
            map_values(top) || flatten(transform(map_values(top), v ->
                map_values(coalesce(try_cast(v AS map(varchar, json)), CAST(MAP() AS map(varchar, json)))))),
            v -> json_extract_scalar(v, '$')
        ) AS texts
    FROM objects
    WHERE top IS NOT NULL
),
fields AS (
    SELECT
        day,
        event,
        element_at(filter(zip_with(names, texts, (n, t) -> IF(n IN ('time', 'timestamp', 'eventtime'), t)), x -> x IS NOT NULL), 1) AS time_text,
        element_at(filter(zip_with(names, texts, (n, t) -> IF(n IN ('eventtype', 'eventname'), t)), x -> x IS NOT NULL), 1) AS event_type,
        element_at(filter(zip_with(names, texts, (n, t) -> IF(n = 'sessionid', t)), x -> x IS NOT NULL), 1) AS session_id,
        element_at(filter(zip_with(names, texts, (n, t) -> IF(n = 'username', t)), x -> x IS NOT NULL), 1) AS username,
        element_at(filter(zip_with(names, texts, (n, t) -> IF(n = 'portalid', t)), x -> x IS NOT NULL), 1) AS portal_id,
        element_at(filter(zip_with(names, texts, (n, t) -> IF(n = 'portalarn', t)), x -> x IS NOT NULL), 1) AS portal_arn,
        element_at(filter(zip_with(names, texts, (n, t) -> IF(n = 'portalip', t)), x -> x IS NOT NULL), 1) AS portal_ip,
        element_at(filter(zip_with(names, texts, (n, t) -> IF(n = 'clientip', t)), x -> x IS NOT NULL), 1) AS client_ip,
        element_at(filter(zip_with(names, texts, (n, t) -> IF(n = 'hostname', t)), x -> x IS NOT NULL), 1) AS hostname,
        element_at(filter(zip_with(names, texts, (n, t) -> IF(n = 'path', t)), x -> x IS NOT NULL), 1) AS path,
        element_at(filter(zip_with(names, texts, (n, t) -> IF(n = 'url', t)), x -> x IS NOT NULL), 1) AS url
    FROM members
)
SELECT
    day,
    CASE
        WHEN regexp_like(time_text, '^[0-9]{12,}$')
            THEN date_add('millisecond', CAST(time_text AS bigint), TIMESTAMP '1970-01-01 00:00:00.000')
        WHEN regexp_like(time_text, '^[0-9]{1,11}$')
            THEN date_add('second', CAST(time_text AS bigint), TIMESTAMP '1970-01-01 00:00:00.000')
        ELSE coalesce(
            CAST(try(from_iso8601_timestamp(time_text)) AT TIME ZONE 'UTC' AS timestamp),
            try(CAST(time_text AS timestamp)))
    END AS event_time,
    event_type,
    session_id,
    username,
    coalesce(portal_id, regexp_extract(portal_arn, '[^/]+$')) AS portal_id,
    portal_ip,
    client_ip,
    hostname,
    path,
    url,
    event
FROM fields;
