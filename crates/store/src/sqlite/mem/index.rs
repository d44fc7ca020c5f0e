//! The slab's indexes: live sessions by id, by client instance and by license, kept in step as
//! sessions are inserted and removed.

use std::hash::BuildHasher;

use super::super::slab::{sid_hash, Live, Sid};
use super::Mem;

impl Mem {
    /// The slot of a live session.
    pub(crate) fn find(&self, id: Sid) -> Option<u32> {
        let slots = &self.slots;
        self.by_id
            .find(sid_hash(id), |&s| slots[s as usize].sid() == id)
            .copied()
    }

    pub(crate) fn instance_hash(&self, user: u32, device_id: &str, instance_id: &str) -> u64 {
        self.keys.hash_one((user, device_id, instance_id))
    }

    /// The latest live session of a client instance.
    pub(crate) fn instance_slot(
        &self,
        li: usize,
        username: &str,
        device_id: &str,
        instance_id: &str,
    ) -> Option<u32> {
        let user = self.names.get(username)?;
        let hash = self.instance_hash(user, device_id, instance_id);
        let slots = &self.slots;
        self.licenses
            .get(li)?
            .by_instance
            .find(hash, |&s| {
                let r = &slots[s as usize];
                r.user == user && r.device() == device_id && r.instance() == instance_id
            })
            .copied()
    }

    /// Slots of the license's live sessions (one per client instance) matching `pred`.
    pub(crate) fn license_slots(&self, li: usize, pred: impl Fn(&Live) -> bool) -> Vec<u32> {
        let Some(lic) = self.licenses.get(li) else {
            return Vec::new();
        };
        lic.by_instance
            .iter()
            .copied()
            .filter(|&s| pred(&self.slots[s as usize]))
            .collect()
    }

    /// Live sessions of a user on the account's licenses, as slots.
    pub(crate) fn user_slots(&self, account_id: &str, username: &str) -> Vec<u32> {
        let Some(user) = self.names.get(username) else {
            return Vec::new();
        };
        (0..self.licenses.len())
            .filter(|&li| {
                let l = &self.licenses[li];
                &*l.account_id == account_id && l.per_user.contains_key(&user)
            })
            .flat_map(|li| self.license_slots(li, |r| r.user == user))
            .collect()
    }

    /// Adds a live session to the slab and the indexes; answers its slot.
    pub(crate) fn insert_live(&mut self, live: Live) -> u32 {
        let li = live.license as usize;
        let (id, user, expires_at, overdraft) =
            (live.sid(), live.user, live.expires_at, live.overdraft);
        let hash = self.instance_hash(user, live.device(), live.instance());
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = live;
                s
            }
            None => {
                self.slots.push(live);
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.by_id
            .insert_unique(sid_hash(id), slot, |&s| sid_hash(slots[s as usize].sid()));
        let keys = &self.keys;
        let lic = &mut self.licenses[li];
        lic.live += 1;
        lic.overdraft_live += u32::from(overdraft);
        *lic.per_user.entry(user).or_default() += 1;
        let new = &slots[slot as usize];
        let same = |s: &u32| {
            let r = &slots[*s as usize];
            r.user == new.user && r.device() == new.device() && r.instance() == new.instance()
        };
        // A client instance's key finds its latest session (an older one left live by a queue
        // grant stays counted, as before).
        match lic.by_instance.find_mut(hash, same) {
            Some(existing) => *existing = slot,
            None => {
                lic.by_instance.insert_unique(hash, slot, |&s| {
                    let r = &slots[s as usize];
                    keys.hash_one((r.user, r.device(), r.instance()))
                });
            }
        }
        lic.expiry.insert((expires_at, slot));
        lic.high_water = lic.high_water.max(lic.live);
        slot
    }

    /// Takes a live session out of the slab and the indexes.
    pub(crate) fn remove_live(&mut self, slot: u32) -> Option<Live> {
        let r = self.slots.get(slot as usize).filter(|r| !r.is_vacant())?;
        let hash = self.instance_hash(r.user, r.device(), r.instance());
        if let Ok(entry) = self.by_id.find_entry(sid_hash(r.sid()), |&s| s == slot) {
            entry.remove();
        }
        let lic = self.licenses.get_mut(r.license as usize)?;
        lic.live = lic.live.saturating_sub(1);
        lic.overdraft_live = lic.overdraft_live.saturating_sub(u32::from(r.overdraft));
        if let Some(n) = lic.per_user.get_mut(&r.user) {
            *n -= 1;
            if *n == 0 {
                lic.per_user.remove(&r.user);
            }
        }
        if let Ok(entry) = lic.by_instance.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        lic.expiry.remove(&(r.expires_at, slot));
        lic.low_water = lic.low_water.min(lic.live);
        let live = std::mem::replace(&mut self.slots[slot as usize], Live::vacant());
        self.free.push(slot);
        Some(live)
    }
}
