//! The SDK's error type: one enum for everything a call can run into, from a refused seat (an
//! [`ClientError::Api`] answer decoded from the server's `{"error": {...}}` body) to a network
//! failure or a lease that does not verify.

use leasehold_proto::{EndReason, ErrorBody, ErrorCode, OAuthErrorBody, OAuthErrorCode};

/// Shorthand for results of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Everything that can go wrong when talking to a Leasehold server or checking a lease.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-2xx status. `code` and `message` come from the
    /// `{"error": {...}}` body; when the body is not one (a proxy's HTML page, say), `code` is
    /// derived from the status and `message` holds the start of the body.
    ///
    /// Typical cases: 409 [`ErrorCode::NoSeatAvailable`] when the license is full, 410
    /// [`ErrorCode::SessionEnded`] with `reason` once a session has ended, 401
    /// [`ErrorCode::Unauthorized`] for a missing or unknown token.
    #[error("{status} {code}: {message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// Stable error code.
        code: ErrorCode,
        /// Human-readable explanation from the server.
        message: String,
        /// With [`ErrorCode::SessionEnded`]: why the session ended.
        reason: Option<EndReason>,
        /// With [`ErrorCode::NoSeatAvailable`] after waiting in a queue: the wait ran out.
        queue_timeout: bool,
    },
    /// The request did not get an answer: connection refused or reset, timeout, DNS failure.
    /// Retryable.
    #[error("transport error: {0}")]
    Transport(String),
    /// The server answered 2xx but the body is not what this version of the SDK expects.
    #[error("could not decode the server's answer: {0}")]
    Decode(String),
    /// A signed lease failed verification: bad format, unknown key id, bad signature, wrong
    /// algorithm, or expired.
    #[error("invalid lease: {0}")]
    LeaseInvalid(String),
    /// A borrow lease valid by its signature that the server lists as revoked: its seat went
    /// back early (reclaimed by an admin, returned, revoked). Not retryable.
    #[error("revoked lease: {0}")]
    LeaseRevoked(String),
    /// The client was configured wrongly (for example a base URL that is not an http(s) URL).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The server's error code, for [`ClientError::Api`] errors.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The HTTP status, for [`ClientError::Api`] errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Why the session ended, for 410 [`ErrorCode::SessionEnded`] errors.
    pub fn end_reason(&self) -> Option<EndReason> {
        match self {
            ClientError::Api { reason, .. } => *reason,
            _ => None,
        }
    }

    /// True when trying the same request again later may succeed: transport errors and HTTP 503.
    /// Never true for a 4xx answer, which would only be refused again.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Api { status, .. } => *status == 503,
            _ => false,
        }
    }

    /// True for 409 [`ErrorCode::NoSeatAvailable`]: every seat of the license is taken.
    pub fn is_no_seat_available(&self) -> bool {
        self.code() == Some(ErrorCode::NoSeatAvailable)
    }

    /// True for 410 [`ErrorCode::SessionEnded`].
    pub fn is_session_ended(&self) -> bool {
        self.code() == Some(ErrorCode::SessionEnded)
    }

    /// Builds an [`ClientError::Api`] from a non-2xx status and its body: the API's
    /// `{"error": {"code", "message"}}`, or the token endpoint's RFC 6749 shape
    /// `{"error": "invalid_client", "error_description": "..."}` (its code mapped to the nearest
    /// [`ErrorCode`], the RFC code kept at the end of the message).
    pub(crate) fn from_response(status: u16, body: &[u8]) -> Self {
        if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
            return ClientError::Api {
                status,
                code: error.code,
                message: error.message,
                reason: error.reason,
                queue_timeout: error.queue_timeout.unwrap_or(false),
            };
        }
        match serde_json::from_slice::<OAuthErrorBody>(body) {
            Ok(oauth) => ClientError::Api {
                status,
                code: oauth_code(oauth.error, status),
                message: match oauth.error_description {
                    Some(description) => format!("{description} ({})", oauth.error.as_str()),
                    None => oauth.error.as_str().to_owned(),
                },
                reason: None,
                queue_timeout: false,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let message = if text.is_empty() {
                    format!("HTTP {status} without an error body")
                } else {
                    truncate(text, 200)
                };
                ClientError::Api {
                    status,
                    code: code_for_status(status),
                    message,
                    reason: None,
                    queue_timeout: false,
                }
            }
        }
    }
}

/// The code a server would have sent with this status, for answers without an error body.
fn code_for_status(status: u16) -> ErrorCode {
    match status {
        400 | 422 => ErrorCode::InvalidRequest,
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        408 => ErrorCode::RequestTimeout,
        413 => ErrorCode::PayloadTooLarge,
        414 => ErrorCode::UriTooLong,
        415 => ErrorCode::UnsupportedMediaType,
        429 => ErrorCode::RateLimited,
        500 => ErrorCode::Internal,
        _ => ErrorCode::Unknown,
    }
}

/// The API code nearest to a token-endpoint error.
fn oauth_code(code: OAuthErrorCode, status: u16) -> ErrorCode {
    match (code, status) {
        (_, 429) => ErrorCode::RateLimited,
        (_, 413) => ErrorCode::PayloadTooLarge,
        (_, 408) => ErrorCode::RequestTimeout,
        (OAuthErrorCode::InvalidClient, _) => ErrorCode::Unauthorized,
        (OAuthErrorCode::InvalidGrant | OAuthErrorCode::UnauthorizedClient, _) => {
            ErrorCode::Forbidden
        }
        (
            OAuthErrorCode::InvalidRequest
            | OAuthErrorCode::UnsupportedGrantType
            | OAuthErrorCode::InvalidScope,
            _,
        ) => ErrorCode::InvalidRequest,
        (OAuthErrorCode::TemporarilyUnavailable, _) => ErrorCode::StoreUnavailable,
        (OAuthErrorCode::ServerError, _) => ErrorCode::Internal,
        (OAuthErrorCode::Unknown, _) => code_for_status(status),
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The message of an error and of all its sources, `: `-separated (reqwest's own message alone
/// is often just "error sending request").
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_decodes_into_an_api_error() {
        let err = ClientError::from_response(
            410,
            br#"{"error":{"code":"session_ended","message":"gone","reason":"revoked"}}"#,
        );
        assert_eq!(err.status(), Some(410));
        assert_eq!(err.code(), Some(ErrorCode::SessionEnded));
        assert_eq!(err.end_reason(), Some(EndReason::Revoked));
        assert!(err.is_session_ended());
        assert!(!err.is_retryable());
    }

    #[test]
    fn the_token_endpoints_rfc_6749_errors_decode_too() {
        let err = ClientError::from_response(
            401,
            br#"{"error":"invalid_client","error_description":"invalid client credentials"}"#,
        );
        assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
        assert_eq!(
            err.to_string(),
            "401 unauthorized: invalid client credentials (invalid_client)"
        );
        let err = ClientError::from_response(400, br#"{"error":"invalid_grant"}"#);
        assert_eq!(err.code(), Some(ErrorCode::Forbidden));
        let err = ClientError::from_response(
            429,
            br#"{"error":"invalid_client","error_description":"slow down"}"#,
        );
        assert_eq!(err.code(), Some(ErrorCode::RateLimited));
        assert!(!err.is_retryable());
        let err = ClientError::from_response(503, br#"{"error":"temporarily_unavailable"}"#);
        assert!(err.is_retryable());
    }

    #[test]
    fn a_body_that_is_not_an_error_body_falls_back_to_the_status() {
        let err = ClientError::from_response(404, b"<html>nope</html>");
        assert_eq!(err.code(), Some(ErrorCode::NotFound));
        assert!(err.to_string().contains("<html>nope</html>"));
        let err = ClientError::from_response(503, b"");
        assert_eq!(err.code(), Some(ErrorCode::Unknown));
        assert!(err.is_retryable());
        let err = ClientError::from_response(429, b"");
        assert_eq!(err.code(), Some(ErrorCode::RateLimited));
    }

    #[test]
    fn only_transport_errors_and_503_are_retryable() {
        assert!(ClientError::Transport("reset".into()).is_retryable());
        for status in [400, 401, 403, 404, 409, 410, 422, 429, 500, 502] {
            assert!(
                !ClientError::from_response(status, b"").is_retryable(),
                "{status}"
            );
        }
        assert!(!ClientError::Decode("x".into()).is_retryable());
        assert!(!ClientError::LeaseInvalid("x".into()).is_retryable());
    }

    #[test]
    fn long_bodies_are_truncated_on_a_char_boundary() {
        let body = "é".repeat(500);
        let err = ClientError::from_response(502, body.as_bytes());
        let ClientError::Api { message, .. } = err else {
            unreachable!()
        };
        assert_eq!(message.chars().count(), 201);
    }
}
