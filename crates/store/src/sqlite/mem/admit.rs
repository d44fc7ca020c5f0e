//! Admission under the lock: the idempotent re-open, the seat decision (`crate::admission`), the
//! grant that creates a session, and the queue of a full license, served first come, first
//! served as seats free up (`serve_queues`, run after every queued write).

use leasehold_core::{OpenDecision, RuleError, Timestamp, Username};
use leasehold_proto::EndReason;
use tokio::sync::oneshot;

use super::Mem;
use crate::admission::{self, OpenedVia, Verdict};
use crate::records::*;
use crate::sqlite::ops::WriteOp;
use crate::sqlite::slab::{parse_sid, Live};
use crate::sqlite::writer::{Ack, Job};
use crate::{StoreError, StoreResult};

/// One client waiting for a seat.
pub(super) struct Waiting {
    ticket: u64,
    req: OpenRequest,
    since: Timestamp,
    tx: oneshot::Sender<StoreResult<Grant>>,
}

/// What admission decided, before waiting for the disk.
pub(in crate::sqlite) enum AdmitStep {
    Reopened(Opened),
    Granted(Session, Ack),
    Queued(QueueTicket),
}

impl Mem {
    /// Admits an open: the client instance's live session, a new session, a place in the
    /// queue (when `wait` and the license queues), or a refusal.
    pub(in crate::sqlite) fn admit(
        &mut self,
        req: &OpenRequest,
        wait: bool,
        now: Timestamp,
    ) -> StoreResult<AdmitStep> {
        self.last_now = now;
        let username = Username::parse(&req.username)?;
        let Some(li) = self.license_at(&req.license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        if parse_sid(&req.new_id).is_none() {
            return Err(bad_new_id(&req.new_id));
        }
        let account_id = self.lic_at(li)?.license.account_id.clone();
        let active = self
            .users
            .get(&(account_id, req.username.clone()))
            .map(|u| u.active);
        admission::user_may_open(active, &req.username)?;
        let mut ops = Vec::new();
        // Idempotent re-open: the client instance's live session is returned, refreshed.
        if let Some(slot) = self.instance_slot(li, &req.username, &req.device_id, &req.instance_id)
        {
            let (Some(r), Some(mut clock)) = (self.slab.get(slot), self.clock(slot)) else {
                return Err(StoreError::NotFound("session"));
            };
            let id = r.sid();
            if clock.is_live(now) {
                admission::reopen_matches(&clock, req)?;
                clock.heartbeat(&self.lic_at(li)?.license.terms, now)?;
                self.set_clock(slot, &clock);
                self.send_unacked(vec![WriteOp::Touch {
                    id,
                    expires_at: clock.expires_at,
                    hard_end: clock.hard_end,
                    license_end: clock.license_end,
                }]);
                return Ok(AdmitStep::Reopened(Opened {
                    session: self.indexed_session(slot)?,
                    created: false,
                }));
            }
            // Expired, not reaped yet: its end is decided now (the drain writes it).
            self.mark_expired(slot, clock.expiry_reason(), now);
        }
        let decide = |mem: &Mem| -> StoreResult<OpenDecision> {
            let seats = mem.lic_at(li)?.seats(&mem.names);
            Ok(admission::decide(&seats, &username, &req.device_id, now))
        };
        let mut decision = decide(self)?;
        if matches!(
            decision,
            OpenDecision::Deny(RuleError::NoSeatAvailable { .. })
        ) {
            // A full license reclaims its own expired sessions before refusing anyone.
            if self.reap_license_upto(li, now, usize::MAX, &mut EndCounts::default()) > 0 {
                decision = decide(self)?;
            }
        }
        // A borrow counts the license's live borrows (O(borrows)); an ordinary open does not.
        let borrowed = match req.borrow_until {
            Some(_) => self.borrowed_now(li),
            None => 0,
        };
        let lic = self.lic_at_mut(li)?;
        lic.queue.retain(|w| !w.tx.is_closed());
        let waiting = lic.queue.len();
        let verdict = admission::newcomer_verdict(
            &lic.license.terms,
            decision,
            waiting,
            // A borrow never waits in the queue.
            wait && req.borrow_until.is_none(),
            &req.device_id,
        );
        let verdict = admission::borrow_verdict(verdict, &lic.license.terms, req, now, || borrowed);
        let overdraft = match verdict {
            Verdict::Grant { overdraft } => overdraft,
            Verdict::Queue => {
                self.next_ticket += 1;
                let ticket = self.next_ticket;
                let (tx, granted) = oneshot::channel();
                let lic = self.lic_at_mut(li)?;
                ops.push(WriteOp::Audit(Box::new(admission::queued(
                    &lic.license,
                    req,
                    now,
                ))));
                lic.queue.push_back(Waiting {
                    ticket,
                    req: req.clone(),
                    since: now,
                    tx,
                });
                let position = lic.queue.len() as u32;
                self.send_unacked(ops);
                return Ok(AdmitStep::Queued(QueueTicket {
                    ticket,
                    position,
                    granted,
                }));
            }
            Verdict::Refuse { refusal, denial } => {
                if denial {
                    lic.denials += 1;
                }
                let denied = admission::denied(
                    &lic.license,
                    &req.username,
                    &refusal,
                    now,
                    (*req.origin).clone(),
                );
                ops.push(WriteOp::Audit(Box::new(denied)));
                self.send_unacked(ops);
                return Err(StoreError::Rule(refusal));
            }
        };
        let (_, session, mut o) = self.grant(req, overdraft, now, OpenedVia::Request)?;
        ops.append(&mut o);
        Ok(AdmitStep::Granted(session, self.send(ops)))
    }

    /// Creates the session of a granted open; answers its slot, the session and the ops that
    /// persist it.
    fn grant(
        &mut self,
        req: &OpenRequest,
        overdraft: bool,
        now: Timestamp,
        via: OpenedVia,
    ) -> StoreResult<(u32, Session, Vec<WriteOp>)> {
        let Some(id) = parse_sid(&req.new_id) else {
            return Err(bad_new_id(&req.new_id));
        };
        let Some(li) = self.license_at(&req.license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        let clock = admission::new_clock(req, &self.lic_at(li)?.license.terms, now);
        let user = self.names.intern(&req.username);
        let seq = self.next_seq;
        let live = Live::new(
            id,
            li as u32,
            user,
            req.kind,
            &req.device_id,
            &req.instance_id,
            &clock,
            overdraft,
            seq,
        );
        let slot = self
            .insert_live(live)
            .ok_or(StoreError::NotFound("license"))?;
        self.next_seq += 1;
        let session = self.indexed_session(slot)?;
        // A queued open's request is the waiter's (kept with it in the queue).
        let origin = (*req.origin).clone();
        let audit = WriteOp::Audit(Box::new(admission::opened(&session, now, via, origin)));
        let ops = vec![
            WriteOp::InsertSession {
                session: Box::new(session.clone()),
                seq,
            },
            audit,
        ];
        Ok((slot, session, ops))
    }

    /// Grants free seats of queueing licenses to their longest waiters, in order. A waiter
    /// that has gone away is skipped; a grant its waiter can no longer receive is ended at
    /// once, so no seat is ever held by nobody.
    pub(super) fn serve_queues(&mut self) {
        while let Some(li) = self.to_serve.pop() {
            let li = li as usize;
            let now = self.last_now;
            while let Some(lic) = self.licenses.get_mut(li) {
                lic.queue.retain(|w| !w.tx.is_closed());
                let Some(head) = lic.queue.front() else {
                    break;
                };
                let Ok(username) = Username::parse(&head.req.username) else {
                    lic.queue.pop_front();
                    continue;
                };
                // Deactivated while waiting: refused, as a newcomer would be.
                let active = self
                    .users
                    .get(&(lic.license.account_id.clone(), head.req.username.clone()))
                    .map(|u| u.active);
                if let Err(refusal) = admission::user_may_open(active, &head.req.username) {
                    if let Some(head) = lic.queue.pop_front() {
                        let _ = head.tx.send(Err(StoreError::Rule(refusal)));
                    }
                    continue;
                }
                let device_id = &head.req.device_id;
                let decision =
                    admission::decide(&lic.seats(&self.names), &username, device_id, now);
                let verdict = admission::queue_head_verdict(decision, device_id);
                let Some(head) = (match &verdict {
                    Verdict::Queue => None,
                    _ => lic.queue.pop_front(),
                }) else {
                    break;
                };
                let overdraft = match verdict {
                    Verdict::Grant { overdraft } => overdraft,
                    Verdict::Refuse { refusal, .. } => {
                        // The license changed under the waiter (suspended, limit...): tell it.
                        let _ = head.tx.send(Err(StoreError::Rule(refusal)));
                        continue;
                    }
                    Verdict::Queue => break,
                };
                let Ok((slot, session, ops)) =
                    self.grant(&head.req, overdraft, now, OpenedVia::Queue)
                else {
                    break;
                };
                let (ack, durable) = oneshot::channel();
                let _ = self.writer.send(Job::Write {
                    ops,
                    ack: Some(ack),
                });
                let grant = Grant {
                    opened: Opened {
                        session,
                        created: true,
                    },
                    durable,
                };
                if head.tx.send(Ok(grant)).is_err() {
                    // The waiter left between the check and the grant: give the seat back.
                    if let Some((_, ops)) = self.end_live(slot, EndReason::Logout, now) {
                        let _ = self.writer.send(Job::Write { ops, ack: None });
                    }
                }
            }
        }
    }

    /// Leaves the queue; false when the ticket is no longer queued (granted meanwhile).
    pub(in crate::sqlite) fn leave_queue(&mut self, license_id: &str, ticket: u64) -> bool {
        let Some(li) = self.license_at(license_id) else {
            return false;
        };
        let Ok(lic) = self.lic_at_mut(li) else {
            return false;
        };
        let before = lic.queue.len();
        lic.queue.retain(|w| w.ticket != ticket);
        let left = lic.queue.len() < before;
        if left {
            // The head may have changed: a grant blocked behind it may now go through.
            self.to_serve.push(li as u32);
            self.serve_queues();
        }
        left
    }

    /// The license's waiters, in order.
    pub(in crate::sqlite) fn list_queue(
        &self,
        license_id: &str,
    ) -> StoreResult<Vec<QueuedRequest>> {
        let Some(lic) = self.lic(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        Ok(lic
            .queue
            .iter()
            .filter(|w| !w.tx.is_closed())
            .enumerate()
            .map(|(i, w)| QueuedRequest {
                ticket: w.ticket,
                position: i as u32 + 1,
                username: w.req.username.clone(),
                device_id: w.req.device_id.clone(),
                instance_id: w.req.instance_id.clone(),
                since: w.since,
            })
            .collect())
    }
}

fn bad_new_id(id: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "session id {id:?} is not a lowercase hyphenated UUID"
    ))
}
