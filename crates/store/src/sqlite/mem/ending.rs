//! Ends decided ahead of the disk: a license's end, a revoke of all its sessions, a user's
//! deactivation and sessions found past their expiry. Deciding costs O(1) per decision (or per
//! expired session), whatever the number of sessions it ends; the ends reach the disk in the
//! background, in bounded chunks the writer takes between acknowledged writes (`drain_chunk`),
//! so one tenant's million ends never hold up another tenant's opens.
//!
//! ```text
//!   live ──expired (reaper, heartbeat, logout, full license)──► ending ──drain──► ended
//!     │        marked on the record: `Live::expired`                ▲   (slab → `Ended`,
//!     └──mass end: a `Floor` over the license or one user──────────┘    its row written)
//!              O(1): nothing is touched but the counts
//! ```
//!
//! An *ending* session is still in the slab but its end is decided: it is counted out of its
//! license at once (`live`, the per-user and overdraft counts: its seat is free, `in_use` no
//! longer counts it, `ending` does), a lookup finds it ended (`session_ended` with its reason:
//! heartbeats get 410, logouts too), listings and idempotent re-opens skip it. It leaves the
//! slab, for the compact memory of ended sessions, when the drain takes it; its end is on disk
//! once that chunk commits.
//!
//! A *floor* ends every session of a license (revoke-all, the license's end) or of one user on
//! it (deactivation) opened before the decision: those whose `seq` (their place in the order of
//! opens, on the record and in `sessions.seq`) is below `below`. Sessions opened afterwards are
//! never covered, whatever happens next (a reactivated user, a later license end).
//!
//! Durability, so that a `kill -9` at any point loses nothing and ends nothing twice:
//! - a floor is on disk before its ends (`licenses.end_below`, `users.end_below`,
//!   `license_users.end_below`, written in the ordinary lane, which the drain never overtakes);
//!   a revoke-all or a deactivation is answered once its floor is durable. A license's end is
//!   on disk in its terms already; its floor is written when it passes (or when the terms
//!   change after it passed), before any later change of the terms;
//! - an expiry needs no record: the expiry on disk is never later than memory's;
//! - at start (`load`), live rows under a floor on disk are ending again, and rows past their
//!   expiry are found by the first reaper tick: their ends are written then, once each (an
//!   end's row update and its audit event are written together, only while the row is live).
//!
//! After a restart, a session under two floors of one license (two mass ends in the same few
//! seconds) ends with the reason of the later one: the disk keeps one floor per row.

use leasehold_core::Timestamp;
use leasehold_proto::EndReason;

use super::index::decrement;
use super::license::LicenseState;
use super::Mem;
use crate::admission;
use crate::sqlite::ops::WriteOp;
use crate::sqlite::slab::Live;
use crate::sqlite::writer::{Ack, Job};
use crate::{StoreError, StoreResult};

/// A mass end: every session (of a license, or of one user on it) whose `seq` is below `below`
/// ended at `at` for `reason`. `decided` orders decisions: a session under several floors ended
/// with the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::sqlite) struct Floor {
    pub(in crate::sqlite) below: u64,
    pub(in crate::sqlite) reason: EndReason,
    pub(in crate::sqlite) at: Timestamp,
    pub(in crate::sqlite) decided: u64,
}

/// Most slots one `drain_chunk` looks at (one lock hold: well under a millisecond).
const DRAIN_SCAN: u32 = 65_536;

impl LicenseState {
    /// Why and when a session of this license ended, when its end is decided (ending).
    pub(super) fn ending_of(&self, r: &Live) -> Option<(EndReason, Timestamp)> {
        if let Some(expired) = r.expired() {
            return Some(expired);
        }
        if self.floors.is_empty() && self.user_floors.is_empty() {
            return None;
        }
        let whole = self.floors.iter().find(|f| r.seq < f.below);
        let own = self
            .user_floors
            .get(&r.user)
            .and_then(|fs| fs.iter().find(|f| r.seq < f.below));
        let first = match (whole, own) {
            (Some(a), Some(b)) if b.decided < a.decided => b,
            (Some(a), _) => a,
            (None, Some(b)) => b,
            (None, None) => return None,
        };
        Some((first.reason, first.at))
    }

    /// Counts out `n` sessions (of which `overdraft` in overdraft) whose end was just decided.
    fn count_out(&mut self, n: u32, overdraft: u32) {
        self.live = self.live.saturating_sub(n);
        self.overdraft_live = self.overdraft_live.saturating_sub(overdraft);
        self.ending += n;
        self.low_water = self.low_water.min(self.live);
    }
}

impl Mem {
    /// Why and when the session in `slot` ended, when its end is decided.
    pub(in crate::sqlite) fn ending_of(&self, slot: u32) -> Option<(EndReason, Timestamp)> {
        let r = self.slab.get(slot).filter(|r| !r.is_vacant())?;
        self.licenses.get(r.license as usize)?.ending_of(r)
    }

    fn next_floor(&mut self, reason: EndReason, now: Timestamp) -> Floor {
        self.decided += 1;
        Floor {
            below: self.next_seq,
            reason,
            at: now,
            decided: self.decided,
        }
    }

    /// Every session of license `li` holding a seat ends, at `now`, for `reason`: one floor,
    /// O(1). Answers how many, and the floor to write (`None` when there were none).
    pub(in crate::sqlite) fn end_all(
        &mut self,
        li: usize,
        reason: EndReason,
        now: Timestamp,
    ) -> StoreResult<(u32, Option<Floor>)> {
        let floor = self.next_floor(reason, now);
        let lic = self.lic_at_mut(li)?;
        let n = lic.live;
        if n == 0 {
            return Ok((0, None));
        }
        let overdraft = lic.overdraft_live;
        lic.floors.push(floor);
        lic.per_user.clear();
        lic.per_user_overdraft.clear();
        lic.count_out(n, overdraft);
        self.freed(li, now);
        Ok((n, Some(floor)))
    }

    /// Every session of user `user` (a `Names` index) on license `li` holding a seat ends, at
    /// `now`, for `reason`: one floor, O(1). Answers how many, and the floor to write.
    pub(in crate::sqlite) fn end_user(
        &mut self,
        li: usize,
        user: u32,
        reason: EndReason,
        now: Timestamp,
    ) -> StoreResult<(u32, Option<Floor>)> {
        let floor = self.next_floor(reason, now);
        let lic = self.lic_at_mut(li)?;
        let n = lic.per_user.remove(&user).unwrap_or(0);
        if n == 0 {
            return Ok((0, None));
        }
        let overdraft = lic.per_user_overdraft.remove(&user).unwrap_or(0);
        lic.user_floors.entry(user).or_default().push(floor);
        lic.count_out(n, overdraft);
        self.freed(li, now);
        Ok((n, Some(floor)))
    }

    /// An account's user is deactivated: every session of it on the account's licenses ends
    /// (a floor on each license holding some, O(licenses)). Answers how many, and the write
    /// of the decision (one record: the user's floor).
    pub(in crate::sqlite) fn deactivate_user(
        &mut self,
        account_id: &str,
        username: &str,
        now: Timestamp,
    ) -> StoreResult<(u32, Option<WriteOp>)> {
        let Some(user) = self.names.get(username) else {
            return Ok((0, None));
        };
        let holding: Vec<usize> = self
            .licenses
            .iter()
            .enumerate()
            .filter(|(_, l)| &*l.account_id == account_id && l.per_user.contains_key(&user))
            .map(|(li, _)| li)
            .collect();
        let (mut ended, mut decided) = (0, None);
        for li in holding {
            let (n, floor) = self.end_user(li, user, EndReason::UserDeactivated, now)?;
            ended += n;
            decided = decided.or(floor);
        }
        Ok((
            ended,
            decided.map(|floor| WriteOp::UserFloor {
                account_id: account_id.to_owned(),
                username: username.to_owned(),
                floor,
            }),
        ))
    }

    /// Revokes every live session of a license: one floor, written with a `sessions_revoked`
    /// event; the caller awaits the ack (the decision is durable once it is answered).
    /// Answers how many.
    pub(in crate::sqlite) fn revoke_all(
        &mut self,
        license_id: &str,
        now: Timestamp,
    ) -> StoreResult<(u32, Ack)> {
        let Some(li) = self.license_at(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        let (n, floor) = self.end_all(li, EndReason::Revoked, now)?;
        let lic = self.lic_at(li)?;
        let mut ops = vec![WriteOp::Audit(Box::new(admission::sessions_revoked(
            &lic.license,
            n,
            now,
        )))];
        if let Some(floor) = floor {
            ops.push(WriteOp::LicenseFloor {
                license_id: lic.id.clone(),
                floor,
            });
        }
        self.last_now = self.last_now.max(now);
        Ok((n, self.send(ops)))
    }

    /// The license's end has passed while sessions hold its seats: they end with it (one
    /// floor). Answers the write of that decision.
    pub(in crate::sqlite) fn end_at_license_end(
        &mut self,
        li: usize,
        now: Timestamp,
    ) -> StoreResult<Option<WriteOp>> {
        let lic = self.lic_at(li)?;
        let passed = lic.license.terms.expires_at.is_some_and(|end| end <= now);
        if !passed || lic.live == 0 {
            return Ok(None);
        }
        let license_id = lic.id.clone();
        let reason = lic.license.terms.end_reason();
        let (_, floor) = self.end_all(li, reason, now)?;
        Ok(floor.map(|floor| WriteOp::LicenseFloor { license_id, floor }))
    }

    /// The session in `slot` is past its expiry: its end is decided now (`reason`, at `at`) and
    /// written by the drain. O(1).
    pub(in crate::sqlite) fn mark_expired(&mut self, slot: u32, reason: EndReason, at: Timestamp) {
        if self.ending_of(slot).is_some() {
            return;
        }
        let Some(r) = self.slab.get_mut(slot).filter(|r| !r.is_vacant()) else {
            return;
        };
        let (li, user, overdraft, expiry) = (r.license, r.user, r.overdraft, r.expires_at);
        r.set_expired(reason, at);
        let Some(lic) = self.licenses.get_mut(li as usize) else {
            return;
        };
        lic.expiry.remove(&(expiry, slot));
        decrement(&mut lic.per_user, user);
        if overdraft {
            decrement(&mut lic.per_user_overdraft, user);
        }
        lic.count_out(1, u32::from(overdraft));
        self.freed(li as usize, at);
    }

    /// Seats of license `li` were freed by decided ends: its queue may be served, the drain
    /// has work.
    fn freed(&mut self, li: usize, now: Timestamp) {
        if self.licenses.get(li).is_some_and(|l| !l.queue.is_empty()) {
            self.to_serve.push(li as u32);
        }
        self.last_now = self.last_now.max(now);
        self.wake_drain();
    }

    /// Tells the writer that decided ends wait (once, until the drain finds none left).
    pub(in crate::sqlite) fn wake_drain(&mut self) {
        if !self.drain_woken {
            self.drain_woken = true;
            let _ = self.writer.send(Job::Drain);
        }
    }

    /// Sessions whose end is decided and not yet on disk, on every license.
    pub(in crate::sqlite) fn ending_total(&self) -> u64 {
        self.licenses.iter().map(|l| u64::from(l.ending)).sum()
    }

    /// One chunk of the drain: takes at most `max` ending sessions out of the slab (walking it
    /// from where the last chunk stopped, at most `DRAIN_SCAN` slots), keeps their ends in the
    /// memory of ended sessions and answers the writes of those ends, and whether more are
    /// waiting. The writer commits them (after any write queued before them) in one
    /// transaction of their own, then tells `drain_written`; until then they are still
    /// counted as `ending` in their licenses' usage.
    pub(in crate::sqlite) fn drain_chunk(&mut self, max: usize) -> (Vec<WriteOp>, bool) {
        let mut ops = Vec::new();
        let len = self.slab.len();
        let mut scanned = 0;
        let mut left = self.ending_total();
        while ops.len() < max && scanned < len.min(DRAIN_SCAN) && left > 0 {
            let slot = self.drain_cursor % len;
            self.drain_cursor = (slot + 1) % len;
            scanned += 1;
            let Some(r) = self.slab.get(slot).filter(|r| !r.is_vacant()) else {
                continue;
            };
            let Some(lic) = self.licenses.get(r.license as usize) else {
                continue;
            };
            if lic.ending == 0 {
                continue;
            }
            let Some((reason, at)) = lic.ending_of(r) else {
                continue;
            };
            let (license_id, account_id) = (lic.id.clone(), lic.account_id.clone());
            let Some(gone) = self.remove_live(slot) else {
                continue;
            };
            if let Some(lic) = self.licenses.get_mut(gone.license as usize) {
                lic.writing += 1;
            }
            left -= 1;
            self.note_borrow_end(&gone, reason, at);
            self.remember_end(gone.sid(), gone.license, gone.user, reason);
            ops.push(WriteOp::EndSession {
                id: gone.sid(),
                at,
                reason,
                account_id,
                license_id,
                username: self.names.shared(gone.user),
                // Written in the background, after the call that decided it.
                origin: None,
            });
        }
        // A license with nothing ending has no use for its floors any more (an end being
        // written is out of the slab: no floor needs to find it).
        for lic in &mut self.licenses {
            if lic.ending == 0 && !(lic.floors.is_empty() && lic.user_floors.is_empty()) {
                lic.floors.clear();
                lic.user_floors.clear();
            }
        }
        // A whole turn of the slab found nothing while the counts say otherwise: they are
        // wrong (a bug), and would keep the drain spinning; they are put right.
        self.drain_idle = if ops.is_empty() {
            self.drain_idle.saturating_add(scanned)
        } else {
            0
        };
        if left > 0 && self.drain_idle > len {
            tracing::error!(
                ending = left,
                "no ending session found in a whole turn of the slab: counts reset"
            );
            for lic in &mut self.licenses {
                lic.ending = 0;
            }
            left = 0;
        }
        let more = left > 0;
        if !more {
            self.drain_woken = false;
        }
        (ops, more)
    }
}

impl Mem {
    /// The writer committed chunks of drained ends: they are on disk, no longer `ending`.
    pub(in crate::sqlite) fn drain_written(&mut self, ops: &[WriteOp]) {
        let mut last: Option<(&str, usize)> = None;
        for op in ops {
            let WriteOp::EndSession { license_id, .. } = op else {
                continue;
            };
            // Ends come in runs of one license: one lookup per run.
            let li = match last {
                Some((id, li)) if id == &**license_id => li,
                _ => match self.license_at(license_id) {
                    Some(li) => {
                        last = Some((license_id, li));
                        li
                    }
                    None => continue,
                },
            };
            if let Some(lic) = self.licenses.get_mut(li) {
                lic.writing = lic.writing.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use leasehold_proto::EndReason;

    use crate::sqlite::SqliteStore;
    use crate::testkit::{open, session_id, tenant, T0};
    use crate::Store;

    /// A floor covers exactly the sessions opened before it, and a session under two floors
    /// ended with the first.
    #[tokio::test]
    async fn a_mass_end_covers_the_sessions_opened_before_it_and_no_later_one() {
        // Arrange: bob and carol hold two sessions each.
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("leasehold.db"), T0).unwrap();
        tenant(&store, 10, &["bob", "carol"]).await;
        for (n, who) in [(1, "bob"), (2, "bob"), (3, "carol"), (4, "carol")] {
            store
                .open_session(open(n, who, &format!("i{n}")), T0)
                .await
                .unwrap();
        }

        // Act: bob is deactivated, then every session of the license is revoked, then carol
        // opens again.
        let mut bob = crate::testkit::user("bob", false);
        store.put_user(bob.clone(), T0).await.unwrap();
        bob.active = true;
        store.put_user(bob, T0).await.unwrap();
        let revoked = store.revoke_license_sessions("lic", T0).await.unwrap();
        let later = store
            .open_session(open(5, "carol", "i5"), T0)
            .await
            .unwrap();

        // Assert: bob's ended as deactivated (the first decision), carol's as revoked, the
        // new session is live and the only one in use.
        assert_eq!(revoked, 2);
        let reason = |n: u32| {
            let store = &store;
            async move {
                match store
                    .get_session(&session_id(n))
                    .await
                    .unwrap()
                    .unwrap()
                    .state
                {
                    leasehold_core::SessionState::Ended(r) => Some(r),
                    leasehold_core::SessionState::Live => None,
                }
            }
        };
        assert_eq!(reason(1).await, Some(EndReason::UserDeactivated));
        assert_eq!(reason(2).await, Some(EndReason::UserDeactivated));
        assert_eq!(reason(3).await, Some(EndReason::Revoked));
        assert_eq!(reason(4).await, Some(EndReason::Revoked));
        assert_eq!(reason(5).await, None);
        assert!(later.created);
        let usage = store.usage("lic", T0).await.unwrap();
        assert_eq!(usage.in_use, 1);
        let listed: Vec<String> = store
            .list_live_sessions("lic", T0)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(listed, vec![session_id(5)]);
    }

    /// The seats a mass end frees go to the license's waiters at once.
    #[tokio::test]
    async fn a_mass_end_serves_the_queue() {
        use leasehold_core::{LicenseTerms, PlanCatalog};
        use leasehold_proto::{CreateLicense, OnFull};

        use crate::records::Admission;

        // Arrange: a one-seat queueing license; bob holds the seat, carol waits.
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("leasehold.db"), T0).unwrap();
        tenant(&store, 1, &["bob", "carol"]).await;
        let req = CreateLicense {
            account_id: "acme".into(),
            product: "cad".into(),
            seats: Some(1),
            on_full: Some(OnFull::Queue),
            ..Default::default()
        };
        let terms = LicenseTerms::from_create(&req, &PlanCatalog::default()).unwrap();
        let mut license = store.get_license("lic").await.unwrap().unwrap();
        license.terms = terms;
        store.update_license(license, T0).await.unwrap();
        store.open_session(open(1, "bob", "a"), T0).await.unwrap();
        let Admission::Queued(ticket) = store.admit(open(2, "carol", "b"), true, T0).await.unwrap()
        else {
            panic!("carol should wait");
        };

        // Act
        let revoked = store.revoke_license_sessions("lic", T0).await.unwrap();

        // Assert: carol got the seat bob's revoked session held.
        assert_eq!(revoked, 1);
        let grant = ticket.granted.await.unwrap().unwrap();
        let opened = grant.wait_durable().await.unwrap();
        assert_eq!(opened.session.id, session_id(2));
        let usage = store.usage("lic", T0).await.unwrap();
        assert_eq!(usage.in_use, 1);
    }
}
