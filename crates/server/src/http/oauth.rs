//! The token endpoint's side of RFC 6749 (client credentials, section 4.4): reading the
//! request (a UTF-8 form, client authentication by HTTP Basic or in the body, never both) and
//! answering errors in the RFC's shape (section 5.2), which only this endpoint uses:
//! `{"error": "invalid_client", "error_description": "..."}`, always with
//! `Cache-Control: no-store` and `Pragma: no-cache`; a 401 carries
//! `WWW-Authenticate: Basic realm="leasehold"` (the scheme this endpoint takes).
//!
//! | error | status | when |
//! |---|---|---|
//! | `invalid_request` | 400 (413, 408) | not a UTF-8 form, a parameter missing or repeated, two authentication methods (body too large, too slow) |
//! | `invalid_client` | 401 (429 over the failure budget) | no client authentication, unknown client, wrong secret |
//! | `invalid_grant` | 400 | the service user is inactive |
//! | `unsupported_grant_type` | 400 | any grant but `client_credentials` |
//! | `invalid_scope` | 400 | a `scope` (this server defines none) |
//! | `temporarily_unavailable` / `server_error` | 503 / 500 | the store cannot answer / a bug |
//!
//! Unknown parameters are ignored, as section 3.2 requires.

use std::net::IpAddr;

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use leasehold_proto::{OAuthErrorBody, OAuthErrorCode, OAuthToken};

use crate::auth::{auth_failed, peer_ip};
use crate::error::ApiError;
use crate::http::body::read_limited;
use crate::http::ratelimit::client_key;
use crate::state::AppState;

/// The challenge of a 401 from the token endpoint.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"leasehold\"";

/// An error of the token endpoint (see the module doc).
#[derive(Debug)]
pub struct OAuthError {
    pub code: OAuthErrorCode,
    pub description: String,
    pub status: StatusCode,
    retry_after_secs: Option<u64>,
}

impl OAuthError {
    fn new(code: OAuthErrorCode, status: StatusCode, description: impl Into<String>) -> Self {
        OAuthError {
            code,
            description: description.into(),
            status,
            retry_after_secs: None,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(
            OAuthErrorCode::InvalidRequest,
            StatusCode::BAD_REQUEST,
            description,
        )
    }

    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(
            OAuthErrorCode::InvalidClient,
            StatusCode::UNAUTHORIZED,
            description,
        )
    }
}

/// Failures of the application layer, in the RFC's terms.
impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        use OAuthErrorCode as C;
        let description = e.to_string();
        match e {
            ApiError::Unauthorized(_) | ApiError::InvalidToken(_) => {
                Self::new(C::InvalidClient, StatusCode::UNAUTHORIZED, description)
            }
            ApiError::RateLimited {
                retry_after_secs, ..
            } => OAuthError {
                retry_after_secs: Some(retry_after_secs),
                ..Self::new(C::InvalidClient, StatusCode::TOO_MANY_REQUESTS, description)
            },
            ApiError::UserInactive(_) | ApiError::Forbidden(_) => {
                Self::new(C::InvalidGrant, StatusCode::BAD_REQUEST, description)
            }
            ApiError::PayloadTooLarge(_) => Self::new(
                C::InvalidRequest,
                StatusCode::PAYLOAD_TOO_LARGE,
                description,
            ),
            ApiError::RequestTimeout(_) => {
                Self::new(C::InvalidRequest, StatusCode::REQUEST_TIMEOUT, description)
            }
            ApiError::StoreUnavailable(cause) => {
                tracing::error!(%cause, "token request failed");
                Self::new(
                    C::TemporarilyUnavailable,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage is unavailable; retry later",
                )
            }
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "token request failed");
                Self::new(
                    C::ServerError,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                )
            }
            other => Self::new(
                C::InvalidRequest,
                StatusCode::BAD_REQUEST,
                other.to_string(),
            ),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = OAuthErrorBody {
            error: self.code,
            error_description: Some(self.description),
        };
        let mut response = (self.status, no_cache(), Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(BASIC_CHALLENGE),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The headers of every answer of the token endpoint (RFC 6749 section 5.1).
fn no_cache() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// The successful answer (RFC 6749 section 5.1).
pub fn token_response(token: OAuthToken) -> Response {
    (no_cache(), Json(token)).into_response()
}

/// A service user's credentials, as presented.
pub struct ClientAuth {
    pub client_id: String,
    pub client_secret: String,
}

/// A client-credentials token request, read and checked (see the module doc).
pub struct TokenRequest {
    pub client: ClientAuth,
    pub peer: IpAddr,
}

impl FromRequest<AppState> for TokenRequest {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, OAuthError> {
        let (parts, body) = req.into_parts();
        require_form(&parts.headers)?;
        let bytes = read_limited(body, state.max_body_bytes)
            .await
            .map_err(|e| OAuthError::from(ApiError::from(e)))?;
        let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| OAuthError::invalid_request(format!("the body is not a form: {e}")))?;
        let one = |name: &str| -> Result<Option<&str>, OAuthError> {
            let mut values = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
            let first = values.next();
            if values.next().is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "the {name} parameter is repeated"
                )));
            }
            Ok(first.map(String::as_str).filter(|v| !v.is_empty()))
        };
        let grant_type = one("grant_type")?
            .ok_or_else(|| OAuthError::invalid_request("the grant_type parameter is missing"))?;
        let body_id = one("client_id")?;
        let body_secret = one("client_secret")?;
        let scope = one("scope")?;
        let basic = basic_credentials(&parts.headers)?;
        if grant_type != "client_credentials" {
            return Err(OAuthError::new(
                OAuthErrorCode::UnsupportedGrantType,
                StatusCode::BAD_REQUEST,
                format!("grant_type {grant_type:?} is not supported: only client_credentials"),
            ));
        }
        if let Some(scope) = scope {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidScope,
                StatusCode::BAD_REQUEST,
                format!("scope {scope:?}: this server defines no scopes; leave scope out"),
            ));
        }
        let client = match (basic, body_id, body_secret) {
            (Some(_), _, Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "the client authenticated twice (HTTP Basic and client_secret in the body): use one method",
                ))
            }
            (Some(basic), Some(id), None) if id != basic.client_id => {
                return Err(OAuthError::invalid_request(
                    "client_id in the body differs from the HTTP Basic one",
                ))
            }
            (Some(basic), _, None) => basic,
            (None, Some(id), Some(secret)) => ClientAuth {
                client_id: id.to_owned(),
                client_secret: secret.to_owned(),
            },
            (None, _, _) => {
                return Err(OAuthError::invalid_client(
                    "client authentication is required: HTTP Basic, or client_id and client_secret in the body",
                ))
            }
        };
        Ok(TokenRequest {
            client,
            peer: peer_ip(&parts),
        })
    }
}

/// A failed exchange: a wrong client or secret counts against the failure budgets of the
/// address and of the client id (`http::ratelimit`); other failures map as they are.
pub fn refused(state: &AppState, request: &TokenRequest, e: ApiError) -> OAuthError {
    match e {
        ApiError::Unauthorized(message) => OAuthError::from(auth_failed(
            state,
            request.peer,
            Some(client_key(&request.client.client_id)),
            "client_credentials",
            || ApiError::Unauthorized(message),
        )),
        other => other.into(),
    }
}

/// 400 unless the body is a form in UTF-8.
fn require_form(headers: &HeaderMap) -> Result<(), OAuthError> {
    let text = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "expected Content-Type: application/x-www-form-urlencoded",
        ));
    }
    for param in parts {
        if let Some((name, value)) = param.split_once('=') {
            let charset = value.trim().trim_matches('"');
            if name.trim().eq_ignore_ascii_case("charset") && !charset.eq_ignore_ascii_case("utf-8")
            {
                return Err(OAuthError::invalid_request(format!(
                    "charset {charset:?} is not supported: the form must be UTF-8"
                )));
            }
        }
    }
    Ok(())
}

/// Client credentials from HTTP Basic (RFC 6749 section 2.3.1: each part form-urlencoded
/// before base64). `None` without an `Authorization` header; 401 for another scheme or a
/// malformed value.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<ClientAuth>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed =
        || OAuthError::invalid_client("the Authorization header is not valid HTTP Basic");
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, encoded) = text.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "the token endpoint takes client credentials by HTTP Basic or in the body",
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let form_decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| malformed())
    };
    Ok(Some(ClientAuth {
        client_id: form_decode(id)?,
        client_secret: form_decode(secret)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(value: &str) -> Result<Option<ClientAuth>, OAuthError> {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        basic_credentials(&h)
    }

    #[test]
    fn basic_credentials_are_form_decoded_after_base64() {
        // "a%3Ab:s+c%25" is client id "a:b" and secret "s c%" (RFC 6749 2.3.1).
        let encoded = STANDARD.encode("a%3Ab:s+c%25");
        let auth = basic(&format!("Basic {encoded}")).unwrap().unwrap();
        assert_eq!(auth.client_id, "a:b");
        assert_eq!(auth.client_secret, "s c%");
        for bad in ["Basic !!!", "Basic", "Bearer abc"] {
            let err = basic(bad).err().unwrap();
            assert_eq!(err.code, OAuthErrorCode::InvalidClient, "{bad}");
            assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        }
    }

    #[test]
    fn errors_have_the_rfc_shape_and_headers() {
        let response = OAuthError::invalid_client("nope").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let h = response.headers();
        assert_eq!(h[header::WWW_AUTHENTICATE], BASIC_CHALLENGE);
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h[header::PRAGMA], "no-cache");
    }
}
