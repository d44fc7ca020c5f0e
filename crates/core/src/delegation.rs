//! Delegated seats (dark sites): the cloud side's record of seats handed to a local server, the
//! capacity that is left to the cloud license at any instant, and the local side's checks of an
//! imported delegation (validity window, sequence, return).
//!
//! A delegation holds `seats` of its license from its creation until it is returned or reaches
//! `expires_at`, whichever comes first. The capacity the seat rule sees is
//! `seats - Σ seats of the delegations live at now`: an expiry gives the seats back at that
//! very instant with no job to run, and a return gives them back when its receipt is recorded.
//!
//! ```text
//!   create ──► live ──(receipt imported)──► returned
//!                └────(now >= expires_at)──► expired
//! ```

use leasehold_proto::EndReason;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{RuleError, RuleResult};
use crate::license::LicenseTerms;

/// Longest validity of one delegation (or renewal): 10 years.
pub const MAX_DELEGATION_SECS: i64 = 10 * 365 * 24 * 3600;

/// The cloud's record of one delegation, kept in the delegating license's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegated {
    pub id: String,
    pub seats: u32,
    pub not_before: Timestamp,
    pub expires_at: Timestamp,
    /// Raised by each renewal; the local server refuses anything not newer than it imported.
    pub sequence: u64,
    /// The local server's id: the RFC 7638 thumbprint of its public key.
    pub server_id: String,
    /// The local server's Ed25519 public key (base64url, the JWK's `x`).
    pub server_key: String,
    pub site: String,
    pub created_at: Timestamp,
    #[serde(default)]
    pub returned_at: Option<Timestamp>,
    /// The latest usage report imported from the local server (totals; the hourly series is
    /// kept apart, under the report's sequence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportSummary>,
}

/// The totals of a local server's usage report, since the delegation began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportSummary {
    /// The report's own sequence (each report the local server writes has a higher one).
    pub sequence: u64,
    pub generated_at: Timestamp,
    pub opened: u64,
    /// Most sessions in use at once.
    pub peak: u32,
    pub denials: u64,
    pub queue_waits: u64,
}

/// Where a delegation stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelegationStatus {
    Active,
    Returned,
    Expired,
}

impl DelegationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DelegationStatus::Active => "active",
            DelegationStatus::Returned => "returned",
            DelegationStatus::Expired => "expired",
        }
    }
}

impl Delegated {
    /// Whether the delegation holds its seats at `now`.
    pub fn holds_seats(&self, now: Timestamp) -> bool {
        self.returned_at.is_none() && now < self.expires_at
    }

    pub fn status(&self, now: Timestamp) -> DelegationStatus {
        if self.returned_at.is_some() {
            DelegationStatus::Returned
        } else if now >= self.expires_at {
            DelegationStatus::Expired
        } else {
            DelegationStatus::Active
        }
    }
}

impl LicenseTerms {
    /// Seats held by delegations at `now`. No allocation: the seat path calls it.
    pub fn delegated_at(&self, now: Timestamp) -> u32 {
        self.delegations
            .iter()
            .filter(|d| d.holds_seats(now))
            .fold(0u32, |sum, d| sum.saturating_add(d.seats))
    }

    /// The seats this license itself may grant at `now`: its seats less those delegated.
    pub fn capacity(&self, now: Timestamp) -> u32 {
        self.seats.saturating_sub(self.delegated_at(now))
    }

    pub fn delegation(&self, id: &str) -> Option<&Delegated> {
        self.delegations.iter().find(|d| d.id == id)
    }

    /// Why sessions end when this license's end passes: `license_expired`, or on a local
    /// server the delegation's `delegation_expired` / `delegation_returned`.
    pub fn end_reason(&self) -> EndReason {
        match &self.delegated_from {
            None => EndReason::LicenseExpired,
            Some(from) if from.returned_at.is_some() => EndReason::DelegationReturned,
            Some(_) => EndReason::DelegationExpired,
        }
    }
}

/// What the seat rule counts of a license when seats are taken away from it.
#[derive(Debug, Clone, Copy, Default)]
pub struct InUse {
    /// Live sessions (not ending).
    pub live: u32,
    /// Reserved users holding at least one live session.
    pub reserved_holders: u32,
    /// `registered_users`: the users active on the license; `node_locked`: the activated
    /// devices (their slots are what those models delegate).
    pub activations: u32,
}

/// Seats that may leave the license at `now` without taking a slot from anyone: the shared
/// pool's free slots (a reserved user's slot is never delegated while the user may claim it);
/// on `registered_users` and `node_locked` licenses, the active-user slots or device
/// activations not taken.
pub fn free_seats(terms: &LicenseTerms, in_use: InUse, now: Timestamp) -> u32 {
    if terms.model != leasehold_proto::LicenseModel::ConcurrentSessions {
        // Active-user slots or device activations: those not taken may leave.
        return terms.capacity(now).saturating_sub(in_use.activations);
    }
    let reserved = u32::try_from(terms.reserved.len()).unwrap_or(u32::MAX);
    let shared_in_use = in_use.live.saturating_sub(in_use.reserved_holders);
    terms
        .capacity(now)
        .saturating_sub(reserved)
        .saturating_sub(shared_in_use)
}

fn check_window(
    terms: &LicenseTerms,
    not_before: Timestamp,
    expires_at: Timestamp,
    now: Timestamp,
) -> RuleResult<()> {
    if let Some(end) = terms.expires_at {
        if expires_at > end {
            return Err(RuleError::Invalid(format!(
                "a delegation cannot outlive its license (it ends at {})",
                end.to_offset()
            )));
        }
    }
    if expires_at <= now {
        return Err(RuleError::Invalid(
            "expires_at must be in the future".into(),
        ));
    }
    if expires_at <= not_before {
        return Err(RuleError::Invalid(
            "expires_at must be after not_before".into(),
        ));
    }
    if expires_at.secs() - now.secs() > MAX_DELEGATION_SECS {
        return Err(RuleError::Invalid(format!(
            "a delegation lasts at most {MAX_DELEGATION_SECS} seconds"
        )));
    }
    Ok(())
}

fn check_seats(terms: &LicenseTerms, seats: i64) -> RuleResult<u32> {
    if seats < 1 || seats > i64::from(terms.seats) {
        return Err(RuleError::Invalid(format!(
            "seats must be between 1 and the license's {} seats, got {seats}",
            terms.seats
        )));
    }
    let seats = seats as u32;
    if (terms.reserved.len() as u64) > u64::from(seats) {
        return Err(RuleError::Invalid(format!(
            "the license's {} reserved users do not fit in {seats} delegated seats",
            terms.reserved.len()
        )));
    }
    Ok(seats)
}

/// Records a new delegation in `terms` when `free_seats` allows it (409
/// `not_enough_free_seats` otherwise). The caller holds the license's atomic step.
pub fn delegate(
    terms: &LicenseTerms,
    delegation: Delegated,
    in_use: InUse,
    now: Timestamp,
) -> RuleResult<LicenseTerms> {
    let seats = check_seats(terms, i64::from(delegation.seats))?;
    check_window(terms, delegation.not_before, delegation.expires_at, now)?;
    if terms.delegation(&delegation.id).is_some() {
        return Err(RuleError::Invalid(format!(
            "delegation {} exists",
            delegation.id
        )));
    }
    let free = free_seats(terms, in_use, now);
    if seats > free {
        return Err(RuleError::NotEnoughFreeSeats { free, asked: seats });
    }
    let mut next = terms.clone();
    next.delegations.push(delegation);
    Ok(next)
}

/// A renewal: the delegation `id`, still live, gets `seats` and/or `expires_at` and the next
/// sequence. More seats take only the difference from the free ones; fewer give the rest back
/// at once.
pub fn renew(
    terms: &LicenseTerms,
    id: &str,
    seats: Option<i64>,
    expires_at: Option<Timestamp>,
    in_use: InUse,
    now: Timestamp,
) -> RuleResult<LicenseTerms> {
    let Some(current) = terms.delegation(id) else {
        return Err(RuleError::DelegationUnknown(id.to_owned()));
    };
    match current.status(now) {
        DelegationStatus::Active => {}
        DelegationStatus::Returned => {
            return Err(RuleError::DelegationReturned(format!(
                "delegation {id} was returned"
            )))
        }
        DelegationStatus::Expired => {
            return Err(RuleError::DelegationExpired(format!(
                "delegation {id} has expired"
            )))
        }
    }
    let seats = match seats {
        Some(s) => check_seats(terms, s)?,
        None => current.seats,
    };
    let expires_at = expires_at.unwrap_or(current.expires_at);
    check_window(terms, current.not_before, expires_at, now)?;
    if seats > current.seats {
        let free = free_seats(terms, in_use, now);
        let more = seats - current.seats;
        if more > free {
            return Err(RuleError::NotEnoughFreeSeats { free, asked: more });
        }
    }
    let mut next = terms.clone();
    for d in next.delegations.iter_mut().filter(|d| d.id == id) {
        d.seats = seats;
        d.expires_at = expires_at;
        d.sequence += 1;
    }
    Ok(next)
}

/// The delegation's return, recorded when its signed receipt is imported: its seats are back
/// from `now` on. A second receipt changes nothing (`Ok(None)`).
pub fn record_return(
    terms: &LicenseTerms,
    id: &str,
    now: Timestamp,
) -> RuleResult<Option<LicenseTerms>> {
    let Some(current) = terms.delegation(id) else {
        return Err(RuleError::DelegationUnknown(id.to_owned()));
    };
    if current.returned_at.is_some() {
        return Ok(None);
    }
    let mut next = terms.clone();
    for d in next.delegations.iter_mut().filter(|d| d.id == id) {
        d.returned_at = Some(now);
    }
    Ok(Some(next))
}

/// A usage report of the delegation `id`: kept when newer (a higher sequence) than the one
/// kept; the same report again, or an older one, changes nothing (`Ok(None)`).
pub fn record_report(
    terms: &LicenseTerms,
    id: &str,
    report: ReportSummary,
) -> RuleResult<Option<LicenseTerms>> {
    let Some(current) = terms.delegation(id) else {
        return Err(RuleError::DelegationUnknown(id.to_owned()));
    };
    if current
        .report
        .is_some_and(|kept| kept.sequence >= report.sequence)
    {
        return Ok(None);
    }
    let mut next = terms.clone();
    for d in next.delegations.iter_mut().filter(|d| d.id == id) {
        d.report = Some(report);
    }
    Ok(Some(next))
}

/// The local side: which delegation a local license was imported from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegatedFrom {
    pub delegation_id: String,
    /// The cloud license the seats come from.
    pub license_id: String,
    pub sequence: u64,
    #[serde(default)]
    pub returned_at: Option<Timestamp>,
}

/// What an import does to the local license.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportStep {
    /// First import of this delegation: create the local license.
    Create,
    /// A newer sequence: change the local license's terms.
    Renew,
    /// The same sequence again: nothing changes.
    Unchanged,
}

/// Checks an imported delegation's validity window and sequence against what was imported
/// before (`current`): refusals `delegation_expired`, `delegation_not_yet_valid`,
/// `delegation_superseded`, `delegation_returned`.
pub fn check_import(
    current: Option<&DelegatedFrom>,
    sequence: u64,
    not_before: Timestamp,
    expires_at: Timestamp,
    now: Timestamp,
) -> RuleResult<ImportStep> {
    if let Some(cur) = current {
        if cur.returned_at.is_some() {
            return Err(RuleError::DelegationReturned(format!(
                "delegation {} was returned from this server",
                cur.delegation_id
            )));
        }
    }
    if now >= expires_at {
        return Err(RuleError::DelegationExpired(format!(
            "the delegation expired at {}",
            expires_at.to_offset()
        )));
    }
    if now < not_before {
        return Err(RuleError::DelegationNotYetValid(format!(
            "the delegation is valid from {}",
            not_before.to_offset()
        )));
    }
    Ok(match current {
        None => ImportStep::Create,
        Some(cur) if sequence > cur.sequence => ImportStep::Renew,
        Some(cur) if sequence == cur.sequence => ImportStep::Unchanged,
        Some(cur) => {
            return Err(RuleError::DelegationSuperseded(format!(
                "sequence {sequence} is older than the imported {}",
                cur.sequence
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plans::PlanCatalog;
    use leasehold_proto::CreateLicense;

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn terms(seats: i64, reserved: &[&str]) -> LicenseTerms {
        let req = CreateLicense {
            account_id: "a".into(),
            product: "p".into(),
            seats: Some(seats),
            reserved: reserved.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        LicenseTerms::from_create(&req, &PlanCatalog::default()).unwrap()
    }

    fn delegated(id: &str, seats: u32, expires_at: Timestamp) -> Delegated {
        Delegated {
            id: id.into(),
            seats,
            not_before: T0,
            expires_at,
            sequence: 1,
            server_id: "srv".into(),
            server_key: "key".into(),
            site: "site".into(),
            created_at: T0,
            returned_at: None,
            report: None,
        }
    }

    #[test]
    fn a_report_counts_once_and_an_older_one_changes_nothing() {
        let t = terms(10, &[]);
        let t = delegate(
            &t,
            delegated("d1", 4, T0.plus_secs(3600)),
            InUse::default(),
            T0,
        )
        .unwrap();
        let report = |sequence, opened| ReportSummary {
            sequence,
            generated_at: T0,
            opened,
            peak: 2,
            denials: 0,
            queue_waits: 0,
        };
        let t = record_report(&t, "d1", report(2, 5)).unwrap().unwrap();
        assert!(record_report(&t, "d1", report(2, 5)).unwrap().is_none());
        assert!(record_report(&t, "d1", report(1, 3)).unwrap().is_none());
        let t = record_report(&t, "d1", report(3, 9)).unwrap().unwrap();
        assert_eq!(t.delegation("d1").unwrap().report.unwrap().opened, 9);
    }

    #[test]
    fn capacity_shrinks_at_once_and_comes_back_at_the_expiry_instant() {
        let t = terms(10, &[]);
        let end = T0.plus_secs(3600);
        let t = delegate(&t, delegated("d1", 4, end), InUse::default(), T0).unwrap();
        assert_eq!(t.capacity(T0), 6);
        assert_eq!(t.capacity(end.plus_millis(-1)), 6);
        // The same instant the local license stops granting.
        assert_eq!(t.capacity(end), 10);
        assert_eq!(t.delegated_at(end), 0);
        assert_eq!(
            t.delegation("d1").unwrap().status(end),
            DelegationStatus::Expired
        );
    }

    #[test]
    fn a_delegation_takes_only_free_seats() {
        let t = terms(10, &[]);
        let end = T0.plus_secs(3600);
        let busy = InUse {
            live: 7,
            reserved_holders: 0,
            activations: 0,
        };
        let err = delegate(&t, delegated("d1", 4, end), busy, T0).unwrap_err();
        assert_eq!(err, RuleError::NotEnoughFreeSeats { free: 3, asked: 4 });
        assert!(delegate(&t, delegated("d1", 3, end), busy, T0).is_ok());
    }

    #[test]
    fn registered_users_and_node_locked_licenses_delegate_their_free_slots() {
        use leasehold_proto::LicenseModel;
        let end = T0.plus_secs(3600);
        for model in [LicenseModel::RegisteredUsers, LicenseModel::NodeLocked] {
            let mut t = terms(5, &[]);
            t.model = model;
            // 3 of 5 slots taken (active users / activated devices): 2 may leave.
            let taken = InUse {
                activations: 3,
                ..InUse::default()
            };
            assert_eq!(free_seats(&t, taken, T0), 2);
            assert!(delegate(&t, delegated("d1", 3, end), taken, T0).is_err());
            let t = delegate(&t, delegated("d1", 2, end), taken, T0).unwrap();
            // While away the license has 3 slots; at the delegation's end, 5 again.
            assert_eq!(t.capacity(T0), 3);
            assert_eq!(t.capacity(end), 5);
            let (activate, exhausted): (fn(&LicenseTerms, u32, Timestamp) -> bool, _) = match model
            {
                LicenseModel::RegisteredUsers => (
                    |t, n, now| crate::seats::decide_user_activation(t, n, false, now).is_ok(),
                    "users",
                ),
                _ => (
                    |t, n, now| crate::seats::decide_device_activation(t, n, false, now).is_ok(),
                    "devices",
                ),
            };
            assert!(!activate(&t, 3, T0), "{exhausted}: the 4th slot is away");
            assert!(activate(&t, 3, end), "{exhausted}: back at the end");
        }
    }

    #[test]
    fn reserved_slots_are_never_delegated() {
        // 5 seats, 2 reserved (one holding its slot), 1 shared session: 2 shared slots free.
        let t = terms(5, &["ann", "bob"]);
        let end = T0.plus_secs(3600);
        let in_use = InUse {
            live: 2,
            reserved_holders: 1,
            activations: 0,
        };
        assert_eq!(free_seats(&t, in_use, T0), 2);
        assert!(delegate(&t, delegated("d1", 3, end), in_use, T0).is_err());
        assert!(delegate(&t, delegated("d1", 2, end), in_use, T0).is_ok());
    }

    #[test]
    fn a_returned_delegation_gives_its_seats_back_and_cannot_be_renewed() {
        let t = terms(10, &[]);
        let end = T0.plus_secs(3600);
        let t = delegate(&t, delegated("d1", 4, end), InUse::default(), T0).unwrap();
        let later = T0.plus_secs(60);
        let t = record_return(&t, "d1", later).unwrap().unwrap();
        assert_eq!(t.capacity(later), 10);
        assert!(record_return(&t, "d1", later).unwrap().is_none());
        assert!(matches!(
            renew(&t, "d1", Some(5), None, InUse::default(), later),
            Err(RuleError::DelegationReturned(_))
        ));
    }

    #[test]
    fn a_renewal_raises_the_sequence_and_takes_only_the_difference() {
        let t = terms(10, &[]);
        let end = T0.plus_secs(3600);
        let t = delegate(&t, delegated("d1", 4, end), InUse::default(), T0).unwrap();
        let in_use = InUse {
            live: 4,
            reserved_holders: 0,
            activations: 0,
        };
        // 2 seats free in the cloud: 4 -> 6 fits, 4 -> 7 does not.
        assert!(matches!(
            renew(&t, "d1", Some(7), None, in_use, T0),
            Err(RuleError::NotEnoughFreeSeats { free: 2, asked: 3 })
        ));
        let later = end.plus_secs(3600);
        let r = renew(&t, "d1", Some(6), Some(later), in_use, T0).unwrap();
        let d = r.delegation("d1").unwrap();
        assert_eq!((d.seats, d.expires_at, d.sequence), (6, later, 2));
        assert_eq!(r.capacity(end), 4);
    }

    #[test]
    fn imports_are_checked_in_window_and_sequence() {
        let end = T0.plus_secs(3600);
        assert_eq!(check_import(None, 1, T0, end, T0), Ok(ImportStep::Create));
        assert!(matches!(
            check_import(None, 1, T0, end, end),
            Err(RuleError::DelegationExpired(_))
        ));
        assert!(matches!(
            check_import(None, 1, T0.plus_secs(10), end, T0),
            Err(RuleError::DelegationNotYetValid(_))
        ));
        let mut cur = DelegatedFrom {
            delegation_id: "d1".into(),
            license_id: "l".into(),
            sequence: 2,
            returned_at: None,
        };
        assert_eq!(
            check_import(Some(&cur), 2, T0, end, T0),
            Ok(ImportStep::Unchanged)
        );
        assert_eq!(
            check_import(Some(&cur), 3, T0, end, T0),
            Ok(ImportStep::Renew)
        );
        assert!(matches!(
            check_import(Some(&cur), 1, T0, end, T0),
            Err(RuleError::DelegationSuperseded(_))
        ));
        cur.returned_at = Some(T0);
        assert!(matches!(
            check_import(Some(&cur), 3, T0, end, T0),
            Err(RuleError::DelegationReturned(_))
        ));
    }
}
