-- Cross-node queueing (`on_full: "queue"`): the queue of a license is one queue across every
-- node, kept here. Same as migrations/sqlite/0003_queue.sql.
--
-- One row per waiting open. `ticket` (from a sequence, taken under the license row's lock) is
-- the order of arrival: a license's waiters are granted in ticket order, whichever node they
-- wait on. `node_id` is the node whose client waits (it delivers the outcome); `new_id` the id
-- the session gets when granted on the waiter's behalf. `deadline` (the license's longest wait
-- plus a margin, in the server's milliseconds) bounds how long an entry can be granted.
-- `state` moves once, from `waiting` to `granted` (with `session_id`), `refused` (with the
-- refusal, as JSON) or `left`.
CREATE TABLE queue_entries (
    ticket      BIGSERIAL PRIMARY KEY,
    license_id  TEXT NOT NULL REFERENCES licenses (id),
    node_id     TEXT NOT NULL,
    username    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    new_id      TEXT NOT NULL,
    enqueued_at BIGINT NOT NULL,
    deadline    BIGINT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'waiting'
                CHECK (state IN ('waiting', 'granted', 'refused', 'left')),
    session_id  TEXT,
    refusal     TEXT
);
-- A license's waiters in arrival order: the heads a grant takes, the count admission needs.
CREATE INDEX queue_waiting ON queue_entries (license_id, ticket) WHERE state = 'waiting';

-- Server nodes and when each was last seen, by the database clock (`clock_timestamp()`): every
-- node refreshes its row each second. `pid` is the backend of the node's LISTEN connection: a
-- node that dies drops it, so its death shows at once, not only once it is unseen. Entries of a
-- node unseen for a few seconds, or whose listener is gone, are skipped by grants (nobody is
-- there to take the seat).
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    seen_at TIMESTAMPTZ NOT NULL,
    pid     INTEGER
);
