-- archiver state, manifest: the SHA-256 of each committed file, computed when it was encoded,
-- so that the manifest written before its publish (by the run that committed it, or by the
-- recovery of a later one) names the exact bytes that were staged. NULL for a file committed
-- by an archiver before this schema: recovery then hashes the staged file.
ALTER TABLE flush_files ADD COLUMN sha256 TEXT;
