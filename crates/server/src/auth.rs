//! Credentials: random tokens and secrets (256 bits), stored only as SHA-256 hashes, and the
//! `Auth` extractor that turns `Authorization: Bearer <token>` into a `Principal`.
//!
//! Tokens are looked up by their hash, so the lookup never compares secret bytes; client
//! secrets are compared hash to hash in constant time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use leasehold_store::{Origin, Principal, TokenHash};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::http::ratelimit::{self, Scope, Verdict};
use crate::http::trace::RequestId;
use crate::log_throttle::LogThrottle;
use crate::metrics::{self as m, View};
use crate::state::AppState;
use crate::ui;

/// A new random token: `prefix` + 256 random bits, base64url.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A new public identifier (not secret): `prefix` + 128 random bits, hex.
pub fn new_public_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time comparison of a presented secret with a stored hash.
pub fn secret_matches(presented: &str, stored: &TokenHash) -> bool {
    hash_token(presented).ct_eq(stored).into()
}

/// The authenticated caller, and where its request came from (for the audit log).
pub struct Auth(pub Principal, pub RequestSource);

/// Where a request came from, kept as the request has it: most requests (heartbeats) write no
/// audit event, so the audit's strings are made only by `Auth::origin`.
pub struct RequestSource {
    request_id: Option<HeaderValue>,
    peer: Option<IpAddr>,
}

impl Auth {
    /// The origin of this request's audit events: the principal, the request id, the client
    /// address (each `None` where the request has none).
    pub fn origin(&self) -> Origin {
        Origin {
            actor: Some(actor(&self.0)),
            request_id: self
                .1
                .request_id
                .as_ref()
                .and_then(|id| id.to_str().ok())
                .map(str::to_owned),
            client_addr: self.1.peer.map(|ip| ip.to_string()),
        }
    }
}

/// `root`, `admin:<account id>`, `user:<username>` or `service:<username>`.
fn actor(principal: &Principal) -> String {
    match principal {
        Principal::Root => "root".into(),
        Principal::AccountAdmin { account_id } => format!("admin:{account_id}"),
        Principal::User { username, .. } => format!("user:{username}"),
        Principal::ServiceAccess { username, .. } => format!("service:{username}"),
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = match bearer_token(&parts.headers)? {
            Some(token) => token,
            None => dashboard_cookie(parts)?,
        };
        let principal = authenticate(state, peer_ip(parts), token).await?;
        let source = RequestSource {
            request_id: parts.extensions.get::<RequestId>().map(|id| id.0.clone()),
            peer: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        };
        Ok(Auth(principal, source))
    }
}

/// Without a bearer token, the dashboard's session cookie (`crate::ui::cookie`): a request
/// that changes state must then carry the page's CSRF token as well.
fn dashboard_cookie(parts: &Parts) -> Result<&str, ApiError> {
    let Some(token) = ui::cookie::token(&parts.headers) else {
        return Err(ApiError::Unauthorized(
            "missing Authorization: Bearer token".into(),
        ));
    };
    if ui::cookie::changes_state(&parts.method) {
        let presented = parts
            .headers
            .get(ui::cookie::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ui::cookie::csrf_matches(token, presented) {
            return Err(ApiError::CsrfRejected(format!(
                "a dashboard request that changes something needs the page's {} header",
                ui::cookie::CSRF_HEADER
            )));
        }
    }
    Ok(token)
}

/// Who may read which view of `/metrics`: without a credential, the public totals; with the
/// root token or the configured metrics token, every series; any other valid token, 403.
pub struct MetricsReader(pub View);

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer_token(&parts.headers)? else {
            return Ok(MetricsReader(View::Public));
        };
        if let Some(expected) = &state.metrics_token_hash {
            if secret_matches(token, expected) {
                return Ok(MetricsReader(View::Full));
            }
        }
        match authenticate(state, peer_ip(parts), token).await? {
            Principal::Root => Ok(MetricsReader(View::Full)),
            _ => Err(ApiError::Forbidden(
                "per-license metrics need the root token or the metrics token".into(),
            )),
        }
    }
}

/// The client's address (the TCP peer), as the accept loop recorded it.
pub fn peer_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// The bearer token of the request: `None` without an `Authorization` header; 401 for another
/// scheme (this API takes bearer tokens), 400 for a malformed bearer header (RFC 6750 3.1).
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::MalformedAuthorization("the Authorization header is not readable".into())
    })?;
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized(
            "this API takes Authorization: Bearer <token>".into(),
        ));
    }
    let token = rest.trim();
    // RFC 6750 2.1 defines tokens as b64token; the root token is chosen by the operator and may
    // hold other visible characters, so only what cannot be one token is malformed.
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(ApiError::MalformedAuthorization(
            "the Authorization header must be 'Bearer <token>'".into(),
        ));
    }
    Ok(Some(token))
}

/// Turns a presented bearer token into its principal. A token that fails is counted against
/// the limits of its address and of itself (`http::ratelimit`); over budget, the answer is 429
/// instead of 401. A valid token never touches the limiter.
pub async fn authenticate(
    state: &AppState,
    peer: IpAddr,
    token: &str,
) -> Result<Principal, ApiError> {
    let hash = hash_token(token);
    let now = state.clock.now();
    let key = ratelimit::token_key(&hash);
    if let Some(retry_after_secs) = state.auth_limiter.token_blocked(key, now.millis()) {
        return Err(auth_failed_over_budget(
            Scope::Credential,
            retry_after_secs,
            "bearer",
            peer,
        ));
    }
    match state.store.find_credential(&hash, now).await? {
        Some(credential) => Ok(credential.principal),
        None => Err(auth_failed(state, peer, Some(key), "bearer", || {
            ApiError::InvalidToken("unknown or expired token".into())
        })),
    }
}

/// A failed authentication (`method`: `bearer` or `client_credentials`): counted in the
/// metrics and by the limiter; answered with `refused()` within budget, 429 beyond.
pub fn auth_failed(
    state: &AppState,
    peer: IpAddr,
    credential: Option<ratelimit::CredentialKey>,
    method: &'static str,
    refused: impl FnOnce() -> ApiError,
) -> ApiError {
    m::auth_failure(method);
    match state
        .auth_limiter
        .failed(peer, credential, state.clock.now().millis())
    {
        Verdict::Refused => refused(),
        Verdict::Limited {
            scope,
            retry_after_secs,
        } => auth_failed_over_budget(scope, retry_after_secs, method, peer),
    }
}

fn auth_failed_over_budget(
    scope: Scope,
    retry_after_secs: u64,
    method: &'static str,
    peer: IpAddr,
) -> ApiError {
    static LOG: LogThrottle = LogThrottle::new();
    m::auth_rate_limited(scope.as_str());
    if let Some(count) = LOG.hit() {
        tracing::warn!(
            count,
            last_peer = %peer,
            last_scope = scope.as_str(),
            method,
            "failed authentications over budget answered 429 (count since the last such line)"
        );
    }
    ApiError::RateLimited {
        scope: scope.phrase(),
        retry_after_secs,
    }
}

impl Auth {
    /// Root or the admin of `account_id`; other account admins get 403, others 403.
    pub fn require_account_admin(&self, account_id: &str) -> Result<(), ApiError> {
        match &self.0 {
            Principal::Root => Ok(()),
            Principal::AccountAdmin { account_id: own } if own == account_id => Ok(()),
            Principal::AccountAdmin { .. } => Err(ApiError::Forbidden(
                "this token administers another account".into(),
            )),
            _ => Err(ApiError::Forbidden(
                "this call needs an account admin token".into(),
            )),
        }
    }

    /// Whether the caller may see resources of `account_id` (root or its admin).
    pub fn administers(&self, account_id: &str) -> bool {
        match &self.0 {
            Principal::Root => true,
            Principal::AccountAdmin { account_id: own } => own == account_id,
            _ => false,
        }
    }

    pub fn require_root(&self) -> Result<(), ApiError> {
        match self.0 {
            Principal::Root => Ok(()),
            _ => Err(ApiError::Forbidden(
                "this call needs the root admin token".into(),
            )),
        }
    }

    /// The caller's account, for any principal but root.
    pub fn account_id(&self) -> Option<&str> {
        match &self.0 {
            Principal::Root => None,
            Principal::AccountAdmin { account_id }
            | Principal::User { account_id, .. }
            | Principal::ServiceAccess { account_id, .. } => Some(account_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_prefixed() {
        let a = new_token("lh_usr_");
        let b = new_token("lh_usr_");
        assert_ne!(a, b);
        assert!(a.starts_with("lh_usr_"));
        assert_eq!(a.len(), "lh_usr_".len() + 43);
    }

    #[test]
    fn bearer_headers_are_read_as_rfc_6750_says() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            bearer_token(&h).map(|t| t.map(str::to_owned))
        };
        assert_eq!(bearer_token(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            with("Bearer lh_usr_abc-_9").unwrap().as_deref(),
            Some("lh_usr_abc-_9")
        );
        assert_eq!(with("bearer x/y+z==").unwrap().as_deref(), Some("x/y+z=="));
        assert_eq!(
            with("Bearer change-me!#").unwrap().as_deref(),
            Some("change-me!#")
        );
        for (value, status) in [
            ("Basic dXNlcjpwdw==", 401),
            ("Bearer", 400),
            ("Bearer ", 400),
            ("Bearer a b", 400),
            ("Bearer a\tb", 400),
        ] {
            let err = with(value).unwrap_err();
            assert_eq!(err.status_and_code().0.as_u16(), status, "{value:?}");
        }
    }

    #[test]
    fn secrets_match_only_their_hash() {
        let stored = hash_token("s3cret");
        assert!(secret_matches("s3cret", &stored));
        assert!(!secret_matches("s3cret ", &stored));
    }
}
