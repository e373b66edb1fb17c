-- Fenced record writes: every save and removal of an upload applies only
-- to the version it read (compare-and-set in the statement), so a writer
-- that stalled while another instance took the upload over changes
-- nothing. Mirrors `version` inside `info`.
ALTER TABLE uploads ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
