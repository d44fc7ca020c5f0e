//! A license in memory (`LicenseState`): its terms, its live-session counts and indexes, its
//! registrations and its queue; and the counts the seat rule reads from it (`SeatCounts`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use hashbrown::HashTable;
use leasehold_core::LicenseTerms;
use leasehold_proto::LicenseModel;

use super::super::slab::Names;
use super::admit::Waiting;
use crate::admission::SeatCounts;
use crate::records::*;

pub(crate) struct LicenseState {
    pub(crate) license: License,
    pub(crate) id: Arc<str>,
    pub(crate) account_id: Arc<str>,
    pub(crate) live: u32,
    /// Live sessions per user (`Names` index).
    pub(crate) per_user: HashMap<u32, u32>,
    /// The latest live session of each client instance (user, device, instance), as slots.
    pub(crate) by_instance: HashTable<u32>,
    /// Live sessions by expiry: `(expires_at, slot)`.
    pub(crate) expiry: BTreeSet<(i64, u32)>,
    pub(crate) high_water: u32,
    pub(crate) low_water: u32,
    pub(crate) denials: u64,
    pub(crate) overdraft_live: u32,
    /// `registered_users`: registrations, and how many are active.
    pub(crate) users: HashMap<String, LicenseUser>,
    pub(crate) active_users: u32,
    /// `node_locked`: activated devices by fingerprint.
    pub(crate) devices: HashMap<String, DeviceActivation>,
    /// Clients waiting for a seat, first come first served (`on_full: "queue"`).
    pub(crate) queue: VecDeque<Waiting>,
}

impl LicenseState {
    pub(crate) fn new(license: License) -> Self {
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

    pub(crate) fn activations(&self) -> Option<u32> {
        match self.license.terms.model {
            LicenseModel::ConcurrentSessions => None,
            LicenseModel::RegisteredUsers => Some(self.active_users),
            LicenseModel::NodeLocked => Some(self.devices.len() as u32),
        }
    }

    /// The license's counts as the seat rule reads them (users are counted by interned name).
    pub(crate) fn seats<'a>(&'a self, names: &'a Names) -> LicenseSeats<'a> {
        LicenseSeats { lic: self, names }
    }
}

/// A license in memory with the names its per-user counts are keyed by.
pub(crate) struct LicenseSeats<'a> {
    pub(crate) lic: &'a LicenseState,
    pub(crate) names: &'a Names,
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
