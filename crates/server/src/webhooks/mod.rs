//! Webhooks (issue 17), the application layer: an account's endpoints (create with the
//! signing secret shown once, list, read, change, delete, rotate the secret), the test ping,
//! the delivery log and redelivery. Every call is an account admin's (root: any account); an
//! endpoint or delivery of another account is 404.
//!
//! The rest, one concern per file: `events` (what events there are and how the audit log
//! becomes them), `alerts` (threshold, full, denials, expiring), `sign` (the signature
//! header), `ssrf` (which targets may be called), `send` (one HTTP attempt, the retry
//! schedule), `dispatch` (the background task: fan-out from the audit log, claims, sends).

pub mod alerts;
pub mod dispatch;
pub mod events;
pub mod send;
pub mod sign;
pub mod ssrf;

use std::sync::Arc;

use leasehold_core::Timestamp;
use leasehold_proto as proto;
use leasehold_store::webhooks::{Delivery, DeliveryStatus, NewDelivery, WebhookEndpoint};
use serde_json::json;

use crate::access;
use crate::auth::{new_public_id, Auth};
use crate::config::WebhookConfig;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

use events::{is_known_type, WebhookEvent};
use ssrf::Refusal;

/// What the webhook calls and the dispatcher share: the settings, and the dispatcher's
/// wake-up (a ping or a redelivery is sent at once, not at the next poll).
#[derive(Clone, Default)]
pub struct Webhooks {
    pub config: WebhookConfig,
    pub wake: Arc<tokio::sync::Notify>,
}

/// Most endpoints per account.
pub const MAX_ENDPOINTS: usize = 50;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 500;
/// Most deliveries in one page of the log.
pub const MAX_PAGE: usize = 200;

/// The endpoint and, when just created or rotated, its secret.
pub struct Shown {
    pub endpoint: WebhookEndpoint,
    pub secret: Option<String>,
}

fn refused(r: Refusal) -> ApiError {
    match r {
        Refusal::Invalid(m) => ApiError::Unprocessable(m),
        Refusal::Target(m) => ApiError::WebhookTargetRefused(m),
    }
}

/// A URL the server may call (checked now; checked again at every connection).
async fn checked_url(state: &AppState, raw: &str) -> ApiResult<String> {
    let url = ssrf::parse_url(raw).map_err(refused)?;
    ssrf::resolve_checked(&url, state.webhooks.config.allow_private_targets)
        .await
        .map_err(refused)?;
    Ok(url.to_string())
}

fn checked_events(events: &[String]) -> ApiResult<Vec<String>> {
    if events.is_empty() {
        return Err(ApiError::Unprocessable(
            "events must name at least one event type (or \"*\")".into(),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if !is_known_type(e) {
            return Err(ApiError::Unprocessable(format!(
                "unknown event type {e:?}; the types are {} (or \"*\")",
                proto::WEBHOOK_EVENT_TYPES.join(", ")
            )));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

fn checked_description(d: Option<&str>) -> ApiResult<String> {
    let d = d.unwrap_or("").trim();
    if d.chars().count() > MAX_DESCRIPTION || d.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(format!(
            "description must be at most {MAX_DESCRIPTION} printable characters"
        )));
    }
    Ok(d.to_owned())
}

/// Creates an endpoint; its secret is answered here only.
#[tracing::instrument(skip(state, auth, req), fields(account_id))]
pub async fn create(
    state: &AppState,
    auth: &Auth,
    account_id: &str,
    req: proto::CreateWebhook,
) -> ApiResult<Shown> {
    access::admin_account(state, auth, account_id).await?;
    let events = checked_events(&req.events)?;
    let description = checked_description(req.description.as_deref())?;
    let url = checked_url(state, &req.url).await?;
    if state.store.list_webhooks(account_id).await?.len() >= MAX_ENDPOINTS {
        return Err(ApiError::Conflict(format!(
            "an account has at most {MAX_ENDPOINTS} webhook endpoints"
        )));
    }
    let now = state.clock.now();
    let secret = sign::new_secret();
    let endpoint = WebhookEndpoint {
        id: new_public_id("wh_"),
        account_id: account_id.to_owned(),
        url,
        events,
        description,
        secret: secret.clone(),
        enabled: true,
        created_at: now,
        updated_at: now,
    };
    state.store.create_webhook(endpoint.clone()).await?;
    Ok(Shown {
        endpoint,
        secret: Some(secret),
    })
}

/// An endpoint of the account (404 for another account's or none).
pub async fn get(
    state: &AppState,
    auth: &Auth,
    account_id: &str,
    webhook_id: &str,
) -> ApiResult<WebhookEndpoint> {
    access::admin_account(state, auth, account_id).await?;
    state
        .store
        .get_webhook(webhook_id)
        .await?
        .filter(|w| w.account_id == account_id)
        .ok_or_else(|| ApiError::NotFound("webhook".into()))
}

pub async fn list(
    state: &AppState,
    auth: &Auth,
    account_id: &str,
) -> ApiResult<Vec<WebhookEndpoint>> {
    access::admin_account(state, auth, account_id).await?;
    Ok(state.store.list_webhooks(account_id).await?)
}

/// Changes what the patch names.
#[tracing::instrument(skip(state, auth, patch))]
pub async fn update(
    state: &AppState,
    auth: &Auth,
    account_id: &str,
    webhook_id: &str,
    patch: proto::PatchWebhook,
) -> ApiResult<WebhookEndpoint> {
    let mut endpoint = get(state, auth, account_id, webhook_id).await?;
    if let Some(events) = &patch.events {
        endpoint.events = checked_events(events)?;
    }
    if let Some(d) = &patch.description {
        endpoint.description = checked_description(Some(d))?;
    }
    if let Some(url) = &patch.url {
        endpoint.url = checked_url(state, url).await?;
    }
    if let Some(enabled) = patch.enabled {
        endpoint.enabled = enabled;
    }
    endpoint.updated_at = state.clock.now();
    state.store.update_webhook(endpoint.clone()).await?;
    Ok(endpoint)
}

/// A new secret (answered once); the old one signs nothing from now on.
pub async fn rotate_secret(
    state: &AppState,
    auth: &Auth,
    account_id: &str,
    webhook_id: &str,
) -> ApiResult<Shown> {
    let mut endpoint = get(state, auth, account_id, webhook_id).await?;
    let secret = sign::new_secret();
    endpoint.secret = secret.clone();
    endpoint.updated_at = state.clock.now();
    state.store.update_webhook(endpoint.clone()).await?;
    Ok(Shown {
        endpoint,
        secret: Some(secret),
    })
}

/// Deletes the endpoint and its delivery log.
pub async fn delete(
    state: &AppState,
    auth: &Auth,
    account_id: &str,
    webhook_id: &str,
) -> ApiResult<()> {
    get(state, auth, account_id, webhook_id).await?;
    if !state.store.delete_webhook(webhook_id).await? {
        return Err(ApiError::NotFound("webhook".into()));
    }
    Ok(())
}

/// Plans a `ping` event to the endpoint (sent at once, logged like any delivery).
pub async fn ping(
    state: &AppState,
    auth: &Auth,
    account_id: &str,
    webhook_id: &str,
) -> ApiResult<Delivery> {
    let endpoint = get(state, auth, account_id, webhook_id).await?;
    let event = WebhookEvent {
        id: format!("evt_ping_{}", uuid::Uuid::new_v4().simple()),
        event_type: "ping",
        account_id: account_id.to_owned(),
        license_id: None,
        at: state.clock.now(),
        data: json!({"webhook_id": endpoint.id}),
    };
    let planned = dispatch::delivery_of(&event, &endpoint, None);
    enqueue(state, planned).await
}

async fn enqueue(state: &AppState, planned: NewDelivery) -> ApiResult<Delivery> {
    let ids = state.store.enqueue_deliveries(vec![planned]).await?;
    state.webhooks.wake.notify_one();
    let id = ids
        .first()
        .copied()
        .ok_or_else(|| ApiError::Internal("a planned delivery has no id".into()))?;
    state
        .store
        .get_delivery(id)
        .await?
        .ok_or_else(|| ApiError::Internal("a planned delivery is not stored".into()))
}

/// A page of the endpoint's delivery log, newest first.
pub async fn deliveries(
    state: &AppState,
    auth: &Auth,
    account_id: &str,
    webhook_id: &str,
    before: Option<&str>,
    limit: Option<u32>,
) -> ApiResult<(Vec<Delivery>, Option<i64>)> {
    get(state, auth, account_id, webhook_id).await?;
    let before = before
        .map(|b| {
            parse_delivery_id(b)
                .ok_or_else(|| ApiError::Unprocessable("before is not a delivery id".into()))
        })
        .transpose()?;
    let limit = limit.map_or(50, |l| l as usize);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let page = state
        .store
        .list_deliveries(webhook_id, before, limit + 1)
        .await?;
    let more = page.len() > limit;
    let page: Vec<Delivery> = page.into_iter().take(limit).collect();
    let next = if more {
        page.last().map(|d| d.id)
    } else {
        None
    };
    Ok((page, next))
}

/// A delivery id as the API writes it (`dl_<n>`).
pub fn delivery_id(id: i64) -> String {
    format!("dl_{id}")
}

fn parse_delivery_id(s: &str) -> Option<i64> {
    s.strip_prefix("dl_")?.parse().ok().filter(|n: &i64| *n > 0)
}

/// Sends a delivery's event again, as a new delivery with the same event id (after the
/// endpoint's pending events of the same license).
pub async fn redeliver(
    state: &AppState,
    auth: &Auth,
    account_id: &str,
    webhook_id: &str,
    delivery_id: &str,
) -> ApiResult<Delivery> {
    get(state, auth, account_id, webhook_id).await?;
    let original =
        parse_delivery_id(delivery_id).ok_or_else(|| ApiError::NotFound("delivery".into()))?;
    let original = state
        .store
        .get_delivery(original)
        .await?
        .filter(|d| d.endpoint_id == webhook_id)
        .ok_or_else(|| ApiError::NotFound("delivery".into()))?;
    let planned = NewDelivery {
        endpoint_id: original.endpoint_id,
        account_id: original.account_id,
        event_id: original.event_id,
        event_type: original.event_type,
        order_key: original.order_key,
        payload: original.payload,
        status: DeliveryStatus::Pending,
        excerpt: None,
        created_at: state.clock.now(),
    };
    enqueue(state, planned).await
}

/// A delivery as the API shows it.
pub fn delivery_view(d: &Delivery) -> proto::WebhookDelivery {
    proto::WebhookDelivery {
        id: delivery_id(d.id),
        webhook_id: d.endpoint_id.clone(),
        event_id: d.event_id.clone(),
        event_type: d.event_type.clone(),
        status: d.status.as_str().to_owned(),
        attempts: d.attempts,
        created_at: d.created_at.to_offset(),
        next_attempt_at: (d.status == DeliveryStatus::Pending)
            .then(|| d.next_attempt_at.to_offset()),
        last_attempt_at: d.last_attempt_at.map(Timestamp::to_offset),
        response_status: d.response_status,
        latency_ms: d.latency_ms,
        response_excerpt: d.response_excerpt.clone(),
        payload: serde_json::from_str(&d.payload).unwrap_or(serde_json::Value::Null),
    }
}

/// An endpoint as the API shows it.
pub fn endpoint_view(shown: &WebhookEndpoint, secret: Option<String>) -> proto::Webhook {
    proto::Webhook {
        id: shown.id.clone(),
        account_id: shown.account_id.clone(),
        url: shown.url.clone(),
        events: shown.events.clone(),
        description: shown.description.clone(),
        enabled: shown.enabled,
        secret,
        created_at: shown.created_at.to_offset(),
        updated_at: shown.updated_at.to_offset(),
    }
}
