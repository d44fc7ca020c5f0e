//! Routes of sessions: open, heartbeat, close (`/v1/sessions…`).

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
use crate::http::views;
use crate::sessions;
use crate::state::AppState;

#[utoipa::path(
    post, path = "/v1/sessions", tag = "sessions",
    request_body = proto::OpenSession,
    responses(
        (status = 201, description = "Opened: occupies one seat", body = proto::Session),
        (status = 200, description = "This client instance's live session, returned again", body = proto::Session),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "no_seat_available", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn open_session(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<proto::OpenSession>,
) -> ApiResult<(StatusCode, Json<proto::Session>)> {
    let open = sessions::open(&state, &auth, req).await?;
    let status = if open.opened.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(views::session(&open.opened.session, Some(open.lease))),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatQuery {
    /// Ask for a lease re-signed with the new expiry (signing costs CPU: ask when the held
    /// lease is past half its life, not on every heartbeat).
    #[serde(default)]
    pub lease: bool,
}

#[utoipa::path(
    post, path = "/v1/sessions/{id}/heartbeat", tag = "sessions",
    params(("id" = String, Path, description = "Session id"), HeartbeatQuery),
    responses((status = 200, body = proto::Heartbeat), (status = 404, body = ErrorBody), (status = 410, description = "session_ended, with reason", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<HeartbeatQuery>,
) -> ApiResult<Json<proto::Heartbeat>> {
    let beat = sessions::heartbeat(&state, &auth, &id, query.lease).await?;
    Ok(Json(proto::Heartbeat {
        expires_at: to_offset(beat.expires_at),
        lease: beat.lease,
    }))
}

#[utoipa::path(
    delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 204, description = "Logged out (owner) or revoked (account admin); the seat is free"), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn close_session(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    sessions::close(&state, &auth, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
