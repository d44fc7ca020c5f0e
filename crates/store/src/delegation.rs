//! Changes to a license's delegations (dark sites), decided in the license's atomic step by
//! both backends: a new delegation, a renewal, a return. The rules are `core::delegation`'s;
//! this is the one place both backends call them from, with the counts they read under their
//! lock (SQLite: the memory mutex; PostgreSQL: the license row's `FOR UPDATE`).

use leasehold_core::delegation::{self, Delegated, InUse, ReportSummary};
use leasehold_core::{LicenseTerms, RuleResult, Timestamp};

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
