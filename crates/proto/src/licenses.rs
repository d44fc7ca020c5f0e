//! Licenses: their models and terms, creation and change, usage, registered users, node-locked devices and plans.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// A license's alerts (issue 17): raised as `license.threshold` and `license.denials` webhook
/// events and shown in `/metrics`. In a `PATCH`, a field set to `0` removes that alert and an
/// absent one keeps its value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LicenseAlerts {
    /// Alert when the seats in use reach this percentage of the seats (1 to 100), and again
    /// when they fall below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_percent: Option<i64>,
    /// Alert when this many opens are denied within an hour (1 to 1,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denials_per_hour: Option<i64>,
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

/// `POST /v1/licenses`: seats are given either directly (`seats`) or by `plan` + `extra_seats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateLicense {
    pub account_id: String,
    /// 1 to 200 printable characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub product: String,
    /// `concurrent_sessions` when left out.
    #[serde(default)]
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
    /// Offline borrowing: the longest borrow in days (1 to 366); absent: the license lends
    /// no seats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_borrow_days: Option<i64>,
    /// Most seats borrowed at once (needs `max_borrow_days`); absent: no limit of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_borrowed_seats: Option<i64>,
    /// Seats that must stay online, never borrowed (FlexNet's `BORROW_LOWWATER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borrow_lowwater: Option<i64>,
    /// Alerts near the seat cap and on denials (webhooks `license.threshold`,
    /// `license.denials`; `/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<LicenseAlerts>,
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
    /// The longest borrow in days; `0` turns borrowing off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_borrow_days: Option<i64>,
    /// Most seats borrowed at once; `0` removes this limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_borrowed_seats: Option<i64>,
    /// Seats that must stay online, never borrowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borrow_lowwater: Option<i64>,
    /// Alerts: a field set changes that alert (`0` removes it), an absent one keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<LicenseAlerts>,
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
    /// Offline borrowing: the longest borrow in days; absent: the license lends no seats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_borrow_days: Option<u32>,
    /// Most seats borrowed at once, when limited apart from `borrow_lowwater`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_borrowed_seats: Option<u32>,
    /// Seats that stay online, never borrowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borrow_lowwater: Option<u32>,
    /// The license's alerts, when any is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<LicenseAlerts>,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    /// On a local server (dark site): the delegation this license was imported from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_id: Option<String>,
    /// On a local server: when the delegation ends (the license stops granting then); a
    /// warning is logged and counted in metrics when under 7 days remain.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub delegation_expires_at: Option<OffsetDateTime>,
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
    /// Live sessions borrowed for offline use (among `in_use`).
    #[serde(default)]
    pub borrowed: u32,
    /// Seats delegated to local servers (dark sites) now: not available here while away.
    #[serde(default)]
    pub delegated: u32,
    /// `registered_users`: users active on the license; `node_locked`: activated devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<u32>,
}

/// 200 answer of `GET /v1/accounts/{id}/licenses`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LicenseList {
    pub licenses: Vec<License>,
}

/// 200 answer of `GET /v1/licenses/{id}/usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UsageReport {
    pub license_id: String,
    pub now: Usage,
    /// Most sessions in use at once over the period (`from` to `to`).
    pub high_water: u32,
    /// Fewest sessions in use at once over the period.
    pub low_water: u32,
    /// Opens refused because the license was full, over the period.
    pub denials: u64,
    /// The period's start (= `from`).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub since: OffsetDateTime,
    /// The period: `from` aligned down and `to` aligned up to the bucket (UTC).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub to: OffsetDateTime,
    /// `minute`, `hour`, `day` or `month`.
    pub bucket: String,
    /// Every bucket of the period up to now, in order.
    pub buckets: Vec<crate::UsageBucket>,
    pub utilization: crate::Utilization,
    /// Dark sites: the delegations of the license with the totals of their latest usage
    /// reports (the sites' use is not in the figures above).
    #[serde(default)]
    pub sites: Vec<crate::SiteUsage>,
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
