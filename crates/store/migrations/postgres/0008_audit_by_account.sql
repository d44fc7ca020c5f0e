-- The account-wide audit log (GET /v1/audit) reads an account's events in `seq` order, after a
-- cursor: one index range per page. (Per license: `audit_by_license`; root over every account:
-- the primary key.)
CREATE INDEX audit_by_account ON audit_events (account_id, seq);
