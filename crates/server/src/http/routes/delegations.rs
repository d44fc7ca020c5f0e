//! Routes of dark sites: on the cloud, `/v1/licenses/{id}/delegations…` (create, list, renew,
//! import a return receipt); on the local server, `/v1/delegation-requests` and
//! `/v1/delegations…` (import, return). See `crate::delegation`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use leasehold_proto as proto;
use leasehold_proto::ErrorBody;

use crate::auth::Auth;
use crate::delegation::{cloud, local, report};
use crate::error::ApiResult;
use crate::http::extract::{ApiJson, ApiPath};
use crate::state::AppState;

#[utoipa::path(
    post, path = "/v1/licenses/{id}/delegations", tag = "delegations",
    params(("id" = String, Path, description = "License id (on the cloud server)")),
    request_body = proto::CreateDelegation,
    responses(
        (status = 201, description = "The delegation file (delegation.json): the license's terms for `seats` seats, bound to the requesting server, signed by this server. The seats leave the license at once until the delegation is returned or expires.", body = proto::DelegationFile),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "`not_enough_free_seats`", body = ErrorBody),
        (status = 422, description = "`delegation_signature_invalid` (the request does not verify), or `invalid_request`", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn create_delegation(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<proto::CreateDelegation>,
) -> ApiResult<(StatusCode, Json<proto::DelegationFile>)> {
    let file = cloud::create(&state, &auth, &id, req).await?;
    Ok((StatusCode::CREATED, Json(file)))
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/delegations", tag = "delegations",
    params(("id" = String, Path, description = "License id (on the cloud server)")),
    responses(
        (status = 200, description = "The license's delegations (active, returned, expired)", body = proto::DelegationList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_delegations(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::DelegationList>> {
    Ok(Json(cloud::list(&state, &auth, &id).await?))
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/delegations/{delegation_id}", tag = "delegations",
    params(("id" = String, Path, description = "License id (on the cloud server)"), ("delegation_id" = String, Path)),
    responses(
        (status = 200, description = "The delegation's current file (its latest sequence): what a local server in online mode fetches", body = proto::DelegationFile),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_delegation(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((id, delegation_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<proto::DelegationFile>> {
    Ok(Json(
        cloud::current(&state, &auth, &id, &delegation_id).await?,
    ))
}

#[utoipa::path(
    patch, path = "/v1/licenses/{id}/delegations/{delegation_id}", tag = "delegations",
    params(("id" = String, Path, description = "License id (on the cloud server)"), ("delegation_id" = String, Path)),
    request_body = proto::RenewDelegation,
    responses(
        (status = 200, description = "The renewed delegation file (the next sequence)", body = proto::DelegationFile),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "`not_enough_free_seats`, `delegation_returned`, `delegation_expired`", body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn renew_delegation(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((id, delegation_id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<proto::RenewDelegation>,
) -> ApiResult<Json<proto::DelegationFile>> {
    Ok(Json(
        cloud::renew(&state, &auth, &id, &delegation_id, req).await?,
    ))
}

#[utoipa::path(
    post, path = "/v1/licenses/{id}/delegations/{delegation_id}/receipt", tag = "delegations",
    params(("id" = String, Path, description = "License id (on the cloud server)"), ("delegation_id" = String, Path)),
    request_body = proto::ImportReceipt,
    responses(
        (status = 200, description = "The delegation, returned: its seats are back (importing the receipt again changes nothing)", body = proto::Delegation),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "`delegation_signature_invalid`: not signed by the delegation's server", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn import_receipt(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((id, delegation_id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<proto::ImportReceipt>,
) -> ApiResult<Json<proto::Delegation>> {
    Ok(Json(
        cloud::import_receipt(&state, &auth, &id, &delegation_id, req).await?,
    ))
}

#[utoipa::path(
    post, path = "/v1/delegation-requests", tag = "delegations",
    request_body = proto::CreateDelegationRequest,
    responses(
        (status = 200, description = "This server's signed request for seats (request.json): its public key, its id (the key's RFC 7638 thumbprint), the site, the time", body = proto::DelegationRequestFile),
        (status = 401, body = ErrorBody), (status = 403, description = "not the root admin token", body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn create_delegation_request(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<proto::CreateDelegationRequest>,
) -> ApiResult<Json<proto::DelegationRequestFile>> {
    Ok(Json(local::request(&state, &auth, req).await?))
}

#[utoipa::path(
    post, path = "/v1/delegations", tag = "delegations",
    request_body = proto::ImportDelegation,
    responses(
        (status = 201, description = "Imported: the local license was created", body = proto::ImportedDelegation),
        (status = 200, description = "A renewal changed the local license, or the same file again changed nothing", body = proto::ImportedDelegation),
        (status = 401, body = ErrorBody), (status = 403, description = "not the root admin token", body = ErrorBody),
        (status = 404, description = "no such account", body = ErrorBody),
        (status = 409, description = "`delegation_expired`, `delegation_not_yet_valid`, `delegation_superseded`, `delegation_returned`, `conflict`", body = ErrorBody),
        (status = 422, description = "`delegation_signature_invalid`, `delegation_wrong_server`, `invalid_request`", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn import_delegation(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<proto::ImportDelegation>,
) -> ApiResult<(StatusCode, Json<proto::ImportedDelegation>)> {
    let (created, imported) = local::import(&state, &auth, req).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(imported)))
}

#[utoipa::path(
    post, path = "/v1/delegations/{id}/return", tag = "delegations",
    params(("id" = String, Path, description = "Delegation id (the local license's id)")),
    responses(
        (status = 200, description = "The local license stopped (its sessions ended); the signed receipt (receipt.json) for the cloud. Asking again answers the same receipt.", body = proto::DelegationReceipt),
        (status = 401, body = ErrorBody), (status = 403, description = "not the root admin token", body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn return_delegation(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::DelegationReceipt>> {
    Ok(Json(local::return_delegation(&state, &auth, &id).await?))
}

#[utoipa::path(
    get, path = "/v1/delegations/{id}/report", tag = "delegations",
    params(("id" = String, Path, description = "Delegation id (the local license's id)")),
    responses(
        (status = 200, description = "The signed usage report (report.json): the local license's use per hour since the delegation began, with the next report sequence", body = proto::DelegationReport),
        (status = 401, body = ErrorBody), (status = 403, description = "not the root admin token", body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delegation_report(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::DelegationReport>> {
    Ok(Json(report::local_report(&state, &auth, &id).await?))
}

#[utoipa::path(
    post, path = "/v1/licenses/{id}/delegations/{delegation_id}/reports", tag = "delegations",
    params(("id" = String, Path, description = "License id (on the cloud server)"), ("delegation_id" = String, Path)),
    request_body = proto::ImportReport,
    responses(
        (status = 200, description = "What the cloud keeps for the site: the newest report (the same report twice, or an older one, changes nothing: `kept: false`)", body = proto::ImportedReport),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "`delegation_signature_invalid`: not signed by the delegation's server", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn import_report(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((id, delegation_id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<proto::ImportReport>,
) -> ApiResult<Json<proto::ImportedReport>> {
    Ok(Json(
        report::import_report(&state, &auth, &id, &delegation_id, req).await?,
    ))
}
