//! The OAuth2 token endpoint (RFC 6749): its request, answer and error body.

use serde::{Deserialize, Serialize};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The error codes of the OAuth2 token endpoint (RFC 6749 section 5.2), plus
/// `temporarily_unavailable` and `server_error` (registered in section 11.4) for 503 and 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OAuthErrorCode {
    /// A parameter is missing, repeated or malformed, or the body is not a form.
    InvalidRequest,
    /// Client authentication failed: unknown client, wrong secret, or none given.
    InvalidClient,
    /// The grant is not valid for this client (the service user is inactive).
    InvalidGrant,
    /// The client may not use this grant type.
    UnauthorizedClient,
    /// Only `client_credentials` is supported.
    UnsupportedGrantType,
    /// This server defines no scopes.
    InvalidScope,
    /// 503: the server cannot issue tokens now (its store is unavailable).
    TemporarilyUnavailable,
    /// 500: an internal error.
    ServerError,
    /// A code this version does not know.
    #[serde(other)]
    Unknown,
}

impl OAuthErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            OAuthErrorCode::ServerError => "server_error",
            OAuthErrorCode::Unknown => "unknown",
        }
    }
}

/// The error body of the token endpoint (RFC 6749 section 5.2):
/// `{"error": "invalid_client", "error_description": "..."}`. Only `/v1/oauth/token` answers
/// errors in this shape; every other route answers [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct OAuthErrorBody {
    pub error: OAuthErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// `POST /v1/oauth/token`, form-encoded (RFC 6749 section 4.4).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct OAuthTokenRequest {
    pub grant_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct OAuthToken {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
}
