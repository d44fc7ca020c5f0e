//! The HTTP latency histogram: one series per route template (axum's `MatchedPath`, never the
//! raw path: no ids in labels), method and status class. Requests that matched no route share
//! the route `unmatched`, so a scanner cannot grow the label set.

use std::time::Duration;

use axum::http::{Method, StatusCode};

pub const REQUEST_DURATION: &str = "leasehold_http_request_duration_seconds";

/// A request answered with `status` after `took`; `route` is its template, if one matched.
pub fn request(route: Option<&str>, method: &Method, status: StatusCode, took: Duration) {
    let route = route.unwrap_or("unmatched").to_owned();
    metrics::histogram!(
        REQUEST_DURATION,
        "route" => route,
        "method" => method_label(method),
        "status_class" => status_class(status)
    )
    .record(took.as_secs_f64());
}

/// The method as a static label (another method is `other`: the set stays bounded).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(status_class(StatusCode::NO_CONTENT), "2xx");
        assert_eq!(status_class(StatusCode::TOO_MANY_REQUESTS), "4xx");
        assert_eq!(status_class(StatusCode::SERVICE_UNAVAILABLE), "5xx");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::POST), "POST");
    }
}
