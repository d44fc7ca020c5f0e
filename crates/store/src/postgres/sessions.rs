//! Listings of live sessions: a license's, and a user's across the account's licenses. Both
//! judge liveness by the expiry (`expires_at > now`, capped by the license's end), so a session
//! expired but not reaped yet is not listed, nor one whose end is decided (see `mass`).

use leasehold_core::Timestamp;
use sqlx::postgres::PgPool;

use super::rows::{fetch_sessions, TermsCache, SESSION_COLS};
use crate::records::Session;
use crate::StoreResult;

/// The license's live sessions, oldest first (none for an unknown license).
pub(super) async fn list_live_sessions(
    pool: &PgPool,
    cache: &TermsCache,
    license_id: &str,
    now: Timestamp,
) -> StoreResult<Vec<Session>> {
    let sql = format!(
        "SELECT {SESSION_COLS} FROM licenses l
         JOIN sessions s ON s.license_id = l.id AND s.ended_at IS NULL AND s.expires_at > $2
         WHERE l.id = $1 AND s.seq >= l.end_below
         ORDER BY s.opened_at, s.id"
    );
    let query = sqlx::query(&sql).bind(license_id).bind(now.millis());
    live_now(fetch_sessions(query, pool, cache).await, now)
}

/// The user's live sessions across the account's licenses, oldest first.
pub(super) async fn list_user_sessions(
    pool: &PgPool,
    cache: &TermsCache,
    account_id: &str,
    username: &str,
    now: Timestamp,
) -> StoreResult<Vec<Session>> {
    let sql = format!(
        "SELECT {SESSION_COLS} FROM sessions s JOIN licenses l ON l.id = s.license_id
         WHERE s.username = $2 AND l.account_id = $1 AND s.ended_at IS NULL
           AND s.expires_at > $3 AND s.seq >= l.end_below
         ORDER BY s.opened_at, s.id"
    );
    let query = sqlx::query(&sql)
        .bind(account_id)
        .bind(username)
        .bind(now.millis());
    live_now(fetch_sessions(query, pool, cache).await, now)
}

/// The sessions still live at `now` once their license's end caps them.
fn live_now(sessions: StoreResult<Vec<Session>>, now: Timestamp) -> StoreResult<Vec<Session>> {
    let mut sessions = sessions?;
    sessions.retain(|s| s.clock.is_live(now));
    Ok(sessions)
}
