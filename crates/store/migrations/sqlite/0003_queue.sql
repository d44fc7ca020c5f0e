-- Cross-node queueing: the tables the PostgreSQL backend keeps its one-queue-per-license in
-- (see migrations/postgres/0003_queue.sql). Migration N is the same on both backends, so they
-- exist here too, but the SQLite backend does not use them: it is a single process, and its
-- queue lives in memory with the rest of the seat state (a waiter is a connected client; after
-- a restart there is nobody left to grant a seat to).
CREATE TABLE queue_entries (
    ticket      INTEGER PRIMARY KEY AUTOINCREMENT,
    license_id  TEXT NOT NULL REFERENCES licenses (id),
    node_id     TEXT NOT NULL,
    username    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    new_id      TEXT NOT NULL,
    enqueued_at INTEGER NOT NULL,
    deadline    INTEGER NOT NULL,
    state       TEXT NOT NULL DEFAULT 'waiting'
                CHECK (state IN ('waiting', 'granted', 'refused', 'left')),
    session_id  TEXT,
    refusal     TEXT
);
CREATE INDEX queue_waiting ON queue_entries (license_id, ticket) WHERE state = 'waiting';

CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    seen_at INTEGER NOT NULL,
    pid     INTEGER
);
