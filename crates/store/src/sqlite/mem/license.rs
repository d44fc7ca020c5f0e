//! A license in memory (`LicenseState`): its terms, its live-session counts and indexes, the
//! mass ends decided on it (`ending`), its registrations and its queue; the counts the seat
//! rule reads from it (`SeatCounts`), its usage, and a change of its terms.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use hashbrown::HashTable;
use leasehold_core::{LicenseTerms, Timestamp};
use leasehold_proto::LicenseModel;

use super::admit::Waiting;
use super::ending::Floor;
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
    /// Sessions holding a seat: live, their end not decided (ending ones are counted out).
    pub(in crate::sqlite) live: u32,
    /// Those per user (`Names` index).
    pub(super) per_user: HashMap<u32, u32>,
    /// Those in overdraft, per user (only users holding some).
    pub(super) per_user_overdraft: HashMap<u32, u32>,
    /// Sessions still in the slab whose end is decided, not yet on disk (see `ending`).
    pub(in crate::sqlite) ending: u32,
    /// Ends the drain has taken out of the slab and the writer has not committed yet.
    pub(in crate::sqlite) writing: u32,
    /// Mass ends of every session of the license opened before a point, by `below`.
    pub(in crate::sqlite) floors: Vec<Floor>,
    /// Mass ends of every session of one user (deactivated) opened before a point, by `below`.
    pub(in crate::sqlite) user_floors: HashMap<u32, Vec<Floor>>,
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
    /// Slots of the license's borrowed sessions in the slab, ending ones included (see
    /// `borrow`).
    pub(super) borrowed: Vec<u32>,
    /// Borrowed sessions that ended before their `borrow_until` (see `borrow`).
    pub(in crate::sqlite) revoked: Vec<RevokedLease>,
}

impl LicenseState {
    /// Its seats, sessions in use and queue length, for metrics.
    pub(in crate::sqlite) fn gauges(&self) -> LicenseGauges {
        LicenseGauges {
            license_id: self.license.id.clone(),
            account_id: self.license.account_id.clone(),
            seats: self.license.terms.seats,
            in_use: self.live,
            waiting: u32::try_from(self.queue.len()).unwrap_or(u32::MAX),
            alerts: self.license.terms.alerts,
            expires_at: self.license.terms.expires_at,
        }
    }

    pub(super) fn new(license: License) -> Self {
        LicenseState {
            id: Arc::from(license.id.as_str()),
            account_id: Arc::from(license.account_id.as_str()),
            license,
            live: 0,
            per_user: HashMap::new(),
            per_user_overdraft: HashMap::new(),
            ending: 0,
            writing: 0,
            floors: Vec::new(),
            user_floors: HashMap::new(),
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
            borrowed: Vec::new(),
            revoked: Vec::new(),
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

    /// The license's usage since `since` (when memory was loaded): ending sessions are not in
    /// use (their seats are free), they are `ending` until their ends are on disk.
    pub(in crate::sqlite) fn usage(&self, since: Timestamp) -> UsageStats {
        UsageStats {
            seats: self.license.terms.seats,
            in_use: self.live,
            ending: self.ending + self.writing,
            high_water: self.high_water,
            low_water: self.low_water,
            denials: self.denials,
            since,
            overdraft_in_use: self.overdraft_live,
            // Counted over the slab by `Mem::borrowed_now`.
            borrowed: 0,
            delegated: 0,
            activations: self.activations(),
        }
    }
}

impl Mem {
    /// New terms for a license. Its end caps its sessions' expiries when they are read
    /// (`Mem::clock`), so a new end costs no work per session. An end that has passed (before
    /// or with this change) ends every session of the license first, as one durable decision
    /// (see `ending`): a later end does not bring back sessions already reported ended. More
    /// seats (or a lifted suspension) may serve the queue.
    ///
    /// The license's delegations are kept as they are in memory: they change only through
    /// `change_delegations`, so a patch read before a delegation was made cannot drop it.
    pub(in crate::sqlite) fn update_license(
        &mut self,
        mut license: License,
        now: Timestamp,
    ) -> StoreResult<Ack> {
        let Some(current) = self.lic(&license.id) else {
            return Err(StoreError::NotFound("license"));
        };
        license.terms.delegations = current.license.terms.delegations.clone();
        self.replace_license(license, now)
    }

    /// `update_license` with the terms exactly as given (delegations too).
    pub(in crate::sqlite) fn replace_license(
        &mut self,
        license: License,
        now: Timestamp,
    ) -> StoreResult<Ack> {
        self.replace_license_noting(license, now, None)
    }

    /// `replace_license`, with one more audit event in the same write (what changed the terms:
    /// a delegation's change).
    pub(in crate::sqlite) fn replace_license_noting(
        &mut self,
        license: License,
        now: Timestamp,
        note: Option<AuditEvent>,
    ) -> StoreResult<Ack> {
        let Some(li) = self.license_at(&license.id) else {
            return Err(StoreError::NotFound("license"));
        };
        let mut ops = Vec::new();
        // The old end, if it has passed: its sessions ended with it, whatever the new terms.
        if let Some(op) = self.end_at_license_end(li, now)? {
            ops.push(op);
        }
        let state = self.lic_at_mut(li)?;
        state.license = license.clone();
        ops.push(WriteOp::Audit(Box::new(admission::license_updated(
            &license, now,
        ))));
        if let Some(event) = note {
            ops.push(WriteOp::Audit(Box::new(event)));
        }
        ops.push(WriteOp::License(Box::new(license)));
        // The new end, if it is already past.
        if let Some(op) = self.end_at_license_end(li, now)? {
            ops.push(op);
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
