//! Routes of webhooks: `/v1/accounts/{id}/webhooks…` (endpoints, secret rotation, the test
//! ping, the delivery log, redelivery). The application layer is `crate::webhooks`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use leasehold_proto as proto;
use leasehold_proto::ErrorBody;
use serde::Deserialize;

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use crate::webhooks::{self, delivery_view, endpoint_view};

#[utoipa::path(
    post, path = "/v1/accounts/{id}/webhooks", tag = "webhooks",
    params(("id" = String, Path, description = "Account id")),
    request_body = proto::CreateWebhook,
    responses(
        (status = 201, description = "Created; `secret` is shown only here", body = proto::Webhook),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the account has its maximum of endpoints", body = ErrorBody),
        (status = 422, description = "`invalid_request` (URL, event types, description) or `webhook_target_refused` (the host does not resolve, or not to public addresses)", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn create_webhook(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(account_id): ApiPath<String>,
    ApiJson(req): ApiJson<proto::CreateWebhook>,
) -> ApiResult<(StatusCode, Json<proto::Webhook>)> {
    let shown = webhooks::create(&state, &auth, &account_id, req).await?;
    Ok((
        StatusCode::CREATED,
        Json(endpoint_view(&shown.endpoint, shown.secret)),
    ))
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/webhooks", tag = "webhooks",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = proto::WebhookList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_webhooks(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(account_id): ApiPath<String>,
) -> ApiResult<Json<proto::WebhookList>> {
    let list = webhooks::list(&state, &auth, &account_id).await?;
    Ok(Json(proto::WebhookList {
        webhooks: list.iter().map(|e| endpoint_view(e, None)).collect(),
    }))
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("id" = String, Path, description = "Account id"), ("webhook_id" = String, Path)),
    responses((status = 200, body = proto::Webhook), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_webhook(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((account_id, webhook_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<proto::Webhook>> {
    let endpoint = webhooks::get(&state, &auth, &account_id, &webhook_id).await?;
    Ok(Json(endpoint_view(&endpoint, None)))
}

#[utoipa::path(
    patch, path = "/v1/accounts/{id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("id" = String, Path, description = "Account id"), ("webhook_id" = String, Path)),
    request_body = proto::PatchWebhook,
    responses((status = 200, body = proto::Webhook), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "`invalid_request` or `webhook_target_refused`", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn patch_webhook(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((account_id, webhook_id)): ApiPath<(String, String)>,
    ApiJson(patch): ApiJson<proto::PatchWebhook>,
) -> ApiResult<Json<proto::Webhook>> {
    let endpoint = webhooks::update(&state, &auth, &account_id, &webhook_id, patch).await?;
    Ok(Json(endpoint_view(&endpoint, None)))
}

#[utoipa::path(
    delete, path = "/v1/accounts/{id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("id" = String, Path, description = "Account id"), ("webhook_id" = String, Path)),
    responses((status = 204, description = "Deleted with its delivery log"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((account_id, webhook_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    webhooks::delete(&state, &auth, &account_id, &webhook_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/v1/accounts/{id}/webhooks/{webhook_id}/rotate-secret", tag = "webhooks",
    params(("id" = String, Path, description = "Account id"), ("webhook_id" = String, Path)),
    responses((status = 200, description = "A new `secret`, shown only here; the old one signs nothing from now on", body = proto::Webhook), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((account_id, webhook_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<proto::Webhook>> {
    let shown = webhooks::rotate_secret(&state, &auth, &account_id, &webhook_id).await?;
    Ok(Json(endpoint_view(&shown.endpoint, shown.secret)))
}

#[utoipa::path(
    post, path = "/v1/accounts/{id}/webhooks/{webhook_id}/ping", tag = "webhooks",
    params(("id" = String, Path, description = "Account id"), ("webhook_id" = String, Path)),
    responses((status = 202, description = "A `ping` event is planned and sent at once; its outcome is in the delivery log", body = proto::WebhookDelivery), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn ping_webhook(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((account_id, webhook_id)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<proto::WebhookDelivery>)> {
    let delivery = webhooks::ping(&state, &auth, &account_id, &webhook_id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery_view(&delivery))))
}

/// The query of the delivery log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesParams {
    /// Deliveries older than this one (the previous page's `next_before`).
    pub before: Option<String>,
    /// Deliveries per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Account id"), ("webhook_id" = String, Path), DeliveriesParams),
    responses((status = 200, description = "Newest first: status, attempts, latency and the start of the last answer", body = proto::WebhookDeliveryList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_webhook_deliveries(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((account_id, webhook_id)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<DeliveriesParams>,
) -> ApiResult<Json<proto::WebhookDeliveryList>> {
    let (page, next) = webhooks::deliveries(
        &state,
        &auth,
        &account_id,
        &webhook_id,
        params.before.as_deref(),
        params.limit,
    )
    .await?;
    Ok(Json(proto::WebhookDeliveryList {
        deliveries: page.iter().map(delivery_view).collect(),
        next_before: next.map(webhooks::delivery_id),
    }))
}

#[utoipa::path(
    post, path = "/v1/accounts/{id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", tag = "webhooks",
    params(("id" = String, Path, description = "Account id"), ("webhook_id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, description = "A new delivery of the same event (same event id), sent after the endpoint's pending events of the same license", body = proto::WebhookDelivery), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn redeliver_webhook_delivery(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((account_id, webhook_id, delivery_id)): ApiPath<(String, String, String)>,
) -> ApiResult<(StatusCode, Json<proto::WebhookDelivery>)> {
    let delivery =
        webhooks::redeliver(&state, &auth, &account_id, &webhook_id, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery_view(&delivery))))
}
