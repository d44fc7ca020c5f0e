-- Live sessions counted per license as they open and end, so that a seat view, a usage read or a
-- revoke of every session costs the same on a license of ten as on one of a million (counting
-- the rows cost ~0.3 s of database CPU per usage read at 100,000 live, and every open batch of a
-- large license counted all of its live sessions under the license lock). The SQLite backend
-- counts in memory; its 0007 changes nothing.
--
-- `sessions.epoch` is the license's floor (`licenses.end_below`) when the session was inserted,
-- set by the insert under the license's row lock: a session is under its license's floor exactly
-- when its epoch is below `end_below` (floors only rise, and one drawn later is above every
-- session inserted before it). `license_live` holds, per license and epoch, the live sessions
-- and the overdraft ones among them, in one row per database connection (`shard` = the
-- backend's pid, or 0 for folded rows): two transactions never update the same counter row, so
-- counting adds no lock wait between nodes, lanes or the reaper. Triggers keep the rows exact in
-- the transaction that opens or ends a session (a rollback takes both back); readers sum the
-- rows. `fold_live_counts` (the reapers, one node at a time) folds the rows of connections that
-- are gone into shard 0.
ALTER TABLE sessions ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
UPDATE sessions s SET epoch = l.end_below
    FROM licenses l WHERE l.id = s.license_id AND s.ended_at IS NULL AND s.seq >= l.end_below;

CREATE TABLE license_live (
    license_id TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    shard      INTEGER NOT NULL,
    live       BIGINT NOT NULL,
    overdraft  BIGINT NOT NULL,
    PRIMARY KEY (license_id, epoch, shard)
);
INSERT INTO license_live (license_id, epoch, shard, live, overdraft)
    SELECT license_id, epoch, 0, count(*), count(*) FILTER (WHERE overdraft)
    FROM sessions WHERE ended_at IS NULL GROUP BY license_id, epoch;

-- +1 for a live session inserted, -1 for one ended (and +1 should one ever come back).
CREATE FUNCTION leasehold_count_live() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s sessions;
    d INTEGER;
BEGIN
    IF TG_OP = 'INSERT' OR NEW.ended_at IS NULL THEN
        s := NEW;
        d := 1;
    ELSE
        s := OLD;
        d := -1;
    END IF;
    UPDATE license_live SET live = live + d, overdraft = overdraft + d * s.overdraft::int
        WHERE license_id = s.license_id AND epoch = s.epoch AND shard = pg_backend_pid();
    IF NOT FOUND THEN
        INSERT INTO license_live (license_id, epoch, shard, live, overdraft)
            VALUES (s.license_id, s.epoch, pg_backend_pid(), d, d * s.overdraft::int);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER sessions_live_opened AFTER INSERT ON sessions
    FOR EACH ROW WHEN (NEW.ended_at IS NULL) EXECUTE FUNCTION leasehold_count_live();
CREATE TRIGGER sessions_live_changed AFTER UPDATE OF ended_at ON sessions
    FOR EACH ROW WHEN ((OLD.ended_at IS NULL) <> (NEW.ended_at IS NULL))
    EXECUTE FUNCTION leasehold_count_live();
