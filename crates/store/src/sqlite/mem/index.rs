//! The live sessions' indexes beyond the slab's own id index: each license's `by_instance`
//! (the latest session of a client instance), `expiry` (`(expires_at, slot)`) and counts, kept
//! in step as sessions are inserted, removed and re-timed. An ending session (see `ending`)
//! stays in the indexes until the drain takes it, but is never found through them as live.

use std::collections::HashMap;
use std::hash::BuildHasher;

use leasehold_core::session::SessionClock;

use super::Mem;
use crate::sqlite::slab::Live;

impl Mem {
    fn instance_hash(&self, user: u32, device_id: &str, instance_id: &str) -> u64 {
        self.keys.hash_one((user, device_id, instance_id))
    }

    /// The latest live session of a client instance.
    pub(super) fn instance_slot(
        &self,
        li: usize,
        username: &str,
        device_id: &str,
        instance_id: &str,
    ) -> Option<u32> {
        let user = self.names.get(username)?;
        let hash = self.instance_hash(user, device_id, instance_id);
        let slab = &self.slab;
        let lic = self.licenses.get(li)?;
        lic.by_instance
            .find(hash, |&s| {
                slab.get(s)
                    .is_some_and(|r| r.instance_key() == (user, device_id, instance_id))
            })
            .copied()
            .filter(|&s| slab.get(s).is_some_and(|r| lic.ending_of(r).is_none()))
    }

    /// Slots of the license's live sessions (one per client instance) matching `pred`; ending
    /// ones are not live.
    pub(in crate::sqlite) fn license_slots(
        &self,
        li: usize,
        pred: impl Fn(&Live) -> bool,
    ) -> Vec<u32> {
        let Some(lic) = self.licenses.get(li) else {
            return Vec::new();
        };
        lic.by_instance
            .iter()
            .copied()
            .filter(|&s| {
                self.slab
                    .get(s)
                    .is_some_and(|r| lic.ending_of(r).is_none() && pred(r))
            })
            .collect()
    }

    /// Live sessions of a user on the account's licenses, as slots.
    pub(in crate::sqlite) fn user_slots(&self, account_id: &str, username: &str) -> Vec<u32> {
        let Some(user) = self.names.get(username) else {
            return Vec::new();
        };
        self.licenses
            .iter()
            .enumerate()
            .filter(|(_, l)| &*l.account_id == account_id && l.per_user.contains_key(&user))
            .flat_map(|(li, _)| self.license_slots(li, |r| r.user == user))
            .collect()
    }

    /// Adds a live session to the slab and the indexes; answers its slot (`None` when its
    /// license is not in memory: nothing is added then).
    pub(in crate::sqlite) fn insert_live(&mut self, live: Live) -> Option<u32> {
        let Mem {
            slab,
            licenses,
            keys,
            ..
        } = self;
        let lic = licenses.get_mut(live.license as usize)?;
        let hash = keys.hash_one(live.instance_key());
        let (user, expires_at, overdraft) = (live.user, live.expires_at, live.overdraft);
        let borrowed = live.borrowed;
        let slot = slab.insert(live);
        if borrowed {
            lic.borrowed.push(slot);
        }
        let slab = &*slab;
        let new = slab.get(slot);
        // Read back from the disk under a floor (see `ending`): it ends, it holds no seat.
        if new.is_some_and(|r| lic.ending_of(r).is_some()) {
            lic.ending += 1;
        } else {
            lic.live += 1;
            lic.overdraft_live += u32::from(overdraft);
            *lic.per_user.entry(user).or_default() += 1;
            if overdraft {
                *lic.per_user_overdraft.entry(user).or_default() += 1;
            }
        }
        let same = |s: &u32| match (slab.get(*s), new) {
            (Some(r), Some(new)) => r.instance_key() == new.instance_key(),
            _ => false,
        };
        // A client instance's key finds its latest session (an older one left live by a queue
        // grant stays counted, as before).
        match lic.by_instance.find_mut(hash, same) {
            Some(existing) => *existing = slot,
            None => {
                // Rehashing reads the slots already indexed, all of them in the slab.
                lic.by_instance.insert_unique(hash, slot, |&s| {
                    slab.get(s).map_or(0, |r| keys.hash_one(r.instance_key()))
                });
            }
        }
        lic.expiry.insert((expires_at, slot));
        lic.high_water = lic.high_water.max(lic.live);
        Some(slot)
    }

    /// Takes a live session out of the slab and the indexes.
    pub(super) fn remove_live(&mut self, slot: u32) -> Option<Live> {
        let Mem {
            slab,
            licenses,
            keys,
            ..
        } = self;
        let record = slab.get(slot).filter(|r| !r.is_vacant())?;
        let lic = licenses.get_mut(record.license as usize)?;
        // An ending session was counted out when its end was decided.
        let ending = lic.ending_of(record).is_some();
        let r = slab.take(slot)?;
        if r.borrowed {
            lic.borrowed.retain(|&s| s != slot);
        }
        let hash = keys.hash_one(r.instance_key());
        if ending {
            lic.ending = lic.ending.saturating_sub(1);
        } else {
            lic.live = lic.live.saturating_sub(1);
            lic.overdraft_live = lic.overdraft_live.saturating_sub(u32::from(r.overdraft));
            decrement(&mut lic.per_user, r.user);
            if r.overdraft {
                decrement(&mut lic.per_user_overdraft, r.user);
            }
            lic.low_water = lic.low_water.min(lic.live);
        }
        if let Ok(entry) = lic.by_instance.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        lic.expiry.remove(&(r.expires_at, slot));
        Some(r)
    }

    /// Stores a live session's new timing, keeping the expiry index in step.
    pub(super) fn set_clock(&mut self, slot: u32, clock: &SessionClock) {
        let Some(r) = self.slab.get_mut(slot) else {
            return;
        };
        let (before, after) = (r.set_clock(clock), r.expires_at);
        if before != after {
            if let Some(lic) = self.licenses.get_mut(r.license as usize) {
                lic.expiry.remove(&(before, slot));
                lic.expiry.insert((after, slot));
            }
        }
    }
}

/// One fewer for `user` in a per-user count (gone at 0).
pub(super) fn decrement(counts: &mut HashMap<u32, u32>, user: u32) {
    if let Some(n) = counts.get_mut(&user) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&user);
        }
    }
}
