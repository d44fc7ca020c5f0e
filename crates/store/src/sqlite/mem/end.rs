//! How live sessions end (logout, revoke, deactivation, expiry), the reaper's pass over the
//! expiry indexes (O(expired)), and the short memory of ended sessions.

use leasehold_core::Timestamp;
use leasehold_proto::EndReason;

use super::super::ops::WriteOp;
use super::Mem;
use crate::records::*;

/// Most sessions one reaper pass ends while holding the lock (see `reap_expired`).
pub(crate) const REAP_CHUNK: usize = 1000;

/// How long an ended session's reason is kept in memory (then it is read from disk).
pub(crate) const ENDED_MEMORY_MILLIS: i64 = 10 * 60 * 1000;

/// Most ended sessions remembered in memory (the oldest are forgotten first).
pub(crate) const ENDED_MAX: usize = 400_000;

/// What memory keeps of an ended session: enough for ownership checks and `session_ended`.
pub(crate) struct Ended {
    pub(crate) license: u32,
    pub(crate) user: u32,
    pub(crate) reason: EndReason,
}

impl Mem {
    /// Ends a live session in memory and returns it and the ops that persist it.
    pub(crate) fn end_live(
        &mut self,
        slot: u32,
        reason: EndReason,
        now: Timestamp,
    ) -> Option<(Session, Vec<WriteOp>)> {
        if self.slots.get(slot as usize)?.is_vacant() {
            return None;
        }
        let session = self.session(slot);
        let live = self.remove_live(slot)?;
        let li = live.license as usize;
        if self.licenses.get(li).is_some_and(|l| !l.queue.is_empty()) {
            self.to_serve.push(live.license);
        }
        self.last_now = self.last_now.max(now);
        let id = live.sid();
        self.ended.insert(
            id,
            Ended {
                license: live.license,
                user: live.user,
                reason,
            },
        );
        self.ended_order.push_back((now.millis(), id));
        while self.ended_order.len() > ENDED_MAX {
            if let Some((_, old)) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
        let ops = vec![WriteOp::EndSession {
            id,
            at: now,
            reason,
            account_id: session.account_id.clone(),
            license_id: session.license_id.clone(),
            username: self.names.shared(live.user),
        }];
        Some((session, ops))
    }

    /// Ends at most `limit` expired sessions of one license (the earliest expired); returns
    /// them and the ops that persist it.
    pub(crate) fn reap_license_upto(
        &mut self,
        li: usize,
        now: Timestamp,
        limit: usize,
    ) -> (Vec<Session>, Vec<WriteOp>) {
        let mut expired = Vec::new();
        if let Some(lic) = self.licenses.get(li) {
            for &(at, slot) in lic.expiry.iter().take(limit) {
                if at > now.millis() {
                    break;
                }
                expired.push(slot);
            }
        }
        let mut ended = Vec::new();
        let mut ops = Vec::new();
        for slot in expired {
            let reason = self.slots[slot as usize].clock().expiry_reason();
            if let Some((s, mut o)) = self.end_live(slot, reason, now) {
                ended.push(s);
                ops.append(&mut o);
            }
        }
        (ended, ops)
    }

    pub(crate) fn forget_old_ends(&mut self, now: Timestamp) {
        while let Some(&(at, id)) = self.ended_order.front() {
            if now.millis() - at < ENDED_MEMORY_MILLIS {
                break;
            }
            self.ended_order.pop_front();
            self.ended.remove(&id);
        }
    }
}
