-- archiver state, schema version 3: the state must not grow with the history.
-- Rows and files written per portal become running totals, so flush_files needs to keep only
-- the files recovery may still have to publish (and a day of published ones, for inspection).
-- rows_written counts rows written by flushes (a compaction rewrites rows, it adds none);
-- files_written counts files published by flushes and compactions.
ALTER TABLE portals ADD COLUMN rows_written INTEGER NOT NULL DEFAULT 0;
ALTER TABLE portals ADD COLUMN files_written INTEGER NOT NULL DEFAULT 0;
UPDATE portals SET
    rows_written = (SELECT coalesce(sum(rows), 0) FROM flush_files f
                    WHERE f.portal_id = portals.portal_id
                      AND NOT EXISTS (SELECT 1 FROM retired_files r
                                      WHERE r.portal_id = f.portal_id AND r.seq = f.seq)),
    files_written = (SELECT count(*) FROM flush_files f WHERE f.portal_id = portals.portal_id);
