//! Memory's side of a failed write (see `crate::sqlite::recovery`): while memory may hold
//! changes the disk refused, every write is refused at the door (`writable`), and memory is
//! then rebuilt from the disk (`take_over`), keeping what was never meant to be durable: the
//! clients waiting in queues, the usage counters, and the heartbeats already answered.

use std::collections::VecDeque;

use leasehold_core::session::SessionClock;
use leasehold_core::Timestamp;
use leasehold_proto::EndReason;

use super::Mem;
use crate::sqlite::slab::{unpack_time, Sid};
use crate::sqlite::writer::lock_touches;
use crate::{StoreError, StoreResult};

impl Mem {
    /// Refuses a write while the disk refuses them: nothing changes, the caller gets 503.
    pub(in crate::sqlite) fn writable(&self) -> StoreResult<()> {
        match &self.broken {
            None => Ok(()),
            Some(reason) => Err(StoreError::Unavailable(format!(
                "the database cannot be written ({reason}); writes resume once a test write succeeds"
            ))),
        }
    }

    /// Why writes are refused, if they are.
    pub(in crate::sqlite) fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    pub(in crate::sqlite) fn set_broken(&mut self, reason: Option<String>) {
        self.broken = reason;
    }

    /// Becomes the state read back from the disk (`fresh`), taking over from the memory that
    /// outran it: the writer channel and the pending touches are the same, waiting clients stay
    /// in their queues (in order), the licenses' usage counters go on, and the heartbeats
    /// answered meanwhile are kept for the sessions the disk holds as live.
    pub(in crate::sqlite) fn take_over(&mut self, mut fresh: Mem) {
        fresh.writer = self.writer.clone();
        fresh.touches = self.touches.clone();
        fresh.broken = self.broken.take();
        fresh.started = self.started;
        fresh.last_now = self.last_now;
        fresh.next_ticket = self.next_ticket;
        fresh.next_seq = fresh.next_seq.max(self.next_seq);
        fresh.decided = fresh.decided.max(self.decided);
        for old in &mut self.licenses {
            if let Some(new) = fresh.lic_mut(&old.license.id) {
                new.queue = std::mem::take(&mut old.queue);
                new.high_water = new.high_water.max(old.high_water);
                new.low_water = new.low_water.min(old.low_water);
                new.denials = old.denials;
            }
        }
        let touches = self.touches.clone();
        let mut pending = lock_touches(&touches);
        let mut lost: VecDeque<Sid> = VecDeque::new();
        for (&id, packed) in pending.iter() {
            match fresh.slab.find(id) {
                Some(slot) => fresh.restore_touch(slot, *packed),
                None => lost.push_back(id),
            }
        }
        for id in lost {
            pending.remove(&id);
        }
        drop(pending);
        *self = fresh;
    }

    /// A heartbeat answered before the reload: its timing, over the one the disk had.
    fn restore_touch(&mut self, slot: u32, [expires_at, hard_end, license_end]: [i64; 3]) {
        let Some(on_disk) = self.clock(slot) else {
            return;
        };
        let clock = SessionClock {
            opened_at: on_disk.opened_at,
            expires_at: Timestamp::from_millis(expires_at),
            hard_end: unpack_time(hard_end),
            license_end: unpack_time(license_end),
            license_end_reason: EndReason::LicenseExpired,
            borrow_until: on_disk.borrow_until,
        };
        if self.ending_of(slot).is_some() {
            return;
        }
        self.set_clock(slot, &clock);
    }
}
