//! A license in memory (`LicenseState`): its terms, its live-session counts and indexes, its
//! registrations and its queue; the counts the seat rule reads from it (`SeatCounts`), its
//! usage, and a change of its terms.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use hashbrown::HashTable;
use leasehold_core::{LicenseTerms, Timestamp};
use leasehold_proto::LicenseModel;

use super::admit::Waiting;
use super::Mem;
use crate::admission::{self, SeatCounts};
use crate::records::*;
use crate::sqlite::ops::WriteOp;
use crate::sqlite::slab::Names;
use crate::sqlite::writer::Ack;
use crate::{StoreError, StoreResult};

/// A license in memory.
pub(in crate::sqlite) struct LicenseState {
    pub(in crate::sqlite) license: License,
    pub(super) id: Arc<str>,
    pub(super) account_id: Arc<str>,
    pub(in crate::sqlite) live: u32,
    /// Live sessions per user (`Names` index).
    pub(super) per_user: HashMap<u32, u32>,
    /// The latest live session of each client instance (user, device, instance), as slots.
    pub(super) by_instance: HashTable<u32>,
    /// Live sessions by expiry: `(expires_at, slot)`.
    pub(super) expiry: BTreeSet<(i64, u32)>,
    pub(in crate::sqlite) high_water: u32,
    pub(in crate::sqlite) low_water: u32,
    pub(super) denials: u64,
    pub(super) overdraft_live: u32,
    /// `registered_users`: registrations, and how many are active.
    pub(in crate::sqlite) users: HashMap<String, LicenseUser>,
    pub(in crate::sqlite) active_users: u32,
    /// `node_locked`: activated devices by fingerprint.
    pub(in crate::sqlite) devices: HashMap<String, DeviceActivation>,
    /// Clients waiting for a seat, first come first served (`on_full: "queue"`).
    pub(super) queue: VecDeque<Waiting>,
}

impl LicenseState {
    pub(super) fn new(license: License) -> Self {
        LicenseState {
            id: Arc::from(license.id.as_str()),
            account_id: Arc::from(license.account_id.as_str()),
            license,
            live: 0,
            per_user: HashMap::new(),
            by_instance: HashTable::new(),
            expiry: BTreeSet::new(),
            high_water: 0,
            low_water: 0,
            denials: 0,
            overdraft_live: 0,
            users: HashMap::new(),
            active_users: 0,
            devices: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    fn activations(&self) -> Option<u32> {
        match self.license.terms.model {
            LicenseModel::ConcurrentSessions => None,
            LicenseModel::RegisteredUsers => Some(self.active_users),
            LicenseModel::NodeLocked => Some(self.devices.len() as u32),
        }
    }

    /// The license's counts as the seat rule reads them (users are counted by interned name).
    pub(super) fn seats<'a>(&'a self, names: &'a Names) -> LicenseSeats<'a> {
        LicenseSeats { lic: self, names }
    }

    /// The license's usage since `since` (when memory was loaded).
    pub(in crate::sqlite) fn usage(&self, since: Timestamp) -> UsageStats {
        UsageStats {
            seats: self.license.terms.seats,
            in_use: self.live,
            high_water: self.high_water,
            low_water: self.low_water,
            denials: self.denials,
            since,
            overdraft_in_use: self.overdraft_live,
            activations: self.activations(),
        }
    }
}

impl Mem {
    /// New terms for a license. When its end changed, its live sessions end with it: their
    /// expiry is brought forward if needed (on disk one statement does the same for all of
    /// them, `CapLicenseEnd`). More seats (or a lifted suspension) may serve the queue.
    pub(in crate::sqlite) fn update_license(
        &mut self,
        license: License,
        now: Timestamp,
    ) -> StoreResult<Ack> {
        let Some(li) = self.license_at(&license.id) else {
            return Err(StoreError::NotFound("license"));
        };
        let state = self.lic_at_mut(li)?;
        let end_changed = state.license.terms.expires_at != license.terms.expires_at;
        state.license = license.clone();
        let mut ops = vec![
            WriteOp::Audit(Box::new(admission::license_updated(&license, now))),
            WriteOp::License(Box::new(license.clone())),
        ];
        if end_changed {
            for slot in self.license_slots(li, |_| true) {
                let Some(mut clock) = self.slab.clock(slot) else {
                    continue;
                };
                clock.cap_at_license_end(license.terms.expires_at);
                self.set_clock(slot, &clock);
            }
            ops.push(WriteOp::CapLicenseEnd {
                license_id: license.id.clone(),
                end: license.terms.expires_at,
            });
        }
        self.to_serve.push(li as u32);
        self.last_now = now;
        Ok(self.send(ops))
    }
}

/// A license in memory with the names its per-user counts are keyed by.
pub(super) struct LicenseSeats<'a> {
    lic: &'a LicenseState,
    names: &'a Names,
}

impl SeatCounts for LicenseSeats<'_> {
    fn terms(&self) -> &LicenseTerms {
        &self.lic.license.terms
    }

    fn live_sessions(&self) -> u32 {
        self.lic.live
    }

    fn user_live_sessions(&self, username: &str) -> u32 {
        self.names
            .get(username)
            .and_then(|u| self.lic.per_user.get(&u))
            .copied()
            .unwrap_or(0)
    }

    fn active_users(&self) -> u32 {
        self.lic.active_users
    }

    fn user_active(&self, username: &str) -> bool {
        self.lic.users.get(username).is_some_and(|u| u.active)
    }

    fn device_activated(&self, device_id: &str) -> bool {
        self.lic.devices.contains_key(device_id)
    }
}
