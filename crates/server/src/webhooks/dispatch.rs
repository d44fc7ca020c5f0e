//! The dispatcher: a background task per node that turns the audit log into deliveries and
//! sends them. Nothing on the seat path waits for it: opens, heartbeats and ends only write
//! their audit events, as they always did.
//!
//! Each turn:
//! 1. **Fan-out.** Read the audit events after the cursor (one page), plan a delivery per event
//!    and subscribed endpoint (and, once a second, the alerts of `super::alerts`), and commit
//!    the deliveries with the cursor's new place in one transaction (compare-and-set: when
//!    nodes race, one commit wins and the others plan again from the new cursor). An endpoint
//!    with `max_pending_per_endpoint` deliveries waiting gets new ones logged as failed
//!    (`backlog full`): the outbox stays bounded when a receiver is dead. With no endpoint at
//!    all, the events are not read: the cursor jumps to the log's horizon.
//! 2. **Send.** Claim due deliveries (the oldest pending one of each endpoint and license:
//!    one at a time, in order), at most `concurrency` in flight, each sent by its own task with
//!    the connect and response timeouts; record each outcome (delivered, retried later with
//!    backoff, or failed after `retry_for`).
//! 3. **Watch.** Once a second, the backlog (deliveries waiting, age of the oldest) goes to
//!    `/metrics`, and a warning to the log while it is above `backlog_alert`; once an hour,
//!    the delivery log past `log_retention_days` is deleted.
//!
//! A node killed between a commit and a send loses nothing: the deliveries are on disk and a
//! claim's lease runs out (`connect_timeout + response_timeout + LEASE_MARGIN`), after which
//! any node sends them. Delivery is therefore at least once; receivers deduplicate on the
//! event id.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use leasehold_core::Timestamp;
use leasehold_store::webhooks::{
    Attempt, Delivery, DeliveryStatus, Fanout, NewDelivery, WebhookEndpoint,
};
use leasehold_store::AuditQuery;
use tokio::task::JoinSet;

use super::alerts::{self, LicenseLevel};
use super::events::{from_audit, WebhookEvent};
use super::{send, Webhooks};
use crate::log_throttle::LogThrottle;
use crate::state::AppState;

/// Audit events read per fan-out.
pub const FANOUT_PAGE: usize = 500;
/// Added to the timeouts for a claim's lease.
pub const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// How often alerts and the backlog are looked at.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How often the delivery log is pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

static FAILURES: LogThrottle = LogThrottle::new();
static BACKLOG: LogThrottle = LogThrottle::new();

/// Whether `endpoint` receives events of `event_type`.
pub fn subscribed(endpoint: &WebhookEndpoint, event_type: &str) -> bool {
    endpoint.enabled && endpoint.events.iter().any(|e| e == "*" || e == event_type)
}

/// A delivery of `event` to `endpoint` (`Failed` at once when its backlog is full).
pub fn delivery_of(
    event: &WebhookEvent,
    endpoint: &WebhookEndpoint,
    full: Option<u64>,
) -> NewDelivery {
    NewDelivery {
        endpoint_id: endpoint.id.clone(),
        account_id: endpoint.account_id.clone(),
        event_id: event.id.clone(),
        event_type: event.event_type.to_owned(),
        order_key: event.order_key(),
        payload: event.body(),
        status: match full {
            Some(_) => DeliveryStatus::Failed,
            None => DeliveryStatus::Pending,
        },
        excerpt: full.map(|n| format!("not sent: the endpoint's backlog is full ({n} waiting)")),
        created_at: event.at,
    }
}

/// Runs the dispatcher until the task is aborted.
pub async fn run(state: AppState) {
    let hooks = state.webhooks.clone();
    let http = match send::client(&hooks.config) {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "webhook client could not be built; webhooks are off");
            return;
        }
    };
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut last_watch: Option<Instant> = None;
    let mut last_prune: Option<Instant> = None;
    loop {
        let watch = last_watch.is_none_or(|t| t.elapsed() >= WATCH_INTERVAL);
        if watch {
            last_watch = Some(Instant::now());
        }
        let more = match fan_out(&state, &hooks, watch).await {
            Ok(more) => more,
            Err(e) => {
                if let Some(n) = FAILURES.hit() {
                    tracing::warn!(error = %e, count = n, "webhook fan-out failed; retrying");
                }
                false
            }
        };
        while in_flight.try_join_next().is_some() {}
        let room = hooks.config.concurrency.saturating_sub(in_flight.len());
        if room > 0 {
            if let Err(e) = start_sends(&state, &hooks, &http, &mut in_flight, room).await {
                if let Some(n) = FAILURES.hit() {
                    tracing::warn!(error = %e, count = n, "claiming webhook deliveries failed");
                }
            }
        }
        if watch {
            watch_backlog(&state, &hooks).await;
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_INTERVAL) {
            last_prune = Some(Instant::now());
            prune(&state, &hooks).await;
        }
        if more {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(hooks.config.poll_interval) => {}
            _ = hooks.wake.notified() => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
}

/// One fan-out; true when the page was full (more events are waiting).
async fn fan_out(state: &AppState, hooks: &Webhooks, watch: bool) -> anyhow::Result<bool> {
    let store = &state.store;
    let cursor = store.fanout_cursor().await?;
    let endpoints = store.enabled_webhooks().await?;
    if endpoints.is_empty() {
        // Nobody to tell: the cursor jumps to the horizon without reading the events. The
        // endpoints are read again after the horizon: one created meanwhile stops the jump,
        // and the events of one created later are all above the horizon.
        let horizon = store.audit_horizon().await?;
        if horizon > cursor.seq && store.enabled_webhooks().await?.is_empty() {
            let fanout = Fanout {
                seq: horizon,
                ..Fanout::default()
            };
            store.commit_fanout(cursor, fanout).await?;
        }
        return Ok(false);
    }
    let page = store
        .audit_page(&AuditQuery {
            after_seq: Some(cursor.seq),
            limit: FANOUT_PAGE,
            ..AuditQuery::default()
        })
        .await?;
    if page.is_empty() && !watch {
        return Ok(false);
    }
    let mut by_account: HashMap<&str, Vec<&WebhookEndpoint>> = HashMap::new();
    for e in &endpoints {
        by_account.entry(e.account_id.as_str()).or_default().push(e);
    }
    let mut pending: HashMap<String, u64> = if page.is_empty() {
        HashMap::new()
    } else {
        store.pending_per_endpoint().await?.into_iter().collect()
    };
    let cap = hooks.config.max_pending_per_endpoint;
    let mut fanout = Fanout {
        seq: page.last().map_or(cursor.seq, |e| e.seq),
        ..Fanout::default()
    };
    let mut plan = |event: &WebhookEvent, fanout: &mut Fanout| {
        for ep in by_account
            .get(event.account_id.as_str())
            .into_iter()
            .flatten()
        {
            // An endpoint gets the events that happened once it existed.
            if !subscribed(ep, event.event_type) || event.at < ep.created_at {
                continue;
            }
            let waiting = pending.entry(ep.id.clone()).or_default();
            let full = (*waiting >= cap).then_some(*waiting);
            if full.is_none() {
                *waiting += 1;
            }
            fanout.deliveries.push(delivery_of(event, ep, full));
        }
    };
    for entry in &page {
        for event in from_audit(entry) {
            plan(&event, &mut fanout);
        }
    }
    if watch {
        let (events, states) = alert_events(state, hooks, &endpoints, cursor.version).await?;
        for event in &events {
            plan(event, &mut fanout);
        }
        fanout.alert_states = states;
    }
    if page.is_empty() && fanout.alert_states.is_empty() {
        return Ok(false);
    }
    let planned = fanout.deliveries.len();
    if store.commit_fanout(cursor, fanout).await? && planned > 0 {
        hooks.wake.notify_one();
    }
    Ok(page.len() == FANOUT_PAGE)
}

/// The alert events due now for the licenses of accounts whose endpoints take license events.
async fn alert_events(
    state: &AppState,
    hooks: &Webhooks,
    endpoints: &[WebhookEndpoint],
    version: i64,
) -> anyhow::Result<(Vec<WebhookEvent>, Vec<(String, String, String)>)> {
    let accounts: std::collections::HashSet<&str> = endpoints
        .iter()
        .filter(|e| {
            [
                "license.threshold",
                "license.full",
                "license.denials",
                "license.expiring",
            ]
            .iter()
            .any(|t| subscribed(e, t))
        })
        .map(|e| e.account_id.as_str())
        .collect();
    if accounts.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let now = state.clock.now();
    let gauges = state.store.license_gauges().await?;
    let denials: HashMap<String, u64> = state
        .store
        .denials_since(now.plus_millis(-3_600_000))
        .await?
        .into_iter()
        .collect();
    let levels: Vec<LicenseLevel> = gauges
        .into_iter()
        .filter(|g| accounts.contains(g.account_id.as_str()))
        .map(|g| LicenseLevel {
            denials_last_hour: denials.get(&g.license_id).copied().unwrap_or(0),
            license_id: g.license_id,
            account_id: g.account_id,
            seats: g.seats,
            in_use: g.in_use,
            alerts: g.alerts,
            expires_at: g.expires_at,
        })
        .collect();
    let states: HashMap<(String, String), String> = state
        .store
        .alert_states()
        .await?
        .into_iter()
        .map(|(l, k, v)| ((l, k), v))
        .collect();
    let prefix = format!("a{}", version + 1);
    Ok(alerts::plan(
        &levels,
        &states,
        now,
        hooks.config.expiring_days,
        &prefix,
    ))
}

/// Claims up to `room` due deliveries and sends each in its own task.
async fn start_sends(
    state: &AppState,
    hooks: &Webhooks,
    http: &reqwest::Client,
    in_flight: &mut JoinSet<()>,
    room: usize,
) -> anyhow::Result<()> {
    let now = state.clock.now();
    let lease = hooks.config.connect_timeout + hooks.config.response_timeout + LEASE_MARGIN;
    let until = now.plus_millis(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    let claimed = state.store.claim_deliveries(now, until, room).await?;
    let mut endpoints: HashMap<String, Option<WebhookEndpoint>> = HashMap::new();
    for delivery in claimed {
        let endpoint = match endpoints.get(&delivery.endpoint_id) {
            Some(e) => e.clone(),
            None => {
                let e = state.store.get_webhook(&delivery.endpoint_id).await?;
                endpoints.insert(delivery.endpoint_id.clone(), e.clone());
                e
            }
        };
        let state = state.clone();
        let hooks = hooks.clone();
        let http = http.clone();
        in_flight.spawn(async move {
            deliver(&state, &hooks, &http, endpoint, delivery).await;
        });
    }
    Ok(())
}

/// Sends one delivery and records the outcome.
async fn deliver(
    state: &AppState,
    hooks: &Webhooks,
    http: &reqwest::Client,
    endpoint: Option<WebhookEndpoint>,
    delivery: Delivery,
) {
    let now = state.clock.now();
    let attempt = match endpoint {
        Some(ep) if ep.enabled => {
            send::send(http, &hooks.config, &ep.url, &ep.secret, &delivery, now).await
        }
        // Disabled since it was planned: kept in the log as failed (redeliver sends it).
        _ => Attempt {
            delivery_id: delivery.id,
            at: now,
            status: DeliveryStatus::Failed,
            next_attempt_at: now,
            response_status: None,
            latency_ms: 0,
            response_excerpt: Some("not sent: the endpoint is disabled".into()),
        },
    };
    crate::metrics::webhook_attempt(attempt.status, attempt.latency_ms);
    if attempt.status == DeliveryStatus::Failed {
        tracing::warn!(
            delivery = delivery.id,
            endpoint = %delivery.endpoint_id,
            event = %delivery.event_id,
            "webhook delivery failed for good"
        );
    }
    if let Err(e) = state.store.record_attempt(attempt).await {
        // The lease runs out and the delivery is sent again: at least once.
        if let Some(n) = FAILURES.hit() {
            tracing::warn!(error = %e, count = n, "recording a webhook attempt failed");
        }
    }
}

async fn watch_backlog(state: &AppState, hooks: &Webhooks) {
    match state.store.backlog().await {
        Ok(backlog) => {
            let age = backlog.oldest_created_at.map_or(0, |t| {
                (state.clock.now().millis() - t.millis()).max(0) / 1000
            });
            let alert = backlog.pending > hooks.config.backlog_alert;
            crate::metrics::webhook_backlog(backlog.pending, age, alert);
            if alert && BACKLOG.hit().is_some() {
                tracing::warn!(
                    pending = backlog.pending,
                    oldest_secs = age,
                    threshold = hooks.config.backlog_alert,
                    "webhook backlog above its alert threshold: receivers are slow or down"
                );
            }
        }
        Err(e) => tracing::debug!(error = %e, "reading the webhook backlog failed"),
    }
}

async fn prune(state: &AppState, hooks: &Webhooks) {
    let days = i64::from(hooks.config.log_retention_days);
    let before: Timestamp = state.clock.now().plus_millis(-days * 86_400_000);
    match state.store.prune_deliveries(before).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(count = n, "pruned the webhook delivery log"),
        Err(e) => tracing::debug!(error = %e, "pruning the webhook delivery log failed"),
    }
}
