//! Response headers every answer carries, and CORS.
//!
//! - `Cache-Control: no-store` unless a route says otherwise: answers carry tokens, client
//!   secrets and tenants' data, none of which a cache (a proxy's or a browser's) may keep.
//! - `X-Content-Type-Options: nosniff` and a `Content-Security-Policy` that allows nothing
//!   (`default-src 'none'`, no framing, no base URI, no form target): a JSON answer opened in a
//!   browser runs nothing; the dashboard's pages (`crate::ui`) set their own, narrower one.
//! - CORS is off unless origins are configured (`cors_allowed_origins`): then those origins
//!   (or any, with `"*"`) may call the API from a browser, with bearer tokens (never cookies,
//!   so no credentials mode), and read `x-request-id`, `Retry-After` and `WWW-Authenticate`.
//!
//! All are static header values set by tower layers: no allocation per answer.

use std::time::Duration;

use axum::http::{header, HeaderValue, Method};
use tower::layer::util::Stack;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::http::trace::REQUEST_ID;

/// The policy of every answer (see the module doc).
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The headers of every answer, as one layer (the router puts CORS inside it, so that preflight
/// answers, which the CORS layer makes itself, carry them too).
pub fn layers() -> Stack<
    SetResponseHeaderLayer<HeaderValue>,
    Stack<SetResponseHeaderLayer<HeaderValue>, SetResponseHeaderLayer<HeaderValue>>,
> {
    Stack::new(
        SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ),
        Stack::new(
            SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            SetResponseHeaderLayer::if_not_present(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
        ),
    )
}

/// The CORS layer for the configured origins; none when the list is empty.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
            .expose_headers([REQUEST_ID, header::RETRY_AFTER, header::WWW_AUTHENTICATE])
            .max_age(Duration::from_secs(600)),
    )
}

/// Refuses configured origins that are not `scheme://host[:port]` (or `*`): a browser sends
/// exactly that in `Origin`, so anything else (a path, a trailing slash) would never match.
pub fn check_origins(origins: &[String]) -> anyhow::Result<()> {
    for origin in origins {
        if origin == "*" {
            continue;
        }
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let fine = authority.is_some_and(|a| {
            !a.is_empty()
                && !a.contains(['/', '?', '#', ' ', '@'])
                && HeaderValue::from_str(origin).is_ok()
        });
        anyhow::ensure!(
            fine,
            "cors_allowed_origins: {origin:?} is not an origin: use scheme://host[:port], e.g. https://admin.example.com"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_scheme_host_and_port() {
        let ok = |o: &str| check_origins(&[o.to_owned()]).is_ok();
        assert!(ok("https://admin.example.com"));
        assert!(ok("http://localhost:3000"));
        assert!(ok("*"));
        for bad in [
            "admin.example.com",
            "https://admin.example.com/",
            "https://a.example/x",
            "ftp://a.example",
            "https://",
        ] {
            assert!(!ok(bad), "{bad}");
        }
    }
}
