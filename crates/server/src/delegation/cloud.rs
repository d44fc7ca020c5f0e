//! The cloud's side of dark sites: delegations of a license's seats to local servers, their
//! renewals, and the import of their return receipts. Account admins of the license only.

use leasehold_core::delegation::Delegated;
use leasehold_core::{RuleError, Timestamp};
use leasehold_proto as proto;
use leasehold_store::{origin, DelegationChange, License, SessionEvent};

use super::{bad_signature, claims_of, verify_site_file, view};
use crate::access;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::jws;
use crate::state::AppState;

/// The signed file of the delegation `id` as `license` has it now.
fn file_of(state: &AppState, license: &License, id: &str) -> ApiResult<proto::DelegationFile> {
    let Some(d) = license.terms.delegation(id) else {
        return Err(ApiError::Internal(format!(
            "delegation {id} missing from its license after the change"
        )));
    };
    let claims = claims_of(license, d);
    Ok(proto::DelegationFile {
        delegation: state.signer.sign_json(&claims),
        delegation_id: claims.delegation_id,
        sequence: claims.sequence,
        license_id: claims.license_id,
        seats: claims.seats,
        not_before: claims.not_before,
        expires_at: claims.expires_at,
        server_id: claims.server_id,
        site: claims.site,
    })
}

/// Verifies a local server's request: signed by the key it carries, whose thumbprint is the
/// server id it names.
fn verify_request(request: &str) -> ApiResult<proto::DelegationRequestClaims> {
    let (_, unverified) = jws::peek::<proto::DelegationRequestClaims>(request)
        .map_err(|e| bad_signature(format!("the request: {e}")))?;
    let key = jws::key_of(&unverified.public_key)
        .map_err(|e| bad_signature(format!("the request's key: {e}")))?;
    let claims: proto::DelegationRequestClaims =
        jws::verify(request, &key).map_err(|e| bad_signature(format!("the request: {e}")))?;
    if claims.typ != proto::REQUEST_TYP {
        return Err(bad_signature("the file is not a delegation request").into());
    }
    if claims.server_id != jws::thumbprint(&claims.public_key.x) {
        return Err(bad_signature("the request's server_id is not its key's thumbprint").into());
    }
    Ok(claims)
}

/// `POST /v1/licenses/{id}/delegations`: K seats leave the license at once (409
/// `not_enough_free_seats` when fewer are free), bound to the requesting server.
#[tracing::instrument(skip(state, auth, req), fields(delegation_id = tracing::field::Empty))]
pub async fn create(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
    req: proto::CreateDelegation,
) -> ApiResult<proto::DelegationFile> {
    access::admin_license(state, auth, license_id).await?;
    let request = verify_request(&req.request)?;
    let seats = u32::try_from(req.seats).map_err(|_| {
        ApiError::Unprocessable(format!("seats must be positive, got {}", req.seats))
    })?;
    let id = uuid::Uuid::new_v4().to_string();
    tracing::Span::current().record("delegation_id", id.as_str());
    let license = state
        .with_now(|now| {
            let delegated = Delegated {
                id: id.clone(),
                seats,
                not_before: req.not_before.map_or(now, Timestamp::from_offset),
                expires_at: Timestamp::from_offset(req.expires_at),
                sequence: 1,
                server_id: request.server_id.clone(),
                server_key: request.public_key.x.clone(),
                site: request.site.clone(),
                created_at: now,
                returned_at: None,
                report: None,
            };
            origin::scope(
                auth.origin(),
                state.store.change_delegations(
                    license_id,
                    DelegationChange::Create(delegated),
                    now,
                ),
            )
        })
        .await?;
    crate::events::raise(state, SessionEvent::license_changed(license_id)).await;
    file_of(state, &license, &id)
}

/// `GET /v1/licenses/{id}/delegations/{delegation_id}`: the delegation's current file (its
/// latest sequence), signed again; what a local server in online mode fetches.
pub async fn current(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
    delegation_id: &str,
) -> ApiResult<proto::DelegationFile> {
    let license = access::admin_license(state, auth, license_id).await?;
    if license.terms.delegation(delegation_id).is_none() {
        return Err(RuleError::DelegationUnknown(delegation_id.to_owned()).into());
    }
    file_of(state, &license, delegation_id)
}

/// `GET /v1/licenses/{id}/delegations`: every delegation of the license, oldest first.
pub async fn list(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
) -> ApiResult<proto::DelegationList> {
    let license = access::admin_license(state, auth, license_id).await?;
    let now = state.clock.now();
    Ok(proto::DelegationList {
        delegations: license
            .terms
            .delegations
            .iter()
            .map(|d| view(license_id, d, now))
            .collect(),
    })
}

/// `PATCH /v1/licenses/{id}/delegations/{delegation_id}`: a renewal with the next sequence.
#[tracing::instrument(skip(state, auth, req))]
pub async fn renew(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
    delegation_id: &str,
    req: proto::RenewDelegation,
) -> ApiResult<proto::DelegationFile> {
    access::admin_license(state, auth, license_id).await?;
    if req.seats.is_none() && req.expires_at.is_none() {
        return Err(ApiError::Unprocessable(
            "a renewal changes seats and/or expires_at".into(),
        ));
    }
    let change = DelegationChange::Renew {
        id: delegation_id.to_owned(),
        seats: req.seats,
        expires_at: req.expires_at.map(Timestamp::from_offset),
    };
    let license = state
        .with_now(|now| {
            origin::scope(
                auth.origin(),
                state.store.change_delegations(license_id, change, now),
            )
        })
        .await?;
    crate::events::raise(state, SessionEvent::license_changed(license_id)).await;
    file_of(state, &license, delegation_id)
}

/// `POST /v1/licenses/{id}/delegations/{delegation_id}/receipt`: the local server's signed
/// return; the seats are back from now on. Refused unless signed by the delegation's server.
/// Importing it again changes nothing.
#[tracing::instrument(skip(state, auth, req))]
pub async fn import_receipt(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
    delegation_id: &str,
    req: proto::ImportReceipt,
) -> ApiResult<proto::Delegation> {
    let license = access::admin_license(state, auth, license_id).await?;
    verify_site_file::<proto::ReceiptClaims>(&license, delegation_id, &req.receipt)?;
    let change = DelegationChange::Return {
        id: delegation_id.to_owned(),
    };
    let license = state
        .with_now(|now| {
            origin::scope(
                auth.origin(),
                state.store.change_delegations(license_id, change, now),
            )
        })
        .await?;
    crate::events::raise(state, SessionEvent::license_changed(license_id)).await;
    let Some(d) = license.terms.delegation(delegation_id) else {
        return Err(ApiError::Internal(format!(
            "delegation {delegation_id} missing after its return"
        )));
    };
    Ok(view(license_id, d, state.clock.now()))
}
