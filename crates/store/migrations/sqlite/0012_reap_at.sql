-- Nothing to change on SQLite: migration 0012 moves the PostgreSQL reapers' index from
-- `expires_at` to `reap_at` (heartbeat rewrites become HOT updates there); this store reaps
-- from memory. The number is kept so both backends share one schema version.
SELECT 1;
