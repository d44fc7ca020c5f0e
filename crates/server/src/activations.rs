//! The application layer of the licensing models' activations: users activated on a
//! `registered_users` license, devices activated on a `node_locked` one. Deactivating either
//! ends the sessions it held.

use leasehold_core::{Username, ValidatedId};
use leasehold_proto::EndReason;
use leasehold_store::origin;
use leasehold_store::{DeviceActivation, License, LicenseUser, LicenseUserChange, SessionEvent};

use crate::access;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::metrics as m;
use crate::state::AppState;

/// Activates or deactivates a user of the account on a `registered_users` license; answers the
/// change and whether the registration was created.
#[tracing::instrument(skip(state, auth))]
pub async fn set_license_user(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
    username: &str,
    active: bool,
) -> ApiResult<(LicenseUserChange, bool)> {
    let license = access::admin_license(state, auth, license_id).await?;
    let username = Username::parse(username)?;
    state
        .store
        .get_user(&license.account_id, username.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound("user".into()))?;
    let (change, created) = state
        .with_now(|now| {
            origin::scope(
                auth.origin(),
                state
                    .store
                    .set_license_user(license_id, username.as_str(), active, now),
            )
        })
        .await?;
    m::ended_n(
        license_id,
        EndReason::UserDeactivated,
        u64::from(change.ended),
    );
    if !active {
        let event = SessionEvent::user_ended(&license.account_id, username.as_str());
        crate::events::raise(state, event).await;
    }
    Ok((change, created))
}

/// The license's user registrations, with the license (its seats are the active-user limit).
pub async fn license_users(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
) -> ApiResult<(License, Vec<LicenseUser>)> {
    let license = access::admin_license(state, auth, license_id).await?;
    let users = state.store.list_license_users(license_id).await?;
    Ok((license, users))
}

/// Activates a device on a `node_locked` license; answers it and whether it is new.
#[tracing::instrument(skip(state, auth, name))]
pub async fn activate_device(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
    fingerprint: &str,
    name: &str,
) -> ApiResult<(DeviceActivation, bool)> {
    access::admin_license(state, auth, license_id).await?;
    let fingerprint = ValidatedId::parse("fingerprint", fingerprint)?;
    if name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "name must be at most 200 printable characters".into(),
        ));
    }
    Ok(state
        .with_now(|now| {
            let activate =
                state
                    .store
                    .activate_device(license_id, fingerprint.as_str(), name.trim(), now);
            origin::scope(auth.origin(), activate)
        })
        .await?)
}

/// The license's activated devices, with the license (its seats are the device limit).
pub async fn devices(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
) -> ApiResult<(License, Vec<DeviceActivation>)> {
    let license = access::admin_license(state, auth, license_id).await?;
    let devices = state.store.list_devices(license_id).await?;
    Ok((license, devices))
}

/// Frees a device activation; the device's live sessions end (`device_deactivated`).
#[tracing::instrument(skip(state, auth))]
pub async fn deactivate_device(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
    fingerprint: &str,
) -> ApiResult<()> {
    access::admin_license(state, auth, license_id).await?;
    let ended = state
        .with_now(|now| {
            origin::scope(
                auth.origin(),
                state.store.deactivate_device(license_id, fingerprint, now),
            )
        })
        .await?;
    for session in &ended {
        m::ended(license_id, EndReason::DeviceDeactivated);
        crate::events::raise(state, SessionEvent::session_ended(&session.id)).await;
    }
    Ok(())
}
