//! Borrowed seats on PostgreSQL: the live borrows an open batch counts under its license locks
//! (only for licenses a borrow of the batch asks for: ordinary opens read nothing more), and a
//! license's revoked leases. Both go through the partial index `sessions_borrowed`, so they
//! read a license's borrowed sessions only, never its other sessions.
//!
//! A borrowed session ended before its `borrow_until` (returned, reclaimed, revoked, ended with
//! its user or in a mass end) is a revoked lease until `borrow_until` passes; so is a live one
//! under its license's floor (its end is decided, the reaper writes it) or past its license's
//! end, as every read treats it as ended (`mass`).

use std::collections::HashMap;

use leasehold_core::Timestamp;
use leasehold_proto::EndReason;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};

use super::errors::db_error;
use super::open::LicState;
use crate::codec::parse_end_reason;
use crate::records::RevokedLease;
use crate::StoreResult;

/// Counts the live borrows (not under their license's floor) of the locked licenses in
/// `borrowing` into their views.
pub(super) async fn count_borrowed(
    tx: &mut Transaction<'_, Postgres>,
    lics: &mut HashMap<String, LicState>,
    borrowing: &[String],
) -> Result<(), sqlx::Error> {
    if borrowing.is_empty() {
        return Ok(());
    }
    let floors: Vec<i64> = borrowing
        .iter()
        .map(|id| lics.get(id).map_or(0, LicState::floor))
        .collect();
    let rows = sqlx::query(
        "SELECT s.license_id, count(*) FROM sessions s
         JOIN unnest($1::text[], $2::int8[]) AS f(l, below) ON s.license_id = f.l
         WHERE s.license_id = ANY($1) AND s.borrow_until IS NOT NULL AND s.ended_at IS NULL
           AND s.seq >= f.below
         GROUP BY s.license_id",
    )
    .bind(borrowing)
    .bind(floors)
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        let license_id: String = row.try_get(0)?;
        if let Some(lic) = lics.get_mut(&license_id) {
            lic.borrowed = u32::try_from(row.try_get::<i64, _>(1)?).unwrap_or(u32::MAX);
        }
    }
    Ok(())
}

/// The license's revoked leases whose `borrow_until` is after `now` (the database's time), by
/// `borrow_until`.
pub(super) async fn revoked_leases(
    pool: &PgPool,
    license_id: &str,
    now: Timestamp,
) -> StoreResult<Vec<RevokedLease>> {
    let rows = sqlx::query(
        "SELECT s.id, s.username, s.device_id, s.borrow_until,
                CASE WHEN s.ended_at IS NOT NULL THEN s.end_reason
                     WHEN s.seq < l.end_below THEN l.end_reason
                     ELSE 'license_expired' END,
                CASE WHEN s.ended_at IS NOT NULL THEN s.ended_at
                     WHEN s.seq < l.end_below THEN l.end_at
                     ELSE l.ends_at END
         FROM sessions s JOIN licenses l ON l.id = s.license_id
         WHERE s.license_id = $1 AND s.borrow_until IS NOT NULL AND s.borrow_until > $2
           AND (s.ended_at IS NOT NULL
                OR s.seq < l.end_below
                OR (l.ends_at IS NOT NULL AND l.ends_at <= $2))
         ORDER BY s.borrow_until, s.id",
    )
    .bind(license_id)
    .bind(now.millis())
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let read = || -> Result<Option<RevokedLease>, sqlx::Error> {
            let until = Timestamp::from_millis(row.try_get(3)?);
            let reason = row
                .try_get::<Option<String>, _>(4)?
                .as_deref()
                .map_or(EndReason::Unknown, parse_end_reason);
            let ended_at = Timestamp::from_millis(row.try_get::<Option<i64>, _>(5)?.unwrap_or(0));
            // A borrow that reached its end leaves no valid lease.
            if reason == EndReason::BorrowEnded || ended_at >= until {
                return Ok(None);
            }
            Ok(Some(RevokedLease {
                session_id: row.try_get(0)?,
                username: row.try_get(1)?,
                device_id: row.try_get(2)?,
                reason,
                ended_at,
                borrow_until: until,
            }))
        };
        if let Some(lease) = read().map_err(db_error)? {
            out.push(lease);
        }
    }
    Ok(out)
}
