//! The HTTP latency histogram: one series per route template (axum's `MatchedPath`, never the
//! raw path: no ids in labels), method and status class. Requests that matched no route share
//! the route `unmatched`, so a scanner cannot grow the label set.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use metrics::Histogram;

use super::cache::ByLabel;

pub const REQUEST_DURATION: &str = "leasehold_http_request_duration_seconds";

/// A request answered with `status` after `took`; `route` is its template, if one matched.
pub fn request(route: Option<&str>, method: &Method, status: StatusCode, took: Duration) {
    static BY_ROUTE: ByLabel<[[OnceLock<Histogram>; CLASSES]; METHODS]> = ByLabel::new();
    let route = route.unwrap_or("unmatched");
    let (method, m) = method_label(method);
    let (class, c) = status_class(status);
    let make = || {
        metrics::histogram!(
            REQUEST_DURATION,
            "route" => route.to_owned(),
            "method" => method,
            "status_class" => class
        )
    };
    BY_ROUTE.with(route, |table| {
        match table.get(m).and_then(|row| row.get(c)) {
            Some(h) => h.get_or_init(make).record(took.as_secs_f64()),
            None => make().record(took.as_secs_f64()),
        }
    });
}

const METHODS: usize = 8;
const CLASSES: usize = 5;

/// The method as a static label (another method is `other`: the set stays bounded), and its
/// index among the `METHODS` labels.
fn method_label(method: &Method) -> (&'static str, usize) {
    match *method {
        Method::GET => ("GET", 0),
        Method::POST => ("POST", 1),
        Method::PUT => ("PUT", 2),
        Method::PATCH => ("PATCH", 3),
        Method::DELETE => ("DELETE", 4),
        Method::HEAD => ("HEAD", 5),
        Method::OPTIONS => ("OPTIONS", 6),
        _ => ("other", 7),
    }
}

/// The status class label, and its index among the `CLASSES` labels.
fn status_class(status: StatusCode) -> (&'static str, usize) {
    match status.as_u16() {
        100..=199 => ("1xx", 0),
        200..=299 => ("2xx", 1),
        300..=399 => ("3xx", 2),
        400..=499 => ("4xx", 3),
        _ => ("5xx", 4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(status_class(StatusCode::NO_CONTENT), ("2xx", 1));
        assert_eq!(status_class(StatusCode::TOO_MANY_REQUESTS), ("4xx", 3));
        assert_eq!(status_class(StatusCode::SERVICE_UNAVAILABLE), ("5xx", 4));
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").unwrap()),
            ("other", 7)
        );
        assert_eq!(method_label(&Method::POST), ("POST", 1));
    }
}
