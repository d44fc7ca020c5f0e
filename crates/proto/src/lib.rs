//! Wire types of the Leasehold seat protocol v1: request and response bodies and the error body,
//! shared by the server, the Rust SDK and the CLI so that all three agree on every field.
//!
//! Times are RFC 3339 UTC strings on the wire (`time::OffsetDateTime` here). Request bodies
//! reject unknown fields so that a typo is a clear 400/422 instead of a silently ignored option.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

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
    /// 408: the request body did not arrive in time (`body_read_timeout`).
    RequestTimeout,
    /// 414: the request target (path and query) is longer than the server accepts.
    UriTooLong,
    /// 415: the body's media type or charset is not what the route reads (JSON in UTF-8).
    UnsupportedMediaType,
    /// 429: too many failed authentications from this address or with this credential;
    /// `Retry-After` says when to try again.
    RateLimited,
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
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RateLimited => "rate_limited",
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

/// The licensing model of a license.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LicenseModel {
    /// Up to `seats` sessions at once, any number of users and devices.
    #[default]
    ConcurrentSessions,
    /// Up to `seats` users may be active on the license; live sessions <= active users.
    RegisteredUsers,
    /// Bound to up to `seats` activated devices; sessions only from those, no concurrency count.
    NodeLocked,
}

impl LicenseModel {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseModel::ConcurrentSessions => "concurrent_sessions",
            LicenseModel::RegisteredUsers => "registered_users",
            LicenseModel::NodeLocked => "node_locked",
        }
    }
}

/// What opening a session on a full license does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    #[default]
    Deny,
    Queue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    Interactive,
    Service,
}

impl UserKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::Interactive => "interactive",
            UserKind::Service => "service",
        }
    }
}

/// `POST /v1/accounts`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub name: String,
}

/// 201 answer of `POST /v1/accounts`; `admin_token` is shown only here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AccountCreated {
    pub id: String,
    pub name: String,
    pub admin_token: String,
}

/// `POST /v1/licenses`: seats are given either directly (`seats`) or by `plan` + `extra_seats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateLicense {
    pub account_id: String,
    /// 1 to 200 printable characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub product: String,
    pub model: LicenseModel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_seats: Option<i64>,
    #[serde(default)]
    pub reserved: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactivity_timeout_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_session_lifetime_secs: Option<i64>,
    /// Optional absolute lifetime of interactive sessions (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive_session_lifetime_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_full: Option<OnFull>,
    /// Longest a client may wait in the queue (`on_full: "queue"`); `wait_secs` is capped to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_wait_secs: Option<i64>,
    /// Most live sessions one user may hold on the license (like FlexNet's MAX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions_per_user: Option<i64>,
    /// Sessions allowed beyond `seats`, as a count (`concurrent_sessions` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdraft_seats: Option<i64>,
    /// Sessions allowed beyond `seats`, as a percentage of them, rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdraft_percent: Option<i64>,
    /// How often clients heartbeat (sessions' `heartbeat_interval_secs`), shorter than the
    /// inactivity timeout. Default: a third of the timeout, at most 60 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_secs: Option<i64>,
    /// Start of the validity window (subscription); opens before it are refused.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub starts_at: Option<OffsetDateTime>,
    /// End of the validity window: live sessions end then with reason `license_expired`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
}

/// `PATCH /v1/licenses/{id}`: every field is optional; absent fields keep their value.
/// `plan: null` is not supported: to leave a plan, set `seats` directly.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PatchLicense {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_seats: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactivity_timeout_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_session_lifetime_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive_session_lifetime_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_full: Option<OnFull>,
    /// Longest a client may wait in the queue (`on_full: "queue"`); `wait_secs` is capped to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_wait_secs: Option<i64>,
    /// `0` removes the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions_per_user: Option<i64>,
    /// `0` removes the overdraft.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdraft_seats: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdraft_percent: Option<i64>,
    /// How often clients heartbeat, shorter than the inactivity timeout; `0` goes back to the
    /// default (a third of the timeout, at most 60 s). Live sessions learn it at their next
    /// heartbeat's lease or from their event stream (`license_changed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_secs: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    /// A suspended license refuses new sessions; live ones run to their end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<bool>,
}

/// A license as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct License {
    pub id: String,
    pub account_id: String,
    pub product: String,
    pub model: LicenseModel,
    /// Effective number of seats (from `plan` + `extra_seats` when a plan is set).
    pub seats: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default)]
    pub extra_seats: u32,
    pub reserved: Vec<String>,
    pub inactivity_timeout_secs: u64,
    /// How often clients heartbeat: set on the license, or the default (a third of the
    /// inactivity timeout, at most 60 s).
    #[serde(default)]
    pub heartbeat_interval_secs: u64,
    pub service_session_lifetime_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive_session_lifetime_secs: Option<u64>,
    pub on_full: OnFull,
    #[serde(default)]
    pub max_queue_wait_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions_per_user: Option<u32>,
    /// Sessions allowed beyond `seats` (resolved from a count or a percentage).
    #[serde(default)]
    pub overdraft: u32,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub suspended: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    /// Present on `GET /v1/licenses/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Usage {
    pub seats: u32,
    /// Sessions holding a seat. A session whose end has been decided (a mass end: the
    /// license's end, a revoke of all its sessions, deactivations) is not in use from the
    /// decision on.
    pub in_use: u32,
    pub available: u32,
    /// Sessions whose end has been decided and is still being written (a mass end in
    /// progress): not in use, not live anywhere; the audit log gets their `ended` events as
    /// they land.
    #[serde(default)]
    pub ending: u32,
    /// Live sessions beyond `seats`, taken from the overdraft.
    #[serde(default)]
    pub overdraft_in_use: u32,
    /// `registered_users`: users active on the license; `node_locked`: activated devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<u32>,
}

/// `PUT /v1/accounts/{id}/users/{username}`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutUser {
    pub kind: UserKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct User {
    pub account_id: String,
    pub username: String,
    pub kind: UserKind,
    pub active: bool,
    /// Service users only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Shown once, when the service user is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
}

/// 200 answer of `GET /v1/accounts/{id}/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UserList {
    pub users: Vec<User>,
}

/// 200 answer of `GET /v1/accounts/{id}/licenses`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LicenseList {
    pub licenses: Vec<License>,
}

/// 201 answer of `POST /v1/accounts/{id}/users/{username}/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenCreated {
    pub token: String,
}

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

/// `POST /v1/sessions`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OpenSession {
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub license_id: String,
    /// 1 to 200 printable characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub device_id: String,
    /// 1 to 200 printable characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Session {
    pub id: String,
    pub license_id: String,
    pub username: String,
    pub kind: UserKind,
    pub device_id: String,
    pub instance_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub opened_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: OffsetDateTime,
    pub heartbeat_interval_secs: u64,
    /// True when the session took an overdraft seat (beyond the purchased ones).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overdraft: bool,
    /// Signed lease (EdDSA JWT); present on open, absent in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

/// 200 answer of a heartbeat: the new expiry and a lease re-signed for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Heartbeat {
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

/// The event names of a session's stream (`GET /v1/sessions/{id}/events`, Server-Sent
/// Events). Each event's `data` is one JSON object: `open` a [`StreamOpened`], `revoked` and
/// `ended` a [`StreamEnded`] (the last event of a stream), `license_changed` a
/// [`LicenseChanged`], `queue` a [`QueueList`] of the owner's waiting requests. Comment lines (`: keep-alive`) come between events.
pub mod stream_events {
    /// First event: the stream is live and watching the session.
    pub const OPEN: &str = "open";
    /// An admin revoked the session (final).
    pub const REVOKED: &str = "revoked";
    /// The session ended for another reason: logout, inactivity, lifetime, deactivation,
    /// license expiry (final).
    pub const ENDED: &str = "ended";
    /// The license's terms changed (seats, heartbeat cadence, validity...).
    pub const LICENSE_CHANGED: &str = "license_changed";
    /// The session owner's own waiting requests in the license's queue moved (joined, moved
    /// up, served, left): a [`QueueList`](super::QueueList) of them with the queue's length.
    pub const QUEUE: &str = "queue";
}

/// Data of a stream's `open` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StreamOpened {
    pub session_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: OffsetDateTime,
    pub heartbeat_interval_secs: u64,
}

/// Data of a stream's final `revoked` or `ended` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StreamEnded {
    pub session_id: String,
    pub reason: EndReason,
}

/// Data of a stream's `license_changed` event: the terms a session's client acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LicenseChanged {
    pub license_id: String,
    pub seats: u32,
    pub inactivity_timeout_secs: u64,
    pub heartbeat_interval_secs: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub suspended: bool,
}

/// 200 answer of `GET /v1/licenses/{id}/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SessionList {
    pub sessions: Vec<Session>,
}

/// 200 answer of `DELETE /v1/licenses/{id}/sessions`: every live session of the license was
/// revoked. The decision is durable when this answers and none of them is live from then on
/// (heartbeats get 410 `session_ended` with reason `revoked`); their `ended` audit events land
/// in the background (`usage.ending` counts those still on their way).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SessionsRevoked {
    /// How many sessions were revoked.
    pub revoked: u32,
}

/// 200 answer of `GET /v1/licenses/{id}/usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UsageReport {
    pub license_id: String,
    pub now: Usage,
    /// Most sessions in use at once since `since`.
    pub high_water: u32,
    /// Fewest sessions in use at once since `since`.
    pub low_water: u32,
    /// Opens refused because the license was full, since `since`.
    pub denials: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub since: OffsetDateTime,
}

/// One client waiting for a seat of a queueing license.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QueueEntry {
    /// 1 is the next to be granted a seat.
    pub position: u32,
    pub username: String,
    pub device_id: String,
    pub instance_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub waiting_since: OffsetDateTime,
    pub waited_secs: u64,
}

/// 200 answer of `GET /v1/licenses/{id}/queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QueueList {
    /// Everyone waiting (admins), or only the caller's own waiting requests (users).
    pub waiting: Vec<QueueEntry>,
    /// How many wait in all.
    pub length: u32,
}

/// `PUT /v1/licenses/{id}/users/{username}` (`registered_users` licenses).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutLicenseUser {
    pub active: bool,
}

/// A user registered on a `registered_users` license.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LicenseUser {
    pub license_id: String,
    pub username: String,
    pub active: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LicenseUserList {
    pub users: Vec<LicenseUser>,
    /// Users active now, and the most that may be.
    pub active: u32,
    pub max_active: u32,
}

/// `POST /v1/licenses/{id}/devices` (`node_locked` licenses).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ActivateDevice {
    /// The device's fingerprint; sessions name it as `device_id`.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub fingerprint: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 200))]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Device {
    pub license_id: String,
    pub fingerprint: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub activated_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeviceList {
    pub devices: Vec<Device>,
    pub max_devices: u32,
}

/// A configured plan, as `GET /v1/plans` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PlanInfo {
    pub name: String,
    pub base_seats: u32,
    pub max_seats: u32,
}

/// Claims of a signed lease (the JWT payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseClaims {
    pub iss: String,
    /// Username holding the session.
    pub sub: String,
    /// Session id.
    pub sid: String,
    /// License id.
    pub lic: String,
    pub kind: UserKind,
    pub device_id: String,
    pub instance_id: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expiry, seconds since the Unix epoch (the session's `expires_at` when signed).
    pub exp: i64,
}

/// One key of `/.well-known/jwks.json` (RFC 8037 OKP key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

/// `/healthz` and `/livez`: `ok`, or `unavailable` with the reason (`/healthz` only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_as_their_stable_strings() {
        for code in [
            ErrorCode::Unauthorized,
            ErrorCode::NoSeatAvailable,
            ErrorCode::SessionEnded,
            ErrorCode::InvalidRequest,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn unknown_error_codes_decode_as_unknown() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"from_the_future","message":"x"}}"#).unwrap();
        assert_eq!(body.error.code, ErrorCode::Unknown);
    }

    #[test]
    fn open_session_rejects_unknown_fields() {
        let err = serde_json::from_str::<OpenSession>(
            r#"{"license_id":"a","device_id":"b","instance_id":"c","bogus":1}"#,
        );
        assert!(err.is_err());
    }
}
