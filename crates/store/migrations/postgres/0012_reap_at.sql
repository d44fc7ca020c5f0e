-- Heartbeats rewrite `sessions.expires_at` (in bulk, once a second: see
-- store/src/postgres/hold.rs), and the reapers' partial index on it made every rewrite a
-- non-HOT update: a new entry in each of the live indexes, for each heartbeat. The reapers now
-- find sessions by `reap_at`, a lower bound of `expires_at`: set to it when the session is
-- opened, raised to it by a reaper that finds the session not due yet (about once per
-- inactivity timeout, not once per heartbeat). No index covers `expires_at` any more, so a
-- heartbeat's rewrite stays on its page (HOT, with the room fillfactor 85 leaves).
ALTER TABLE sessions ADD COLUMN reap_at BIGINT;
UPDATE sessions SET reap_at = expires_at;
ALTER TABLE sessions ALTER COLUMN reap_at SET NOT NULL;
DROP INDEX sessions_live_expiry;
CREATE INDEX sessions_live_reap ON sessions (reap_at) WHERE ended_at IS NULL;
