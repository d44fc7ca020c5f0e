//! Licenses: creating, listing and updating them, and what is read about their use (usage
//! statistics, live sessions per license, the audit log).

use leasehold_core::Timestamp;
use leasehold_proto::LicenseModel;
use sqlx::postgres::{PgPool, PgRow, Postgres};
use sqlx::Row;
use sqlx::Transaction;

use super::errors::{db_error, is_foreign_key_violation};
use super::live::{LIVE_ABOVE_FLOOR, LIVE_ALL, OVERDRAFT_ABOVE_FLOOR};
use super::mass;
use super::retry::transaction;
use super::rows::{
    audit_event_from, fetch_rows, insert_audit, AuditRows, LicenseRow, TermsCache, LICENSE_COLS,
};
use super::LIVE_NODE;
use crate::admission;
use crate::codec::{parse_terms, terms_json};
use crate::records::*;
use crate::{StoreError, StoreResult};

/// Creates a license, with its usage row and its `created` event.
pub(super) async fn create_license(pool: &PgPool, license: License) -> StoreResult<()> {
    let terms = terms_json(&license.terms)?;
    transaction!(pool, |tx| {
        let inserted = sqlx::query(
            "INSERT INTO licenses (id, account_id, model, terms, created_at, ends_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&license.id)
        .bind(&license.account_id)
        .bind(license.model.as_str())
        .bind(&terms)
        .bind(license.created_at.millis())
        .bind(license.terms.expires_at.map(Timestamp::millis))
        .execute(&mut **tx)
        .await;
        match inserted {
            Ok(r) if r.rows_affected() == 0 => {
                return Err(StoreError::Conflict(format!(
                    "license {} exists",
                    license.id
                )))
            }
            Ok(_) => {}
            Err(e) if is_foreign_key_violation(&e) => return Err(StoreError::NotFound("account")),
            Err(e) => return Err(db_error(e)),
        }
        sqlx::query("INSERT INTO license_usage (license_id, since) VALUES ($1, $2)")
            .bind(&license.id)
            .bind(license.created_at.millis())
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        insert_audit(tx, AuditRows::of(admission::license_created(&license)))
            .await
            .map_err(db_error)?;
        Ok(())
    })
}

/// The account's licenses, oldest first.
pub(super) async fn list_licenses(
    pool: &PgPool,
    cache: &TermsCache,
    account_id: &str,
) -> StoreResult<Vec<License>> {
    let rows = sqlx::query(&format!(
        "SELECT {LICENSE_COLS} FROM licenses WHERE account_id = $1 ORDER BY created_at, id"
    ))
    .bind(account_id)
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let license = LicenseRow::read(row).map_err(db_error)?;
        out.push(license.parse(|id, terms| cache.owned(id, terms))?);
    }
    Ok(out)
}

/// Replaces a license's terms and model, with its `updated` event. Takes the license row's
/// lock: serialized with the opens deciding on the old terms. Its end caps its sessions when
/// they are read, so no session row is touched here; an end that has passed (before or with
/// this change) becomes the license's floor first, so a later end does not bring back sessions
/// already answered ended (see `mass`).
///
/// The license's delegations are kept as they are in the locked row: they change only through
/// `delegation::change_delegations`, so a patch read before a delegation was made cannot drop
/// it.
pub(super) async fn update_license(
    pool: &PgPool,
    license: &License,
    now: Timestamp,
) -> StoreResult<()> {
    transaction!(pool, |tx| {
        let old: Option<(Option<i64>, String)> =
            sqlx::query_as("SELECT ends_at, terms FROM licenses WHERE id = $1 FOR UPDATE")
                .bind(&license.id)
                .fetch_optional(&mut **tx)
                .await
                .map_err(db_error)?;
        let Some((old_end, old_terms)) = old else {
            return Err(StoreError::NotFound("license"));
        };
        let mut license = license.clone();
        license.terms.delegations = parse_terms(&license.id, &old_terms)?.delegations;
        update_locked(tx, &license, old_end, now).await?;
        Ok(())
    })
}

/// `update_license` once the license row is locked (its end before the change: `old_end`).
pub(super) async fn update_locked(
    tx: &mut Transaction<'_, Postgres>,
    license: &License,
    old_end: Option<i64>,
    now: Timestamp,
) -> StoreResult<()> {
    let terms = terms_json(&license.terms)?;
    if old_end.is_some_and(|end| end <= now.millis()) {
        mass::floor_locked(tx, &license.id, license.terms.end_reason(), now)
            .await
            .map_err(db_error)?;
    }
    sqlx::query("UPDATE licenses SET terms = $2, model = $3, ends_at = $4 WHERE id = $1")
        .bind(&license.id)
        .bind(&terms)
        .bind(license.model.as_str())
        .bind(license.terms.expires_at.map(Timestamp::millis))
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    if license.terms.expires_at.is_some_and(|end| end <= now) {
        mass::floor_locked(tx, &license.id, license.terms.end_reason(), now)
            .await
            .map_err(db_error)?;
    }
    insert_audit(tx, AuditRows::of(admission::license_updated(license, now)))
        .await
        .map_err(db_error)
}

/// The license's usage statistics: seats in use now, high and low water marks, denials.
pub(super) async fn usage(
    pool: &PgPool,
    cache: &TermsCache,
    license_id: &str,
    now: Timestamp,
) -> StoreResult<UsageStats> {
    // In use: live sessions not under the license's floor, none once its end has passed;
    // the others are ending (their ends decided, being written by the reaper). All three are
    // sums of counter rows (`live`), not counts of sessions.
    let row = sqlx::query(&format!(
        "SELECT l.terms, u.since, u.high_water, u.low_water, u.denials,
                CASE WHEN l.ends_at IS NULL OR l.ends_at > $2 THEN {LIVE_ABOVE_FLOOR} ELSE 0 END,
                {LIVE_ALL},
                CASE WHEN l.ends_at IS NULL OR l.ends_at > $2 THEN {OVERDRAFT_ABOVE_FLOOR}
                     ELSE 0 END,
                (SELECT count(*) FROM license_users WHERE license_id = $1 AND active)
              + (SELECT count(*) FROM license_devices WHERE license_id = $1),
                CASE WHEN l.ends_at IS NULL OR l.ends_at > $2 THEN
                    (SELECT count(*) FROM sessions s
                     WHERE s.license_id = l.id AND s.borrow_until IS NOT NULL
                       AND s.ended_at IS NULL AND s.seq >= l.end_below)
                     ELSE 0 END
         FROM licenses l LEFT JOIN license_usage u ON u.license_id = l.id
         WHERE l.id = $1"
    ))
    .bind(license_id)
    .bind(now.millis())
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    let Some(row) = row else {
        return Err(StoreError::NotFound("license"));
    };
    let read = |row: &PgRow| -> Result<_, sqlx::Error> {
        Ok((
            row.try_get::<String, _>(0)?,
            row.try_get::<Option<i64>, _>(1)?,
            row.try_get::<Option<i32>, _>(2)?,
            row.try_get::<Option<i32>, _>(3)?,
            row.try_get::<Option<i64>, _>(4)?,
            row.try_get::<i64, _>(5)?,
            row.try_get::<i64, _>(6)?,
            row.try_get::<i64, _>(7)?,
            row.try_get::<i64, _>(8)?,
            // Live borrows: through the partial index `sessions_borrowed` (few rows).
            row.try_get::<i64, _>(9)?,
        ))
    };
    let (terms, since, high, low, denials, in_use, live, overdraft_in_use, activations, borrowed) =
        read(&row).map_err(db_error)?;
    let ending = u32::try_from(live - in_use).unwrap_or(0);
    let terms = cache.get(license_id, &terms)?;
    let in_use = u32::try_from(in_use).unwrap_or(u32::MAX);
    Ok(UsageStats {
        seats: terms.seats,
        in_use,
        ending,
        high_water: (high.unwrap_or(0).max(0) as u32).max(in_use),
        low_water: (low.unwrap_or(0).max(0) as u32).min(in_use),
        denials: denials.unwrap_or(0).max(0) as u64,
        since: Timestamp::from_millis(since.unwrap_or(0)),
        overdraft_in_use: u32::try_from(overdraft_in_use).unwrap_or(u32::MAX),
        borrowed: u32::try_from(borrowed).unwrap_or(u32::MAX),
        delegated: terms.delegated_at(now),
        activations: (terms.model != LicenseModel::ConcurrentSessions)
            .then(|| u32::try_from(activations).unwrap_or(u32::MAX)),
    })
}

/// Seats, live sessions and waiting clients per license, for metrics, in one query.
/// (Past a license's end, by the database's clock, no session is in use.) The waiting clients
/// are those of live nodes (`LIVE_NODE`), read through the partial index `queue_waiting`.
pub(super) async fn license_gauges(pool: &PgPool) -> StoreResult<Vec<LicenseGauges>> {
    let sql = format!(
        "SELECT l.id, (l.terms::jsonb ->> 'seats')::int8,
                CASE WHEN l.ends_at IS NULL
                       OR l.ends_at > (extract(epoch FROM clock_timestamp()) * 1000)::int8
                     THEN {LIVE_ABOVE_FLOOR} ELSE 0 END,
                COALESCE(q.waiting, 0), l.account_id, (l.terms::jsonb -> 'alerts')::text,
                l.ends_at
         FROM licenses l
         LEFT JOIN (SELECT e.license_id, count(*) AS waiting
                    FROM queue_entries e JOIN nodes n ON n.node_id = e.node_id
                    WHERE e.state = 'waiting' AND {LIVE_NODE}
                    GROUP BY e.license_id) q ON q.license_id = l.id"
    );
    let query = sqlx::query(&sql);
    let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    fetch_rows(query, pool, |r| {
        Ok(LicenseGauges {
            license_id: r.try_get::<String, _>(0)?,
            seats: count(r.try_get::<Option<i64>, _>(1)?.unwrap_or(0)),
            in_use: count(r.try_get::<i64, _>(2)?),
            waiting: count(r.try_get::<i64, _>(3)?),
            account_id: r.try_get::<String, _>(4)?,
            alerts: r
                .try_get::<Option<String>, _>(5)?
                .and_then(|a| serde_json::from_str(&a).ok())
                .unwrap_or_default(),
            expires_at: r.try_get::<Option<i64>, _>(6)?.map(Timestamp::from_millis),
        })
    })
    .await
}

/// The license's audit log, oldest first, at most `limit` events.
pub(super) async fn audit_log(
    pool: &PgPool,
    license_id: &str,
    limit: usize,
) -> StoreResult<Vec<AuditEvent>> {
    let query = sqlx::query(
        "SELECT at, account_id, license_id, session_id, username, event, detail,
                actor, request_id, client_addr
         FROM audit_events WHERE license_id = $1 ORDER BY seq LIMIT $2",
    )
    .bind(license_id)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX));
    fetch_rows(query, pool, audit_event_from).await
}
