//! Routes of the licensing models' activations: users of `registered_users` licenses and
//! devices of `node_locked` ones (`/v1/licenses/{id}/users…`, `/v1/licenses/{id}/devices…`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use leasehold_proto as proto;
use leasehold_proto::ErrorBody;

use crate::activations;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::views;
use crate::state::AppState;

fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

#[utoipa::path(
    put, path = "/v1/licenses/{id}/users/{username}", tag = "licenses",
    params(("id" = String, Path, description = "License id (a registered_users license)"), ("username" = String, Path)),
    request_body = proto::PutLicenseUser,
    responses(
        (status = 200, body = proto::LicenseUser), (status = 201, body = proto::LicenseUser),
        (status = 404, body = ErrorBody),
        (status = 409, description = "active_users_exhausted", body = ErrorBody),
        (status = 422, description = "not a registered_users license", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn put_license_user(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((id, username)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<proto::PutLicenseUser>,
) -> ApiResult<(StatusCode, Json<proto::LicenseUser>)> {
    let (change, created) =
        activations::set_license_user(&state, &auth, &id, &username, req.active).await?;
    Ok((
        created_or_ok(created),
        Json(views::license_user(&change.user)),
    ))
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/users", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    responses((status = 200, body = proto::LicenseUserList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_license_users(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::LicenseUserList>> {
    let (license, users) = activations::license_users(&state, &auth, &id).await?;
    Ok(Json(proto::LicenseUserList {
        active: users.iter().filter(|u| u.active).count() as u32,
        max_active: license.terms.seats,
        users: users.iter().map(views::license_user).collect(),
    }))
}

#[utoipa::path(
    post, path = "/v1/licenses/{id}/devices", tag = "licenses",
    params(("id" = String, Path, description = "License id (a node_locked license)")),
    request_body = proto::ActivateDevice,
    responses(
        (status = 201, description = "Activated", body = proto::Device),
        (status = 200, description = "Already activated", body = proto::Device),
        (status = 404, body = ErrorBody),
        (status = 409, description = "activations_exhausted", body = ErrorBody),
        (status = 422, description = "not a node_locked license", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn activate_device(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<proto::ActivateDevice>,
) -> ApiResult<(StatusCode, Json<proto::Device>)> {
    let (device, created) =
        activations::activate_device(&state, &auth, &id, &req.fingerprint, &req.name).await?;
    Ok((created_or_ok(created), Json(views::device(&device))))
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/devices", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    responses((status = 200, body = proto::DeviceList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_devices(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::DeviceList>> {
    let (license, devices) = activations::devices(&state, &auth, &id).await?;
    Ok(Json(proto::DeviceList {
        devices: devices.iter().map(views::device).collect(),
        max_devices: license.terms.seats,
    }))
}

#[utoipa::path(
    delete, path = "/v1/licenses/{id}/devices/{fingerprint}", tag = "licenses",
    params(("id" = String, Path, description = "License id"), ("fingerprint" = String, Path)),
    responses((status = 204, description = "Deactivated; the device's live sessions ended (device_deactivated)"), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn deactivate_device(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((id, fingerprint)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    activations::deactivate_device(&state, &auth, &id, &fingerprint).await?;
    Ok(StatusCode::NO_CONTENT)
}
