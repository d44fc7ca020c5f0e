//! The writer's bulk lane: the ends memory has decided (a mass end, expiries; see
//! `mem::ending`) are written in chunks, each its own transaction, one chunk between two
//! batches of acknowledged writes. Opens, logouts and heartbeat touches thus never wait for
//! more than one chunk, and no transaction holds more than one chunk of ends, whatever the
//! number of sessions that ended at once.
//!
//! A chunk is taken from memory (`Mem::drain_chunk`, at most `LOCK_CHUNK` ends per lock hold,
//! so heartbeats are not held up either), then every write queued before it is committed
//! first (an insert among them may be of a session the chunk ends), then the chunk. Its size
//! adapts so that writing one takes about `TARGET`. Memory holds the taken ends as ended
//! sessions from the moment it hands them over, and answers for them until they commit; if
//! the chunk fails, memory is rebuilt from the disk, where they are still under their floor (or
//! past their expiry), so they are ending again and written later.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::mem::Mem;
use super::writer::{apply, injected_full, Writer, MAX_BATCH};

/// How long writing one chunk should take: what an open may wait behind it.
const TARGET: Duration = Duration::from_millis(8);
/// Bounds of a chunk, in ends (each is a row update and an audit row).
const MIN_CHUNK: usize = 256;
const MAX_CHUNK: usize = 16_384;
const FIRST_CHUNK: usize = 1024;
/// Most ends taken from memory per lock hold.
const LOCK_CHUNK: usize = 1024;

/// The drain's state in the writer.
pub(super) struct Drain {
    /// Memory has decided ends waiting (it said so, and the last chunk found more).
    pub(super) wanted: bool,
    /// Ends per chunk, adapted to `TARGET`.
    size: usize,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            wanted: false,
            size: FIRST_CHUNK,
        }
    }
}

impl Drain {
    /// A chunk of `n` ends took `took` to write: the next one is sized for `TARGET`.
    fn adapt(&mut self, n: usize, took: Duration) {
        if n < self.size {
            return;
        }
        if took < TARGET / 2 {
            self.size = (self.size * 2).min(MAX_CHUNK);
        } else if took > TARGET * 3 / 2 {
            self.size = (self.size / 2).max(MIN_CHUNK);
        }
    }
}

fn lock(mem: &Mutex<Mem>) -> MutexGuard<'_, Mem> {
    mem.lock().unwrap_or_else(|e| e.into_inner())
}

impl Writer {
    /// Writes one chunk of decided ends (see the module doc).
    pub(super) fn drain_once(&mut self) {
        let Some(mem) = self.mem.upgrade() else {
            self.drain.wanted = false;
            return;
        };
        let mut ops = Vec::new();
        let mut more = true;
        while more && ops.len() < self.drain.size {
            let want = (self.drain.size - ops.len()).min(LOCK_CHUNK);
            let (mut part, still) = lock(&mem).drain_chunk(want);
            more = still;
            if part.is_empty() {
                // A whole scan found none (they are elsewhere in the slab): next round.
                break;
            }
            ops.append(&mut part);
        }
        drop(mem);
        self.drain.wanted = more;
        if ops.is_empty() {
            return;
        }
        self.spend_drain_chunk();
        // What memory queued before the chunk was taken goes first, acknowledged.
        loop {
            match self.write(Vec::new(), false) {
                // Memory was rebuilt from the disk: these ends are decided there again.
                _ if self.broken.is_some() => return,
                None => return,
                Some(n) if n < MAX_BATCH => break,
                Some(_) => {}
            }
        }
        let started = Instant::now();
        let applied = if self.faulty() {
            Err(injected_full())
        } else {
            apply(&mut self.conn, ops.iter())
        };
        match applied {
            Ok(()) => {
                let took = started.elapsed();
                if took > TARGET * 8 {
                    tracing::warn!(
                        ends = ops.len(),
                        took_ms = took.as_millis() as u64,
                        "a chunk of decided ends was slow to write"
                    );
                }
                self.drain.adapt(ops.len(), took);
                if let Some(mem) = self.mem.upgrade() {
                    lock(&mem).drain_written(&ops);
                }
            }
            // Memory is rebuilt from the disk: the chunk's sessions are ending there again.
            Err(e) => self.failed(Vec::new(), &e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use leasehold_proto::EndReason;

    use super::*;
    use crate::sqlite::{open_connection, SqliteStore};
    use crate::testkit::{open, session_id, tenant, user, T0};
    use crate::Store;

    #[test]
    fn chunks_grow_when_quick_and_shrink_when_slow() {
        let mut d = Drain::default();
        d.adapt(FIRST_CHUNK, Duration::from_millis(1));
        assert_eq!(d.size, FIRST_CHUNK * 2);
        d.adapt(10, Duration::from_millis(100));
        assert_eq!(d.size, FIRST_CHUNK * 2, "a short chunk says nothing");
        d.adapt(FIRST_CHUNK * 2, Duration::from_millis(100));
        assert_eq!(d.size, FIRST_CHUNK);
        for _ in 0..20 {
            d.adapt(d.size, Duration::from_secs(1));
        }
        assert_eq!(d.size, MIN_CHUNK);
    }

    /// Opens sessions `first..first + n` of license `lic`, round-robin over `users`, all at
    /// once (they share commits).
    async fn open_many(store: &Arc<SqliteStore>, first: u32, n: u32, users: &[&'static str]) {
        let mut set = tokio::task::JoinSet::new();
        for i in first..first + n {
            let (store, who) = (store.clone(), users[i as usize % users.len()]);
            set.spawn(async move { store.open_session(open(i, who, &format!("i{i}")), T0).await });
        }
        while let Some(opened) = set.join_next().await {
            opened.unwrap().unwrap();
        }
    }

    /// Every session row of license `lic` on disk: its end reason (`None`: live) and how many
    /// `ended` events it has.
    fn on_disk(path: &std::path::Path) -> Vec<(String, Option<String>, i64)> {
        let conn = open_connection(path).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT s.id, s.end_reason,
                        (SELECT count(*) FROM audit_events a
                         WHERE a.session_id = s.id AND a.event = 'ended')
                 FROM sessions s WHERE s.license_id = 'lic' ORDER BY s.id",
            )
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        rows.map(Result::unwrap).collect()
    }

    /// Waits until the store has written every end it decided.
    async fn drained(store: &SqliteStore) {
        for _ in 0..1000 {
            if store.usage("lic", T0).await.unwrap().ending == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the decided ends were not all written");
    }

    /// The crash: the disk refuses every write from now on (the drain's next chunk is cut off,
    /// memory is rebuilt from the disk), then the process is gone. Answers how many sessions of
    /// `lic` the disk still holds live.
    async fn crash(store: Arc<SqliteStore>, path: &std::path::Path) -> usize {
        store.inject_write_failures(true);
        // The drain's chunk in flight (if any) ends, the next one is refused.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(store);
        tokio::time::sleep(Duration::from_millis(50)).await;
        on_disk(path).iter().filter(|(_, r, _)| r.is_none()).count()
    }

    #[tokio::test]
    async fn ends_decided_before_a_crash_are_written_after_the_restart_once_each() {
        // Arrange: 3,000 sessions of license `lic`.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leasehold.db");
        let store = Arc::new(SqliteStore::open(&path, T0).unwrap());
        tenant(&*store, 10_000, &["bob", "carol"]).await;
        open_many(&store, 1, 3000, &["bob", "carol"]).await;
        // The crash comes in the middle of the ends: one chunk at most is written before it.
        store.limit_drain(1);

        // Act: every session is revoked, one is opened after that, and the server dies while
        // the revoked sessions' ends are being written.
        assert_eq!(
            store.revoke_license_sessions("lic", T0).await.unwrap(),
            3000
        );
        store
            .open_session(open(7000, "carol", "after"), T0)
            .await
            .unwrap();
        let live_at_crash = crash(store, &path).await;
        let store = SqliteStore::open(&path, T0).unwrap();

        // Assert: the crash came before every end was written (what this test is about)...
        assert!(live_at_crash > 1, "the drain had finished before the crash");
        // ...yet none of them is live after the restart, the later one is...
        assert_eq!(store.usage("lic", T0).await.unwrap().in_use, 1);
        let found = store.get_session(&session_id(1)).await.unwrap().unwrap();
        assert_eq!(
            found.state,
            leasehold_core::SessionState::Ended(EndReason::Revoked)
        );
        drained(&store).await;
        // ...and each ended exactly once, as revoked.
        let rows = on_disk(&path);
        assert_eq!(rows.len(), 3001);
        for (id, reason, ends) in rows {
            if id == session_id(7000) {
                assert_eq!((reason, ends), (None, 0));
            } else {
                assert_eq!((reason.as_deref(), ends), (Some("revoked"), 1), "{id}");
            }
        }
    }

    #[tokio::test]
    async fn a_deactivation_survives_a_crash_and_a_reactivation_before_it() {
        // Arrange: bob holds 2,000 sessions, carol one.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leasehold.db");
        let store = Arc::new(SqliteStore::open(&path, T0).unwrap());
        tenant(&*store, 10_000, &["bob", "carol"]).await;
        open_many(&store, 1, 2000, &["bob"]).await;
        store
            .open_session(open(5000, "carol", "c"), T0)
            .await
            .unwrap();

        // Act: bob is deactivated and at once active again; he opens anew; crash (one chunk
        // of his ends at most written before it).
        store.limit_drain(1);
        let put = store.put_user(user("bob", false), T0).await.unwrap();
        store.put_user(user("bob", true), T0).await.unwrap();
        store
            .open_session(open(6000, "bob", "again"), T0)
            .await
            .unwrap();
        let live_at_crash = crash(store, &path).await;
        let store = SqliteStore::open(&path, T0).unwrap();
        drained(&store).await;

        // Assert
        assert_eq!(put.ended, 2000);
        assert!(live_at_crash > 2, "the drain had finished before the crash");
        for (id, reason, ends) in on_disk(&path) {
            if id == session_id(5000) || id == session_id(6000) {
                assert_eq!((reason, ends), (None, 0), "{id}");
            } else {
                assert_eq!(
                    (reason.as_deref(), ends),
                    (Some("user_deactivated"), 1),
                    "{id}"
                );
            }
        }
        assert_eq!(store.usage("lic", T0).await.unwrap().in_use, 2);
    }

    #[tokio::test]
    async fn a_license_end_that_passed_is_not_undone_by_a_later_end_nor_a_crash() {
        // Arrange: 2,000 sessions; the license ends at T0 + 10 s.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leasehold.db");
        let store = Arc::new(SqliteStore::open(&path, T0).unwrap());
        tenant(&*store, 10_000, &["bob"]).await;
        open_many(&store, 1, 2000, &["bob"]).await;
        let mut license = store.get_license("lic").await.unwrap().unwrap();
        license.terms.expires_at = Some(T0.plus_secs(10));
        store.update_license(license.clone(), T0).await.unwrap();

        // Act: the end passes (the reaper notices), then the end is moved a year ahead; crash
        // (one chunk of the ends at most written before it).
        store.limit_drain(1);
        let after = T0.plus_secs(11);
        let reaped = store.reap_expired(after).await.unwrap();
        license.terms.expires_at = Some(T0.plus_secs(365 * 86_400));
        store.update_license(license, after).await.unwrap();
        let live_at_crash = crash(store, &path).await;
        let store = SqliteStore::open(&path, after).unwrap();

        // Assert: they ended with the license, once each, and stay ended.
        assert_eq!(reaped.total(), 2000);
        assert!(live_at_crash > 0, "the drain had finished before the crash");
        assert_eq!(store.usage("lic", after).await.unwrap().in_use, 0);
        drained(&store).await;
        for (id, reason, ends) in on_disk(&path) {
            assert_eq!(
                (reason.as_deref(), ends),
                (Some("license_expired"), 1),
                "{id}"
            );
        }
    }
}
