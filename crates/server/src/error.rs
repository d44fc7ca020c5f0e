//! `ApiError`: the one error type of the HTTP layer, and the one place where errors become
//! status codes and `{"error": {"code", "message"}}` bodies. Internal causes are logged, never
//! sent to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use leasehold_core::RuleError;
use leasehold_proto::{EndReason, ErrorBody, ErrorCode, ErrorDetail};
use leasehold_store::StoreError;

/// The challenge of every 401 (RFC 6750 section 3): the realm, and an error code when a token
/// was presented (`invalid_token`) or the header was malformed (`invalid_request`).
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"leasehold\"";
const INVALID_TOKEN_CHALLENGE: &str = "Bearer realm=\"leasehold\", error=\"invalid_token\"";
const INVALID_REQUEST_CHALLENGE: &str = "Bearer realm=\"leasehold\", error=\"invalid_request\"";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `unauthorized`, no credential presented (`WWW-Authenticate: Bearer realm=...`)
    #[error("{0}")]
    Unauthorized(String),
    /// 401 `unauthorized`, a bearer token that is unknown, expired or revoked
    /// (`WWW-Authenticate: Bearer ..., error="invalid_token"`)
    #[error("{0}")]
    InvalidToken(String),
    /// 400 `invalid_request`, a malformed `Authorization: Bearer` header
    /// (`WWW-Authenticate: Bearer ..., error="invalid_request"`)
    #[error("{0}")]
    MalformedAuthorization(String),
    /// 429 `rate_limited`, with `Retry-After`: too many failed authentications from this
    /// address or with this credential
    #[error("too many failed authentications {scope}; retry in {retry_after_secs} s")]
    RateLimited {
        scope: &'static str,
        retry_after_secs: u64,
    },
    /// 408 `request_timeout`: the body did not arrive within the body-read timeout
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(u64),
    /// 414 `uri_too_long`
    #[error("the request target is longer than {0} bytes")]
    UriTooLong(usize),
    /// 415 `unsupported_media_type`
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 403 `forbidden`
    #[error("{0}")]
    Forbidden(String),
    /// 404 `not_found`
    #[error("{0} not found")]
    NotFound(String),
    /// 405 `method_not_allowed`
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 400 `invalid_request`: unreadable request (syntax, content type).
    #[error("{0}")]
    BadRequest(String),
    /// 422 `invalid_request`: readable, but breaks a rule of the input.
    #[error("{0}")]
    Unprocessable(String),
    /// 400 `unknown_event_kind`: an audit `event` filter names no kind of event.
    #[error("unknown audit event kind {0:?}; the kinds are {1}")]
    UnknownEventKind(String, String),
    /// 400 `invalid_cursor`: an audit `cursor` this server did not give out.
    #[error("the cursor is not one this server gave out")]
    InvalidCursor,
    /// 400 `invalid_usage_range`: a usage query's period is not one (see the message).
    #[error("{0}")]
    InvalidUsageRange(String),
    /// 400 `unknown_bucket`: a usage query's `bucket` is none of minute, hour, day, month.
    #[error("unknown bucket {0:?}: give minute, hour, day or month")]
    UnknownBucket(String),
    /// 413 `payload_too_large`
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 409 `conflict`
    #[error("{0}")]
    Conflict(String),
    /// 409 `no_seat_available`
    #[error("{message}")]
    NoSeat {
        message: String,
        queue_timeout: bool,
    },
    /// 409 `plan_cap_exceeded`
    #[error("{0}")]
    PlanCapExceeded(String),
    /// 403 `user_inactive`
    #[error("user {0} is inactive")]
    UserInactive(String),
    /// A licensing rule's refusal, with its own stable code: 403 `user_inactive` /
    /// `device_not_activated`, 409 `license_not_active` / `user_session_limit` /
    /// `active_users_exhausted` / `activations_exhausted`.
    #[error("{0}")]
    Refused(RuleError),
    /// 410 `session_ended`, with the reason
    #[error("the session has ended ({})", .0.as_str())]
    SessionEnded(EndReason),
    /// 403 `csrf_token_invalid`: a cookie-authenticated (dashboard) request that changes state
    /// without the page's CSRF token
    #[error("{0}")]
    CsrfRejected(String),
    /// 422 `webhook_target_refused`: a webhook URL whose host does not resolve or is not a
    /// public address (server-side request forgery guard)
    #[error("{0}")]
    WebhookTargetRefused(String),
    /// 503 `store_unavailable`
    #[error("storage is unavailable")]
    StoreUnavailable(String),
    /// 500 `internal`
    #[error("internal error")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            ApiError::Unauthorized(_) | ApiError::InvalidToken(_) => {
                (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized)
            }
            ApiError::MalformedAuthorization(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest)
            }
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, ErrorCode::RequestTimeout),
            ApiError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, ErrorCode::UriTooLong),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
            ),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed)
            }
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest),
            ApiError::Unprocessable(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidRequest)
            }
            ApiError::UnknownEventKind(..) => {
                (StatusCode::BAD_REQUEST, ErrorCode::UnknownEventKind)
            }
            ApiError::InvalidCursor => (StatusCode::BAD_REQUEST, ErrorCode::InvalidCursor),
            ApiError::InvalidUsageRange(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidUsageRange)
            }
            ApiError::UnknownBucket(_) => (StatusCode::BAD_REQUEST, ErrorCode::UnknownBucket),
            ApiError::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            ApiError::NoSeat { .. } => (StatusCode::CONFLICT, ErrorCode::NoSeatAvailable),
            ApiError::PlanCapExceeded(_) => (StatusCode::CONFLICT, ErrorCode::PlanCapExceeded),
            ApiError::UserInactive(_) => (StatusCode::FORBIDDEN, ErrorCode::UserInactive),
            ApiError::Refused(rule) => {
                let code = rule.code();
                let status = match code {
                    ErrorCode::UserInactive | ErrorCode::DeviceNotActivated => {
                        StatusCode::FORBIDDEN
                    }
                    ErrorCode::DelegationSignatureInvalid | ErrorCode::DelegationWrongServer => {
                        StatusCode::UNPROCESSABLE_ENTITY
                    }
                    _ => StatusCode::CONFLICT,
                };
                (status, code)
            }
            ApiError::SessionEnded(_) => (StatusCode::GONE, ErrorCode::SessionEnded),
            ApiError::CsrfRejected(_) => (StatusCode::FORBIDDEN, ErrorCode::CsrfTokenInvalid),
            ApiError::WebhookTargetRefused(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::WebhookTargetRefused,
            ),
            ApiError::StoreUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::StoreUnavailable)
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            ApiError::StoreUnavailable(cause) | ApiError::Internal(cause) => {
                tracing::error!(%cause, code = %code, "request failed");
            }
            _ => {}
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
                reason: match &self {
                    ApiError::SessionEnded(reason) => Some(*reason),
                    _ => None,
                },
                queue_timeout: match &self {
                    ApiError::NoSeat {
                        queue_timeout: true,
                        ..
                    } => Some(true),
                    _ => None,
                },
            },
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(BEARER_CHALLENGE),
                );
            }
            ApiError::InvalidToken(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(INVALID_TOKEN_CHALLENGE),
                );
            }
            ApiError::MalformedAuthorization(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(INVALID_REQUEST_CHALLENGE),
                );
            }
            ApiError::RateLimited {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            // The body was not read to its end: the connection cannot carry another request.
            ApiError::RequestTimeout(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<RuleError> for ApiError {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::Invalid(msg) => ApiError::Unprocessable(msg),
            RuleError::UnknownPlan(_) => ApiError::Unprocessable(e.to_string()),
            RuleError::PlanCapExceeded { .. } => ApiError::PlanCapExceeded(e.to_string()),
            RuleError::NoSeatAvailable { .. } => ApiError::NoSeat {
                message: e.to_string(),
                queue_timeout: false,
            },
            RuleError::SessionEnded(reason) => ApiError::SessionEnded(reason),
            RuleError::UserSessionLimit { .. }
            | RuleError::LicenseNotActive(_)
            | RuleError::UserNotActive(_)
            | RuleError::DeviceNotActivated(_)
            | RuleError::ActiveUsersExhausted { .. }
            | RuleError::ActivationsExhausted { .. }
            | RuleError::BorrowNotAllowed(_)
            | RuleError::BorrowTooLong(_)
            | RuleError::BorrowLimitReached { .. }
            | RuleError::NotEnoughFreeSeats { .. }
            | RuleError::DelegationSignatureInvalid(_)
            | RuleError::DelegationWrongServer(_)
            | RuleError::DelegationExpired(_)
            | RuleError::DelegationNotYetValid(_)
            | RuleError::DelegationSuperseded(_)
            | RuleError::DelegationReturned(_) => ApiError::Refused(e),
            RuleError::DelegationUnknown(_) => ApiError::NotFound(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(what.to_string()),
            StoreError::Conflict(msg) => ApiError::Conflict(msg),
            StoreError::Rule(rule) => rule.into(),
            StoreError::Unavailable(cause) | StoreError::Contended(cause) => {
                ApiError::StoreUnavailable(cause)
            }
        }
    }
}
