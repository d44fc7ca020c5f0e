//! How live sessions end (logout, revoke, deactivation, expiry), the reaper's pass over the
//! licenses' expiry indexes (O(licenses + expired), in chunks), and the short memory of ended
//! sessions that answers `session_ended` without the database.

use std::sync::Arc;

use leasehold_core::{RuleError, Timestamp};
use leasehold_proto::EndReason;

use super::{Found, Mem};
use crate::records::*;
use crate::sqlite::ops::WriteOp;
use crate::sqlite::slab::parse_sid;
use crate::sqlite::writer::Ack;
use crate::StoreResult;

/// Most sessions one reaper pass ends while holding the lock (see `reap_chunk`).
const REAP_CHUNK: usize = 1000;

/// How long an ended session's reason is kept in memory (then it is read from disk).
const ENDED_MEMORY_MILLIS: i64 = 10 * 60 * 1000;

/// Most ended sessions remembered in memory (the oldest are forgotten first).
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
    /// Ends a live session in memory and returns it and the ops that persist it.
    pub(super) fn end_live(
        &mut self,
        slot: u32,
        reason: EndReason,
        now: Timestamp,
    ) -> Option<(Session, Vec<WriteOp>)> {
        if self.slab.get(slot)?.is_vacant() {
            return None;
        }
        let session = self.session(slot)?;
        let live = self.remove_live(slot)?;
        let li = live.license as usize;
        if self.licenses.get(li).is_some_and(|l| !l.queue.is_empty()) {
            self.to_serve.push(live.license);
        }
        self.last_now = now;
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
    /// session that expired meanwhile is ended as expired, and one that had ended is answered
    /// `SessionEnded`. `Ok(None)` when memory does not know it (the database is asked then).
    pub(in crate::sqlite) fn end_session(
        &mut self,
        session_id: &str,
        reason: EndReason,
        now: Timestamp,
    ) -> StoreResult<Option<(Session, Ack)>> {
        match self.lookup(session_id) {
            Some(Found::Live(slot)) => {
                let Some(clock) = self.slab.clock(slot) else {
                    return Ok(None);
                };
                if !clock.is_live(now) {
                    let expiry = clock.expiry_reason();
                    if let Some((_, ops)) = self.end_live(slot, expiry, now) {
                        self.send_unacked(ops);
                    }
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

    /// Ends every live session of a user on the account's licenses.
    /// Ends the live sessions of a user who is being deactivated, adding their writes to `ops`
    /// (written in the same job as the user record).
    pub(in crate::sqlite) fn end_user_slots(
        &mut self,
        account_id: &str,
        username: &str,
        now: Timestamp,
        ops: &mut Vec<WriteOp>,
    ) -> Vec<Session> {
        let slots = self.user_slots(account_id, username);
        self.end_slots(slots, EndReason::UserDeactivated, now, ops)
    }

    /// An ended session that memory still remembers.
    pub(in crate::sqlite) fn ended_session(&self, session_id: &str) -> Option<EndedSession> {
        let e = self.ended.get(&parse_sid(session_id)?)?;
        let lic = self.licenses.get(e.license as usize)?;
        Some(EndedSession {
            reason: e.reason,
            license_id: lic.id.clone(),
            account_id: lic.account_id.clone(),
            username: self.names.name(e.user).to_owned(),
        })
    }

    /// Ends at most `limit` expired sessions of one license (the earliest expired); returns
    /// them and the ops that persist it.
    pub(super) fn reap_license_upto(
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
            let Some(clock) = self.slab.clock(slot) else {
                continue;
            };
            if let Some((s, mut o)) = self.end_live(slot, clock.expiry_reason(), now) {
                ended.push(s);
                ops.append(&mut o);
            }
        }
        (ended, ops)
    }

    /// One chunk of the reaper's pass: ends at most `REAP_CHUNK` expired sessions (the due
    /// licenses in order, each one's earliest first) and queues their ends. Answers them, and
    /// whether the chunk was used up (then more may be due: the reaper lets go of the lock
    /// between chunks, so that heartbeats and opens are not held up by a mass expiry).
    pub(in crate::sqlite) fn reap_chunk(&mut self, now: Timestamp) -> (Vec<Session>, bool) {
        let due: Vec<usize> = self
            .licenses
            .iter()
            .enumerate()
            .filter(|(_, l)| l.expiry.first().is_some_and(|&(at, _)| at <= now.millis()))
            .map(|(li, _)| li)
            .collect();
        let mut ended = Vec::new();
        let mut ops = Vec::new();
        let mut budget = REAP_CHUNK;
        for li in due {
            if budget == 0 {
                break;
            }
            let (mut e, mut o) = self.reap_license_upto(li, now, budget);
            budget = budget.saturating_sub(e.len());
            ended.append(&mut e);
            ops.append(&mut o);
        }
        if !ops.is_empty() {
            self.send_unacked(ops);
        }
        (ended, budget == 0)
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
