//! Delegations on SQLite: a change of a license's delegations decided under the memory lock,
//! over the same counts the seat rule reads, then written like any new terms
//! (`Mem::update_license`): no open can slip between the count and the change.

use leasehold_core::delegation::InUse;
use leasehold_core::Timestamp;
use leasehold_proto::LicenseModel;

use super::Mem;
use crate::admission::SeatCounts;
use crate::delegation::DelegationChange;
use crate::records::License;
use crate::sqlite::writer::Ack;
use crate::{StoreError, StoreResult};

impl Mem {
    /// The licenses imported from delegations.
    pub(in crate::sqlite) fn delegated_licenses(&self) -> Vec<License> {
        self.licenses
            .iter()
            .filter(|l| l.license.terms.delegated_from.is_some())
            .map(|l| l.license.clone())
            .collect()
    }

    /// Applies `change` to the license's terms; `None` for the acknowledgment when nothing
    /// changed.
    pub(in crate::sqlite) fn change_delegations(
        &mut self,
        license_id: &str,
        change: &DelegationChange,
        now: Timestamp,
    ) -> StoreResult<(License, Option<Ack>)> {
        let Some(lic) = self.lic(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        let seats = lic.seats(&self.names);
        let terms = seats.terms();
        let reserved_holders = terms
            .reserved
            .iter()
            .filter(|u| seats.user_live_sessions(u.as_str()) > 0)
            .count();
        let activations = match terms.model {
            LicenseModel::RegisteredUsers => lic.active_users,
            LicenseModel::NodeLocked => u32::try_from(lic.devices.len()).unwrap_or(u32::MAX),
            LicenseModel::ConcurrentSessions => 0,
        };
        let in_use = InUse {
            live: seats.live_sessions(),
            reserved_holders: u32::try_from(reserved_holders).unwrap_or(u32::MAX),
            activations,
        };
        let mut license = lic.license.clone();
        let Some(terms) = change.apply(&license.terms, in_use, now)? else {
            return Ok((license, None));
        };
        license.terms = terms;
        let event = crate::delegation::audit_event(&license, change, now);
        let ack = self.replace_license_noting(license.clone(), now, Some(event))?;
        Ok((license, Some(ack)))
    }
}
