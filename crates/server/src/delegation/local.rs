//! The local server's side of dark sites: the signed request for seats, the import of a
//! delegation as a license of a local account, and its return. Root admin only: the local
//! server's operator, not a tenant.
//!
//! The local license's id is the delegation's id, its seats the delegated K, its window the
//! delegation's (`starts_at` = `not_before`, `expires_at`): the license machinery then stops
//! it granting at the end and ends its sessions there, like any license's end. Its terms say
//! where they come from (`delegated_from`), so a local admin cannot change them: only a newer
//! delegation file can.

use leasehold_core::delegation::{check_import, DelegatedFrom, ImportStep};
use leasehold_core::{LicenseTerms, RuleError, Timestamp};
use leasehold_proto as proto;
use leasehold_store::{origin, License, SessionEvent};

use super::bad_signature;
use crate::auth::Auth;
use crate::clock::to_offset;
use crate::error::{ApiError, ApiResult};
use crate::jws;
use crate::state::AppState;

/// Longest site name.
const MAX_SITE_CHARS: usize = 200;

/// `POST /v1/delegation-requests`: this server's signed request for seats (request.json).
pub async fn request(
    state: &AppState,
    auth: &Auth,
    req: proto::CreateDelegationRequest,
) -> ApiResult<proto::DelegationRequestFile> {
    auth.require_root()?;
    let site = req.site.trim();
    if site.is_empty()
        || site.chars().count() > MAX_SITE_CHARS
        || site.chars().any(char::is_control)
    {
        return Err(ApiError::Unprocessable(format!(
            "site must be 1 to {MAX_SITE_CHARS} printable characters"
        )));
    }
    let claims = proto::DelegationRequestClaims {
        typ: proto::REQUEST_TYP.into(),
        server_id: state.signer.server_id(),
        site: site.to_owned(),
        public_key: state.signer.public_jwk(),
        created_at: to_offset(state.clock.now()),
    };
    Ok(proto::DelegationRequestFile {
        request: state.signer.sign_json(&claims),
        server_id: claims.server_id,
        site: claims.site,
        public_key: claims.public_key,
        created_at: claims.created_at,
    })
}

/// Verifies a delegation file: signed by a vendor key, and bound to this server.
fn verify_delegation(state: &AppState, jws_text: &str) -> ApiResult<proto::DelegationClaims> {
    if state.vendor_keys.is_empty() {
        return Err(bad_signature(
            "this server trusts no vendor key: start it with --vendor-jwks FILE \
             (the cloud's /.well-known/jwks.json saved to a file)",
        )
        .into());
    }
    let (kid, _) = jws::peek::<serde_json::Value>(jws_text)
        .map_err(|e| bad_signature(format!("the delegation: {e}")))?;
    // The key the header names first; then the others (a kid is a hint, not a proof).
    let mut keys: Vec<&proto::Jwk> = state.vendor_keys.iter().collect();
    keys.sort_by_key(|k| Some(&k.kid) != kid.as_ref());
    let claims = keys
        .iter()
        .filter_map(|k| jws::key_of(k).ok())
        .find_map(|key| jws::verify::<proto::DelegationClaims>(jws_text, &key).ok())
        .ok_or_else(|| {
            bad_signature("the delegation is not signed by the vendor's key (or was altered)")
        })?;
    if claims.typ != proto::DELEGATION_TYP {
        return Err(bad_signature("the file is not a delegation").into());
    }
    let me = state.signer.public_jwk();
    if claims.server_key != me.x || claims.server_id != state.signer.server_id() {
        return Err(RuleError::DelegationWrongServer(format!(
            "the delegation is bound to server {}, this server is {}",
            claims.server_id,
            state.signer.server_id()
        ))
        .into());
    }
    Ok(claims)
}

/// The local license's terms from a delegation's.
fn terms_of(state: &AppState, c: &proto::DelegationClaims) -> ApiResult<LicenseTerms> {
    let create = proto::CreateLicense {
        account_id: String::new(),
        product: c.product.clone(),
        model: c.model,
        seats: Some(i64::from(c.seats)),
        reserved: c.reserved.clone(),
        inactivity_timeout_secs: Some(c.inactivity_timeout_secs as i64),
        service_session_lifetime_secs: Some(c.service_session_lifetime_secs as i64),
        interactive_session_lifetime_secs: c.interactive_session_lifetime_secs.map(|v| v as i64),
        heartbeat_interval_secs: c.heartbeat_interval_secs.map(|v| v as i64),
        on_full: Some(c.on_full),
        max_queue_wait_secs: Some(c.max_queue_wait_secs as i64),
        max_sessions_per_user: c.max_sessions_per_user.map(i64::from),
        starts_at: Some(c.not_before),
        expires_at: Some(c.expires_at),
        ..Default::default()
    };
    let mut terms = LicenseTerms::from_create(&create, &state.plans)
        .map_err(|e| bad_signature(format!("the delegation's terms: {e}")))?;
    terms.delegated_from = Some(DelegatedFrom {
        delegation_id: c.delegation_id.clone(),
        license_id: c.license_id.clone(),
        sequence: c.sequence,
        returned_at: None,
    });
    Ok(terms)
}

fn imported(license: &License, outcome: &str) -> ApiResult<proto::ImportedDelegation> {
    let (Some(from), Some(end)) = (&license.terms.delegated_from, license.terms.expires_at) else {
        return Err(ApiError::Internal(
            "an imported license without its delegation".into(),
        ));
    };
    Ok(proto::ImportedDelegation {
        delegation_id: from.delegation_id.clone(),
        sequence: from.sequence,
        license_id: license.id.clone(),
        account_id: license.account_id.clone(),
        seats: license.terms.seats,
        expires_at: to_offset(end),
        outcome: outcome.into(),
    })
}

/// `POST /v1/delegations`: imports a delegation file. The first import creates the local
/// license in `account_id`; a newer sequence changes its terms without ending live sessions
/// (fewer seats: they run on, new ones are refused until under the limit); the same file
/// again changes nothing. Answers whether the license was created.
#[tracing::instrument(skip(state, auth, req))]
pub async fn import(
    state: &AppState,
    auth: &Auth,
    req: proto::ImportDelegation,
) -> ApiResult<(bool, proto::ImportedDelegation)> {
    auth.require_root()?;
    apply_import(state, Some(auth), auth.origin(), req).await
}

/// An import by the root admin (`auth`), or by the online sync (`None`: renewals only, the
/// first import is the operator's).
pub(super) async fn apply_import(
    state: &AppState,
    auth: Option<&Auth>,
    origin: leasehold_store::Origin,
    req: proto::ImportDelegation,
) -> ApiResult<(bool, proto::ImportedDelegation)> {
    let claims = verify_delegation(state, &req.delegation)?;
    let existing = state.store.get_license(&claims.delegation_id).await?;
    let current = existing
        .as_ref()
        .map(|l| {
            l.terms.delegated_from.as_ref().ok_or_else(|| {
                ApiError::Conflict(format!(
                    "license {} exists and was not imported from a delegation",
                    l.id
                ))
            })
        })
        .transpose()?;
    let step = check_import(
        current,
        claims.sequence,
        Timestamp::from_offset(claims.not_before),
        Timestamp::from_offset(claims.expires_at),
        state.clock.now(),
    )?;
    let terms = terms_of(state, &claims)?;
    match (step, existing) {
        (ImportStep::Create, _) => {
            let Some(account_id) = req.account_id else {
                return Err(ApiError::Unprocessable(
                    "the first import of a delegation needs account_id: the local account \
                     that holds its license"
                        .into(),
                ));
            };
            let Some(auth) = auth else {
                return Err(ApiError::Conflict(
                    "the first import of a delegation is the operator's (a file)".into(),
                ));
            };
            crate::access::admin_account(state, auth, &account_id).await?;
            let license = License {
                id: claims.delegation_id.clone(),
                account_id,
                model: claims.model,
                terms,
                created_at: state.clock.now(),
            };
            origin::scope(origin, state.store.create_license(license.clone())).await?;
            tracing::info!(
                delegation_id = %claims.delegation_id, seats = claims.seats,
                expires_at = %claims.expires_at, "imported a delegation"
            );
            Ok((true, imported(&license, "created")?))
        }
        (_, None) => Err(ApiError::Internal(
            "an imported delegation without its license".into(),
        )),
        (step, Some(mut license)) => {
            if req
                .account_id
                .as_ref()
                .is_some_and(|a| *a != license.account_id)
            {
                return Err(ApiError::Conflict(format!(
                    "delegation {} is held by account {}",
                    claims.delegation_id, license.account_id
                )));
            }
            if step == ImportStep::Unchanged {
                return Ok((false, imported(&license, "unchanged")?));
            }
            license.terms = terms;
            state
                .with_now(|now| {
                    origin::scope(origin, state.store.update_license(license.clone(), now))
                })
                .await?;
            crate::events::raise(state, SessionEvent::license_changed(&license.id)).await;
            tracing::info!(
                delegation_id = %claims.delegation_id, sequence = claims.sequence,
                seats = claims.seats, expires_at = %claims.expires_at, "renewed a delegation"
            );
            Ok((false, imported(&license, "renewed")?))
        }
    }
}

/// `POST /v1/delegations/{id}/return`: stops the local license at once (its sessions end)
/// and answers the signed receipt for the cloud. Asking again answers the same receipt.
#[tracing::instrument(skip(state, auth))]
pub async fn return_delegation(
    state: &AppState,
    auth: &Auth,
    delegation_id: &str,
) -> ApiResult<proto::DelegationReceipt> {
    auth.require_root()?;
    let mut license = state
        .store
        .get_license(delegation_id)
        .await?
        .filter(|l| l.terms.delegated_from.is_some())
        .ok_or_else(|| ApiError::NotFound("delegation".into()))?;
    let returned_at = match license
        .terms
        .delegated_from
        .as_ref()
        .and_then(|f| f.returned_at)
    {
        Some(at) => at,
        None => {
            let at = state
                .with_now(|now| {
                    let terms = &mut license.terms;
                    if let Some(from) = terms.delegated_from.as_mut() {
                        from.returned_at = Some(now);
                    }
                    // The license's end is now: it stops granting, its sessions end.
                    terms.expires_at = Some(terms.expires_at.map_or(now, |end| end.min(now)));
                    if terms.starts_at.is_some_and(|start| start >= now) {
                        terms.starts_at = None;
                    }
                    let license = license.clone();
                    async move {
                        origin::scope(auth.origin(), state.store.update_license(license, now))
                            .await
                            .map(|()| now)
                    }
                })
                .await?;
            crate::events::raise(state, SessionEvent::license_changed(delegation_id)).await;
            tracing::info!(%delegation_id, "returned a delegation");
            at
        }
    };
    let Some(from) = &license.terms.delegated_from else {
        return Err(ApiError::Internal(
            "a returned license without its delegation".into(),
        ));
    };
    let claims = proto::ReceiptClaims {
        typ: proto::RECEIPT_TYP.into(),
        delegation_id: from.delegation_id.clone(),
        license_id: from.license_id.clone(),
        server_id: state.signer.server_id(),
        sequence: from.sequence,
        returned_at: to_offset(returned_at),
    };
    Ok(proto::DelegationReceipt {
        receipt: state.signer.sign_json(&claims),
        delegation_id: claims.delegation_id,
        license_id: claims.license_id,
        server_id: claims.server_id,
        returned_at: claims.returned_at,
    })
}
