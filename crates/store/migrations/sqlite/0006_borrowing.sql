-- Offline borrowing. Same as migrations/postgres/0006_borrowing.sql.
--
-- `sessions.borrow_until`: set on a borrowed seat, the instant its borrow ends (the `exp` of
-- the lease its owner carries offline); NULL for every other session. A borrowed session ended
-- before it (returned, reclaimed, revoked, ended with its license or user) is listed at
-- `GET /v1/licenses/{id}/revoked-leases` until `borrow_until` passes: the partial index finds
-- a license's borrowed sessions, live or ended, without reading the others. The borrow policy
-- lives in the license's terms (JSON): no column.
ALTER TABLE sessions ADD COLUMN borrow_until INTEGER;
CREATE INDEX sessions_borrowed ON sessions (license_id, borrow_until) WHERE borrow_until IS NOT NULL;
