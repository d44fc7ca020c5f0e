//! Changes to a license's delegations (dark sites), decided in the license's atomic step by
//! both backends: a new delegation, a renewal, a return. The rules are `core::delegation`'s;
//! this is the one place both backends call them from, with the counts they read under their
//! lock (SQLite: the memory mutex; PostgreSQL: the license row's `FOR UPDATE`).

use leasehold_core::delegation::{self, Delegated, InUse, ReportSummary};
use leasehold_core::{LicenseTerms, RuleResult, Timestamp};

use crate::admission;
use crate::records::{AuditEvent, License};

/// One change of a license's delegations.
#[derive(Debug, Clone)]
pub enum DelegationChange {
    /// A new delegation: 409 `not_enough_free_seats` unless its seats are free.
    Create(Delegated),
    /// New seats and/or end of a live delegation, with the next sequence.
    Renew {
        id: String,
        seats: Option<i64>,
        expires_at: Option<Timestamp>,
    },
    /// The delegation's receipt was imported: its seats are back.
    Return { id: String },
    /// A usage report from the local server (kept when newer than the one kept).
    Report { id: String, report: ReportSummary },
}

impl DelegationChange {
    /// The new terms, or `None` when nothing changes (a receipt imported again).
    pub fn apply(
        &self,
        terms: &LicenseTerms,
        in_use: InUse,
        now: Timestamp,
    ) -> RuleResult<Option<LicenseTerms>> {
        match self {
            DelegationChange::Create(d) => {
                delegation::delegate(terms, d.clone(), in_use, now).map(Some)
            }
            DelegationChange::Renew {
                id,
                seats,
                expires_at,
            } => delegation::renew(terms, id, *seats, *expires_at, in_use, now).map(Some),
            DelegationChange::Return { id } => delegation::record_return(terms, id, now),
            DelegationChange::Report { id, report } => {
                delegation::record_report(terms, id, *report)
            }
        }
    }
}

/// The event of a change of the license's delegations (dark sites), written with the change:
/// `delegation_created`, `delegation_renewed`, `delegation_returned` or `delegation_reported`;
/// its detail names the delegation (`id=…`) and, but for a report, the seats it holds after the
/// change (`delegated=K`) and its end (`until=<unix ms>`).
pub fn audit_event(license: &License, change: &DelegationChange, at: Timestamp) -> AuditEvent {
    use DelegationChange as C;
    let (event, id) = match change {
        C::Create(d) => ("delegation_created", d.id.as_str()),
        C::Renew { id, .. } => ("delegation_renewed", id.as_str()),
        C::Return { id } => ("delegation_returned", id.as_str()),
        C::Report { id, .. } => ("delegation_reported", id.as_str()),
    };
    let held = license.terms.delegations.iter().find(|d| d.id == id);
    let detail = match (change, held) {
        (C::Report { report, .. }, _) => format!("id={id} report={}", report.sequence),
        (_, Some(d)) => format!(
            "id={id} delegated={} until={}",
            d.seats,
            d.expires_at.millis()
        ),
        (_, None) => format!("id={id}"),
    };
    AuditEvent {
        detail: Some(detail),
        ..admission::license_event(license, at, event)
    }
}
