//! How records look on the wire: store records to the `leasehold_proto` types (times as
//! RFC 3339), and the audit log's shape.

use leasehold_proto as proto;
use leasehold_store::{
    AuditEvent, DeviceActivation, License, LicenseUser, QueuedRequest, RevokedLease, Session,
    UsageStats, User,
};

use crate::clock::to_offset;

pub fn license(license: &License) -> proto::License {
    let t = &license.terms;
    proto::License {
        id: license.id.clone(),
        account_id: license.account_id.clone(),
        product: t.product.clone(),
        model: license.model,
        seats: t.seats,
        plan: t.plan().map(str::to_owned),
        extra_seats: t.extra_seats(),
        reserved: t.reserved.iter().map(|u| u.to_string()).collect(),
        inactivity_timeout_secs: t.inactivity_timeout_secs,
        heartbeat_interval_secs: t.heartbeat_interval_secs(),
        service_session_lifetime_secs: t.service_session_lifetime_secs,
        interactive_session_lifetime_secs: t.interactive_session_lifetime_secs,
        on_full: t.on_full,
        max_queue_wait_secs: t.max_queue_wait_secs,
        max_sessions_per_user: t.max_sessions_per_user,
        overdraft: t.overdraft_seats(),
        starts_at: t.starts_at.map(to_offset),
        expires_at: t.expires_at.map(to_offset),
        suspended: t.suspended,
        max_borrow_days: t.borrow.map(|b| b.max_days),
        max_borrowed_seats: t.borrow.and_then(|b| b.max_seats),
        borrow_lowwater: t.borrow.map(|b| b.lowwater),
        alerts: t.alerts.view(),
        created_at: to_offset(license.created_at),
        delegation_id: t.delegated_from.as_ref().map(|f| f.delegation_id.clone()),
        delegation_expires_at: t.delegated_from.as_ref().and(t.expires_at).map(to_offset),
        usage: None,
    }
}

pub fn session(s: &Session, lease: Option<String>) -> proto::Session {
    proto::Session {
        id: s.id.clone(),
        license_id: s.license_id.to_string(),
        username: s.username.clone(),
        kind: s.kind,
        device_id: s.device_id.clone(),
        instance_id: s.instance_id.clone(),
        opened_at: to_offset(s.clock.opened_at),
        expires_at: to_offset(s.clock.expires_at),
        heartbeat_interval_secs: s.heartbeat_interval_secs,
        overdraft: s.overdraft,
        borrow_until: s.clock.borrow_until.map(to_offset),
        lease,
    }
}

pub fn session_list(sessions: &[Session]) -> proto::SessionList {
    proto::SessionList {
        sessions: sessions.iter().map(|s| session(s, None)).collect(),
    }
}

pub fn usage(u: &UsageStats) -> proto::Usage {
    proto::Usage {
        seats: u.seats,
        in_use: u.in_use,
        available: u.seats.saturating_sub(u.delegated).saturating_sub(u.in_use),
        ending: u.ending,
        overdraft_in_use: u.overdraft_in_use,
        borrowed: u.borrowed,
        delegated: u.delegated,
        activations: u.activations,
    }
}

pub fn revoked_leases(license_id: &str, leases: Vec<RevokedLease>) -> proto::RevokedLeaseList {
    proto::RevokedLeaseList {
        license_id: license_id.to_owned(),
        leases: leases
            .into_iter()
            .map(|l| proto::RevokedLease {
                session_id: l.session_id,
                username: l.username,
                device_id: l.device_id,
                reason: l.reason,
                ended_at: to_offset(l.ended_at),
                lease_expires_at: to_offset(l.borrow_until),
            })
            .collect(),
    }
}

pub fn user(user: &User) -> proto::User {
    proto::User {
        account_id: user.account_id.clone(),
        username: user.username.clone(),
        kind: user.kind,
        active: user.active,
        client_id: user.client_id.clone(),
        client_secret: None,
        created_at: to_offset(user.created_at),
    }
}

pub fn license_user(u: &LicenseUser) -> proto::LicenseUser {
    proto::LicenseUser {
        license_id: u.license_id.clone(),
        username: u.username.clone(),
        active: u.active,
        updated_at: to_offset(u.updated_at),
    }
}

pub fn device(d: &DeviceActivation) -> proto::Device {
    proto::Device {
        license_id: d.license_id.clone(),
        fingerprint: d.fingerprint.clone(),
        name: d.name.clone(),
        activated_at: to_offset(d.activated_at),
    }
}

pub fn queue_entry(w: QueuedRequest, now: leasehold_core::Timestamp) -> proto::QueueEntry {
    proto::QueueEntry {
        position: w.position,
        username: w.username,
        device_id: w.device_id,
        instance_id: w.instance_id,
        waiting_since: to_offset(w.since),
        waited_secs: (now.millis() - w.since.millis()).max(0) as u64 / 1000,
    }
}

/// One event of a license's audit log.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
    pub event: String,
    pub session_id: Option<String>,
    pub username: Option<String>,
    pub detail: Option<String>,
    /// Who made the change (`root`, `admin:<account>`, `user:<name>`, `service:<name>`);
    /// absent for what time does (expiries) and for background work.
    pub actor: Option<String>,
    /// The `x-request-id` of the request that made it.
    pub request_id: Option<String>,
    /// The client address of that request.
    pub client_addr: Option<String>,
}

/// A license's audit log, oldest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditLog {
    pub events: Vec<AuditEntry>,
}

pub fn audit_log(events: Vec<AuditEvent>) -> AuditLog {
    AuditLog {
        events: events
            .into_iter()
            .map(|e| AuditEntry {
                at: to_offset(e.at),
                event: e.event,
                session_id: e.session_id,
                username: e.username,
                detail: e.detail,
                actor: e.origin.actor,
                request_id: e.origin.request_id,
                client_addr: e.origin.client_addr,
            })
            .collect(),
    }
}
