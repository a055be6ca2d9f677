-- archiver state, quarantine: sessions the service sent in a form that cannot be archived
-- faithfully (an unknown status, no start time, another portal's ARN, a GetSession answer for
-- another session). Kept with the fields as received, never the username or client IPs, and
-- tried again by every later pass until the service sends them usably: then written once,
-- through the normal flush. A row leaves in the commit that archives its session (or makes it
-- pending), so a quarantined id is never an archived one.
CREATE TABLE quarantine (
    portal_id       TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    reason          TEXT NOT NULL,          -- why it cannot be archived as received
    raw_portal_arn  TEXT,                   -- the fields as last received
    raw_status      TEXT,
    raw_start_time  TEXT,                   -- epoch seconds, as sent
    raw_end_time    TEXT,
    start_ms        INTEGER,                -- its start, when a reply had a usable one
    floor_ms        INTEGER,                -- quarantined without a start: the dedup floor then
    first_seen_at   INTEGER NOT NULL,       -- epoch ms
    last_seen_at    INTEGER NOT NULL,       -- epoch ms
    misses          INTEGER NOT NULL DEFAULT 0,  -- passes in a row GetSession did not find it
    first_missed_at INTEGER,                -- epoch ms
    PRIMARY KEY (portal_id, session_id)
) WITHOUT ROWID;
-- Quarantined sessions given up after the service stopped returning them.
ALTER TABLE portals ADD COLUMN lost_quarantined INTEGER NOT NULL DEFAULT 0;
