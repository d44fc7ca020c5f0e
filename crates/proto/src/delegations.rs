//! Dark sites: the files a cloud server and a local server exchange (a request, a delegation,
//! a return receipt), each a compact JWS (EdDSA) with its readable fields beside it, and the
//! bodies of the delegation routes.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::{Jwk, LicenseModel, OnFull};

/// `typ` of a signed delegation request.
pub const REQUEST_TYP: &str = "leasehold.delegation_request";
/// `typ` of a signed delegation.
pub const DELEGATION_TYP: &str = "leasehold.delegation";
/// `typ` of a signed return receipt.
pub const RECEIPT_TYP: &str = "leasehold.delegation_receipt";

/// `POST /v1/delegation-requests`: the local server's request for seats.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateDelegationRequest {
    /// A name for this site, shown on the cloud (1 to 200 characters).
    pub site: String,
}

/// request.json: signed by the local server's identity key (its lease signing key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DelegationRequestFile {
    /// The compact JWS of `DelegationRequestClaims`.
    pub request: String,
    /// The RFC 7638 thumbprint of `public_key`.
    pub server_id: String,
    pub site: String,
    pub public_key: Jwk,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
}

/// What a delegation request signs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelegationRequestClaims {
    pub typ: String,
    pub server_id: String,
    pub site: String,
    pub public_key: Jwk,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// `POST /v1/licenses/{id}/delegations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateDelegation {
    /// The `request` (JWS) of the local server's request.json.
    pub request: String,
    /// Seats to delegate: taken from the license's free seats at once.
    pub seats: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: OffsetDateTime,
    /// From when the local server may use it (default: now).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub not_before: Option<OffsetDateTime>,
}

/// `PATCH /v1/licenses/{id}/delegations/{delegation_id}`: a renewal (the next sequence).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenewDelegation {
    /// New number of seats (more take the difference from the free seats; fewer give the
    /// rest back at once).
    #[serde(default)]
    pub seats: Option<i64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
}

/// What a delegation signs: the license's terms for K seats, bound to one local server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelegationClaims {
    pub typ: String,
    pub delegation_id: String,
    pub sequence: u64,
    /// The cloud license the seats come from.
    pub license_id: String,
    pub product: String,
    pub model: LicenseModel,
    pub seats: u32,
    pub plan: Option<String>,
    pub reserved: Vec<String>,
    pub inactivity_timeout_secs: u64,
    pub service_session_lifetime_secs: u64,
    pub interactive_session_lifetime_secs: Option<u64>,
    pub heartbeat_interval_secs: Option<u64>,
    pub on_full: OnFull,
    pub max_queue_wait_secs: u64,
    pub max_sessions_per_user: Option<u32>,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The local server it is bound to (RFC 7638 thumbprint of `server_key`).
    pub server_id: String,
    /// The local server's Ed25519 public key (the JWK's `x`).
    pub server_key: String,
    pub site: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
}

/// delegation.json: the signed delegation and its readable fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DelegationFile {
    /// The compact JWS (EdDSA, signed by the cloud's key) of the delegation's claims.
    pub delegation: String,
    pub delegation_id: String,
    pub sequence: u64,
    pub license_id: String,
    pub seats: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: OffsetDateTime,
    pub server_id: String,
    pub site: String,
}

/// A delegation as the cloud lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Delegation {
    pub id: String,
    pub license_id: String,
    pub seats: u32,
    pub sequence: u64,
    /// `active`, `returned` or `expired`.
    pub status: String,
    pub server_id: String,
    pub site: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub returned_at: Option<OffsetDateTime>,
}

/// 200 answer of `GET /v1/licenses/{id}/delegations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DelegationList {
    pub delegations: Vec<Delegation>,
}

/// `POST /v1/delegations` (on the local server): import a delegation file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportDelegation {
    /// The `delegation` (JWS) of delegation.json.
    pub delegation: String,
    /// The local account that holds the license: needed at the first import; a renewal
    /// stays in the license's account (naming another is a 409 `conflict`).
    #[serde(default)]
    pub account_id: Option<String>,
}

/// Answer of an import: the local license the delegation is (201 created, 200 renewed or
/// unchanged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImportedDelegation {
    pub delegation_id: String,
    pub sequence: u64,
    /// The local license (its id is the delegation's id).
    pub license_id: String,
    pub account_id: String,
    pub seats: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: OffsetDateTime,
    /// `created`, `renewed` or `unchanged`.
    pub outcome: String,
}

/// What a return receipt signs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptClaims {
    pub typ: String,
    pub delegation_id: String,
    /// The cloud license.
    pub license_id: String,
    pub server_id: String,
    pub sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub returned_at: OffsetDateTime,
}

/// receipt.json: the local server's signed statement that it stopped using the delegation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DelegationReceipt {
    /// The compact JWS (EdDSA, the local server's key) of the receipt's claims.
    pub receipt: String,
    pub delegation_id: String,
    pub license_id: String,
    pub server_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub returned_at: OffsetDateTime,
}

/// `POST /v1/licenses/{id}/delegations/{delegation_id}/receipt` (on the cloud).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportReceipt {
    /// The `receipt` (JWS) of receipt.json.
    pub receipt: String,
}

/// `typ` of a signed usage report.
pub const REPORT_TYP: &str = "leasehold.delegation_report";

/// One hour of a local license's use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HourUsage {
    /// The start of the hour.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub hour: OffsetDateTime,
    /// Sessions opened in the hour.
    pub opened: u64,
    /// Most sessions in use at once in the hour.
    pub peak: u32,
    /// Fewest sessions in use at once in the hour.
    pub low: u32,
    /// Opens refused for want of a seat.
    pub denials: u64,
    /// Sessions opened after waiting in the queue.
    pub queue_waits: u64,
}

/// What a usage report signs: the local license's use per hour since the delegation began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportClaims {
    pub typ: String,
    pub delegation_id: String,
    /// The cloud license.
    pub license_id: String,
    pub server_id: String,
    /// Raised by each report the local server writes for this delegation.
    pub sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    pub hours: Vec<HourUsage>,
}

/// report.json: the local server's signed usage report, with its readable fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DelegationReport {
    /// The compact JWS (EdDSA, the local server's key) of the report's claims.
    pub report: String,
    pub delegation_id: String,
    pub license_id: String,
    pub server_id: String,
    pub sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub generated_at: OffsetDateTime,
    pub hours: Vec<HourUsage>,
}

/// `POST /v1/licenses/{id}/delegations/{delegation_id}/reports` (on the cloud).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportReport {
    /// The `report` (JWS) of report.json.
    pub report: String,
}

/// The totals of the latest usage report the cloud kept for a delegation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SiteUsage {
    pub delegation_id: String,
    pub site: String,
    pub seats: u32,
    /// `active`, `returned` or `expired`.
    pub status: String,
    /// The report's sequence (absent: no report imported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_sequence: Option<u64>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub reported_at: Option<OffsetDateTime>,
    /// Sessions opened at the site since the delegation began.
    pub opened: u64,
    /// Most sessions in use at once at the site.
    pub peak: u32,
    pub denials: u64,
    pub queue_waits: u64,
}

/// Answer of a report import: what the cloud keeps for the delegation (unchanged when the
/// report was not newer than the one kept), and the hours of the kept report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImportedReport {
    pub site: SiteUsage,
    /// Whether this report replaced the one kept (`false`: the same or an older one).
    pub kept: bool,
    pub hours: Vec<HourUsage>,
}
