-- Usage series (store/src/usage): the audit log's session events folded, in `seq` order, into
-- bucket rows per subject (`license:<id>`, `account:<id>`) and grain (0 minute, 1 hour, 2 day).
-- A row's integrals cover [start, through); its `*_end` columns are the state at `through`,
-- which holds until the subject's next row. Kept when audit events are pruned.
CREATE TABLE usage_rows (
    subject        TEXT    NOT NULL,
    grain          BIGINT  NOT NULL,
    start          BIGINT  NOT NULL,
    through        BIGINT  NOT NULL,
    high           BIGINT  NOT NULL,
    low            BIGINT  NOT NULL,
    in_use_end     BIGINT  NOT NULL,
    seats_end      BIGINT  NOT NULL,
    seats_max      BIGINT  NOT NULL,
    in_use_ms      BIGINT  NOT NULL,
    opens          BIGINT  NOT NULL,
    denials        BIGINT  NOT NULL,
    queued         BIGINT  NOT NULL,
    overdraft_high BIGINT  NOT NULL,
    full_ms        BIGINT  NOT NULL,
    full_entries   BIGINT  NOT NULL,
    full_end       BIGINT  NOT NULL,
    users          BIGINT  NOT NULL,
    -- Milliseconds at each number of seats in use: `in_use:ms` pairs, comma-separated.
    hist           TEXT    NOT NULL,
    PRIMARY KEY (subject, grain, start)
);

-- The users who opened a session in a row's bucket: kept for days (a month's distinct users are a
-- union of days) and for the buckets still open; a closed minute or hour keeps its count only.
CREATE TABLE usage_users (
    subject  TEXT    NOT NULL,
    grain    BIGINT  NOT NULL,
    start    BIGINT  NOT NULL,
    username TEXT    NOT NULL,
    PRIMARY KEY (subject, grain, start, username)
);

-- Queue waits ended by a grant (median and longest per bucket).
CREATE TABLE usage_waits (
    subject TEXT    NOT NULL,
    at      BIGINT  NOT NULL,
    wait_ms BIGINT  NOT NULL
);
CREATE INDEX usage_waits_by_subject ON usage_waits (subject, at);

-- Waits begun and not granted yet (a `queued` event), by the id the session would get.
CREATE TABLE usage_pending (
    session_id TEXT PRIMARY KEY,
    license_id TEXT    NOT NULL,
    account_id TEXT    NOT NULL,
    at         BIGINT  NOT NULL
);

-- The fold's state per subject after the watermark: seats in use, seats, last event's time.
CREATE TABLE usage_state (
    subject TEXT PRIMARY KEY,
    in_use  BIGINT  NOT NULL,
    seats   BIGINT  NOT NULL,
    t       BIGINT  NOT NULL
);

-- The greatest audit `seq` folded. Retention never deletes an event above it.
CREATE TABLE usage_watermark (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT  NOT NULL
);
INSERT INTO usage_watermark (id, seq) VALUES (1, 0);
