//! A live session's timing: a heartbeat slides its expiry (persisted as a touch), a wall-clock
//! step shifts it; the license's expiry index follows every change.

use leasehold_core::session::SessionClock;
use leasehold_core::Timestamp;

use super::super::slab::pack_time;
use super::Mem;
use crate::{StoreError, StoreResult};

impl Mem {
    /// Stores a live session's new timing, keeping the expiry index in step.
    pub(crate) fn set_clock(&mut self, slot: u32, clock: &SessionClock) {
        let r = &mut self.slots[slot as usize];
        let new = clock.expires_at.millis();
        if r.expires_at != new {
            if let Some(lic) = self.licenses.get_mut(r.license as usize) {
                lic.expiry.remove(&(r.expires_at, slot));
                lic.expiry.insert((new, slot));
            }
            r.expires_at = new;
        }
        r.opened_at = clock.opened_at.millis();
        r.hard_end = pack_time(clock.hard_end);
        r.license_end = pack_time(clock.license_end);
    }

    /// A heartbeat of a live session: slides its expiry (persisted with the next batch), or
    /// ends it if it has expired meanwhile.
    pub(crate) fn beat(&mut self, slot: u32, now: Timestamp) -> StoreResult<SessionClock> {
        let r = &self.slots[slot as usize];
        let mut clock = r.clock();
        let Some(lic) = self.licenses.get(r.license as usize) else {
            return Err(StoreError::NotFound("license"));
        };
        match clock.heartbeat(&lic.license.terms, now) {
            Ok(_) => {
                let id = r.sid();
                self.set_clock(slot, &clock);
                self.touch(id, &clock);
                Ok(clock)
            }
            Err(err) => {
                // Expired but not yet reaped: end it now, it never comes back.
                let reason = clock.expiry_reason();
                if let Some((_, ops)) = self.end_live(slot, reason, now) {
                    self.send_unacked(ops);
                }
                Err(err.into())
            }
        }
    }

    /// The wall clock stepped by `delta_ms`: every live session keeps its remaining life
    /// (`SessionClock::shift_for_clock_step`); the new timings reach the disk as touches.
    /// Answers how many sessions moved.
    pub(crate) fn shift_live(&mut self, delta_ms: i64) -> usize {
        let mut moved = 0;
        for li in 0..self.licenses.len() {
            let slots: Vec<u32> = self.licenses[li].expiry.iter().map(|&(_, s)| s).collect();
            for slot in slots {
                let mut clock = self.slots[slot as usize].clock();
                clock.shift_for_clock_step(delta_ms);
                self.set_clock(slot, &clock);
                let id = self.slots[slot as usize].sid();
                self.touch(id, &clock);
                moved += 1;
            }
        }
        moved
    }
}
