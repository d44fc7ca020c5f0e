-- Mass ends (a license's end, a revoke of all its sessions, a user's deactivation): the end of
-- every session of a license or a user opened before a point is decided at once, and the
-- sessions' own ends are written afterwards, in bounded batches. Same as
-- migrations/sqlite/0005_mass_ends.sql.
--
-- `sessions.seq` is a session's place in the order of opens (0 for sessions opened before this
-- migration; from `session_seq` afterwards, drawn by the insert, which takes its license's row
-- lock: a floor drawn under the same lock is above every session of the license committed
-- before it and below every one committed after it). A floor (`end_below`, with its reason and
-- time) on a license, a user or a user's registration on a license ends every live session of
-- it whose `seq` is below the floor: the durable decision, written before the sessions' own
-- ends; a session opened after the decision is never under it. `end_pending`: the license's
-- floor may still cover live sessions (the reaper ends them in batches, then clears it).
-- `ends_at` is the license's end (its terms' `expires_at`), for the reaper to find licenses whose
-- end has passed. The SQLite backend keeps floors in memory too and uses neither of the last two.
CREATE SEQUENCE session_seq;
ALTER TABLE sessions ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ALTER COLUMN seq SET DEFAULT nextval('session_seq');
ALTER TABLE licenses ADD COLUMN end_below BIGINT NOT NULL DEFAULT 0;
ALTER TABLE licenses ADD COLUMN end_reason TEXT;
ALTER TABLE licenses ADD COLUMN end_at BIGINT;
ALTER TABLE licenses ADD COLUMN end_pending BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE licenses ADD COLUMN ends_at BIGINT;
UPDATE licenses SET ends_at = (terms::jsonb ->> 'expires_at')::bigint;
ALTER TABLE users ADD COLUMN end_below BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN end_at BIGINT;
ALTER TABLE license_users ADD COLUMN end_below BIGINT NOT NULL DEFAULT 0;
ALTER TABLE license_users ADD COLUMN end_at BIGINT;
-- Seat views count a license's live sessions not under its floor, per user: `seq` in the index
-- keeps that count an index-only scan.
DROP INDEX sessions_live_by_user;
CREATE INDEX sessions_live_by_user ON sessions (license_id, username, seq) WHERE ended_at IS NULL;
