-- Heartbeats rewrite `sessions.expires_at` in bulk (a node's held expiries, once a second, see
-- store/src/postgres/hold.rs): at a million live sessions heartbeating once a minute that is
-- ~16,700 row versions a second. Room on each page for the new version (fillfactor), and
-- autovacuum that keeps up with that churn instead of waiting for 20% of the table to be dead.
ALTER TABLE sessions SET (
    fillfactor = 85,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 1,
    autovacuum_vacuum_cost_limit = 2000
);
