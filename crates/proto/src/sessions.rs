//! Sessions: opening, heartbeats, listings, revokes, the queue, and the session event stream.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::{EndReason, UserKind};

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
    /// Borrow the seat for offline use until this instant: no heartbeat is needed, the
    /// session ends by itself then, and its lease expires then. The license's borrow policy
    /// decides (`borrow_not_allowed`, `borrow_too_long`, `borrow_limit_reached`); a borrow does
    /// not wait in a queue (no `wait_secs`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub borrow_until: Option<OffsetDateTime>,
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
    /// A borrowed seat: the session ends at this instant, with no heartbeat meanwhile (its
    /// `expires_at` is the same, or the license's end if earlier).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub borrow_until: Option<OffsetDateTime>,
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

/// A borrow lease that no longer holds a seat although it has not expired: the borrowed
/// session ended before its `borrow_until` (reclaimed by an admin, revoked, returned early, or
/// ended with the license or its user). The lease stays valid by its signature until
/// `lease_expires_at`, so clients check this list whenever they are online.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RevokedLease {
    /// The lease's `sid` claim.
    pub session_id: String,
    pub username: String,
    pub device_id: String,
    pub reason: EndReason,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub ended_at: OffsetDateTime,
    /// The lease's `exp`: the list names it until then.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub lease_expires_at: OffsetDateTime,
}

/// 200 answer of `GET /v1/licenses/{id}/revoked-leases`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RevokedLeaseList {
    pub license_id: String,
    pub leases: Vec<RevokedLease>,
}
