//! Webhooks in storage: an account's endpoints, the deliveries of events to them (the delivery
//! log), the dispatcher's cursor in the audit log and the alert state of licenses.
//!
//! The outbox is the audit log: every event is written there in the transaction of the change
//! it records, so an acknowledged change has its event on disk. The dispatcher (in the server)
//! reads the log after the cursor and commits, in one transaction, the deliveries it planned
//! and the cursor's new place (`commit_fanout`, a compare-and-set on the cursor's version: when
//! several nodes plan the same events, exactly one commit wins). Deliveries are then claimed
//! one at a time per (endpoint, order key), oldest first (`claim_deliveries`: a lease, so one
//! node sends each), and their outcome recorded (`record_attempt`).
//!
//! ```text
//!   pending ──claim (lease)──► sending ──2xx──► delivered
//!      ▲                          │
//!      └──── error, retry due ◄───┤
//!                                 └──last retry (24 h)──► failed
//!   redeliver: a new pending delivery of the same event (same event id)
//! ```

use async_trait::async_trait;
use leasehold_core::Timestamp;

use crate::StoreResult;

/// An account's webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub account_id: String,
    pub url: String,
    /// Event types it receives (`session.opened`, …).
    pub events: Vec<String>,
    pub description: String,
    /// Signs every delivery; answered only when created or rotated.
    pub secret: String,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => DeliveryStatus::Pending,
        }
    }
}

/// A delivery to plan (`commit_fanout`, `enqueue_deliveries`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub endpoint_id: String,
    pub account_id: String,
    /// The event's id, the same on every delivery of it (receivers deduplicate on it).
    pub event_id: String,
    pub event_type: String,
    /// One endpoint gets the events of one order key (a license) one at a time, in order.
    pub order_key: String,
    /// The JSON body sent.
    pub payload: String,
    /// `Failed` plans a delivery refused at once (the endpoint's backlog is full).
    pub status: DeliveryStatus,
    pub excerpt: Option<String>,
    pub created_at: Timestamp,
}

/// One delivery and its last attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub endpoint_id: String,
    pub account_id: String,
    pub event_id: String,
    pub event_type: String,
    pub order_key: String,
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub created_at: Timestamp,
    pub last_attempt_at: Option<Timestamp>,
    pub response_status: Option<u16>,
    pub latency_ms: Option<u32>,
    /// The start of the receiver's answer, or why the attempt failed.
    pub response_excerpt: Option<String>,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub delivery_id: i64,
    pub at: Timestamp,
    /// `Delivered`, `Failed` (final) or `Pending` (retried at `next_attempt_at`).
    pub status: DeliveryStatus,
    pub next_attempt_at: Timestamp,
    pub response_status: Option<u16>,
    pub latency_ms: u32,
    pub response_excerpt: Option<String>,
}

/// The dispatcher's place in the audit log: the last `seq` planned, and the version a commit
/// must find to move it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutCursor {
    pub seq: i64,
    pub version: i64,
}

/// What a fan-out commits: the deliveries planned for the events up to `seq`, and the alert
/// states raised meanwhile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fanout {
    pub seq: i64,
    pub deliveries: Vec<NewDelivery>,
    /// (license, kind, value): upserted.
    pub alert_states: Vec<(String, String, String)>,
}

/// The backlog: deliveries waiting, and the age of the oldest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub pending: u64,
    pub oldest_created_at: Option<Timestamp>,
}

/// Webhook storage, on both backends.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_webhook(&self, endpoint: WebhookEndpoint) -> StoreResult<()>;
    async fn get_webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>>;
    /// The account's endpoints, oldest first.
    async fn list_webhooks(&self, account_id: &str) -> StoreResult<Vec<WebhookEndpoint>>;
    /// Every enabled endpoint (the dispatcher's plan).
    async fn enabled_webhooks(&self) -> StoreResult<Vec<WebhookEndpoint>>;
    /// Replaces an endpoint (`NotFound` when it is gone).
    async fn update_webhook(&self, endpoint: WebhookEndpoint) -> StoreResult<()>;
    /// Deletes an endpoint and its deliveries; false when there was none.
    async fn delete_webhook(&self, id: &str) -> StoreResult<bool>;

    async fn fanout_cursor(&self) -> StoreResult<FanoutCursor>;
    /// The greatest `seq` below which no audit event can still appear (what a page of
    /// `Store::audit_page` could read up to now): with no endpoint, the cursor moves there
    /// without reading the events.
    async fn audit_horizon(&self) -> StoreResult<i64>;
    /// Writes `fanout` and moves the cursor to `fanout.seq`, in one transaction, if the
    /// cursor is still at `from`; false (and nothing written) when another commit moved it.
    async fn commit_fanout(&self, from: FanoutCursor, fanout: Fanout) -> StoreResult<bool>;
    /// Every alert state: (license, kind, value).
    async fn alert_states(&self) -> StoreResult<Vec<(String, String, String)>>;
    /// Pending deliveries per endpoint.
    async fn pending_per_endpoint(&self) -> StoreResult<Vec<(String, u64)>>;
    /// Plans deliveries outside a fan-out (a ping, a redelivery); answers their ids.
    async fn enqueue_deliveries(&self, deliveries: Vec<NewDelivery>) -> StoreResult<Vec<i64>>;
    /// Claims at most `limit` due deliveries, each the oldest pending one of its (endpoint,
    /// order key), until `lease_until`: no other claim takes them meanwhile.
    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>>;
    async fn record_attempt(&self, attempt: Attempt) -> StoreResult<()>;
    async fn get_delivery(&self, id: i64) -> StoreResult<Option<Delivery>>;
    /// An endpoint's deliveries, newest first, below `before_id` when set.
    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        before_id: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>>;
    async fn backlog(&self) -> StoreResult<Backlog>;
    /// Denials per license at or after `since` (alerts, `/metrics`).
    async fn denials_since(&self, since: Timestamp) -> StoreResult<Vec<(String, u64)>>;
    /// Deletes delivered and failed deliveries created before `before`; answers how many.
    async fn prune_deliveries(&self, before: Timestamp) -> StoreResult<usize>;
}

/// Columns of a delivery, in the order both backends read them.
pub(crate) const DELIVERY_COLS: &str = "id, endpoint_id, account_id, event_id, event_type, \
     order_key, payload, status, attempts, next_attempt_at, created_at, last_attempt_at, \
     response_status, latency_ms, response_excerpt";

/// Columns of an endpoint, in the order both backends read them.
pub(crate) const ENDPOINT_COLS: &str =
    "id, account_id, url, events, description, secret, enabled, created_at, updated_at";

/// The event list as stored (a JSON array).
pub(crate) fn events_json(events: &[String]) -> String {
    serde_json::to_string(events).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn parse_events(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

/// The deliveries a claim may take, as `FROM … WHERE …` over `d`: the oldest pending one of
/// each (endpoint, order key), found in one pass over the partial index of pending deliveries
/// (not a probe per pending row: a backlog of thousands behind one license stays cheap), that
/// is due and not leased. `{now}` is the backend's placeholder of the time.
pub(crate) fn claim_from(now: &str) -> String {
    format!(
        "webhook_deliveries d
         JOIN (SELECT min(id) AS head FROM webhook_deliveries WHERE status = 'pending'
               GROUP BY endpoint_id, order_key) h ON d.id = h.head
         WHERE d.next_attempt_at <= {now} AND d.lease_until <= {now}"
    )
}

pub(crate) fn count_u32(n: Option<i64>) -> Option<u32> {
    n.map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}
