-- Licensing models: registered users, node-locked devices, overdraft, license validity window.
CREATE TABLE license_users (
    license_id TEXT NOT NULL REFERENCES licenses (id),
    username   TEXT NOT NULL,
    active     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (license_id, username)
) WITHOUT ROWID;

CREATE TABLE license_devices (
    license_id   TEXT NOT NULL REFERENCES licenses (id),
    fingerprint  TEXT NOT NULL,
    name         TEXT NOT NULL,
    activated_at INTEGER NOT NULL,
    PRIMARY KEY (license_id, fingerprint)
) WITHOUT ROWID;

ALTER TABLE sessions ADD COLUMN overdraft INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN license_end INTEGER;
