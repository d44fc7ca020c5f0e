//! Borrowed seats in memory: each license's live borrows (their slots, `LicenseState::borrowed`:
//! few, bounded by its borrow policy, so counting them costs O(borrows), never O(sessions)) and
//! its revoked leases (`LicenseState::revoked`: borrowed sessions that left the slab before
//! their `borrow_until`, kept until it passes).
//!
//! A borrowed session's end is noted where every end leaves the slab (`end_live` for logouts,
//! returns, reclaims and revokes; the drain for ends decided ahead of the disk: expiries, floors
//! of mass ends), so no path forgets one. Until the drain takes it, an ending borrow is still in
//! the slab and listed from there. At start, the revoked leases on disk are read back (`load`).

use leasehold_core::Timestamp;
use leasehold_proto::EndReason;

use super::Mem;
use crate::records::RevokedLease;
use crate::sqlite::slab::{format_sid, Live};
use crate::{StoreError, StoreResult};

/// Whether a borrow that ended at `at` for `reason` leaves a lease valid after its end: it
/// ended before its `borrow_until`, for another reason than reaching it.
fn revokes_lease(reason: EndReason, at: Timestamp, until: Timestamp) -> bool {
    reason != EndReason::BorrowEnded && at < until
}

impl Mem {
    /// Live borrows of the license at `li` whose end is not decided: what the borrow limit and
    /// `usage.borrowed` count.
    pub(in crate::sqlite) fn borrowed_now(&self, li: usize) -> u32 {
        let Some(lic) = self.licenses.get(li) else {
            return 0;
        };
        lic.borrowed
            .iter()
            .filter_map(|&slot| self.slab.get(slot))
            .filter(|r| !r.is_vacant() && lic.ending_of(r).is_none())
            .count() as u32
    }

    /// A session left the slab, ended at `at` for `reason`: a borrow ended before its
    /// `borrow_until` leaves a revoked lease.
    pub(super) fn note_borrow_end(&mut self, live: &Live, reason: EndReason, at: Timestamp) {
        if !live.borrowed {
            return;
        }
        let Some(until) = live.own_clock().borrow_until else {
            return;
        };
        if !revokes_lease(reason, at, until) {
            return;
        }
        let lease = RevokedLease {
            session_id: format_sid(live.sid()),
            username: self.names.name(live.user).to_owned(),
            device_id: live.device().to_owned(),
            reason,
            ended_at: at,
            borrow_until: until,
        };
        if let Some(lic) = self.licenses.get_mut(live.license as usize) {
            lic.revoked.push(lease);
        }
    }

    /// The license's revoked leases whose `borrow_until` is after `now`, by `borrow_until`:
    /// those noted when they left the slab, and ending borrows still in it.
    pub(in crate::sqlite) fn revoked_leases(
        &self,
        license_id: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<RevokedLease>> {
        let Some(li) = self.license_at(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        let Some(lic) = self.licenses.get(li) else {
            return Err(StoreError::NotFound("license"));
        };
        let mut out: Vec<RevokedLease> = lic
            .revoked
            .iter()
            .filter(|l| l.borrow_until > now)
            .cloned()
            .collect();
        for &slot in &lic.borrowed {
            let Some(r) = self.slab.get(slot).filter(|r| !r.is_vacant()) else {
                continue;
            };
            let (Some((reason, at)), Some(until)) = (lic.ending_of(r), r.own_clock().borrow_until)
            else {
                continue;
            };
            if revokes_lease(reason, at, until) && until > now {
                out.push(RevokedLease {
                    session_id: format_sid(r.sid()),
                    username: self.names.name(r.user).to_owned(),
                    device_id: r.device().to_owned(),
                    reason,
                    ended_at: at,
                    borrow_until: until,
                });
            }
        }
        out.sort_by(|a, b| (a.borrow_until, &a.session_id).cmp(&(b.borrow_until, &b.session_id)));
        Ok(out)
    }

    /// Forgets revoked leases that have expired (the reaper's sweep).
    pub(super) fn forget_expired_leases(&mut self, now: Timestamp) {
        for lic in &mut self.licenses {
            if !lic.revoked.is_empty() {
                lic.revoked.retain(|l| l.borrow_until > now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use leasehold_core::{BorrowPolicy, RuleError, SessionState};

    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::testkit::{open, session_id, tenant, T0};
    use crate::{OpenRequest, Store, StoreError};

    const DAY: u64 = 86_400;

    /// License `lic` (3 seats, 1 may be borrowed) of a store on a real file.
    async fn lending(path: &std::path::Path) -> Arc<SqliteStore> {
        let store = Arc::new(SqliteStore::open(path, T0).unwrap());
        tenant(&*store, 3, &["bob", "carol"]).await;
        let mut lic = store.get_license("lic").await.unwrap().unwrap();
        lic.terms.borrow = Some(BorrowPolicy {
            max_days: 3,
            max_seats: None,
            lowwater: 2,
        });
        store.update_license(lic, T0).await.unwrap();
        store
    }

    fn borrow(n: u32, who: &str, until: Timestamp) -> OpenRequest {
        OpenRequest {
            borrow_until: Some(until),
            ..open(n, who, &format!("b{n}"))
        }
    }

    #[tokio::test]
    async fn a_reclaimed_borrow_stays_listed_across_a_restart_until_it_expires() {
        // Arrange: bob borrows the one borrowable seat for 2 days.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leasehold.db");
        let store = lending(&path).await;
        let until = T0.plus_secs(2 * DAY);
        let s = store
            .open_session(borrow(1, "bob", until), T0)
            .await
            .unwrap();
        assert_eq!(s.session.clock.borrow_until, Some(until));
        assert_eq!(store.usage("lic", T0).await.unwrap().borrowed, 1);
        // A second borrow is past the policy; an ordinary open still gets a seat.
        let refused = store.open_session(borrow(2, "carol", until), T0).await;
        assert!(matches!(
            refused,
            Err(StoreError::Rule(RuleError::BorrowLimitReached { limit: 1 }))
        ));
        store.open_session(open(3, "carol", "c"), T0).await.unwrap();

        // Act: the admin reclaims it; the server restarts.
        let later = T0.plus_secs(3600);
        store
            .end_session(&session_id(1), EndReason::Reclaimed, later)
            .await
            .unwrap();
        drop(store);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let store = SqliteStore::open(&path, later).unwrap();

        // Assert: the seat is free, the lease is listed until `until`, then no more.
        let usage = store.usage("lic", later).await.unwrap();
        assert_eq!((usage.in_use, usage.borrowed), (1, 0));
        let listed = store.revoked_leases("lic", later).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].session_id, session_id(1));
        assert_eq!(listed[0].reason, EndReason::Reclaimed);
        assert_eq!(listed[0].borrow_until, until);
        assert!(store.revoked_leases("lic", until).await.unwrap().is_empty());
        store
            .open_session(borrow(4, "carol", until), later)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_borrow_ended_by_a_revoke_of_all_is_listed_before_and_after_its_end_is_written() {
        // Arrange
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leasehold.db");
        let store = lending(&path).await;
        let until = T0.plus_secs(DAY);
        store
            .open_session(borrow(1, "bob", until), T0)
            .await
            .unwrap();

        // Act: a mass end decides its end at once; the drain writes it later.
        assert_eq!(store.revoke_license_sessions("lic", T0).await.unwrap(), 1);

        // Assert: listed from the decision on, and after the drain and a restart.
        let listed = store.revoked_leases("lic", T0).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].reason, EndReason::Revoked);
        for _ in 0..200 {
            if store.usage("lic", T0).await.unwrap().ending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(store.revoked_leases("lic", T0).await.unwrap().len(), 1);
        drop(store);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let store = SqliteStore::open(&path, T0).unwrap();
        assert_eq!(store.revoked_leases("lic", T0).await.unwrap().len(), 1);
        assert_eq!(store.usage("lic", T0).await.unwrap().borrowed, 0);
    }

    #[tokio::test]
    async fn a_borrow_that_reaches_its_end_frees_its_seat_and_leaves_no_lease_listed() {
        // Arrange
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leasehold.db");
        let store = lending(&path).await;
        let until = T0.plus_secs(DAY);
        store
            .open_session(borrow(1, "bob", until), T0)
            .await
            .unwrap();

        // Act: heartbeats do not move it; time walks to `until`; the reaper runs.
        let beat = store
            .heartbeat(&session_id(1), T0.plus_secs(60))
            .await
            .unwrap();
        assert_eq!(beat.clock.expires_at, until);
        store.reap_expired(until).await.unwrap();

        // Assert
        let found = store.get_session(&session_id(1)).await.unwrap().unwrap();
        assert_eq!(found.state, SessionState::Ended(EndReason::BorrowEnded));
        let usage = store.usage("lic", until).await.unwrap();
        assert_eq!((usage.in_use, usage.borrowed), (0, 0));
        assert!(store.revoked_leases("lic", T0).await.unwrap().is_empty());
        store
            .open_session(borrow(2, "carol", until.plus_secs(DAY)), until)
            .await
            .unwrap();
    }
}
