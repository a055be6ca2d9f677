-- archiver state, schema version 4: exact whatever the service's tokens mean.
-- Every pass now lists newest first, which removals at the bottom of the listing (sessions
-- ageing out) cannot shift. Dedup looks a session up only where an archived id can be: at or
-- below the newest archived start when the pass began, or at or above the lowest start this
-- pass has written.
ALTER TABLE portals ADD COLUMN pass_low_ms INTEGER;       -- lowest start written by this pass
ALTER TABLE portals ADD COLUMN pass_prior_max_ms INTEGER; -- newest archived start when it began
-- A pass in progress looks up everything archived so far. A backfill in progress listed oldest
-- first: it continues newest first from the top (its token belongs to the other order).
UPDATE portals SET pass_prior_max_ms = archived_max_ms WHERE pass_kind IS NOT NULL;
UPDATE portals SET pass_token = NULL WHERE pass_kind = 'backfill';

-- The newest range a pass could not reach back to: sessions in it may have aged out of the
-- service before they were archived.
ALTER TABLE portals ADD COLUMN gap_from_ms INTEGER;
ALTER TABLE portals ADD COLUMN gap_to_ms INTEGER;
ALTER TABLE portals ADD COLUMN gap_found_at INTEGER;      -- epoch ms
ALTER TABLE portals ADD COLUMN lost_pending INTEGER NOT NULL DEFAULT 0;

-- Pending sessions the service stopped returning (GetSession: not found): kept, asked for again
-- on later runs, given up only after several misses over a day.
ALTER TABLE pending ADD COLUMN misses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pending ADD COLUMN first_missed_at INTEGER;   -- epoch ms
