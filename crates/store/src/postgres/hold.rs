//! The sessions this node holds in memory, so that a heartbeat can be answered without a
//! statement of its own: the latest expiry of each session this node opened or heartbeated,
//! and its terms. A heartbeat of a held session is answered from here while this node's view of ends is
//! fresh: its ends feed (`ends`) read, within the last `HOLD_TRUST_MS`, every end committed
//! since the previous read (the `ended` audit events, and the floors, ends and terms of the
//! licenses it holds sessions of), and its pending expiries are being written (none waits
//! since longer than `HOLD_TRUST_MS`). The new expiry waits in `pending`; the flusher (`flush`)
//! writes the pending expiries in bulk once a second (`FLUSH_EVERY`), with a guarded update
//! that drops from memory the sessions no longer live.
//!
//! # The bound
//!
//! - An end decided anywhere (a logout, revoke, mass end, license end, user or device
//!   deactivation, on any node) is answered by this node's heartbeats within `HOLD_TRUST_MS`:
//!   the feed that reads it drops the session from memory, and memory answers only while the
//!   feed's last read started less than `HOLD_TRUST_MS` ago. Ends decided on this node drop the
//!   session at once. A session read from the database before an end the feed already passed
//!   is never held (`put` checks the ends it saw lately and the licenses' changes).
//! - A heartbeat answered from memory is on disk within `FLUSH_EVERY` plus one flush; memory
//!   stops answering once an expiry waits longer than `HOLD_TRUST_MS`. A session live in some
//!   node's memory therefore has a stored expiry later than `now - REAP_LAG_MS`: while other
//!   nodes live, every reaper and every open that reclaims seats ends only sessions whose
//!   stored expiry is older than that (`REAP_LAG_SQL`; `reaper`, `open::view`), and counts them
//!   in use until then. A reaper that finds a due session live in its own node's memory writes
//!   that expiry instead of ending it, and an open's seat reclaim leaves it live and counted
//!   (`Hold::still_expired`), so a node alone needs no lag.
//! - When the database is unreachable, the feed and the flushes fail: within `HOLD_TRUST_MS`
//!   heartbeats go to the database and are answered 503 like every other request. What was
//!   answered meanwhile and never written makes a session expire earlier than its owner was
//!   told, by at most `HOLD_TRUST_MS`, never later (as a crash does on SQLite).
//!
//! Memory is one entry per session this node opened or heartbeated (an open batch holds what
//! it opened, so the first heartbeat through the opening node needs no read): entries leave
//! when the session ends, when a flush or a heartbeat finds it no longer live, and when their
//! expiry is `REAP_LAG_MS` past (`prune`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use leasehold_core::{LicenseTerms, Timestamp};

use crate::records::Session;
use crate::{StoreError, StoreResult};

/// How fresh this node's view of ends must be for memory to answer a heartbeat, and how long an
/// answered expiry may wait for its write: a feed period, a flush period and one statement.
pub(crate) const HOLD_TRUST_MS: i64 = 2_000;
const HOLD_TRUST: Duration = Duration::from_millis(HOLD_TRUST_MS as u64);
/// How often the flusher writes the pending expiries.
pub(super) const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How far a stored expiry may lag the expiry a node answered: `HOLD_TRUST_MS` and a second of
/// margin (clock offsets between nodes, a flush in flight). Reapers and seat reclaims end only
/// sessions whose stored expiry is at least this far past.
pub(crate) const REAP_LAG_MS: i64 = 3_000;
/// SQL expression: the lag reapers and seat reclaims allow, in ms. Only another live node can
/// hold an expiry not written yet that this node does not know: alone, a node's reaper asks its
/// own memory instead (`Hold::alive`), so the lag is `REAP_LAG_MS` only while other nodes live.
pub(crate) const REAP_LAG_SQL: &str = "(CASE WHEN (SELECT count(*) FROM nodes n WHERE \
     n.seen_at > now() - interval '5 seconds' \
     AND (n.pid IS NULL OR EXISTS (SELECT 1 FROM pg_stat_get_activity(n.pid)))) > 1 \
     THEN 3000 ELSE 0 END)";

/// How long the ids of sessions seen ending are remembered (so a read that raced the end does
/// not hold the session).
const RECENT_ENDS: Duration = Duration::from_secs(30);

/// A session held in memory.
struct Held {
    /// The session as last answered: its expiry the latest this node knows.
    session: Session,
    terms: Arc<LicenseTerms>,
    /// `hashtext` of the license's terms when they were read: a flush that finds another one
    /// drops the entry (the terms were changed on some node).
    terms_hash: i32,
}

/// A pending expiry: the latest answered for a session, and the time of that heartbeat.
#[derive(Clone, Copy)]
pub(super) struct PendingBeat {
    pub(super) exp: i64,
    pub(super) now: i64,
}

/// What the feed last read of a license this node holds sessions of: its floor, its end and
/// the hash of its terms.
pub(super) type LicenseMark = (i64, Option<i64>, i32);

#[derive(Default)]
struct LicenseSeen {
    mark: Option<LicenseMark>,
    /// When the feed last saw it change: a read started before is not held.
    changed: Option<Instant>,
    /// How many of its sessions are held (so the feed's list of licenses costs nothing per
    /// held session).
    held: usize,
}

/// Maps keyed by session id, read and written on every heartbeat: foldhash (randomly seeded;
/// the ids are the server's own) rather than SipHash, keys shared between the two.
type ById<V> = hashbrown::HashMap<Arc<str>, V>;

#[derive(Default)]
struct Inner {
    held: ById<Held>,
    pending: ById<PendingBeat>,
    /// When the oldest expiry of `pending` was answered.
    pending_since: Option<Instant>,
    /// When the feed's last complete read started, and when its first one did.
    fed_at: Option<Instant>,
    epoch: Option<Instant>,
    recent_ends: HashMap<String, Instant>,
    licenses: HashMap<String, LicenseSeen>,
}

impl Inner {
    /// Holds `held` under `id`, counted under its license.
    fn insert_held(&mut self, id: Arc<str>, held: Held) {
        let license_id = held.session.license_id.clone();
        if self.held.insert(id, held).is_none() {
            self.licenses
                .entry(license_id.to_string())
                .or_default()
                .held += 1;
        }
    }

    /// Drops `id` from memory, if held.
    fn remove_held(&mut self, id: &str) {
        if let Some(gone) = self.held.remove(id) {
            uncount(&mut self.licenses, &gone.session.license_id);
        }
    }

    /// Memory may answer: the feed read ends within `HOLD_TRUST`, and no expiry waits longer.
    fn fresh(&self) -> bool {
        self.fed_at.is_some_and(|at| at.elapsed() <= HOLD_TRUST)
            && self
                .pending_since
                .is_none_or(|at| at.elapsed() <= HOLD_TRUST)
    }
}

/// One held session of `license_id` fewer.
fn uncount(licenses: &mut HashMap<String, LicenseSeen>, license_id: &str) {
    if let Some(seen) = licenses.get_mut(license_id) {
        seen.held = seen.held.saturating_sub(1);
    }
}

/// The node's held sessions (see the module doc).
#[derive(Default)]
pub(super) struct Hold {
    inner: Mutex<Inner>,
    /// The latest heartbeat time seen (database clock, ms): the flusher's notion of now.
    latest: AtomicI64,
}

impl Hold {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A heartbeat at `now` of `id` (by `owner`, when given), answered from memory when the
    /// session is held, memory is fresh and the session is live by its clock (slid, or refused
    /// by its owner check); `None` when the heartbeat lane must ask the database.
    pub(super) fn beat(
        &self,
        id: &str,
        owner: Option<&(Arc<str>, String)>,
        now: Timestamp,
    ) -> Option<StoreResult<Session>> {
        self.latest.fetch_max(now.millis(), Ordering::Relaxed);
        let mut inner = self.lock();
        if !inner.fresh() {
            return None;
        }
        let inner = &mut *inner;
        let (key, held) = inner.held.get_key_value_mut(id)?;
        if let Some((account_id, username)) = owner {
            if held.session.account_id != *account_id {
                return Some(Err(StoreError::NotFound("session")));
            }
            if held.session.username != *username {
                return Some(Ok(held.session.clone()));
            }
        }
        let mut clock = held.session.clock;
        let Ok(exp) = clock.heartbeat(&held.terms, now) else {
            // Expired by what this node knows: the database decides (another node may hold a
            // later expiry; the lane waits for it before ending the session).
            return None;
        };
        held.session.clock = clock;
        let answer = held.session.clone();
        let beat = PendingBeat {
            exp: exp.millis(),
            now: now.millis(),
        };
        inner
            .pending
            .entry(key.clone())
            .and_modify(|p| {
                if beat.exp >= p.exp {
                    *p = beat;
                }
            })
            .or_insert(beat);
        inner.pending_since.get_or_insert_with(Instant::now);
        Some(Ok(answer))
    }

    /// The held session `id`, its terms and their hash (for the heartbeat lane).
    pub(super) fn get(&self, id: &str) -> Option<(Session, Arc<LicenseTerms>, i32)> {
        let inner = self.lock();
        inner
            .held
            .get(id)
            .map(|h| (h.session.clone(), h.terms.clone(), h.terms_hash))
    }

    /// Holds `session`, which a statement started at `read_at` found live (its expiry as
    /// stored, or later) under a license read as `mark`: unless the feed has seen it end, or
    /// its license change, since, or knows the license otherwise (the feed catches up first).
    pub(super) fn put(
        &self,
        session: Session,
        terms: Arc<LicenseTerms>,
        mark: LicenseMark,
        read_at: Instant,
    ) {
        let terms_hash = mark.2;
        let mut inner = self.lock();
        let license = inner
            .licenses
            .entry(session.license_id.to_string())
            .or_default();
        let stale = license.changed.is_some_and(|at| at > read_at)
            || license.mark.is_some_and(|m| m != mark);
        license.mark.get_or_insert(mark);
        if stale
            || inner.epoch.is_none_or(|at| at > read_at)
            || inner.recent_ends.contains_key(&session.id)
        {
            inner.remove_held(&session.id);
            return;
        }
        match inner.held.get_mut(session.id.as_str()) {
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
            }
            None => {
                let id = Arc::from(session.id.as_str());
                inner.insert_held(
                    id,
                    Held {
                        session,
                        terms,
                        terms_hash,
                    },
                );
            }
        }
    }

    /// A flush found `id` live with terms of hash `terms_hash`: a different hash drops it (its
    /// next heartbeat reads the new terms).
    pub(super) fn confirm(&self, id: &str, terms_hash: i32) {
        let mut inner = self.lock();
        if inner
            .held
            .get(id)
            .is_some_and(|h| h.terms_hash != terms_hash)
        {
            inner.remove_held(id);
        }
    }

    /// Drops `id` from memory (it ended, or is no longer live as the database says).
    pub(super) fn forget(&self, id: &str) {
        self.lock().remove_held(id);
    }

    /// Drops every session of `license_id` (its terms or its sessions changed on this node).
    pub(super) fn forget_license(&self, license_id: &str) {
        let mut inner = self.lock();
        inner
            .licenses
            .entry(license_id.to_owned())
            .or_default()
            .changed = Some(Instant::now());
        inner
            .held
            .retain(|_, h| &*h.session.license_id != license_id);
        if let Some(seen) = inner.licenses.get_mut(license_id) {
            seen.held = 0;
        }
    }

    /// The expiry this node last answered for `id`, if it holds it (ms).
    pub(super) fn expiry(&self, id: &str) -> Option<i64> {
        let inner = self.lock();
        Some(inner.held.get(id)?.session.clock.expires_at.millis())
    }

    /// `session` with the later of its stored expiry and the one this node answered.
    pub(super) fn overlay(&self, mut session: Session) -> Session {
        self.overlay_in_place(&mut session);
        session
    }

    /// Raises `session`'s expiry to the one this node answered, if later.
    pub(super) fn overlay_in_place(&self, session: &mut Session) {
        if let Some(held) = self.lock().held.get(session.id.as_str()) {
            if held.session.clock.expires_at > session.clock.expires_at {
                session.clock.expires_at = held.session.clock.expires_at;
            }
        }
    }

    /// Of sessions found expired by their stored expiry, those still expired by the one this
    /// node answered (overlaid): a seat reclaim ends only these. The others are live, their
    /// expiry written by the next flush (or the reaper).
    pub(super) fn still_expired(&self, mut sessions: Vec<Session>, now: Timestamp) -> Vec<Session> {
        sessions.retain_mut(|s| {
            self.overlay_in_place(s);
            !s.clock.is_live(now)
        });
        sessions
    }

    /// The pending expiries, taken for a flush, and when the oldest of them was answered.
    pub(super) fn take_pending(&self) -> (ById<PendingBeat>, Option<Instant>) {
        let mut inner = self.lock();
        let since = inner.pending_since.take();
        (std::mem::take(&mut inner.pending), since)
    }

    /// Pending expiries a flush could not write: they wait for the next one (a later expiry
    /// answered meanwhile wins), and keep their age.
    pub(super) fn restore_pending(
        &self,
        failed: Vec<(Arc<str>, PendingBeat)>,
        since: Option<Instant>,
    ) {
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
        inner.pending_since = match (inner.pending_since, since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    // ---- the ends feed's side ----

    /// The feed's first read starts at `at`: only what is read from then on may be held.
    pub(super) fn start_epoch(&self, at: Instant) {
        let mut inner = self.lock();
        if inner.epoch.is_none() {
            inner.epoch = Some(at);
            inner.held.clear();
            for seen in inner.licenses.values_mut() {
                seen.held = 0;
            }
        }
    }

    /// Sessions the feed saw end: dropped, and never held again.
    pub(super) fn ended(&self, ids: Vec<String>) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner
            .recent_ends
            .retain(|_, at| now.duration_since(*at) < RECENT_ENDS);
        for id in ids {
            inner.remove_held(&id);
            inner.recent_ends.insert(id, now);
        }
    }

    /// The licenses this node holds sessions of, with what the feed last read of each.
    pub(super) fn licenses(&self) -> Vec<(String, Option<LicenseMark>)> {
        let mut inner = self.lock();
        inner.licenses.retain(|_, seen| seen.held > 0);
        inner
            .licenses
            .iter()
            .map(|(id, seen)| (id.clone(), seen.mark))
            .collect()
    }

    /// What the feed read of `license_id` now: a change from what it read before drops its
    /// sessions (a floor, an end or terms set on some node).
    pub(super) fn license_read(&self, license_id: &str, mark: LicenseMark) {
        let changed = {
            let mut inner = self.lock();
            let seen = inner.licenses.entry(license_id.to_owned()).or_default();
            let changed = seen.mark.is_some_and(|m| m != mark);
            seen.mark = Some(mark);
            changed
        };
        if changed {
            self.forget_license(license_id);
        }
    }

    /// The feed's read that started at `at` is complete.
    pub(super) fn fed(&self, at: Instant) {
        let mut inner = self.lock();
        inner.fed_at = Some(inner.fed_at.map_or(at, |f| f.max(at)));
    }

    /// Drops the sessions whose expiry is `REAP_LAG_MS` past the latest heartbeat time seen
    /// (nothing of theirs is pending: a pending expiry is later).
    pub(super) fn prune(&self) -> usize {
        let horizon = self.latest.load(Ordering::Relaxed) - REAP_LAG_MS;
        let mut inner = self.lock();
        let Inner {
            held,
            pending,
            licenses,
            ..
        } = &mut *inner;
        held.retain(|id, h| {
            let keep = h.session.clock.expires_at.millis() > horizon || pending.contains_key(id);
            if !keep {
                uncount(licenses, &h.session.license_id);
            }
            keep
        });
        held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_in_sql_is_the_reap_lag() {
        assert!(REAP_LAG_SQL.contains(&format!("THEN {REAP_LAG_MS} ELSE 0")));
    }
}
