//! How live sessions end one at a time (logout, revoke, device deactivation), the reaper's
//! pass over the licenses (O(licenses + expired), in chunks: expiries and passed license ends
//! are decided there, and written by the drain, see `ending`), and the short memory of ended
//! sessions that answers `session_ended` without the database.

use std::sync::Arc;

use leasehold_core::{RuleError, Timestamp};
use leasehold_proto::EndReason;

use super::{Found, Mem};
use crate::records::*;
use crate::sqlite::ops::WriteOp;
use crate::sqlite::slab::{parse_sid, Sid};
use crate::sqlite::writer::Ack;
use crate::StoreResult;

/// Most expiries one reaper pass decides while holding the lock (see `reap_chunk`).
const REAP_CHUNK: usize = 4096;

/// How long an ended session's reason is kept in memory (then it is read from disk).
const ENDED_MEMORY_MILLIS: i64 = 10 * 60 * 1000;

/// Most ended sessions remembered in memory (the oldest are forgotten first). Far more than the
/// drain has in flight (one chunk), whose ends must be answered from memory until they commit.
const ENDED_MAX: usize = 400_000;

/// What memory keeps of an ended session: enough for ownership checks and `session_ended`.
pub(super) struct Ended {
    pub(super) license: u32,
    pub(super) user: u32,
    pub(super) reason: EndReason,
}

/// An ended session as memory still knows it (for `get_session`).
pub(in crate::sqlite) struct EndedSession {
    pub(in crate::sqlite) reason: EndReason,
    pub(in crate::sqlite) license_id: Arc<str>,
    pub(in crate::sqlite) account_id: Arc<str>,
    pub(in crate::sqlite) username: String,
}

impl Mem {
    /// Ends a live session in memory (its end not decided before) and returns it and the ops
    /// that persist it.
    pub(super) fn end_live(
        &mut self,
        slot: u32,
        reason: EndReason,
        now: Timestamp,
    ) -> Option<(Session, Vec<WriteOp>)> {
        if self.slab.get(slot)?.is_vacant() || self.ending_of(slot).is_some() {
            return None;
        }
        let session = self.session(slot)?;
        let live = self.remove_live(slot)?;
        let li = live.license as usize;
        if self.licenses.get(li).is_some_and(|l| !l.queue.is_empty()) {
            self.to_serve.push(live.license);
        }
        self.last_now = now;
        self.note_borrow_end(&live, reason, now);
        self.remember_end(live.sid(), live.license, live.user, reason);
        let ops = vec![WriteOp::EndSession {
            id: live.sid(),
            at: now,
            reason,
            account_id: session.account_id.clone(),
            license_id: session.license_id.clone(),
            username: self.names.shared(live.user),
            origin: Some(Box::new(crate::origin::of_end(reason)))
                .filter(|o| **o != crate::Origin::default()),
        }];
        Some((session, ops))
    }

    /// Remembers an ended session for the `session_ended` answers of the next minutes.
    pub(super) fn remember_end(&mut self, id: Sid, license: u32, user: u32, reason: EndReason) {
        self.ended.insert(
            id,
            Ended {
                license,
                user,
                reason,
            },
        );
        self.ended_order.push_back((self.last_now.millis(), id));
        while self.ended_order.len() > ENDED_MAX {
            if let Some((_, old)) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    /// Ends the live sessions in `slots`; answers them, their ops appended to `ops`.
    pub(super) fn end_slots(
        &mut self,
        slots: Vec<u32>,
        reason: EndReason,
        now: Timestamp,
        ops: &mut Vec<WriteOp>,
    ) -> Vec<Session> {
        let mut ended = Vec::new();
        for slot in slots {
            if let Some((s, mut o)) = self.end_live(slot, reason, now) {
                ended.push(s);
                ops.append(&mut o);
            }
        }
        ended
    }

    /// A logout or a revoke: ends the live session, answering it and the ack of its end. A
    /// session that expired meanwhile ends as expired, and one that had ended (or whose end is
    /// decided) is answered `SessionEnded`. `Ok(None)` when memory does not know it (the
    /// database is asked then).
    pub(in crate::sqlite) fn end_session(
        &mut self,
        session_id: &str,
        reason: EndReason,
        now: Timestamp,
    ) -> StoreResult<Option<(Session, Ack)>> {
        match self.lookup(session_id) {
            Some(Found::Live(slot)) => {
                let Some(clock) = self.clock(slot) else {
                    return Ok(None);
                };
                if !clock.is_live(now) {
                    let expiry = clock.expiry_reason();
                    self.mark_expired(slot, expiry, now);
                    self.serve_queues();
                    return Err(RuleError::SessionEnded(expiry).into());
                }
                Ok(self
                    .end_live(slot, reason, now)
                    .map(|(s, ops)| (s, self.send(ops))))
            }
            Some(Found::Ended(reason)) => Err(RuleError::SessionEnded(reason).into()),
            None => Ok(None),
        }
    }

    /// An ended session that memory still remembers, or whose end is decided.
    pub(in crate::sqlite) fn ended_session(&self, session_id: &str) -> Option<EndedSession> {
        let id = parse_sid(session_id)?;
        let (license, user, reason) = match self.slab.find(id) {
            Some(slot) => {
                let (reason, _) = self.ending_of(slot)?;
                let r = self.slab.get(slot)?;
                (r.license, r.user, reason)
            }
            None => {
                let e = self.ended.get(&id)?;
                (e.license, e.user, e.reason)
            }
        };
        let lic = self.licenses.get(license as usize)?;
        Some(EndedSession {
            reason,
            license_id: lic.id.clone(),
            account_id: lic.account_id.clone(),
            username: self.names.name(user).to_owned(),
        })
    }

    /// Decides the end of at most `limit` expired sessions of one license (the earliest
    /// expired first); answers how many, per reason.
    pub(super) fn reap_license_upto(
        &mut self,
        li: usize,
        now: Timestamp,
        limit: usize,
        counts: &mut EndCounts,
    ) -> usize {
        let mut decided = 0;
        while decided < limit {
            let Some(&(at, slot)) = self.licenses.get(li).and_then(|l| l.expiry.first()) else {
                break;
            };
            if at > now.millis() {
                break;
            }
            if let Some(lic) = self.licenses.get_mut(li) {
                lic.expiry.pop_first();
            }
            // Under a floor already: ending, the drain writes it.
            if self.ending_of(slot).is_some() {
                continue;
            }
            let Some(clock) = self.clock(slot) else {
                continue;
            };
            let reason = clock.expiry_reason();
            self.mark_expired(slot, reason, now);
            if let Some(lic) = self.licenses.get(li) {
                counts.add(&lic.id, reason, 1);
            }
            decided += 1;
        }
        decided
    }

    /// One chunk of the reaper's pass: every license whose end has passed while sessions
    /// held its seats ends them all (one floor each), and at most `REAP_CHUNK` expired
    /// sessions (the due licenses in order, each one's earliest first) are decided ended; the
    /// drain writes them. Answers how many, per reason, and whether the chunk was used up
    /// (then more may be due: the reaper lets go of the lock between chunks, so that heartbeats
    /// and opens are not held up by a mass expiry).
    pub(in crate::sqlite) fn reap_chunk(&mut self, now: Timestamp, counts: &mut EndCounts) -> bool {
        let mut ops = Vec::new();
        let mut budget = REAP_CHUNK;
        for li in 0..self.licenses.len() {
            let Some(lic) = self.licenses.get(li) else {
                break;
            };
            let live = lic.live;
            let id = Arc::clone(&lic.id);
            let reason = lic.license.terms.end_reason();
            if let Ok(Some(op)) = self.end_at_license_end(li, now) {
                counts.add(&id, reason, u64::from(live));
                ops.push(op);
            }
            if budget > 0 {
                budget -= self.reap_license_upto(li, now, budget, counts);
            }
        }
        if ops.is_empty() {
            self.serve_queues();
        } else {
            self.send_unacked(ops);
        }
        budget == 0
    }

    /// The end of the reaper's pass: expired access tokens are dropped the same way as
    /// sessions (O(expired)), and ends older than `ENDED_MEMORY_MILLIS` are forgotten.
    pub(in crate::sqlite) fn sweep(&mut self, now: Timestamp) {
        let mut ops = Vec::new();
        while let Some(&(at, hash)) = self.credential_expiry.first() {
            if at > now {
                break;
            }
            self.credential_expiry.pop_first();
            self.credentials.remove(&hash);
            ops.push(WriteOp::DeleteCredential(hash));
        }
        self.forget_old_ends(now);
        self.forget_expired_leases(now);
        if !ops.is_empty() {
            self.send_unacked(ops);
        }
    }

    fn forget_old_ends(&mut self, now: Timestamp) {
        while let Some(&(at, id)) = self.ended_order.front() {
            if now.millis() - at < ENDED_MEMORY_MILLIS {
                break;
            }
            self.ended_order.pop_front();
            self.ended.remove(&id);
        }
    }
}
