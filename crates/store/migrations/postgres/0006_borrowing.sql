-- Offline borrowing. Same as migrations/sqlite/0006_borrowing.sql.
--
-- `sessions.borrow_until`: set on a borrowed seat, the instant its borrow ends (the `exp` of
-- the lease its owner carries offline); NULL for every other session. A borrowed session ended
-- before it (returned, reclaimed, revoked, ended with its license or user) is listed at
-- `GET /v1/licenses/{id}/revoked-leases` until `borrow_until` passes; open batches count a
-- license's live borrows under its lock. The partial index serves both without reading other
-- sessions. The borrow policy lives in the license's terms (JSON): no column.
ALTER TABLE sessions ADD COLUMN borrow_until BIGINT;
CREATE INDEX sessions_borrowed ON sessions (license_id, borrow_until) WHERE borrow_until IS NOT NULL;
