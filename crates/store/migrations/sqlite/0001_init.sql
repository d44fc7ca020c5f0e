-- Leasehold schema, version 1. Migrations are append-only: never edit an applied one.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE accounts (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE credentials (
    hash       BLOB PRIMARY KEY,
    kind       TEXT NOT NULL,
    account_id TEXT,
    username   TEXT,
    expires_at INTEGER
) WITHOUT ROWID;
CREATE INDEX credentials_expiry ON credentials (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE users (
    account_id         TEXT NOT NULL REFERENCES accounts (id),
    username           TEXT NOT NULL,
    kind               TEXT NOT NULL,
    active             INTEGER NOT NULL,
    client_id          TEXT UNIQUE,
    client_secret_hash BLOB,
    created_at         INTEGER NOT NULL,
    PRIMARY KEY (account_id, username)
) WITHOUT ROWID;

CREATE TABLE licenses (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    model      TEXT NOT NULL,
    terms      TEXT NOT NULL, -- JSON of the license terms
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    license_id   TEXT NOT NULL REFERENCES licenses (id),
    username     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    instance_id  TEXT NOT NULL,
    opened_at    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    hard_end     INTEGER,
    ended_at     INTEGER,
    end_reason   TEXT
) WITHOUT ROWID;
-- Only live sessions are loaded at start and reaped: keep that index small.
CREATE INDEX sessions_live_expiry ON sessions (expires_at) WHERE ended_at IS NULL;

CREATE TABLE audit_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    license_id TEXT NOT NULL,
    session_id TEXT,
    username   TEXT,
    event      TEXT NOT NULL,
    detail     TEXT
);
CREATE INDEX audit_by_license ON audit_events (license_id, seq);
