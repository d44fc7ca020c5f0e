-- Licensing models: registered users, node-locked devices, overdraft, license validity window.
-- Same as migrations/sqlite/0002_models.sql.
CREATE TABLE license_users (
    license_id TEXT NOT NULL REFERENCES licenses (id),
    username   TEXT NOT NULL,
    active     BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (license_id, username)
);

CREATE TABLE license_devices (
    license_id   TEXT NOT NULL REFERENCES licenses (id),
    fingerprint  TEXT NOT NULL,
    name         TEXT NOT NULL,
    activated_at BIGINT NOT NULL,
    PRIMARY KEY (license_id, fingerprint)
);

ALTER TABLE sessions ADD COLUMN overdraft BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE sessions ADD COLUMN license_end BIGINT;
-- Per-user listings across licenses.
CREATE INDEX sessions_live_by_account_user ON sessions (username) WHERE ended_at IS NULL;
