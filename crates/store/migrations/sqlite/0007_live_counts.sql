-- PostgreSQL counts live sessions per license in counter rows kept by triggers
-- (migrations/postgres/0007_live_counts.sql). This store keeps those counts in memory, so this
-- version changes nothing here; it exists so that both backends share one schema version.
SELECT 1;
