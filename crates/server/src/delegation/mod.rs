//! Dark sites: a cloud server delegates K seats of a license to a local server as a signed
//! file; the local server imports it as a license of its own and serves the same protocol.
//!
//! - `cloud`: the vendor's side: delegations created from a local server's signed request
//!   (the seats leave the license at once, atomically with the opens), listed, renewed (the
//!   next sequence), and their return receipts imported (the seats come back). Expiry needs no
//!   call: the seat rule counts a delegation only until its `expires_at`.
//! - `local`: the local server's side: the signed request for seats, the import of a
//!   delegation (vendor key, binding to this server, window, sequence), the return.
//! - `report`: usage carried back: the local server's signed report per hour, the cloud's
//!   import (the newest report kept).
//! - `watch`: warnings ahead of a delegation's end on the local server.
//! - `sync`: the online mode (`upstream`): renewals fetched and reports pushed by themselves.
//!
//! Every file is a compact JWS (`crate::jws`) signed with a server's lease signing key, which
//! is its identity: its id is the key's RFC 7638 thumbprint.

pub mod cloud;
pub mod local;
pub mod report;
pub mod sync;
pub mod watch;

use std::path::Path;

use anyhow::Context;
use leasehold_core::delegation::Delegated;
use leasehold_core::RuleError;
use leasehold_proto as proto;
use leasehold_store::License;

use crate::clock::to_offset;

/// Reads the vendor's keys (a saved JWKS) named by `vendor_jwks`; none configured: no keys,
/// and imports are refused.
pub fn load_vendor_keys(path: Option<&Path>) -> anyhow::Result<Vec<proto::Jwk>> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the vendor JWKS {}", path.display()))?;
    let jwks: proto::Jwks = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JWKS (`{{\"keys\": [...]}}`)", path.display()))?;
    for key in &jwks.keys {
        crate::jws::key_of(key)
            .map_err(|e| anyhow::anyhow!("{}: key {}: {e}", path.display(), key.kid))?;
    }
    if jwks.keys.is_empty() {
        anyhow::bail!("{}: the JWKS has no key", path.display());
    }
    Ok(jwks.keys)
}

/// A refusal of a file whose signature or content does not verify.
pub(crate) fn bad_signature(msg: impl std::fmt::Display) -> RuleError {
    RuleError::DelegationSignatureInvalid(msg.to_string())
}

/// A file a delegation's local server signs and the cloud imports: a return receipt or a usage
/// report. Its claims name what it is and which delegation it belongs to.
pub(crate) trait SiteFile: serde::de::DeserializeOwned {
    /// `receipt`, `report`: for the refusals' words.
    const WHAT: &'static str;
    const TYP: &'static str;
    /// `delegation_id`, `license_id`, `server_id` of the claims (`typ` is checked before they
    /// are read).
    fn names(&self) -> [&str; 3];
}

impl SiteFile for proto::ReceiptClaims {
    const WHAT: &'static str = "receipt";
    const TYP: &'static str = proto::RECEIPT_TYP;
    fn names(&self) -> [&str; 3] {
        [&self.delegation_id, &self.license_id, &self.server_id]
    }
}

impl SiteFile for proto::ReportClaims {
    const WHAT: &'static str = "report";
    const TYP: &'static str = proto::REPORT_TYP;
    fn names(&self) -> [&str; 3] {
        [&self.delegation_id, &self.license_id, &self.server_id]
    }
}

/// The delegation `delegation_id` of the cloud `license` and the claims of `file`, a compact
/// JWS its local server signed: refused unless signed by that server's key and naming this
/// delegation, this license and that server.
pub(crate) fn verify_site_file<'a, F: SiteFile>(
    license: &'a License,
    delegation_id: &str,
    file: &str,
) -> Result<(&'a Delegated, F), RuleError> {
    let Some(d) = license.terms.delegation(delegation_id) else {
        return Err(RuleError::DelegationUnknown(delegation_id.to_owned()));
    };
    let key = crate::jws::key_from_x(&d.server_key).map_err(bad_signature)?;
    let what = F::WHAT;
    // The signature first, then what the file says: a file of the right server that is not a
    // `what` (a report offered as a receipt) is refused as such, not as unsigned.
    let content: serde_json::Value = crate::jws::verify(file, &key).map_err(|e| {
        bad_signature(format!(
            "the {what} is not signed by the delegation's server: {e}"
        ))
    })?;
    if content.get("typ").and_then(serde_json::Value::as_str) != Some(F::TYP) {
        return Err(bad_signature(format!(
            "the file is not a {what} (its typ is not {})",
            F::TYP
        )));
    }
    let claims = F::deserialize(content)
        .map_err(|e| bad_signature(format!("the {what} is malformed: {e}")))?;
    if claims.names() != [d.id.as_str(), &license.id, &d.server_id] {
        return Err(bad_signature(format!(
            "the {what} is not one of this delegation"
        )));
    }
    Ok((d, claims))
}

/// The terms a delegation signs, from the cloud license and its delegation record.
pub(crate) fn claims_of(license: &License, d: &Delegated) -> proto::DelegationClaims {
    let t = &license.terms;
    proto::DelegationClaims {
        typ: proto::DELEGATION_TYP.into(),
        delegation_id: d.id.clone(),
        sequence: d.sequence,
        license_id: license.id.clone(),
        product: t.product.clone(),
        model: license.model,
        seats: d.seats,
        plan: t.plan().map(str::to_owned),
        reserved: t.reserved.iter().map(|u| u.to_string()).collect(),
        inactivity_timeout_secs: t.inactivity_timeout_secs,
        service_session_lifetime_secs: t.service_session_lifetime_secs,
        interactive_session_lifetime_secs: t.interactive_session_lifetime_secs,
        heartbeat_interval_secs: t.heartbeat_interval_secs,
        on_full: t.on_full,
        max_queue_wait_secs: t.max_queue_wait_secs,
        max_sessions_per_user: t.max_sessions_per_user,
        not_before: to_offset(d.not_before),
        expires_at: to_offset(d.expires_at),
        server_id: d.server_id.clone(),
        server_key: d.server_key.clone(),
        site: d.site.clone(),
        issued_at: to_offset(d.created_at),
    }
}

/// The delegation as the cloud lists it.
pub(crate) fn view(
    license_id: &str,
    d: &Delegated,
    now: leasehold_core::Timestamp,
) -> proto::Delegation {
    proto::Delegation {
        id: d.id.clone(),
        license_id: license_id.to_owned(),
        seats: d.seats,
        sequence: d.sequence,
        status: d.status(now).as_str().into(),
        server_id: d.server_id.clone(),
        site: d.site.clone(),
        not_before: to_offset(d.not_before),
        expires_at: to_offset(d.expires_at),
        created_at: to_offset(d.created_at),
        returned_at: d.returned_at.map(to_offset),
    }
}
