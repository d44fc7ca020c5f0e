//! Delegations on PostgreSQL: a change of a license's delegations decided under the license
//! row's lock (`FOR UPDATE`), the lock every open batch takes before it counts and inserts:
//! the free seats counted here cannot be taken by an open on any node before the new terms
//! are committed, and an open after the commit sees them.

use leasehold_core::delegation::InUse;
use leasehold_core::Timestamp;
use leasehold_proto::LicenseModel;
use sqlx::postgres::PgPool;
use sqlx::Row;

use super::errors::db_error;
use super::licenses::update_locked;
use super::retry::transaction;
use super::rows::{insert_audit, AuditRows, LicenseRow, LICENSE_COLS};
use crate::codec::parse_terms;
use crate::delegation::DelegationChange;
use crate::records::License;
use crate::{StoreError, StoreResult};

/// The licenses imported from delegations (few: a local server's).
pub(super) async fn delegated_licenses(pool: &PgPool) -> StoreResult<Vec<License>> {
    let rows = sqlx::query(&format!(
        "SELECT {LICENSE_COLS} FROM licenses WHERE terms::jsonb ? 'delegated_from' ORDER BY id"
    ))
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(
            LicenseRow::read(row)
                .map_err(db_error)?
                .parse(parse_terms)?,
        );
    }
    Ok(out)
}

/// Applies `change` to the license's terms in one transaction.
pub(super) async fn change_delegations(
    pool: &PgPool,
    license_id: &str,
    change: &DelegationChange,
    now: Timestamp,
) -> StoreResult<License> {
    transaction!(pool, |tx| {
        let row = sqlx::query(&format!(
            "SELECT {LICENSE_COLS}, ends_at, end_below FROM licenses WHERE id = $1 FOR UPDATE"
        ))
        .bind(license_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound("license"));
        };
        let read = |row: &sqlx::postgres::PgRow| -> Result<_, sqlx::Error> {
            Ok((
                LicenseRow::read(row)?,
                row.try_get::<Option<i64>, _>(5)?,
                row.try_get::<i64, _>(6)?,
            ))
        };
        let (license_row, ends_at, end_below) = read(&row).map_err(db_error)?;
        let mut license = license_row.parse(parse_terms)?;
        // Sessions above the floor, as the open batches count them (an expired one not reaped
        // yet still counts: the count may be high, never low). Past the license's end none is in
        // use.
        let ended = ends_at.is_some_and(|end| end <= now.millis());
        let reserved: Vec<String> = license
            .terms
            .reserved
            .iter()
            .map(|u| u.as_str().to_owned())
            .collect();
        let counts = sqlx::query(
            "SELECT (SELECT COALESCE(sum(c.live), 0)::int8 FROM license_live c
                      WHERE c.license_id = $1 AND c.epoch = $2),
                    (SELECT count(DISTINCT s.username) FROM sessions s
                      WHERE s.license_id = $1 AND s.ended_at IS NULL AND s.seq >= $2
                        AND s.username = ANY($3))",
        )
        .bind(license_id)
        .bind(end_below)
        .bind(&reserved)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?;
        let count = |i: usize| -> StoreResult<u32> {
            let n: i64 = counts.try_get(i).map_err(db_error)?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        };
        // registered_users / node_locked: the slots taken (the license row's lock above keeps
        // activations out meanwhile: they take it too).
        let activations_sql = match license.model {
            LicenseModel::RegisteredUsers => {
                Some("SELECT count(*) FROM license_users WHERE license_id = $1 AND active")
            }
            LicenseModel::NodeLocked => {
                Some("SELECT count(*) FROM license_devices WHERE license_id = $1")
            }
            LicenseModel::ConcurrentSessions => None,
        };
        let activations = match activations_sql {
            Some(sql) => {
                let n: i64 = sqlx::query_scalar(sql)
                    .bind(license_id)
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(db_error)?;
                u32::try_from(n).unwrap_or(u32::MAX)
            }
            None => 0,
        };
        let in_use = if ended {
            InUse::default()
        } else {
            InUse {
                live: count(0)?,
                reserved_holders: count(1)?,
                activations,
            }
        };
        let Some(terms) = change.apply(&license.terms, in_use, now)? else {
            return Ok(license);
        };
        license.terms = terms;
        update_locked(tx, &license, ends_at, now).await?;
        let event = crate::delegation::audit_event(&license, change, now);
        insert_audit(tx, AuditRows::of(event))
            .await
            .map_err(db_error)?;
        Ok(license)
    })
}
