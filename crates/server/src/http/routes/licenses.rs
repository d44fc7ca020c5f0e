//! Routes of licenses: `/v1/licenses…` (terms, live sessions, usage, audit log, queue) and the
//! plan list.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use leasehold_proto as proto;
use leasehold_proto::ErrorBody;
use serde::Deserialize;

use crate::auth::Auth;
use crate::clock::to_offset;
use crate::error::ApiResult;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::views::{self, AuditLog};
use crate::licenses::{self, UsageQuery};
use crate::sessions;
use crate::state::AppState;

#[utoipa::path(
    post, path = "/v1/licenses", tag = "licenses",
    request_body = proto::CreateLicense,
    responses((status = 201, body = proto::License), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, description = "no such account", body = ErrorBody), (status = 409, description = "plan_cap_exceeded", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn create_license(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<proto::CreateLicense>,
) -> ApiResult<(StatusCode, Json<proto::License>)> {
    let license = licenses::create(&state, &auth, req).await?;
    Ok((StatusCode::CREATED, Json(views::license(&license))))
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    responses((status = 200, body = proto::License), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_license(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::License>> {
    let (license, usage) = licenses::get(&state, &auth, &id).await?;
    let mut view = views::license(&license);
    view.usage = Some(views::usage(&usage));
    Ok(Json(view))
}

#[utoipa::path(
    patch, path = "/v1/licenses/{id}", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    request_body = proto::PatchLicense,
    responses((status = 200, body = proto::License), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn patch_license(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<proto::PatchLicense>,
) -> ApiResult<Json<proto::License>> {
    let license = licenses::patch(&state, &auth, &id, patch).await?;
    Ok(Json(views::license(&license)))
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/licenses", tag = "licenses",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = proto::LicenseList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_licenses(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(account_id): ApiPath<String>,
) -> ApiResult<Json<proto::LicenseList>> {
    let licenses = licenses::list(&state, &auth, &account_id).await?;
    Ok(Json(proto::LicenseList {
        licenses: licenses.iter().map(views::license).collect(),
    }))
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/sessions", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    responses((status = 200, body = proto::SessionList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::SessionList>> {
    let sessions = sessions::license_sessions(&state, &auth, &id).await?;
    Ok(Json(views::session_list(&sessions)))
}

#[utoipa::path(
    delete, path = "/v1/licenses/{id}/sessions", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    responses(
        (status = 200, description = "Every live session of the license is revoked: durable and answered as ended from now on (410 `session_ended`, reason `revoked`); their `ended` audit events land in the background (`usage.ending`)", body = proto::SessionsRevoked),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn revoke_sessions(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::SessionsRevoked>> {
    let revoked = sessions::revoke_all(&state, &auth, &id).await?;
    Ok(Json(proto::SessionsRevoked { revoked }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// Start of the period (RFC 3339); this version reports since server start.
    pub from: Option<String>,
    /// End of the period (RFC 3339).
    pub to: Option<String>,
    /// `hour`, `day` or `month`.
    pub bucket: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/usage", tag = "licenses",
    params(("id" = String, Path, description = "License id"), UsageParams),
    responses((status = 200, body = proto::UsageReport), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn license_usage(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> ApiResult<Json<proto::UsageReport>> {
    let query = UsageQuery {
        from: params.from,
        to: params.to,
        bucket: params.bucket,
    };
    let (u, sites) = licenses::usage(&state, &auth, &id, &query).await?;
    Ok(Json(proto::UsageReport {
        license_id: id,
        now: views::usage(&u),
        high_water: u.high_water,
        low_water: u.low_water,
        denials: u.denials,
        since: to_offset(u.since),
        sites,
    }))
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/audit", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    responses((status = 200, description = "The append-only audit log of the license, oldest first (at most 10000 events)", body = AuditLog), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn license_audit(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AuditLog>> {
    let events = licenses::audit(&state, &auth, &id).await?;
    Ok(Json(views::audit_log(events)))
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/queue", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    responses((status = 200, description = "Clients waiting for a seat, in order. Account admins see every waiter; a user or service token sees only its own waiting requests (with their positions in the whole queue).", body = proto::QueueList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn license_queue(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::QueueList>> {
    let queue = sessions::queue(&state, &auth, &id).await?;
    Ok(Json(proto::QueueList {
        waiting: queue
            .waiting
            .into_iter()
            .map(|w| views::queue_entry(w, queue.now))
            .collect(),
        length: queue.length,
    }))
}

#[utoipa::path(
    get, path = "/v1/plans", tag = "licenses",
    responses((status = 200, description = "The configured plans", body = Vec<proto::PlanInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_plans(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<Json<Vec<proto::PlanInfo>>> {
    let plans = licenses::plans(&state, &auth)?;
    Ok(Json(
        plans
            .into_iter()
            .map(|(name, p)| proto::PlanInfo {
                name: name.clone(),
                base_seats: p.base_seats,
                max_seats: p.max_seats,
            })
            .collect(),
    ))
}
