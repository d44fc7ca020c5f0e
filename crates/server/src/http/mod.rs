//! The axum router of seat protocol v1: shared state, JSON extractors whose rejections become
//! `invalid_request` errors, the OpenAPI document and the fallbacks.

pub mod handlers;

use std::sync::Arc;

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::StatusCode;
use axum::Router;
use leasehold_core::PlanCatalog;
use leasehold_store::Store;
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clock::Clock;
use crate::error::ApiError;
use crate::lease::LeaseSigner;

/// Everything a handler needs. One `Arc`: axum clones the state for every request that
/// extracts it, so a clone is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of `AppState`.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub signer: LeaseSigner,
    pub plans: PlanCatalog,
    pub access_token_ttl_secs: u64,
    /// The OpenAPI document served at `/openapi.json`.
    pub openapi: String,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// `Json<T>` whose rejections are `ApiError`s: syntax errors are 400, well-formed JSON that does
/// not fit the schema (unknown fields, wrong types, bad enum values) is 422, too large is 413.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::Unprocessable(e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(e.body_text()),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::BadRequest("expected a body with Content-Type: application/json".into())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge(MAX_BODY_HINT)
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// Only for the message: the real limit is the configured one.
const MAX_BODY_HINT: usize = 64 * 1024;

/// `Path<T>` whose rejections (e.g. invalid UTF-8 in a segment) are 400 `invalid_request`.
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// `Form<T>` with `ApiError` rejections (for the OAuth2 token endpoint).
pub struct ApiForm<T>(pub T);

impl<S, T> FromRequest<S> for ApiForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(ApiForm(value)),
            Err(FormRejection::InvalidFormContentType(_)) => Err(ApiError::BadRequest(
                "expected Content-Type: application/x-www-form-urlencoded".into(),
            )),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge(MAX_BODY_HINT))
            }
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Leasehold seat protocol",
        version = "1",
        description = "License server: sessions hold seats, tokens are credentials. Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&BearerAuth),
    components(schemas(leasehold_proto::ErrorBody, leasehold_proto::ErrorCode, leasehold_proto::EndReason))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route, registered together with its OpenAPI description: a route cannot be added
/// without being documented.
fn api_router() -> OpenApiRouter<AppState> {
    use handlers::*;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_account))
        .routes(routes!(create_license))
        .routes(routes!(get_license, patch_license))
        .routes(routes!(put_user, get_user))
        .routes(routes!(create_user_token))
        .routes(routes!(oauth_token))
        .routes(routes!(open_session))
        .routes(routes!(heartbeat))
        .routes(routes!(close_session))
        .routes(routes!(list_sessions))
        .routes(routes!(license_usage))
        .routes(routes!(license_audit))
        .routes(routes!(list_plans))
        .routes(routes!(list_users))
        .routes(routes!(list_licenses))
        .routes(routes!(license_queue))
        .routes(routes!(put_license_user))
        .routes(routes!(list_license_users))
        .routes(routes!(activate_device, list_devices))
        .routes(routes!(deactivate_device))
        .routes(routes!(list_user_sessions))
        .routes(routes!(jwks))
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let (router, _) = api_router().split_for_parts();
    router
        .fallback(handlers::no_route)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // A bug must still answer with the documented error shape (and not kill the server).
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                axum::response::IntoResponse::into_response(ApiError::Internal(
                    "a request handler panicked".into(),
                ))
            },
        ))
        .with_state(state)
}
