-- Webhooks (issue 17). The outbox is the audit log itself: every event is written there in the
-- transaction of the change it records. The dispatcher reads it after `webhook_cursor.seq` and
-- turns each event into deliveries, one per matching endpoint, moving the cursor in the same
-- transaction (compare-and-set on `version`, so one node's plan wins when several race).

-- An account's endpoints. `secret` signs every delivery (HMAC-SHA256); it is answered once,
-- when the endpoint is created or its secret rotated. `events` is a JSON array of event types.
CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,
    description TEXT NOT NULL,
    secret      TEXT NOT NULL,
    enabled     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_by_account ON webhook_endpoints (account_id, created_at);

-- One event to one endpoint: pending (due at `next_attempt_at`, held by a node until
-- `lease_until` while it is being sent), delivered or failed; the last attempt's outcome.
-- `order_key` is the license (or the event itself for account-wide events): an endpoint gets
-- one license's events one at a time, in `id` order.
CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id      TEXT NOT NULL,
    account_id       TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    order_key        TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    lease_until      INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    last_attempt_at  INTEGER,
    response_status  INTEGER,
    latency_ms       INTEGER,
    response_excerpt TEXT
);
CREATE INDEX webhook_deliveries_heads ON webhook_deliveries (endpoint_id, order_key, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, id);

-- Where the dispatcher is in the audit log. Events before the feature existed had no endpoint.
CREATE TABLE webhook_cursor (
    name    TEXT PRIMARY KEY,
    seq     INTEGER NOT NULL,
    version INTEGER NOT NULL
);
INSERT INTO webhook_cursor (name, seq, version)
    SELECT 'fanout', coalesce(max(seq), 0), 0 FROM audit_events;

-- The alert state of each license (`license.threshold`, `license.full`, `license.denials`,
-- `license.expiring`): the last level raised, so each crossing is raised once.
CREATE TABLE webhook_alert_state (
    license_id TEXT NOT NULL,
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (license_id, kind)
);

-- Denials of the last hour per license (alerts `denials_per_hour`, `/metrics`): a partial index,
-- so only denials pay for it.
CREATE INDEX audit_denials ON audit_events (license_id, at) WHERE event = 'denied';
