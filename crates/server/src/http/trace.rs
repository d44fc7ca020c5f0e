//! Request tracing: every request runs in a span with a request id (taken from the client's
//! `x-request-id` when it is a sane token, else made here) that the answer carries back as
//! `x-request-id`, and ends with one access-log line at info: method, route, status, latency,
//! request id and the client's address. Never a header, a body or a query string: tokens and
//! secrets travel there. Every request's latency also goes to the per-route histogram
//! (`crate::metrics::http`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, in its extensions for the handlers (audit events record it).
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// The target of access-log lines (filter them with `LEASEHOLD_LOG=leasehold::access=off`).
pub const ACCESS_TARGET: &str = "leasehold::access";

/// A new request id: 64 random bits drawn once per process, then a counter, in hex. Unique per
/// process run and cheap (no system call per request, unlike a random UUID).
fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut text = [0u8; 24];
    let digits = (0..16)
        .rev()
        .map(|i| (prefix >> (4 * i)) & 0xf)
        .chain((0..8).rev().map(|i| (n >> (4 * i)) & 0xf));
    for (slot, digit) in text.iter_mut().zip(digits) {
        *slot = HEX.get(digit as usize).copied().unwrap_or(b'0');
    }
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("0"))
}

/// A client's request id is kept when it is short and plain (it is logged and echoed).
fn usable(id: &HeaderValue) -> Option<&str> {
    let id = id.to_str().ok()?;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    (!id.is_empty() && id.len() <= 64 && id.chars().all(plain)).then_some(id)
}

/// The tracing middleware (see the module doc). With the access log and request spans off
/// (`LEASEHOLD_LOG=warn`), all it costs is the id.
pub async fn trace_request(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = match request.headers().get(&REQUEST_ID) {
        Some(given) if usable(given).is_some() => given.clone(),
        _ => new_request_id(),
    };
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = if tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO)
        || tracing::enabled!(tracing::Level::INFO)
    {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let route = route.as_ref().map_or("(no route)", MatchedPath::as_str);
        let request_id = id.to_str().unwrap_or_default();
        let span = tracing::info_span!("request", %request_id, %method, %route);
        let response = next.run(request).instrument(span).await;
        let status = response.status().as_u16();
        let latency_us = started.elapsed().as_micros() as u64;
        // Outside the span: the line carries its fields once.
        tracing::info!(target: ACCESS_TARGET, %method, %route, status, latency_us, %request_id, peer = peer.map(tracing::field::display), "request");
        response
    } else {
        next.run(request).await
    };
    crate::metrics::http::request(
        route.as_ref().map(MatchedPath::as_str),
        &method,
        response.status(),
        started.elapsed(),
    );
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_plain() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert!(usable(&a).is_some());
        assert!(a.to_str().unwrap().chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn odd_client_ids_are_replaced() {
        for odd in ["", "a b", "x\"y", &"a".repeat(65)] {
            let value = HeaderValue::from_str(odd).unwrap();
            assert_eq!(usable(&value), None, "{odd:?}");
        }
        let fine = HeaderValue::from_static("req-42_a.b:c");
        assert_eq!(usable(&fine), Some("req-42_a.b:c"));
    }
}
