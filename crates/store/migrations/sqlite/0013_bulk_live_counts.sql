-- Nothing to change on SQLite: migration 0013 counts PostgreSQL's live sessions per statement
-- where they come and go in bulk; this store counts in memory. The number is kept so both
-- backends share one schema version.
SELECT 1;
