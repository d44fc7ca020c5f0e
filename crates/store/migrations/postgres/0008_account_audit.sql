-- The account-wide audit log (GET /v1/audit) reads an account's events in `seq` order, after a
-- cursor: one index range per page. (Per license: `audit_by_license`; root over every account:
-- the primary key.)
CREATE INDEX audit_by_account ON audit_events (account_id, seq);

-- Where each event came from, where a request made it (NULL otherwise, and for older events):
-- the actor (`root`, `admin:<account>`, `user:<name>`, `service:<name>`), the request id
-- (`x-request-id`) and the client address.
ALTER TABLE audit_events ADD COLUMN actor TEXT;
ALTER TABLE audit_events ADD COLUMN request_id TEXT;
ALTER TABLE audit_events ADD COLUMN client_addr TEXT;

-- A waiting open's request, so that the `opened` event of its grant (decided by another
-- request's batch, possibly on another node) records it.
ALTER TABLE queue_entries ADD COLUMN actor TEXT;
ALTER TABLE queue_entries ADD COLUMN request_id TEXT;
ALTER TABLE queue_entries ADD COLUMN client_addr TEXT;
