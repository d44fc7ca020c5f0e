//! Signed leases and the keys that verify them, and the health answer.

use serde::{Deserialize, Serialize};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::UserKind;

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
    /// A borrow lease: the seat is held offline until `exp` with no heartbeat, so the lease
    /// alone lets its device run until then (unless the license lists it as revoked).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub borrowed: bool,
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
