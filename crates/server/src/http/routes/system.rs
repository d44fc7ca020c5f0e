//! Routes of the server itself: the JWKS that verifies leases, health, metrics, the OpenAPI
//! document, and the fallbacks for unknown routes and methods.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use leasehold_proto as proto;

use leasehold_proto::ErrorBody;

use crate::auth::MetricsReader;
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

/// Readiness: whether this server can serve seats now, its store included.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses(
    (status = 200, description = "Ready: the store takes writes", body = proto::Health),
    (status = 503, description = "Not ready: the store cannot write (disk full, database unreachable); `reason` says why", body = proto::Health)))]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<proto::Health>) {
    match state.store.health().await {
        Ok(()) => (
            StatusCode::OK,
            Json(proto::Health {
                status: "ok".into(),
                reason: None,
            }),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(proto::Health {
                status: "unavailable".into(),
                reason: Some(e.to_string()),
            }),
        ),
    }
}

/// Liveness: the process is up and answers, whatever its store does.
#[utoipa::path(get, path = "/livez", tag = "operations", responses((status = 200, description = "The process is up", body = proto::Health)))]
pub async fn livez() -> Json<proto::Health> {
    Json(proto::Health {
        status: "ok".into(),
        reason: None,
    })
}

/// Prometheus metrics. Without a credential: label-free totals only. With the root token or
/// the configured metrics token (`metrics_token`): every series, per license.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 403, description = "A valid token that is neither the root token nor the metrics token", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn metrics(
    State(state): State<AppState>,
    MetricsReader(view): MetricsReader,
) -> ApiResult<impl IntoResponse> {
    let body = m::render(&state, view).await?;
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
