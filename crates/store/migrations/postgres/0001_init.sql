-- Leasehold schema, version 1 (PostgreSQL). Same history as migrations/sqlite: migration N here
-- is migration N there. Append-only: never edit an applied migration, add the next number.
-- Times are milliseconds since the Unix epoch (BIGINT), as on SQLite.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE accounts (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE credentials (
    hash       BYTEA PRIMARY KEY,
    kind       TEXT NOT NULL,
    account_id TEXT,
    username   TEXT,
    expires_at BIGINT
);
CREATE INDEX credentials_expiry ON credentials (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE users (
    account_id         TEXT NOT NULL REFERENCES accounts (id),
    username           TEXT NOT NULL,
    kind               TEXT NOT NULL,
    active             BOOLEAN NOT NULL,
    client_id          TEXT UNIQUE,
    client_secret_hash BYTEA,
    created_at         BIGINT NOT NULL,
    PRIMARY KEY (account_id, username)
);

CREATE TABLE licenses (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    model      TEXT NOT NULL,
    terms      TEXT NOT NULL, -- JSON of the license terms
    created_at BIGINT NOT NULL
);

-- Usage statistics of a license, shared by all nodes. Written only by transactions that hold
-- the license row's lock (opens), so it adds no contention of its own. The live count only rises
-- through opens, so its high water is reached right after an open and its low water right
-- before one: sampling both there is exact.
CREATE TABLE license_usage (
    license_id TEXT PRIMARY KEY REFERENCES licenses (id),
    since      BIGINT NOT NULL,
    high_water INTEGER NOT NULL DEFAULT 0,
    low_water  INTEGER NOT NULL DEFAULT 0,
    denials    BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    license_id   TEXT NOT NULL REFERENCES licenses (id),
    username     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    instance_id  TEXT NOT NULL,
    opened_at    BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    hard_end     BIGINT,
    ended_at     BIGINT,
    end_reason   TEXT
);
-- The reaper walks live sessions by expiry (O(expired), FOR UPDATE SKIP LOCKED).
CREATE INDEX sessions_live_expiry ON sessions (expires_at) WHERE ended_at IS NULL;
-- Seat views count a license's live sessions, per user.
CREATE INDEX sessions_live_by_user ON sessions (license_id, username) WHERE ended_at IS NULL;
-- One live session per client instance, whichever node opened it.
CREATE UNIQUE INDEX sessions_live_instance
    ON sessions (license_id, username, device_id, instance_id) WHERE ended_at IS NULL;

CREATE TABLE audit_events (
    seq        BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    license_id TEXT NOT NULL,
    session_id TEXT,
    username   TEXT,
    event      TEXT NOT NULL,
    detail     TEXT
);
CREATE INDEX audit_by_license ON audit_events (license_id, seq);
