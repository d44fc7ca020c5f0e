//! The licensing models' registrations: the active users of a `registered_users` license and
//! the activated devices of a `node_locked` one. A change takes the license's row lock, so it
//! is serialized with the opens deciding on the old registrations; a deactivation ends the
//! user's or device's live sessions in the same transaction.

use std::sync::Arc;

use leasehold_core::seats::{decide_device_activation, decide_user_activation};
use leasehold_core::{LicenseTerms, Timestamp};
use leasehold_proto::EndReason;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};

use super::end::end_sessions;
use super::errors::db_error;
use super::retry::transaction;
use super::rows::{
    device_from, fetch_rows, insert_audit, license_user_from, AuditRows, TermsCache,
};
use crate::admin_events;
use crate::admission;
use crate::records::*;
use crate::{StoreError, StoreResult};

/// Locks a license row (serializing with the opens of every node) and answers its terms.
async fn lock_license(
    tx: &mut Transaction<'_, Postgres>,
    cache: &TermsCache,
    license_id: &str,
) -> StoreResult<Arc<LicenseTerms>> {
    let terms: Option<String> =
        sqlx::query_scalar("SELECT terms FROM licenses WHERE id = $1 FOR UPDATE")
            .bind(license_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
    let Some(terms) = terms else {
        return Err(StoreError::NotFound("license"));
    };
    cache.get(license_id, &terms)
}

/// `registered_users`: activates or deactivates a user on the license, atomically against the
/// active-user limit; deactivation ends the user's live sessions on it. Answers the change and
/// whether the registration was created.
pub(super) async fn set_license_user(
    pool: &PgPool,
    cache: &TermsCache,
    license_id: &str,
    username: &str,
    active: bool,
    now: Timestamp,
) -> StoreResult<(LicenseUserChange, bool, Vec<Session>)> {
    let (previous, ended) = transaction!(pool, |tx| {
        let terms = lock_license(tx, cache, license_id).await?;
        let previous: Option<bool> = sqlx::query_scalar(
            "SELECT active FROM license_users WHERE license_id = $1 AND username = $2",
        )
        .bind(license_id)
        .bind(username)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
        let was_active = previous.unwrap_or(false);
        if active {
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM license_users WHERE license_id = $1 AND active",
            )
            .bind(license_id)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_error)?;
            decide_user_activation(
                &terms,
                u32::try_from(count).unwrap_or(u32::MAX),
                was_active,
                now,
            )?;
        } else {
            decide_user_activation(&terms, 0, true, now)?;
        }
        sqlx::query(
            "INSERT INTO license_users (license_id, username, active, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (license_id, username)
             DO UPDATE SET active = excluded.active, updated_at = excluded.updated_at",
        )
        .bind(license_id)
        .bind(username)
        .bind(active)
        .bind(now.millis())
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        let account_id: String =
            sqlx::query_scalar("SELECT account_id FROM licenses WHERE id = $1")
                .bind(license_id)
                .fetch_one(&mut **tx)
                .await
                .map_err(db_error)?;
        let event = admin_events::license_user(&account_id, license_id, username, active, now);
        insert_audit(tx, AuditRows::of(event))
            .await
            .map_err(db_error)?;
        let ended = if active {
            Vec::new()
        } else {
            end_sessions(
                tx,
                cache,
                "s.license_id = $3 AND s.username = $4",
                &[license_id, username],
                EndReason::UserDeactivated,
                now,
            )
            .await?
        };
        Ok((previous, ended))
    })?;
    Ok((
        LicenseUserChange {
            user: LicenseUser {
                license_id: license_id.to_owned(),
                username: username.to_owned(),
                active,
                updated_at: now,
            },
            ended: u32::try_from(ended.len()).unwrap_or(u32::MAX),
        },
        previous.is_none(),
        ended,
    ))
}

/// The license's registered users, by username.
pub(super) async fn list_license_users(
    pool: &PgPool,
    license_id: &str,
) -> StoreResult<Vec<LicenseUser>> {
    let query = sqlx::query(
        "SELECT license_id, username, active, updated_at FROM license_users
         WHERE license_id = $1 ORDER BY username",
    )
    .bind(license_id);
    fetch_rows(query, pool, license_user_from).await
}

/// `node_locked`: activates a device, atomically against the activation limit; re-activating
/// one answers the existing activation. Answers whether it was created.
pub(super) async fn activate_device(
    pool: &PgPool,
    cache: &TermsCache,
    license_id: &str,
    fingerprint: &str,
    name: &str,
    now: Timestamp,
) -> StoreResult<(DeviceActivation, bool)> {
    let existing = transaction!(pool, |tx| {
        let terms = lock_license(tx, cache, license_id).await?;
        let existing = sqlx::query(
            "SELECT name, activated_at FROM license_devices
             WHERE license_id = $1 AND fingerprint = $2",
        )
        .bind(license_id)
        .bind(fingerprint)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM license_devices WHERE license_id = $1")
                .bind(license_id)
                .fetch_one(&mut **tx)
                .await
                .map_err(db_error)?;
        decide_device_activation(
            &terms,
            u32::try_from(count).unwrap_or(u32::MAX),
            existing.is_some(),
            now,
        )?;
        if let Some(row) = existing {
            let device = DeviceActivation {
                license_id: license_id.to_owned(),
                fingerprint: fingerprint.to_owned(),
                name: row.try_get(0).map_err(db_error)?,
                activated_at: Timestamp::from_millis(row.try_get(1).map_err(db_error)?),
            };
            return Ok(Some(device));
        }
        sqlx::query(
            "INSERT INTO license_devices (license_id, fingerprint, name, activated_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(license_id)
        .bind(fingerprint)
        .bind(name)
        .bind(now.millis())
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        let account_id: String =
            sqlx::query_scalar("SELECT account_id FROM licenses WHERE id = $1")
                .bind(license_id)
                .fetch_one(&mut **tx)
                .await
                .map_err(db_error)?;
        let event = admission::device_activated(&account_id, license_id, fingerprint, now);
        insert_audit(tx, AuditRows::of(event))
            .await
            .map_err(db_error)?;
        Ok(None)
    })?;
    if let Some(device) = existing {
        return Ok((device, false));
    }
    Ok((
        DeviceActivation {
            license_id: license_id.to_owned(),
            fingerprint: fingerprint.to_owned(),
            name: name.to_owned(),
            activated_at: now,
        },
        true,
    ))
}

/// Frees a device activation and ends the device's live sessions.
pub(super) async fn deactivate_device(
    pool: &PgPool,
    cache: &TermsCache,
    license_id: &str,
    fingerprint: &str,
    now: Timestamp,
) -> StoreResult<Vec<Session>> {
    transaction!(pool, |tx| {
        lock_license(tx, cache, license_id).await?;
        let account_id: Option<String> = sqlx::query_scalar(
            "DELETE FROM license_devices d USING licenses l
             WHERE d.license_id = $1 AND d.fingerprint = $2 AND l.id = d.license_id
             RETURNING l.account_id",
        )
        .bind(license_id)
        .bind(fingerprint)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
        let Some(account_id) = account_id else {
            return Err(StoreError::NotFound("device"));
        };
        let ended = end_sessions(
            tx,
            cache,
            "s.license_id = $3 AND s.device_id = $4",
            &[license_id, fingerprint],
            EndReason::DeviceDeactivated,
            now,
        )
        .await?;
        let event = admission::device_deactivated(&account_id, license_id, fingerprint, now);
        insert_audit(tx, AuditRows::of(event))
            .await
            .map_err(db_error)?;
        Ok(ended)
    })
}

/// The license's activated devices, oldest first.
pub(super) async fn list_devices(
    pool: &PgPool,
    license_id: &str,
) -> StoreResult<Vec<DeviceActivation>> {
    let query = sqlx::query(
        "SELECT license_id, fingerprint, name, activated_at FROM license_devices
         WHERE license_id = $1 ORDER BY activated_at, fingerprint",
    )
    .bind(license_id);
    fetch_rows(query, pool, device_from).await
}
