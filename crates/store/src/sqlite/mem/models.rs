//! The licensing models' registrations, decided under the lock against their limits:
//! `registered_users` activations (a deactivation ends the user's live sessions, as one mass
//! end: see `ending`) and `node_locked` device activations (a deactivation ends the device's
//! live sessions, written with it).

use leasehold_core::seats::{decide_device_activation, decide_user_activation};
use leasehold_core::Timestamp;
use leasehold_proto::{EndReason, LicenseModel};

use super::Mem;
use crate::admin_events;
use crate::admission;
use crate::records::*;
use crate::sqlite::ops::WriteOp;
use crate::sqlite::writer::Ack;
use crate::{StoreError, StoreResult};

impl Mem {
    /// `registered_users`: activates or deactivates a user on the license (see
    /// `Store::set_license_user`); answers the ack, the change and whether it was created.
    pub(in crate::sqlite) fn set_license_user(
        &mut self,
        license_id: &str,
        username: &str,
        active: bool,
        now: Timestamp,
    ) -> StoreResult<(Ack, LicenseUserChange, bool)> {
        let Some(li) = self.license_at(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        let lic = self.lic_at_mut(li)?;
        let previous = lic.users.get(username).cloned();
        let was_active = previous.as_ref().is_some_and(|u| u.active);
        if active {
            decide_user_activation(&lic.license.terms, lic.active_users, was_active, now)?;
        } else if lic.license.terms.model != LicenseModel::RegisteredUsers {
            decide_user_activation(&lic.license.terms, 0, true, now)?;
        }
        let user = LicenseUser {
            license_id: license_id.to_owned(),
            username: username.to_owned(),
            active,
            updated_at: now,
        };
        match (was_active, active) {
            (false, true) => lic.active_users += 1,
            (true, false) => lic.active_users = lic.active_users.saturating_sub(1),
            _ => {}
        }
        lic.users.insert(username.to_owned(), user.clone());
        let event =
            admin_events::license_user(&lic.license.account_id, license_id, username, active, now);
        let mut ops = vec![
            WriteOp::LicenseUser(user.clone()),
            WriteOp::Audit(Box::new(event)),
        ];
        let mut ended = 0;
        if let (false, Some(u)) = (active, self.names.get(username)) {
            // One decision for all the user's sessions on the license (see `ending`).
            let (n, floor) = self.end_user(li, u, EndReason::UserDeactivated, now)?;
            ended = n;
            if let Some(floor) = floor {
                ops.push(WriteOp::LicenseUserFloor {
                    license_id: self.lic_at(li)?.id.clone(),
                    username: username.to_owned(),
                    floor,
                });
            }
        }
        Ok((
            self.send(ops),
            LicenseUserChange { user, ended },
            previous.is_none(),
        ))
    }

    /// `node_locked`: activates a device against the activation limit. Answers the device and,
    /// when it was activated now, the ack of its write (`None`: it was already active).
    pub(in crate::sqlite) fn activate_device(
        &mut self,
        license_id: &str,
        fingerprint: &str,
        name: &str,
        now: Timestamp,
    ) -> StoreResult<(DeviceActivation, Option<Ack>)> {
        let Some(lic) = self.lic_mut(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        let existing = lic.devices.get(fingerprint).cloned();
        decide_device_activation(
            &lic.license.terms,
            lic.devices.len() as u32,
            existing.is_some(),
            now,
        )?;
        if let Some(device) = existing {
            return Ok((device, None));
        }
        let device = DeviceActivation {
            license_id: license_id.to_owned(),
            fingerprint: fingerprint.to_owned(),
            name: name.to_owned(),
            activated_at: now,
        };
        lic.devices.insert(fingerprint.to_owned(), device.clone());
        let audit = WriteOp::Audit(Box::new(admission::device_activated(
            &lic.license.account_id,
            license_id,
            fingerprint,
            now,
        )));
        let rx = self.send(vec![WriteOp::Device(device.clone()), audit]);
        Ok((device, Some(rx)))
    }

    /// Frees a device activation and ends the device's live sessions.
    pub(in crate::sqlite) fn deactivate_device(
        &mut self,
        license_id: &str,
        fingerprint: &str,
        now: Timestamp,
    ) -> StoreResult<(Ack, Vec<Session>)> {
        let Some(li) = self.license_at(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        let lic = self.lic_at_mut(li)?;
        if lic.devices.remove(fingerprint).is_none() {
            return Err(StoreError::NotFound("device"));
        }
        let mut ops = vec![
            WriteOp::DeleteDevice {
                license_id: license_id.to_owned(),
                fingerprint: fingerprint.to_owned(),
            },
            WriteOp::Audit(Box::new(admission::device_deactivated(
                &lic.license.account_id,
                license_id,
                fingerprint,
                now,
            ))),
        ];
        let slots = self.license_slots(li, |r| r.device() == fingerprint);
        let ended = self.end_slots(slots, EndReason::DeviceDeactivated, now, &mut ops);
        Ok((self.send(ops), ended))
    }
}
