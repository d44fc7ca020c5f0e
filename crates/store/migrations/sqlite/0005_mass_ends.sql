-- Mass ends (a license's end, a revoke of all its sessions, a user's deactivation): the end of
-- every session of a license or a user opened before a point is decided at once, and the
-- sessions' own ends are written afterwards, in bounded chunks. Same as
-- migrations/postgres/0005_mass_ends.sql.
--
-- `sessions.seq` is a session's place in the order of opens (0 for sessions opened before this
-- migration). A floor (`end_below`, with its reason and time) on a license, a user or a user's
-- registration on a license ends every live session of it whose `seq` is below the floor:
-- the durable decision, written before the sessions' own ends. A session opened after the
-- decision is never under it. `end_pending` and `ends_at` serve the PostgreSQL backend's
-- reaper; this backend keeps that in memory and does not use them.
ALTER TABLE sessions ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE licenses ADD COLUMN end_below INTEGER NOT NULL DEFAULT 0;
ALTER TABLE licenses ADD COLUMN end_reason TEXT;
ALTER TABLE licenses ADD COLUMN end_at INTEGER;
ALTER TABLE licenses ADD COLUMN end_pending INTEGER NOT NULL DEFAULT 0;
ALTER TABLE licenses ADD COLUMN ends_at INTEGER;
ALTER TABLE users ADD COLUMN end_below INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN end_at INTEGER;
ALTER TABLE license_users ADD COLUMN end_below INTEGER NOT NULL DEFAULT 0;
ALTER TABLE license_users ADD COLUMN end_at INTEGER;
