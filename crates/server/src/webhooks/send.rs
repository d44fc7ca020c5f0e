//! Sending one delivery: the HTTP client (the SSRF-guarded resolver, no proxy, no redirects,
//! connect and response timeouts), the signed POST, and what its outcome means (delivered on
//! a 2xx; otherwise retried with exponential backoff and jitter until `retry_for` after the
//! event, then failed).

use std::time::{Duration, Instant};

use leasehold_core::Timestamp;
use leasehold_store::webhooks::{Attempt, Delivery, DeliveryStatus};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, USER_AGENT};

use super::sign::{signature_header, SIGNATURE_HEADER};
use super::ssrf::{self, GuardedResolver};
use crate::config::WebhookConfig;

/// The start of a receiver's answer kept in the delivery log.
pub const EXCERPT_BYTES: usize = 512;

/// The delivery client of this node.
pub fn client(config: &WebhookConfig) -> reqwest::Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("Leasehold-Webhooks/", env!("CARGO_PKG_VERSION"))),
    );
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reqwest::Client::builder()
        .default_headers(headers)
        .dns_resolver(std::sync::Arc::new(GuardedResolver {
            allow_private: config.allow_private_targets,
        }))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.connect_timeout)
        .timeout(config.response_timeout)
        .pool_max_idle_per_host(4)
        .build()
}

/// The wait before retry number `failures` (1 for the first retry): `base * 2^(failures-1)`,
/// at most `max`, of which a random half is taken off (jitter), so receivers that failed
/// together are not retried together.
pub fn backoff(base: Duration, max: Duration, failures: u32, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(30));
    let full = exp.min(max);
    full.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

/// The outcome of an attempt at `at` that failed: retried, or failed for good once the event
/// is `retry_for` old.
pub fn after_failure(
    config: &WebhookConfig,
    delivery: &Delivery,
    at: Timestamp,
) -> (DeliveryStatus, Timestamp) {
    let give_up_at = delivery
        .created_at
        .plus_millis(i64::try_from(config.retry_for.as_millis()).unwrap_or(i64::MAX));
    if at >= give_up_at {
        return (DeliveryStatus::Failed, at);
    }
    let wait = backoff(
        config.retry_base,
        config.retry_max_interval,
        delivery.attempts + 1,
        rand::random::<f64>(),
    );
    let next = at.plus_millis(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
    // The last try is at the end of the retry period, not past it.
    (DeliveryStatus::Pending, next.min(give_up_at))
}

/// Posts `delivery` to `url` signed with `secret` at `now`, and answers the attempt.
pub async fn send(
    http: &reqwest::Client,
    config: &WebhookConfig,
    url: &str,
    secret: &str,
    delivery: &Delivery,
    now: Timestamp,
) -> Attempt {
    let started = Instant::now();
    let outcome = post(http, config, url, secret, delivery, now).await;
    let latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    let (ok, response_status, excerpt) = match outcome {
        Ok((status, excerpt)) => ((200..300).contains(&status), Some(status), excerpt),
        Err(why) => (false, None, why),
    };
    let (status, next_attempt_at) = if ok {
        (DeliveryStatus::Delivered, now)
    } else {
        after_failure(config, delivery, now)
    };
    Attempt {
        delivery_id: delivery.id,
        at: now,
        status,
        next_attempt_at,
        response_status,
        latency_ms,
        response_excerpt: Some(excerpt),
    }
}

/// The status and the start of the answer, or why there was none.
async fn post(
    http: &reqwest::Client,
    config: &WebhookConfig,
    url: &str,
    secret: &str,
    delivery: &Delivery,
    now: Timestamp,
) -> Result<(u16, String), String> {
    // The resolver checks names; an address written in the URL is checked here.
    let parsed = ssrf::parse_url(url).map_err(|r| format!("{r:?}"))?;
    if let Some(host) = parsed.host_str() {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            if !config.allow_private_targets && !ssrf::is_public(ip) {
                return Err(format!("refused: {ip} is not a public address"));
            }
        }
    }
    let body = delivery.payload.clone().into_bytes();
    let signature = signature_header(secret, now.secs(), &body);
    let mut response = http
        .post(parsed)
        .header(SIGNATURE_HEADER, signature)
        .header("leasehold-event-id", &delivery.event_id)
        .header("leasehold-event-type", &delivery.event_type)
        .header("leasehold-delivery-id", delivery.id.to_string())
        .body(body)
        .send()
        .await
        .map_err(describe)?;
    let status = response.status().as_u16();
    let mut excerpt = Vec::new();
    while excerpt.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Err(describe(e)),
        }
    }
    excerpt.truncate(EXCERPT_BYTES);
    Ok((status, String::from_utf8_lossy(&excerpt).into_owned()))
}

fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    // The source chain names the cause (refused address, reset, TLS) without the URL.
    let mut cause = String::new();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_takes_at_most_half() {
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(3600);
        assert_eq!(backoff(base, max, 1, 0.0), Duration::from_secs(10));
        assert_eq!(backoff(base, max, 2, 0.0), Duration::from_secs(20));
        assert_eq!(backoff(base, max, 4, 0.0), Duration::from_secs(80));
        assert_eq!(backoff(base, max, 40, 0.0), max);
        assert_eq!(backoff(base, max, 2, 1.0), Duration::from_secs(10));
    }

    #[test]
    fn a_delivery_is_retried_until_its_event_is_a_day_old_then_failed() {
        let config = WebhookConfig::default();
        let created = Timestamp::from_secs(1_800_000_000);
        let delivery = Delivery {
            id: 1,
            endpoint_id: "w".into(),
            account_id: "a".into(),
            event_id: "evt_1".into(),
            event_type: "session.opened".into(),
            order_key: "l".into(),
            payload: "{}".into(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: created,
            created_at: created,
            last_attempt_at: None,
            response_status: None,
            latency_ms: None,
            response_excerpt: None,
        };
        let (status, next) = after_failure(&config, &delivery, created);
        assert_eq!(status, DeliveryStatus::Pending);
        assert!(next > created && next <= created.plus_secs(10));
        let late = created.plus_secs(24 * 3600 - 5);
        let (status, next) = after_failure(&config, &delivery, late);
        assert_eq!(status, DeliveryStatus::Pending);
        assert_eq!(next, created.plus_secs(24 * 3600));
        let (status, _) = after_failure(&config, &delivery, created.plus_secs(24 * 3600));
        assert_eq!(status, DeliveryStatus::Failed);
    }
}
