//! How an open batch decides (steps 6–7 of `open_batch`), against the view it read and
//! updating it as it grants: the queue heads first, in ticket order, then every newcomer in
//! arrival order, each with `crate::admission`. No statement runs here.

use std::collections::HashMap;

use leasehold_core::{RuleError, Timestamp, Username};

use super::view::{instance_key, user_active, InstanceKey, View};
use super::{OpenJob, Outcome};
use crate::admission::{self, OpenedVia, Verdict};
use crate::postgres::errors::clone_error;
use crate::postgres::rows::AuditRows;
use crate::records::*;
use crate::StoreError;

/// What a batch decided for a queue head: a session (granted) or a refusal.
pub(super) struct Served {
    pub(super) ticket: i64,
    pub(super) node_id: String,
    pub(super) outcome: Result<Opened, RuleError>,
}

/// Re-opened live sessions, slid: their ids and new expiries.
#[derive(Default)]
pub(super) struct Slides {
    pub(super) ids: Vec<String>,
    pub(super) expires_at: Vec<i64>,
}

/// What an open batch decided: what it writes, and what it answers after the commit.
#[derive(Default)]
pub(super) struct Decided {
    /// Each newcomer's outcome, in arrival order.
    pub(super) outcomes: Vec<Outcome>,
    /// New sessions: granted queue heads and newcomers.
    pub(super) opened: Vec<Session>,
    pub(super) slides: Slides,
    /// Events of the batch: reclaimed sessions, opens, denials.
    pub(super) audit: AuditRows,
    /// Queue heads granted or refused.
    pub(super) served: Vec<Served>,
    /// Licenses whose queue has more heads to serve than the batch took.
    pub(super) again: HashMap<String, Timestamp>,
    /// (job index, position) of the newcomers that join a queue.
    pub(super) to_queue: Vec<(usize, u32)>,
}

/// 6. Serves the queues first: a freed seat belongs to the longest waiter, before any newcomer
///    of this batch. Heads are taken in ticket order; the first one refused for want of a seat
///    stops its license's queue (strict first come, first served). Answers the sessions
///    granted, by client instance.
pub(super) fn serve_heads(
    view: &mut View,
    now: Timestamp,
    decided: &mut Decided,
) -> HashMap<InstanceKey, Session> {
    let mut granted_here: HashMap<InstanceKey, Session> = HashMap::new();
    let mut queued_ids: Vec<&String> = view
        .lics
        .iter()
        .filter(|(_, l)| !l.heads.is_empty())
        .map(|(id, _)| id)
        .collect();
    queued_ids.sort();
    let queued_ids: Vec<String> = queued_ids.into_iter().cloned().collect();
    for id in queued_ids {
        let Some(lic) = view.lics.get_mut(&id) else {
            continue;
        };
        let heads = std::mem::take(&mut lic.heads);
        let fetched = heads.len();
        let mut taken = 0;
        for head in heads {
            let key = instance_key(&head.req);
            let outcome =
                if let Some(s) = granted_here.get(&key).or_else(|| view.existing.get(&key)) {
                    // The waiting instance has a live session already: it is the answer.
                    Ok(Opened {
                        session: s.clone(),
                        created: false,
                    })
                } else if let Err(refusal) = admission::user_may_open(
                    user_active(&view.users, &lic.license.account_id, &head.req.username),
                    &head.req.username,
                ) {
                    // Deactivated while waiting: refused, as a newcomer would be.
                    Err(refusal)
                } else {
                    match Username::parse(&head.req.username) {
                        Err(e) => Err(e),
                        Ok(username) => {
                            let device_id = &head.req.device_id;
                            let decision = admission::decide(&*lic, &username, device_id, now);
                            match admission::queue_head_verdict(decision, device_id) {
                                Verdict::Queue => break,
                                Verdict::Refuse { refusal, .. } => Err(refusal),
                                Verdict::Grant { overdraft } => {
                                    let session = lic.take_seat(
                                        &head.req,
                                        overdraft,
                                        now,
                                        OpenedVia::Queue,
                                        &mut decided.audit,
                                    );
                                    decided.opened.push(session.clone());
                                    granted_here.insert(key, session.clone());
                                    Ok(Opened {
                                        session,
                                        created: true,
                                    })
                                }
                            }
                        }
                    }
                };
            taken += 1;
            lic.waiting = lic.waiting.saturating_sub(1);
            decided.served.push(Served {
                ticket: head.ticket,
                node_id: head.node_id,
                outcome,
            });
        }
        if taken == fetched && lic.waiting > 0 {
            decided.again.insert(id, now);
        }
    }
    granted_here
}

/// 7. Decides every newcomer, in arrival order, with the core rule; on a queueing license a
///    newcomer never takes a seat owed to waiters (`must_queue`). A client instance asking
///    again gets its live session, slid; one asking twice in the batch, the same answer.
pub(super) fn newcomers(
    jobs: &[OpenJob],
    view: &mut View,
    granted_here: &HashMap<InstanceKey, Session>,
    now: Timestamp,
    decided: &mut Decided,
) {
    let outcomes = &mut decided.outcomes;
    outcomes.reserve(jobs.len());
    let mut seen: HashMap<InstanceKey, usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let req = &job.ask.req;
        let Some(lic) = view.lics.get_mut(&req.license_id) else {
            let err = match view.broken.get(&req.license_id) {
                Some(e) => clone_error(e),
                None => StoreError::NotFound("license"),
            };
            outcomes.push(Outcome::Done(Err(err)));
            continue;
        };
        if let Err(refusal) = admission::user_may_open(
            user_active(&view.users, &lic.license.account_id, &req.username),
            &req.username,
        ) {
            outcomes.push(Outcome::Done(Err(refusal.into())));
            continue;
        }
        let key = instance_key(req);
        if let Some(&first) = seen.get(&key) {
            if !matches!(outcomes.get(first), Some(Outcome::Queued(_))) {
                outcomes.push(Outcome::SameAs(first));
                continue;
            }
        } else {
            seen.insert(key.clone(), i);
        }
        if let Some(session) = granted_here.get(&key) {
            outcomes.push(Outcome::Done(Ok(Opened {
                session: session.clone(),
                created: false,
            })));
            continue;
        }
        if let Some(s) = view.existing.get(&key) {
            if let Err(e) = admission::reopen_matches(&s.clock, req) {
                outcomes.push(Outcome::Done(Err(e.into())));
                continue;
            }
            let mut session = s.clone();
            let terms = &lic.license.terms;
            if let Err(e) = session.clock.heartbeat(terms, now) {
                outcomes.push(Outcome::Done(Err(e.into())));
                continue;
            }
            session.heartbeat_interval_secs = terms.heartbeat_interval_secs();
            decided.slides.ids.push(session.id.clone());
            decided
                .slides
                .expires_at
                .push(session.clock.expires_at.millis());
            outcomes.push(Outcome::Done(Ok(Opened {
                session,
                created: false,
            })));
            continue;
        }
        let username = match Username::parse(&req.username) {
            Ok(u) => u,
            Err(e) => {
                outcomes.push(Outcome::Done(Err(e.into())));
                continue;
            }
        };
        let decision = admission::decide(&*lic, &username, &req.device_id, now);
        let waiting = lic.waiting as usize;
        let verdict = admission::newcomer_verdict(
            &lic.license.terms,
            decision,
            waiting,
            // A borrow never waits in the queue.
            job.ask.wait && req.borrow_until.is_none(),
            &req.device_id,
        );
        let borrowed = lic.borrowed;
        let verdict = admission::borrow_verdict(verdict, &lic.license.terms, req, now, || borrowed);
        let overdraft = match verdict {
            Verdict::Grant { overdraft } => overdraft,
            Verdict::Queue => {
                lic.waiting += 1;
                decided
                    .audit
                    .push(admission::queued(&lic.license, req, now));
                decided.to_queue.push((i, lic.waiting));
                outcomes.push(Outcome::Queued(None));
                continue;
            }
            Verdict::Refuse { refusal, denial } => {
                if denial {
                    lic.denials += 1;
                }
                decided.audit.push(admission::denied(
                    &lic.license,
                    &req.username,
                    &refusal,
                    now,
                    (*req.origin).clone(),
                ));
                outcomes.push(Outcome::Done(Err(StoreError::Rule(refusal))));
                continue;
            }
        };
        let session = lic.take_seat(req, overdraft, now, OpenedVia::Request, &mut decided.audit);
        decided.opened.push(session.clone());
        outcomes.push(Outcome::Done(Ok(Opened {
            session,
            created: true,
        })));
    }
}
