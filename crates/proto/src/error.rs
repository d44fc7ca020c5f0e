//! Error answers: the stable error codes, the error body, and why a session ended.

use serde::{Deserialize, Serialize};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Stable error codes. The string form (snake_case) is what clients match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 401: no token, or a token the server does not know.
    Unauthorized,
    /// 403: the token is valid but may not do this.
    Forbidden,
    /// 404: no such resource (or not visible to this caller).
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 400/422: the request is malformed or breaks a rule of the input.
    InvalidRequest,
    /// 413: the body is larger than the server accepts.
    PayloadTooLarge,
    /// 409: every seat of the license is taken.
    NoSeatAvailable,
    /// 409: a plan's cap on seats would be exceeded.
    PlanCapExceeded,
    /// 409: the resource already exists or conflicts with another.
    Conflict,
    /// 410: the session has ended; `reason` says why.
    SessionEnded,
    /// 403: the user is inactive (on the account, or on a `registered_users` license).
    UserInactive,
    /// 409: all active-user slots of a `registered_users` license are taken.
    ActiveUsersExhausted,
    /// 403: the device is not activated on a `node_locked` license.
    DeviceNotActivated,
    /// 409: all device activations of a `node_locked` license are taken.
    ActivationsExhausted,
    /// 409: the user already holds the license's maximum of sessions per user.
    UserSessionLimit,
    /// 409: the license is outside its validity window or suspended.
    LicenseNotActive,
    /// 409: the license does not lend seats, or not to this user (service users never borrow).
    BorrowNotAllowed,
    /// 409: `borrow_until` is past the license's longest borrow or its end, or not in the future.
    BorrowTooLong,
    /// 409: as many seats as the license lends are borrowed already.
    BorrowLimitReached,
    /// 408: the request body did not arrive in time (`body_read_timeout`).
    RequestTimeout,
    /// 414: the request target (path and query) is longer than the server accepts.
    UriTooLong,
    /// 415: the body's media type or charset is not what the route reads (JSON in UTF-8).
    UnsupportedMediaType,
    /// 429: too many failed authentications from this address or with this credential;
    /// `Retry-After` says when to try again.
    RateLimited,
    /// 400: an `event` filter of the audit log names a kind of event that does not exist.
    UnknownEventKind,
    /// 400: a `cursor` of the audit log that this server did not give out.
    InvalidCursor,
    /// 403: a dashboard request that changes something came without its page's CSRF token.
    CsrfTokenInvalid,
    /// 422: a webhook's target is refused: its host does not resolve, or resolves to a
    /// loopback, link-local, private or otherwise non-public address (unless the server allows
    /// private targets).
    WebhookTargetRefused,
    /// 400: a usage query's period is not one (`from`/`to` not RFC 3339, `from` not before
    /// `to`, more than 10,000 buckets or more than 5 years).
    InvalidUsageRange,
    /// 400: a usage query's `bucket` is not `minute`, `hour`, `day` or `month`.
    UnknownBucket,
    /// 409: a delegation asks for more seats than the license has free.
    NotEnoughFreeSeats,
    /// 422: a delegation, request, report or receipt file whose signature does not verify
    /// (altered, or signed by a key this server does not trust).
    DelegationSignatureInvalid,
    /// 422: a delegation bound to another local server's key.
    DelegationWrongServer,
    /// 409: the delegation is past its `expires_at`.
    DelegationExpired,
    /// 409: the delegation is not valid yet (`not_before`).
    DelegationNotYetValid,
    /// 409: a delegation older (lower sequence) than the one imported before.
    DelegationSuperseded,
    /// 409: the delegation was returned.
    DelegationReturned,
    /// 503: the storage backend cannot be reached.
    StoreUnavailable,
    /// 500: an internal error; the cause is in the server log.
    Internal,
    /// A code this version of the client does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::NoSeatAvailable => "no_seat_available",
            ErrorCode::PlanCapExceeded => "plan_cap_exceeded",
            ErrorCode::Conflict => "conflict",
            ErrorCode::SessionEnded => "session_ended",
            ErrorCode::UserInactive => "user_inactive",
            ErrorCode::ActiveUsersExhausted => "active_users_exhausted",
            ErrorCode::DeviceNotActivated => "device_not_activated",
            ErrorCode::ActivationsExhausted => "activations_exhausted",
            ErrorCode::UserSessionLimit => "user_session_limit",
            ErrorCode::LicenseNotActive => "license_not_active",
            ErrorCode::BorrowNotAllowed => "borrow_not_allowed",
            ErrorCode::BorrowTooLong => "borrow_too_long",
            ErrorCode::BorrowLimitReached => "borrow_limit_reached",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UnknownEventKind => "unknown_event_kind",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::CsrfTokenInvalid => "csrf_token_invalid",
            ErrorCode::WebhookTargetRefused => "webhook_target_refused",
            ErrorCode::InvalidUsageRange => "invalid_usage_range",
            ErrorCode::UnknownBucket => "unknown_bucket",
            ErrorCode::NotEnoughFreeSeats => "not_enough_free_seats",
            ErrorCode::DelegationSignatureInvalid => "delegation_signature_invalid",
            ErrorCode::DelegationWrongServer => "delegation_wrong_server",
            ErrorCode::DelegationExpired => "delegation_expired",
            ErrorCode::DelegationNotYetValid => "delegation_not_yet_valid",
            ErrorCode::DelegationSuperseded => "delegation_superseded",
            ErrorCode::DelegationReturned => "delegation_returned",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a session ended. Sent as `reason` with `session_ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Logout,
    Revoked,
    Inactivity,
    Lifetime,
    UserDeactivated,
    DeviceDeactivated,
    LicenseExpired,
    /// A borrowed seat given back early by its owner.
    Returned,
    /// A borrowed seat taken back by an admin (a lost or stolen device): its lease is listed
    /// as revoked until it expires.
    Reclaimed,
    /// A borrow that reached its `borrow_until`.
    BorrowEnded,
    /// On a local server (dark site): the license's delegation reached its `expires_at`.
    DelegationExpired,
    /// On a local server: the license's delegation was returned to the cloud.
    DelegationReturned,
    #[serde(other)]
    Unknown,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::Revoked => "revoked",
            EndReason::Inactivity => "inactivity",
            EndReason::Lifetime => "lifetime",
            EndReason::UserDeactivated => "user_deactivated",
            EndReason::DeviceDeactivated => "device_deactivated",
            EndReason::LicenseExpired => "license_expired",
            EndReason::Returned => "returned",
            EndReason::Reclaimed => "reclaimed",
            EndReason::BorrowEnded => "borrow_ended",
            EndReason::DelegationExpired => "delegation_expired",
            EndReason::DelegationReturned => "delegation_returned",
            EndReason::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "logout" => EndReason::Logout,
            "revoked" => EndReason::Revoked,
            "inactivity" => EndReason::Inactivity,
            "lifetime" => EndReason::Lifetime,
            "user_deactivated" => EndReason::UserDeactivated,
            "device_deactivated" => EndReason::DeviceDeactivated,
            "license_expired" => EndReason::LicenseExpired,
            "returned" => EndReason::Returned,
            "reclaimed" => EndReason::Reclaimed,
            "borrow_ended" => EndReason::BorrowEnded,
            "delegation_expired" => EndReason::DelegationExpired,
            "delegation_returned" => EndReason::DelegationReturned,
            _ => return None,
        })
    }
}

/// `{"error": {"code": "...", "message": "..."}}`, the body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// With `session_ended`: why the session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<EndReason>,
    /// With `no_seat_available` after waiting in a queue: the wait ran out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<bool>,
}
