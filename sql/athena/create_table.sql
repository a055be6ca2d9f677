-- Athena (engine v3) table over an archiver dataset on S3, with partition projection: no
-- crawler, no MSCK REPAIR TABLE, no ALTER TABLE ADD PARTITION; new portals and days are
-- queryable as soon as their files are published.
--
-- Placeholders (replace every occurrence before running):
--   YOUR-BUCKET   the S3 bucket of the archive
--   YOUR-PREFIX   the key prefix of the archive (the `--output s3://YOUR-BUCKET/YOUR-PREFIX`);
--                 drop `YOUR-PREFIX/` if the archive is at the root of the bucket
-- The table name, archiver_sessions, may be changed freely.
--
-- Layout: s3://YOUR-BUCKET/YOUR-PREFIX/sessions/portal_id=<id>/start_date=<YYYY-MM-DD>/*.parquet
-- The partition keys are only in the path. The writer's _staging/ folder is outside
-- sessions/ (and Athena skips names starting with `_` anyway). Timestamps are Parquet INT64
-- TIMESTAMP(MILLIS, isAdjustedToUTC=true), read as `timestamp` holding UTC.
--
-- portal_id uses the `injected` projection: every query must name its portals with static
-- equality conditions (portal_id = '...' or portal_id IN (...)); a query without one fails
-- with CONSTRAINT_VIOLATION. Nothing needs updating when a portal is added.
-- To query all portals without naming them, run archiver with `--glue-table DB.TABLE` (this
-- table's Glue database and name, e.g. default.archiver_sessions): every run and backfill then
-- turns the projection into an `enum` listing every portal archived (never removing one), so
-- queries across portals need no portal filter. Without archiver doing it: replace the
-- 'projection.portal_id.type' line with these two, and keep the list up to date
-- (ALTER TABLE archiver_sessions SET TBLPROPERTIES ('projection.portal_id.values' = '...'))
-- when portals are added; a portal missing from the list is silently left out of results:
--   'projection.portal_id.type'   = 'enum',
--   'projection.portal_id.values' = 'PORTAL-ID-1,PORTAL-ID-2',
--
-- For thousands of portals, run archiver with `--glue-table DB.TABLE --glue-partitions`: its
-- first run registers every partition (portal, day) of the archive in Glue, then turns
-- partition projection off; every run then registers the partitions it publishes, at its end.
-- A query for one day then reads that day's partitions only, one per portal with sessions that
-- day, however many portals there are (docs/dataset.md, "Keeping the table current"). To
-- create the table that way from the start, set 'projection.enabled' = 'false' below (archiver
-- then registers partitions without --glue-partitions).
--
-- start_date uses the `date` projection from 2020-01-01 to today (NOW, UTC), one per day.
-- Filter on start_date as well as on start_time where you can: it prunes the partitions read.
CREATE EXTERNAL TABLE IF NOT EXISTS archiver_sessions (
    portal_arn  string,
    session_id  string,
    username    string,
    status      string,
    start_time  timestamp,
    end_time    timestamp,
    archived_at timestamp,
    client_ip_addresses array<string>   -- null unless archived with --with-client-ips
)
PARTITIONED BY (
    portal_id  string,
    start_date date
)
STORED AS PARQUET
LOCATION 's3://YOUR-BUCKET/YOUR-PREFIX/sessions/'
TBLPROPERTIES (
    'projection.enabled'                = 'true',
    'projection.portal_id.type'         = 'injected',
    'projection.start_date.type'        = 'date',
    'projection.start_date.format'      = 'yyyy-MM-dd',
    'projection.start_date.range'       = '2020-01-01,NOW',
    'projection.start_date.interval'    = '1',
    'projection.start_date.interval.unit' = 'DAYS',
    'storage.location.template'         = 's3://YOUR-BUCKET/YOUR-PREFIX/sessions/portal_id=${portal_id}/start_date=${start_date}/'
);
