-- Nothing to change on SQLite: migration 0011 tunes the PostgreSQL `sessions` table for bulk
-- heartbeat writes (fillfactor, autovacuum). The number is kept so both backends share one
-- schema version.
SELECT 1;
