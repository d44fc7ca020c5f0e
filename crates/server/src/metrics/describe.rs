//! The recorder's setup: the HELP text of every family the facade records (the exporter writes
//! `# HELP` for described metrics and `# TYPE` for all), and the histogram buckets. The gauges
//! read from the store at scrape time write their own HELP and TYPE (`super::render`).
//!
//! A family recorded without a line here has no `# HELP`: the API suite's metrics test fails.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

use super::http::REQUEST_DURATION;
use leasehold_store::metrics::{BATCH_SIZE, COMMIT_SECONDS};

/// Request and commit latency: 1 ms to 10 s (a heartbeat answers in about a millisecond, a
/// queued open may wait seconds, a stalled disk shows in the top buckets).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Jobs per batch: 1 up to the lanes' and writer's caps.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The builder with the histograms' buckets (the others are summaries).
pub(super) fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(COMMIT_SECONDS.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS)
}

/// Describes every family recorded through the facade (after the recorder is installed).
pub(super) fn describe() {
    describe_counter!(
        "leasehold_sessions_opened_total",
        "Sessions opened per license (re-opens of an instance's live session not counted)."
    );
    describe_counter!(
        "leasehold_sessions_ended_total",
        "Sessions ended per license and reason; expiries are the reasons inactivity and lifetime."
    );
    describe_counter!(
        "leasehold_denials_total",
        "Opens refused for want of a seat, per license."
    );
    describe_counter!("leasehold_heartbeats_total", "Heartbeats answered.");
    describe_histogram!(
        "leasehold_queue_wait_seconds",
        Unit::Seconds,
        "How long queued opens waited, by outcome (granted or timeout)."
    );
    describe_counter!(
        "leasehold_auth_failures_total",
        "Failed authentications, by method (bearer or client_credentials)."
    );
    describe_counter!(
        "leasehold_auth_rate_limited_total",
        "Failed authentications answered 429, by scope (address or credential)."
    );
    describe_counter!(
        "leasehold_connections_closed_total",
        "Connections closed by the server, by reason."
    );
    describe_counter!(
        "leasehold_connections_refused_total",
        "Connections refused because max_connections were open."
    );
    describe_gauge!("leasehold_connections_open", "Connections open now.");
    describe_counter!(
        "leasehold_webhook_attempts_total",
        "Webhook delivery attempts by outcome: delivered, retry (failed, tried again later), failed (for good)."
    );
    describe_histogram!(
        "leasehold_webhook_attempt_seconds",
        Unit::Seconds,
        "Latency of webhook delivery attempts (until the receiver's answer, a failure or the timeout)."
    );
    describe_gauge!(
        "leasehold_webhook_backlog",
        "Webhook deliveries waiting to be sent (pending, retries included)."
    );
    describe_gauge!(
        "leasehold_webhook_backlog_oldest_seconds",
        "Age of the oldest webhook delivery waiting."
    );
    describe_gauge!(
        "leasehold_webhook_backlog_alert",
        "1 while the webhook backlog is above webhooks.backlog_alert."
    );
    describe_gauge!(
        "leasehold_event_streams_open",
        "Session event streams open now."
    );
    describe_counter!(
        "leasehold_body_timeouts_total",
        "Request bodies that did not arrive within the body-read timeout."
    );
    describe_counter!(
        "leasehold_tls_reloads_total",
        "Reloads of the TLS certificate, by outcome."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "HTTP request latency by route template, method and status class."
    );
    describe_histogram!(
        BATCH_SIZE,
        Unit::Count,
        "Requests per store batch, by store and kind of batch."
    );
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "Store batch latency (transaction and commit, fsync included), by store and kind."
    );
}
