//! Prometheus metrics. Event counters go through the `metrics` facade into one process-wide
//! Prometheus recorder; per-license gauges (seats, in use) are read from the store at scrape
//! time, so they are exact whatever happened before the scrape.
//!
//! `/metrics` has two views: the full one (per-license series, for the root token or the
//! configured metrics token) and the public one: every series summed over its labels
//! (`public.rs`), so nobody learns another tenant's license ids or usage without a credential.

mod alerts;
mod cache;
mod describe;
pub mod http;
mod public;

use std::sync::OnceLock;

use leasehold_proto::EndReason;
use leasehold_store::LicenseGauges;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use cache::ByLabel;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder once per process (several test servers may share a process).
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = match describe::builder() {
            Ok(builder) => builder,
            Err(e) => {
                tracing::error!(error = %e, "metric buckets refused; histograms are summaries");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let installed = metrics::set_global_recorder(recorder).ok().map(|_| handle);
        describe::describe();
        installed
    });
}

/// A label-less counter, looked up in the recorder once (the lookup hashes the key on every
/// call otherwise, and these run on every open and heartbeat). `install` runs first.
macro_rules! cached_counter {
    ($name:literal) => {{
        static COUNTER: OnceLock<metrics::Counter> = OnceLock::new();
        COUNTER.get_or_init(|| metrics::counter!($name))
    }};
}

/// A session opened on `license_id` (a new one, not a re-open of the instance's session).
pub fn opened(license_id: &str) {
    static BY_LICENSE: ByLabel<OnceLock<metrics::Counter>> = ByLabel::new();
    BY_LICENSE.with(license_id, |c| {
        c.get_or_init(|| {
            metrics::counter!("leasehold_sessions_opened_total", "license" => license_id.to_owned())
        })
        .increment(1);
    });
}

pub fn denied(license_id: &str) {
    static BY_LICENSE: ByLabel<OnceLock<metrics::Counter>> = ByLabel::new();
    BY_LICENSE.with(license_id, |c| {
        c.get_or_init(
            || metrics::counter!("leasehold_denials_total", "license" => license_id.to_owned()),
        )
        .increment(1);
    });
}

/// How long a queued open waited, and whether it got a seat.
pub fn queue_wait(waited: std::time::Duration, granted: bool) {
    let outcome = if granted { "granted" } else { "timeout" };
    metrics::histogram!("leasehold_queue_wait_seconds", "outcome" => outcome)
        .record(waited.as_secs_f64());
}

pub fn heartbeat() {
    cached_counter!("leasehold_heartbeats_total").increment(1);
}

pub fn ended(license_id: &str, reason: EndReason) {
    ended_n(license_id, reason, 1);
}

/// `n` sessions of `license_id` ended for `reason` (a mass end, a reaper pass). Expiries are
/// the reasons `inactivity` and `lifetime`. An empty `license_id` (the ends of an account-wide
/// user deactivation, which span licenses) gives a series without the label.
pub fn ended_n(license_id: &str, reason: EndReason, n: u64) {
    if n == 0 {
        return;
    }
    if license_id.is_empty() {
        metrics::counter!("leasehold_sessions_ended_total", "reason" => reason.as_str())
            .increment(n);
    } else {
        // One counter per license and reason, the reasons indexed by their place in the enum.
        static BY_LICENSE: ByLabel<[OnceLock<metrics::Counter>; REASONS]> = ByLabel::new();
        let make = || {
            metrics::counter!(
                "leasehold_sessions_ended_total",
                "license" => license_id.to_owned(),
                "reason" => reason.as_str()
            )
        };
        BY_LICENSE.with(license_id, |by_reason| {
            match by_reason.get(reason as usize) {
                Some(c) => c.get_or_init(make).increment(n),
                None => make().increment(n),
            }
        });
    }
}

/// Room for every `EndReason` in the per-license table of ends (one more is counted uncached).
const REASONS: usize = 16;

/// A failed authentication (`method`: `bearer` or `client_credentials`).
pub fn auth_failure(method: &'static str) {
    metrics::counter!("leasehold_auth_failures_total", "method" => method).increment(1);
}

/// A failed authentication answered 429 (`scope`: `address` or `credential`).
pub fn auth_rate_limited(scope: &'static str) {
    metrics::counter!("leasehold_auth_rate_limited_total", "scope" => scope).increment(1);
}

/// A connection closed by the server (`reason`: `header_timeout`, `idle_timeout`,
/// `tls_handshake`).
pub fn connection_closed(reason: &'static str) {
    metrics::counter!("leasehold_connections_closed_total", "reason" => reason).increment(1);
}

/// A connection refused because `max_connections` were open.
pub fn connection_refused() {
    cached_counter!("leasehold_connections_refused_total").increment(1);
}

/// Connections open now.
pub fn connections_open(delta: f64) {
    static GAUGE: OnceLock<metrics::Gauge> = OnceLock::new();
    GAUGE
        .get_or_init(|| metrics::gauge!("leasehold_connections_open"))
        .increment(delta);
}

fn event_streams() -> &'static metrics::Gauge {
    static GAUGE: OnceLock<metrics::Gauge> = OnceLock::new();
    GAUGE.get_or_init(|| metrics::gauge!("leasehold_event_streams_open"))
}

/// A session event stream started.
pub fn event_stream_opened() {
    event_streams().increment(1.0);
}

/// A session event stream ended (its final event sent, its client gone, or the server
/// stopping).
pub fn event_stream_closed() {
    event_streams().decrement(1.0);
}

/// A request body that did not arrive within the body-read timeout.
pub fn body_timeout() {
    cached_counter!("leasehold_body_timeouts_total").increment(1);
}

/// A reload of the TLS certificate (`outcome`: `ok` or `failed`).
pub fn tls_reload(outcome: &'static str) {
    metrics::counter!("leasehold_tls_reloads_total", "outcome" => outcome).increment(1);
}

/// A webhook attempt's outcome: delivered, retried later or failed for good, and its latency.
pub fn webhook_attempt(status: leasehold_store::webhooks::DeliveryStatus, latency_ms: u32) {
    use leasehold_store::webhooks::DeliveryStatus;
    let outcome = match status {
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Pending => "retry",
        DeliveryStatus::Failed => "failed",
    };
    metrics::counter!("leasehold_webhook_attempts_total", "outcome" => outcome).increment(1);
    metrics::histogram!("leasehold_webhook_attempt_seconds").record(f64::from(latency_ms) / 1000.0);
}

/// The webhook backlog as the dispatcher last read it: deliveries waiting, the age of the
/// oldest, and whether it is above `webhooks.backlog_alert`.
pub fn webhook_backlog(pending: u64, oldest_secs: i64, alert: bool) {
    metrics::gauge!("leasehold_webhook_backlog").set(pending as f64);
    metrics::gauge!("leasehold_webhook_backlog_oldest_seconds").set(oldest_secs as f64);
    metrics::gauge!("leasehold_webhook_backlog_alert").set(if alert { 1.0 } else { 0.0 });
}

/// Who reads `/metrics`: everything, or label-free totals only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Full,
    Public,
}

/// A gauge family read from the store: name, HELP text, the value of one license.
type GaugeFamily = (&'static str, &'static str, fn(&LicenseGauges) -> u32);

/// A label value escaped as the text format wants (`\\`, `\"`, newline).
pub(crate) fn label_value(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        let escaped = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        std::borrow::Cow::Owned(escaped)
    } else {
        std::borrow::Cow::Borrowed(v)
    }
}

pub async fn render(state: &AppState, view: View) -> ApiResult<String> {
    let gauges = state.store.license_gauges().await?;
    let mut out = String::new();
    let families: [GaugeFamily; 3] = [
        (
            "leasehold_license_seats",
            "Seats of each license (its terms).",
            |g| g.seats,
        ),
        (
            "leasehold_sessions_in_use",
            "Live sessions per license.",
            |g| g.in_use,
        ),
        (
            "leasehold_queue_waiting",
            "Clients waiting for a seat per license.",
            |g| g.waiting,
        ),
    ];
    for (name, help, value) in families {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for g in &gauges {
            let license = label_value(&g.license_id);
            out.push_str(&format!("{name}{{license=\"{license}\"}} {}\n", value(g)));
        }
    }
    alerts::render(state, &gauges, &mut out).await?;
    let delegated = state.store.delegated_licenses().await?;
    out.push_str(&crate::delegation::watch::render(
        &delegated,
        state.clock.now(),
    ));
    let handle = HANDLE
        .get()
        .and_then(Option::as_ref)
        .ok_or_else(|| ApiError::Internal("metrics recorder not installed".into()))?;
    out.push_str(&handle.render());
    Ok(match view {
        View::Full => out,
        View::Public => public::totals(&out),
    })
}
