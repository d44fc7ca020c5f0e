//! The sessions this node holds in memory, so that a heartbeat can be answered without a
//! statement of its own: the latest expiry of each session this node heartbeated, its terms,
//! and when the database last confirmed it live. A heartbeat is answered from here only while
//! that confirmation is younger than `HOLD_TRUST_MS`; its new expiry waits in `pending` and the
//! flusher (`flush`) writes the pending expiries in bulk once a second (`FLUSH_EVERY`), with a
//! guarded update that confirms the sessions still live and drops the others from memory.
//!
//! # The bound
//!
//! - An end decided anywhere (a logout, revoke, mass end, license end, user or device
//!   deactivation, on any node) is seen by this node's heartbeats within `HOLD_TRUST_MS`: after
//!   it, no flush confirms the session any more, so once its last confirmation is older than
//!   `HOLD_TRUST_MS` its heartbeats go to the database (the heartbeat lane), which answers the
//!   end. Ends decided on this node drop the session from memory at once.
//! - A heartbeat answered from memory is on disk within `FLUSH_EVERY` plus one flush. A session
//!   live in some node's memory therefore has a stored expiry later than `now - REAP_LAG_MS`:
//!   every reaper and every open that reclaims seats ends only sessions whose stored expiry is
//!   older than that (`reaper`, `open::view`), and counts them in use until then.
//! - When flushes fail (the database is unreachable), confirmations stop: within
//!   `HOLD_TRUST_MS` heartbeats go to the database and are answered 503 like every other
//!   request. What was answered meanwhile and never written makes a session expire earlier
//!   than its owner was told, by at most `HOLD_TRUST_MS`, never later (as a crash does on
//!   SQLite).
//!
//! Memory is one entry per session this node heartbeated: entries leave when the session ends
//! on this node, when a flush or a heartbeat finds it no longer live, and when their expiry is
//! `REAP_LAG_MS` past (`prune`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use leasehold_core::{LicenseTerms, Timestamp};

use crate::records::Session;
use crate::{StoreError, StoreResult};

/// How long a confirmation by the database lets this node answer a session's heartbeats from
/// memory: a flush period and one flush.
pub(crate) const HOLD_TRUST_MS: i64 = 2_000;
/// How often the flusher writes the pending expiries.
pub(super) const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How far a stored expiry may lag the expiry a node answered: `HOLD_TRUST_MS` and a second of
/// margin (clock offsets between nodes, a flush in flight). Reapers and seat reclaims end only
/// sessions whose stored expiry is at least this far past.
pub(crate) const REAP_LAG_MS: i64 = 3_000;

/// A session held in memory.
struct Held {
    /// The session as last answered: its expiry the latest this node knows.
    session: Session,
    terms: Arc<LicenseTerms>,
    /// `hashtext` of the license's terms when they were read: a flush that finds another one
    /// drops the entry (the terms were changed on some node).
    terms_hash: i32,
    /// The latest heartbeat time (database clock, ms) the database confirmed live.
    checked: i64,
}

/// A pending expiry: the latest answered for a session, and the time of that heartbeat.
#[derive(Clone, Copy)]
pub(super) struct PendingBeat {
    pub(super) exp: i64,
    pub(super) now: i64,
}

#[derive(Default)]
struct Inner {
    held: HashMap<String, Held>,
    pending: HashMap<String, PendingBeat>,
}

/// The node's held sessions (see the module doc).
#[derive(Default)]
pub(super) struct Hold {
    inner: Mutex<Inner>,
    /// The latest heartbeat time seen (database clock, ms): the flusher's notion of now.
    latest: AtomicI64,
}

/// What memory answers a heartbeat.
pub(super) enum Answer {
    /// Answered (slid from memory, or refused by its owner check).
    Done(StoreResult<Session>),
    /// Memory cannot answer: the heartbeat lane asks the database.
    Ask,
}

impl Hold {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A heartbeat at `now` of `id` (by `owner`, when given), answered from memory when the
    /// session is held, confirmed within `HOLD_TRUST_MS` and still live by its clock.
    pub(super) fn beat(
        &self,
        id: &str,
        owner: Option<&(Arc<str>, String)>,
        now: Timestamp,
    ) -> Answer {
        self.latest.fetch_max(now.millis(), Ordering::Relaxed);
        let mut inner = self.lock();
        let Some(held) = inner.held.get_mut(id) else {
            return Answer::Ask;
        };
        if now.millis() - held.checked > HOLD_TRUST_MS {
            return Answer::Ask;
        }
        if let Some((account_id, username)) = owner {
            if held.session.account_id != *account_id {
                return Answer::Done(Err(StoreError::NotFound("session")));
            }
            if held.session.username != *username {
                return Answer::Done(Ok(held.session.clone()));
            }
        }
        let mut clock = held.session.clock.clone();
        let Ok(exp) = clock.heartbeat(&held.terms, now) else {
            // Expired by what this node knows: the database decides (another node may hold a
            // later expiry; the lane waits for it before ending the session).
            return Answer::Ask;
        };
        held.session.clock = clock;
        let answer = held.session.clone();
        let beat = PendingBeat {
            exp: exp.millis(),
            now: now.millis(),
        };
        inner
            .pending
            .entry(id.to_owned())
            .and_modify(|p| {
                if beat.exp >= p.exp {
                    *p = beat;
                }
            })
            .or_insert(beat);
        Answer::Done(Ok(answer))
    }

    /// The held session `id`, its terms and their hash (for the heartbeat lane).
    pub(super) fn get(&self, id: &str) -> Option<(Session, Arc<LicenseTerms>, i32)> {
        let inner = self.lock();
        inner
            .held
            .get(id)
            .map(|h| (h.session.clone(), h.terms.clone(), h.terms_hash))
    }

    /// Holds `session` as the database just confirmed it live at `checked` (its expiry as
    /// stored, or later).
    pub(super) fn put(
        &self,
        session: Session,
        terms: Arc<LicenseTerms>,
        terms_hash: i32,
        checked: i64,
    ) {
        let mut inner = self.lock();
        match inner.held.get_mut(&session.id) {
            Some(held) => {
                if session.clock.expires_at < held.session.clock.expires_at {
                    // A later expiry answered from memory meanwhile: keep it.
                    let exp = held.session.clock.expires_at;
                    held.session = session;
                    held.session.clock.expires_at = exp;
                } else {
                    held.session = session;
                }
                held.terms = terms;
                held.terms_hash = terms_hash;
                held.checked = held.checked.max(checked);
            }
            None => {
                inner.held.insert(
                    session.id.clone(),
                    Held {
                        session,
                        terms,
                        terms_hash,
                        checked,
                    },
                );
            }
        }
    }

    /// The database confirmed `id` live at `checked` with terms of hash `terms_hash`: a
    /// different hash drops it (its next heartbeat reads the new terms).
    pub(super) fn confirm(&self, id: &str, checked: i64, terms_hash: i32) {
        let mut inner = self.lock();
        let Some(held) = inner.held.get_mut(id) else {
            return;
        };
        if held.terms_hash != terms_hash {
            inner.held.remove(id);
            return;
        }
        held.checked = held.checked.max(checked);
    }

    /// Drops `id` from memory (it ended, or is no longer live as the database says).
    pub(super) fn forget(&self, id: &str) {
        self.lock().held.remove(id);
    }

    /// Drops every session of `license_id` (its terms or its sessions changed on this node).
    pub(super) fn forget_license(&self, license_id: &str) {
        self.lock()
            .held
            .retain(|_, h| &*h.session.license_id != license_id);
    }

    /// `session` with the later of its stored expiry and the one this node answered.
    pub(super) fn overlay(&self, mut session: Session) -> Session {
        if let Some(held) = self.lock().held.get(&session.id) {
            if held.session.clock.expires_at > session.clock.expires_at {
                session.clock.expires_at = held.session.clock.expires_at;
            }
        }
        session
    }

    /// The pending expiries, taken for a flush.
    pub(super) fn take_pending(&self) -> HashMap<String, PendingBeat> {
        std::mem::take(&mut self.lock().pending)
    }

    /// Pending expiries a flush could not write: they wait for the next one (a later expiry
    /// answered meanwhile wins).
    pub(super) fn restore_pending(&self, failed: Vec<(String, PendingBeat)>) {
        let mut inner = self.lock();
        for (id, beat) in failed {
            inner
                .pending
                .entry(id)
                .and_modify(|p| {
                    if beat.exp > p.exp {
                        *p = beat;
                    }
                })
                .or_insert(beat);
        }
    }

    /// Drops the sessions whose expiry is `REAP_LAG_MS` past the latest heartbeat time seen
    /// (nothing of theirs is pending: a pending expiry is later).
    pub(super) fn prune(&self) -> usize {
        let horizon = self.latest.load(Ordering::Relaxed) - REAP_LAG_MS;
        let mut inner = self.lock();
        let Inner { held, pending } = &mut *inner;
        held.retain(|id, h| h.session.clock.expires_at.millis() > horizon || pending.contains_key(id));
        held.len()
    }
}
