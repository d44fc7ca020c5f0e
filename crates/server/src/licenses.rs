//! The application layer of licenses: create, read (with live usage), change, list, the audit
//! log and the configured plans (usage series: `usage.rs`).

use leasehold_core::{LicenseTerms, Plan};
use leasehold_proto as proto;
use leasehold_store::origin;
use leasehold_store::{AuditEvent, License, SessionEvent, UsageStats};

use crate::access;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Most audit events one call answers.
pub const AUDIT_LIMIT: usize = 10_000;

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Creates a license in an account the caller administers.
#[tracing::instrument(skip_all, fields(account_id = %req.account_id, license_id = tracing::field::Empty))]
pub async fn create(
    state: &AppState,
    auth: &Auth,
    req: proto::CreateLicense,
) -> ApiResult<License> {
    access::admin_account(state, auth, &req.account_id).await?;
    let terms = LicenseTerms::from_create(&req, &state.plans)?;
    let license = License {
        id: new_id(),
        account_id: req.account_id.clone(),
        model: req.model,
        terms,
        created_at: state.clock.now(),
    };
    tracing::Span::current().record("license_id", license.id.as_str());
    origin::scope(auth.origin(), state.store.create_license(license.clone())).await?;
    Ok(license)
}

/// A license with its live usage.
#[tracing::instrument(skip(state, auth))]
pub async fn get(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
) -> ApiResult<(License, UsageStats)> {
    let license = access::admin_license(state, auth, license_id).await?;
    let usage = state.store.usage(license_id, state.clock.now()).await?;
    Ok((license, usage))
}

/// Applies a patch to a license's terms (the rules of `LicenseTerms::apply_patch`).
#[tracing::instrument(skip(state, auth, patch))]
pub async fn patch(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
    patch: proto::PatchLicense,
) -> ApiResult<License> {
    let mut license = access::admin_license(state, auth, license_id).await?;
    if license.terms.delegated_from.is_some() {
        return Err(ApiError::Conflict(
            "this license's terms come from its delegation: import a renewed delegation file              to change them"
                .into(),
        ));
    }
    license.terms = license.terms.apply_patch(&patch, &state.plans)?;
    state
        .with_now(|now| {
            origin::scope(
                auth.origin(),
                state.store.update_license(license.clone(), now),
            )
        })
        .await?;
    crate::events::raise(state, SessionEvent::license_changed(license_id)).await;
    Ok(license)
}

/// The account's licenses, oldest first.
pub async fn list(state: &AppState, auth: &Auth, account_id: &str) -> ApiResult<Vec<License>> {
    access::admin_account(state, auth, account_id).await?;
    Ok(state.store.list_licenses(account_id).await?)
}

/// The license's append-only audit log, oldest first (at most `AUDIT_LIMIT` events).
#[tracing::instrument(skip(state, auth))]
pub async fn audit(state: &AppState, auth: &Auth, license_id: &str) -> ApiResult<Vec<AuditEvent>> {
    access::admin_license(state, auth, license_id).await?;
    Ok(state.store.audit_log(license_id, AUDIT_LIMIT).await?)
}

/// The configured plans (any admin token).
pub fn plans<'a>(state: &'a AppState, auth: &Auth) -> ApiResult<Vec<(&'a String, &'a Plan)>> {
    access::require_admin_token(auth)?;
    Ok(state.plans.iter().collect())
}
