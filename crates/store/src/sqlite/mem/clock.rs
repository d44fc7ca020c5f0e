//! A live session's timing over time: a heartbeat slides its expiry (persisted as a touch, see
//! `writer`), a heartbeat after expiry ends it, and a wall-clock step shifts every live session
//! so that each keeps its remaining life.

use leasehold_core::session::SessionClock;
use leasehold_core::{RuleError, Timestamp};

use super::Mem;
use crate::records::OwnedHeartbeat;
use crate::sqlite::slab::{parse_sid, VACANT};
use crate::{StoreError, StoreResult};

impl Mem {
    /// A heartbeat of a live session: slides its expiry (persisted with the next batch), or
    /// ends it if it has expired meanwhile.
    pub(in crate::sqlite) fn beat(
        &mut self,
        slot: u32,
        now: Timestamp,
    ) -> StoreResult<SessionClock> {
        if let Some((reason, _)) = self.ending_of(slot) {
            return Err(RuleError::SessionEnded(reason).into());
        }
        let (Some(r), Some(mut clock)) = (self.slab.get(slot), self.clock(slot)) else {
            return Err(StoreError::NotFound("session"));
        };
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
                // Expired but not yet reaped: its end is decided now, it never comes back.
                self.mark_expired(slot, clock.expiry_reason(), now);
                self.serve_queues();
                Err(err.into())
            }
        }
    }

    /// The heartbeat of a session holder in one lock hold: ownership, then the heartbeat in
    /// place (see `Store::heartbeat_owned`). `None` when memory does not know the session: the
    /// database is asked then.
    pub(in crate::sqlite) fn beat_owned(
        &mut self,
        session_id: &str,
        account_id: &str,
        username: &str,
        now: Timestamp,
    ) -> Option<StoreResult<OwnedHeartbeat>> {
        let id = parse_sid(session_id)?;
        let (license, user, live) = match self.slab.find(id) {
            Some(slot) => {
                let r = self.slab.get(slot)?;
                (r.license, r.user, Some(slot))
            }
            None => {
                let e = self.ended.get(&id)?;
                (e.license, e.user, None)
            }
        };
        if license == VACANT {
            return None;
        }
        let owner = self.licenses.get(license as usize);
        if owner.is_none_or(|l| &*l.account_id != account_id) {
            return Some(Err(StoreError::NotFound("session")));
        }
        if self.names.name(user) != username {
            return Some(Ok(OwnedHeartbeat::NotOwner));
        }
        Some(match live {
            Some(slot) => self
                .beat(slot, now)
                .map(|clock| OwnedHeartbeat::Beat(clock.expires_at)),
            None => match self.ended.get(&id) {
                Some(e) => Err(RuleError::SessionEnded(e.reason).into()),
                None => Err(StoreError::NotFound("session")),
            },
        })
    }

    /// The wall clock stepped by `delta_ms`: every live session keeps its remaining life
    /// (`SessionClock::shift_for_clock_step`); the new timings reach the disk as touches.
    /// Answers how many sessions moved.
    pub(in crate::sqlite) fn shift_live(&mut self, delta_ms: i64) -> usize {
        self.last_now = Timestamp::from_millis(self.last_now.millis().saturating_add(delta_ms));
        let mut moved = 0;
        for li in 0..self.licenses.len() {
            let slots: Vec<u32> = self
                .licenses
                .get(li)
                .map(|l| l.expiry.iter().map(|&(_, s)| s).collect())
                .unwrap_or_default();
            for slot in slots {
                let (Some(r), Some(mut clock)) = (self.slab.get(slot), self.clock(slot)) else {
                    continue;
                };
                let id = r.sid();
                if self.ending_of(slot).is_some() {
                    continue;
                }
                clock.shift_for_clock_step(delta_ms);
                self.set_clock(slot, &clock);
                self.touch(id, &clock);
                moved += 1;
            }
        }
        moved
    }

    /// At start: no live session keeps an expiry further ahead than a session opened now would
    /// get (the wall clock may have gone back while the server was down; see
    /// `SessionClock::clamp_at_start`). The clamped timings reach the disk as touches. Answers
    /// how many sessions were clamped.
    pub(in crate::sqlite) fn clamp_after_restart(&mut self, now: Timestamp) -> usize {
        let mut clamped = 0;
        for li in 0..self.licenses.len() {
            let Some(lic) = self.licenses.get(li) else {
                continue;
            };
            let terms = lic.license.terms.clone();
            let slots: Vec<u32> = lic.expiry.iter().map(|&(_, s)| s).collect();
            for slot in slots {
                let (Some(r), Some(mut clock)) = (self.slab.get(slot), self.clock(slot)) else {
                    continue;
                };
                let (id, kind) = (r.sid(), r.kind);
                if self.ending_of(slot).is_some() {
                    continue;
                }
                if clock.clamp_at_start(kind, &terms, now) {
                    self.set_clock(slot, &clock);
                    self.touch(id, &clock);
                    clamped += 1;
                }
            }
        }
        clamped
    }
}

#[cfg(test)]
mod tests {
    use leasehold_core::Timestamp;

    use crate::sqlite::SqliteStore;
    use crate::testkit::{open, session_id, tenant, T0};
    use crate::Store;

    #[tokio::test]
    async fn a_restart_after_the_clock_went_back_clamps_expiries_to_the_timeout() {
        // Arrange: a session with 60 s to live; the server stops.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leasehold.db");
        let store = SqliteStore::open(&path, T0).unwrap();
        tenant(&store, 2, &["bob"]).await;
        store.open_session(open(1, "bob", "a"), T0).await.unwrap();
        drop(store);

        // Act: it starts again with the wall clock 2 h back.
        let back = Timestamp::from_millis(T0.millis() - 7_200_000);
        let store = SqliteStore::open(&path, back).unwrap();

        // Assert: 60 s from the new clock, not 2 h and 60 s.
        let found = store.get_session(&session_id(1)).await.unwrap().unwrap();
        assert_eq!(found.session.clock.expires_at, back.plus_secs(60));
        assert_eq!(
            store
                .reap_expired(back.plus_secs(61))
                .await
                .unwrap()
                .total(),
            1
        );
    }
}
