-- Athena (engine v3) table over the files WorkSpaces Secure Browser's Session Logger delivers to
-- S3, with partition projection on the date folders of the NestedByDate folder structure: no
-- crawler, no MSCK REPAIR TABLE; new days are queryable as soon as the logger writes them.
-- The table holds the files' lines as they are; the view of session_logger_view.sql parses them
-- into events, and session_logger_queries.sql joins those to archiver_sessions
-- (create_table.sql) by session id.
--
-- Placeholders (replace every occurrence before running):
--   YOUR-LOGGER-BUCKET   the logger's bucket (`bucket` of its S3 log configuration)
--   YOUR-LOGGER-PREFIX   everything in the files' keys before the date folders: the logger's
--                        `keyPrefix` and whatever the logger adds after it. AWS's pages do not
--                        show a delivered key: look at one before creating the table,
--                          aws s3 ls --recursive s3://YOUR-LOGGER-BUCKET/ | head
--                        Drop `YOUR-LOGGER-PREFIX/` if the date folders are at the bucket's root.
-- The table name, session_logger_raw, may be changed freely (then in the view too).
--
-- Layout assumed (NestedByDate): s3://YOUR-LOGGER-BUCKET/YOUR-LOGGER-PREFIX/<YYYY>/<MM>/<DD>/<file>
-- AWS documents the folder structure only by its name, NestedByDate. If the keys you see put the
-- date another way, change 'projection.day.format' and 'projection.day.range' to match (a Java
-- DateTimeFormatter pattern; text in single quotes, each doubled inside this SQL string), e.g.
-- year=2026/month=11/day=20/ is '''year=''yyyy/''month=''MM/''day=''dd' with the range
-- 'year=2024/month=01/day=01,NOW'; yyyy-MM-dd for 2026-11-20/. The template stays as it is.
-- day is a string in that format, compared as text (its fields are zero-padded, largest first).
-- Whether a file's folder is the day of its events or of its delivery is not documented:
-- the queries widen their day range by one day on each side.
--
-- Flat folder structure (every file directly under the prefix): there are no date folders to
-- project. Create the table without partitions instead, and take the FLAT line of the view:
--   CREATE EXTERNAL TABLE IF NOT EXISTS session_logger_raw (line string)
--   STORED AS TEXTFILE
--   LOCATION 's3://YOUR-LOGGER-BUCKET/YOUR-LOGGER-PREFIX/';
--
-- Why whole lines and not a JSON SerDe: AWS names the fields of an event (Time, Username, Portal
-- ID, Portal IP, Client IP, Session ID; Hostname, path, URL) but not their JSON keys or nesting,
-- and a logger set to the Json file format may write each file as one JSON array, which the JSON
-- SerDes (one object per line) cannot read. The view finds each field whatever the key's case
-- and punctuation, and takes JSON Lines files and Json files holding one array (or object) per
-- line alike. A Json file pretty-printed over many lines cannot be read line by line: its lines
-- parse as nothing (see the check in session_logger_view.sql); query such files with DuckDB
-- (sql/duckdb/session_logger_views.sql), or set the logger's log file format to JSONLines.
-- Gzipped files (.gz) are read as they are.
CREATE EXTERNAL TABLE IF NOT EXISTS session_logger_raw (
    line string
)
PARTITIONED BY (
    day string
)
STORED AS TEXTFILE
LOCATION 's3://YOUR-LOGGER-BUCKET/YOUR-LOGGER-PREFIX/'
TBLPROPERTIES (
    'projection.enabled'            = 'true',
    'projection.day.type'           = 'date',
    'projection.day.format'         = 'yyyy/MM/dd',
    'projection.day.range'          = '2024/01/01,NOW',
    'projection.day.interval'       = '1',
    'projection.day.interval.unit'  = 'DAYS',
    'storage.location.template'     = 's3://YOUR-LOGGER-BUCKET/YOUR-LOGGER-PREFIX/${day}/'
);
