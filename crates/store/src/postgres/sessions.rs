//! Listings of live sessions: a license's, and a user's across the account's licenses. Both
//! judge liveness by the expiry (`expires_at > now`), so a session expired but not reaped yet
//! is not listed.

use leasehold_core::Timestamp;
use sqlx::postgres::PgPool;

use super::errors::db_error;
use super::rows::{SessionRow, TermsCache, SESSION_COLS};
use crate::records::Session;
use crate::StoreResult;

/// The license's live sessions, oldest first (none for an unknown license).
pub(super) async fn list_live_sessions(
    pool: &PgPool,
    cache: &TermsCache,
    license_id: &str,
    now: Timestamp,
) -> StoreResult<Vec<Session>> {
    let rows = sqlx::query(&format!(
        "SELECT {SESSION_COLS} FROM licenses l
         JOIN sessions s ON s.license_id = l.id AND s.ended_at IS NULL AND s.expires_at > $2
         WHERE l.id = $1
         ORDER BY s.opened_at, s.id"
    ))
    .bind(license_id)
    .bind(now.millis())
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    rows.iter()
        .map(|r| SessionRow::read(r, cache).map(|row| row.session))
        .collect()
}

/// The user's live sessions across the account's licenses, oldest first.
pub(super) async fn list_user_sessions(
    pool: &PgPool,
    cache: &TermsCache,
    account_id: &str,
    username: &str,
    now: Timestamp,
) -> StoreResult<Vec<Session>> {
    let rows = sqlx::query(&format!(
        "SELECT {SESSION_COLS} FROM sessions s JOIN licenses l ON l.id = s.license_id
         WHERE s.username = $2 AND l.account_id = $1 AND s.ended_at IS NULL
           AND s.expires_at > $3
         ORDER BY s.opened_at, s.id"
    ))
    .bind(account_id)
    .bind(username)
    .bind(now.millis())
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    rows.iter()
        .map(|r| SessionRow::read(r, cache).map(|row| row.session))
        .collect()
}
