//! The HTTP layer of seat protocol v1: the router with every route registered together with
//! its OpenAPI description, the OpenAPI document, the request tracing and the fallbacks.
//! Handlers live in `routes/`, one file per resource; they call the application layer
//! (`crate::sessions`, `crate::accounts`, `crate::licenses`, `crate::activations`).
//!
//! The edge, each in its own module: `serve.rs` (accept loop, connection cap), `conn.rs` (one
//! connection: HTTP/1.1 or 2, header and idle timeouts), `tls.rs` (HTTPS, certificate reload),
//! `body.rs` (body-read timeout and size limit), `limits.rs` (request-target cap),
//! `headers.rs` (security headers, CORS), `ratelimit.rs` (failed authentications),
//! `oauth.rs` (the token endpoint's RFC 6749 side), `openapi.rs` (the statuses every route
//! documents).

pub mod audit_formats;
pub mod body;
pub mod conn;
pub mod extract;
pub mod headers;
pub mod limits;
pub mod oauth;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod serve;
pub mod sized_json;
pub mod tls;
pub mod trace;
pub mod usage_formats;
pub mod views;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tower::ServiceBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Limits;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Leasehold seat protocol",
        version = "1",
        description = "License server: sessions hold seats, tokens are credentials. Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&BearerAuth),
    components(schemas(leasehold_proto::ErrorBody, leasehold_proto::ErrorCode, leasehold_proto::EndReason, leasehold_proto::OAuthErrorBody, leasehold_proto::StreamOpened, leasehold_proto::StreamEnded, leasehold_proto::LicenseChanged))
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
    use routes::{
        accounts, activations, audit, borrow, delegations, licenses, oauth, sessions, system, usage,
    };
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::create_account))
        .routes(routes!(licenses::create_license))
        .routes(routes!(licenses::get_license, licenses::patch_license))
        .routes(routes!(accounts::put_user, accounts::get_user))
        .routes(routes!(accounts::create_user_token))
        .routes(routes!(oauth::oauth_token))
        .routes(routes!(sessions::open_session))
        .routes(routes!(sessions::heartbeat))
        .routes(routes!(sessions::close_session))
        .routes(routes!(sessions::session_events))
        .routes(routes!(licenses::list_sessions, licenses::revoke_sessions))
        .routes(routes!(usage::license_usage))
        .routes(routes!(usage::account_usage))
        .routes(routes!(licenses::license_audit))
        .routes(routes!(audit::account_audit))
        .routes(routes!(licenses::list_plans))
        .routes(routes!(accounts::list_users))
        .routes(routes!(licenses::list_licenses))
        .routes(routes!(licenses::license_queue))
        .routes(routes!(borrow::revoked_leases))
        .routes(routes!(
            delegations::create_delegation,
            delegations::list_delegations
        ))
        .routes(routes!(
            delegations::get_delegation,
            delegations::renew_delegation
        ))
        .routes(routes!(delegations::import_receipt))
        .routes(routes!(delegations::create_delegation_request))
        .routes(routes!(delegations::import_delegation))
        .routes(routes!(delegations::return_delegation))
        .routes(routes!(delegations::delegation_report))
        .routes(routes!(delegations::import_report))
        .routes(routes!(activations::put_license_user))
        .routes(routes!(activations::list_license_users))
        .routes(routes!(
            activations::activate_device,
            activations::list_devices
        ))
        .routes(routes!(activations::deactivate_device))
        .routes(routes!(accounts::list_user_sessions))
        .routes(routes!(system::jwks))
        .routes(routes!(system::healthz))
        .routes(routes!(system::livez))
        .routes(routes!(system::metrics))
        .routes(routes!(system::openapi_json))
        .merge(webhook_routes())
}

/// The webhook routes (issue 17).
fn webhook_routes() -> OpenApiRouter<AppState> {
    use routes::webhooks as w;
    OpenApiRouter::new()
        .routes(routes!(w::create_webhook, w::list_webhooks))
        .routes(routes!(w::get_webhook, w::patch_webhook, w::delete_webhook))
        .routes(routes!(w::rotate_webhook_secret))
        .routes(routes!(w::ping_webhook))
        .routes(routes!(w::list_webhook_deliveries))
        .routes(routes!(w::redeliver_webhook_delivery))
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut doc = api_router().split_for_parts().1;
    openapi::complete(&mut doc);
    doc
}

/// The router with every layer: tracing outermost, then the response headers (and CORS), panics
/// caught, the request-target and body limits.
///
/// All layers are one stack applied once: axum boxes every route again for each `layer` call
/// (a clone and a boxed future per request and call), which the heartbeat path would pay.
pub fn router(state: AppState, limits: &Limits, cors_allowed_origins: &[String]) -> Router {
    let max_body_bytes = state.max_body_bytes;
    let (router, _) = api_router().split_for_parts();
    let router = router
        .merge(crate::ui::routes())
        .fallback(routes::system::no_route)
        .method_not_allowed_fallback(routes::system::method_not_allowed)
        .with_state(state);
    let inner = ServiceBuilder::new()
        // A bug must still answer with the documented error shape (and not kill the server).
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                axum::response::IntoResponse::into_response(ApiError::Internal(
                    "a request handler panicked".into(),
                ))
            },
        ))
        .layer(limits::UriLimitLayer {
            max_bytes: limits.max_uri_bytes,
        })
        .layer(DefaultBodyLimit::max(max_body_bytes));
    let trace = axum::middleware::from_fn(trace::trace_request);
    match headers::cors(cors_allowed_origins) {
        Some(cors) => router.layer(
            ServiceBuilder::new()
                .layer(trace)
                .layer(headers::layers())
                .layer(cors)
                .layer(inner),
        ),
        None => router.layer(
            ServiceBuilder::new()
                .layer(trace)
                .layer(headers::layers())
                .layer(inner),
        ),
    }
}
