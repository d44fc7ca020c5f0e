//! The dashboard's sign-in session: a short-lived account-admin credential minted at sign-in,
//! carried by an `HttpOnly`, `Secure`, `SameSite=Strict` cookie (scripts never see it), and the
//! CSRF token derived from it that every state-changing request made with the cookie must carry.
//!
//! The credential is stored like any token (its hash, with an expiry), so a sign-in holds on
//! every node sharing the database and across restarts, and signing out expires it at once.

use axum::http::{header, HeaderMap, HeaderValue, Method};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "lh_ui";
/// The prefix of a dashboard credential: only such tokens are read from the cookie.
pub const TOKEN_PREFIX: &str = "lh_ui_";
/// How long a sign-in lasts (absolute, not sliding): a working day.
pub const SESSION_SECS: u64 = 8 * 3600;
/// The header (API calls) and form field (sign-out) that carry the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The `Set-Cookie` value that stores `token` for the session's lifetime.
pub fn set_cookie(token: &str) -> HeaderValue {
    let value = format!(
        "{COOKIE}={token}; Path=/; Max-Age={SESSION_SECS}; HttpOnly; Secure; SameSite=Strict"
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| clear_cookie())
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("lh_ui=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// The dashboard token in the request's cookies, if any.
pub fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| value.starts_with(TOKEN_PREFIX) && value.len() < 200)
}

/// The CSRF token of a signed-in session: a hash of its (secret, script-unreadable) cookie, so
/// another site can neither read nor forge it, and the server keeps nothing for it.
pub fn csrf_token(token: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"leasehold-ui-csrf\0");
    hasher.update(token.as_bytes());
    hex::encode(hasher.finalize())
}

/// Whether `presented` is the CSRF token of `token` (constant time).
pub fn csrf_matches(token: &str, presented: &str) -> bool {
    csrf_token(token)
        .as_bytes()
        .ct_eq(presented.as_bytes())
        .into()
}

/// Whether a request with this method changes state (and so needs the CSRF token when it is
/// authenticated by the cookie).
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request comes from this server's own pages: a browser names the page's origin
/// in `Origin` (and says `same-origin` in `Sec-Fetch-Site`) on a form post. Either header
/// naming another site refuses it; a client that sends neither is not a browser page.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let authority = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
    });
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_cookie_is_read_among_others_and_only_with_the_dashboard_prefix() {
        let h = headers(&[("cookie", "a=b; lh_ui=lh_ui_abc ; c=d")]);
        assert_eq!(token(&h), Some("lh_ui_abc"));
        assert_eq!(token(&headers(&[("cookie", "lh_ui=lh_adm_x")])), None);
        assert_eq!(token(&headers(&[("cookie", "x=lh_ui_abc")])), None);
        assert_eq!(token(&HeaderMap::new()), None);
    }

    #[test]
    fn the_cookie_is_http_only_secure_and_strict() {
        let v = set_cookie("lh_ui_t");
        let v = v.to_str().unwrap();
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(v.contains(part), "{v}");
        }
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let t = csrf_token("lh_ui_one");
        assert!(csrf_matches("lh_ui_one", &t));
        assert!(!csrf_matches("lh_ui_two", &t));
        assert!(!csrf_matches("lh_ui_one", ""));
    }

    #[test]
    fn another_sites_form_is_not_same_origin() {
        assert!(same_origin(&headers(&[
            ("host", "h:1"),
            ("origin", "http://h:1")
        ])));
        assert!(same_origin(&headers(&[("host", "h:1")])));
        assert!(!same_origin(&headers(&[
            ("host", "h:1"),
            ("origin", "https://evil")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "h:1"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "h:1"),
            ("origin", "null")
        ])));
    }
}
