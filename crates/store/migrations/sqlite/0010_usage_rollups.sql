-- Usage series (store/src/usage): the audit log's session events folded, in `seq` order, into
-- bucket rows per subject (`license:<id>`, `account:<id>`) and grain (0 minute, 1 hour, 2 day).
-- A row's integrals cover [start, through); its `*_end` columns are the state at `through`,
-- which holds until the subject's next row. Kept when audit events are pruned.
CREATE TABLE usage_rows (
    subject        TEXT    NOT NULL,
    grain          INTEGER NOT NULL,
    start          INTEGER NOT NULL,
    through        INTEGER NOT NULL,
    high           INTEGER NOT NULL,
    low            INTEGER NOT NULL,
    in_use_end     INTEGER NOT NULL,
    seats_end      INTEGER NOT NULL,
    seats_max      INTEGER NOT NULL,
    in_use_ms      INTEGER NOT NULL,
    opens          INTEGER NOT NULL,
    denials        INTEGER NOT NULL,
    queued         INTEGER NOT NULL,
    overdraft_high INTEGER NOT NULL,
    full_ms        INTEGER NOT NULL,
    full_entries   INTEGER NOT NULL,
    full_end       INTEGER NOT NULL,
    users          INTEGER NOT NULL,
    -- Milliseconds at each number of seats in use: `in_use:ms` pairs, comma-separated.
    hist           TEXT    NOT NULL,
    PRIMARY KEY (subject, grain, start)
) WITHOUT ROWID;

-- The users who opened a session in a row's bucket: kept for days (a month's distinct users are a
-- union of days) and for the buckets still open; a closed minute or hour keeps its count only.
CREATE TABLE usage_users (
    subject  TEXT    NOT NULL,
    grain    INTEGER NOT NULL,
    start    INTEGER NOT NULL,
    username TEXT    NOT NULL,
    PRIMARY KEY (subject, grain, start, username)
) WITHOUT ROWID;

-- Queue waits ended by a grant (median and longest per bucket).
CREATE TABLE usage_waits (
    subject TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    wait_ms INTEGER NOT NULL
);
CREATE INDEX usage_waits_by_subject ON usage_waits (subject, at);

-- Waits begun and not granted yet (a `queued` event), by the id the session would get.
CREATE TABLE usage_pending (
    session_id TEXT PRIMARY KEY,
    license_id TEXT    NOT NULL,
    account_id TEXT    NOT NULL,
    at         INTEGER NOT NULL
) WITHOUT ROWID;

-- The fold's state per subject after the watermark: seats in use, seats, last event's time.
CREATE TABLE usage_state (
    subject TEXT PRIMARY KEY,
    in_use  INTEGER NOT NULL,
    seats   INTEGER NOT NULL,
    t       INTEGER NOT NULL
) WITHOUT ROWID;

-- The greatest audit `seq` folded. Retention never deletes an event above it.
CREATE TABLE usage_watermark (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO usage_watermark (id, seq) VALUES (1, 0);
