//! Routes of the server itself: the JWKS that verifies leases, health, metrics, the OpenAPI
//! document, and the fallbacks for unknown routes and methods.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use leasehold_proto as proto;

use crate::error::{ApiError, ApiResult};
use crate::metrics as m;
use crate::state::AppState;

#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "leases",
    responses((status = 200, description = "Public keys that verify signed leases", body = proto::Jwks))
)]
pub async fn jwks(State(state): State<AppState>) -> Json<proto::Jwks> {
    Json(state.signer.jwks())
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The server is up")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let body = m::render(&state).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.as_str().to_owned(),
    )
}

pub async fn no_route() -> ApiError {
    ApiError::NotFound("route".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
