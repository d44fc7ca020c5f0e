//! What the writer does when the disk refuses a write (disk full, I/O error, read-only file
//! system): memory never claims what the disk did not keep.
//!
//! ```text
//!   healthy ──batch fails──► broken: every job of the batch answered 503; under the lock,
//!      ▲                     writes refused at the door (`Mem::writable`), the jobs queued
//!      │                     meanwhile answered 503, memory rebuilt from the disk
//!      │                     (`Mem::take_over`)
//!      │                        │
//!      └──a test write commits──┘  (probed after 250 ms, then backing off to 10 s, once the
//!                                    file system has 1 MiB free again)
//! ```
//!
//! While broken, reads are answered from memory (which is what the disk holds), and every
//! write, heartbeats included, gets 503 `store_unavailable` without changing anything: a client
//! retries, and once the disk takes writes again the retry succeeds for real. The reaper pauses
//! (ending a session is a write); sessions whose expiry passed meanwhile end at the first tick
//! after. Rebuilding memory reads every live session back: O(live sessions), once per failure.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::load::load;
use super::mem::Mem;
use super::ops::WriteOp;
use super::slab::{pack_time, Sid};
use super::writer::{lock_touches, Faults, Job, Touches};

/// Free space the file system of the database must have again before writes resume: a test
/// write can fit in space the write-ahead log already holds while a real batch does not.
pub(super) const RESUME_FREE_BYTES: u64 = 1 << 20;

/// Bytes free for this process on the file system of `path` (`None` when it cannot be told).
pub(super) fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c_path` is a NUL-terminated path and `stat` a writable struct of the right
    // type; statvfs only writes into it.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    let free = u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize));
    (rc == 0).then_some(free)
}

/// First wait before the disk is tried again; doubled after each failure, up to `PROBE_MAX`.
const PROBE_FIRST: Duration = Duration::from_millis(250);
const PROBE_MAX: Duration = Duration::from_secs(10);

/// The writer's state while writes are refused.
pub(super) struct Broken {
    pub(super) next_probe: Instant,
    /// Failures in a row (a probe that succeeds does not reset it; a batch that commits does).
    pub(super) failures: u32,
}

impl Broken {
    fn after(failures: u32) -> Self {
        let wait = PROBE_FIRST
            .saturating_mul(1u32 << failures.min(6))
            .min(PROBE_MAX);
        Broken {
            next_probe: Instant::now() + wait,
            failures,
        }
    }
}

fn lock(mem: &Mutex<Mem>) -> MutexGuard<'_, Mem> {
    mem.lock().unwrap_or_else(|e| e.into_inner())
}

/// A batch failed (its jobs are answered already): refuse writes, answer what was queued on
/// top of it, rebuild memory from the disk. `failed` holds the batch's heartbeat touches: they
/// were answered, so they stay pending.
pub(super) fn fail(
    conn: &Connection,
    mem: &Weak<Mutex<Mem>>,
    rx: &Receiver<Job>,
    touches: &Touches,
    failed: Vec<(Sid, [i64; 3])>,
    reason: &str,
    failures: u32,
) -> Broken {
    let broken = Broken::after(failures);
    let Some(mem) = mem.upgrade() else {
        return broken;
    };
    let mut mem = lock(&mem);
    mem.set_broken(Some(reason.to_owned()));
    // Queued under the lock before it was taken: built on the state the disk refused.
    let mut refused = 0;
    while let Ok(job) = rx.try_recv() {
        if let Job::Write { ack: Some(ack), .. } = job {
            let _ = ack.send(Err(reason.to_owned()));
            refused += 1;
        }
    }
    {
        let mut pending = lock_touches(touches);
        for (id, timing) in failed {
            pending.entry(id).or_insert(timing);
        }
    }
    let started = Instant::now();
    match load(conn, mem.writer(), mem.started) {
        Ok(fresh) => {
            mem.take_over(fresh);
            tracing::error!(
                error = reason,
                refused,
                reload_ms = started.elapsed().as_millis() as u64,
                "database write failed: writes are refused and memory was rebuilt from the disk"
            );
        }
        Err(e) => tracing::error!(
            error = reason,
            reload_error = %e,
            "database write failed and the disk could not be read back: writes stay refused"
        ),
    }
    broken
}

/// The touches of a failed batch (heartbeats already answered).
pub(super) fn touches_of(batch: &[Job]) -> Vec<(Sid, [i64; 3])> {
    batch
        .iter()
        .flat_map(|job| match job {
            Job::Write { ops, .. } => ops.as_slice(),
            Job::Touch | Job::Drain => &[],
        })
        .filter_map(|op| match op {
            WriteOp::Touch {
                id,
                expires_at,
                hard_end,
                license_end,
            } => Some((
                *id,
                [
                    expires_at.millis(),
                    pack_time(*hard_end),
                    pack_time(*license_end),
                ],
            )),
            _ => None,
        })
        .collect()
}

/// Tries a small durable write (the schema version rewritten, fsync'd), once the file system
/// has `RESUME_FREE_BYTES` free again; on success, writes are taken again. Answers the state to
/// go on with.
pub(super) fn probe(
    conn: &mut Connection,
    dir: &Path,
    mem: &Weak<Mutex<Mem>>,
    broken: Broken,
    faults: &Faults,
) -> Option<Broken> {
    if faults.full.load(Ordering::Acquire) {
        return Some(Broken::after(broken.failures + 1));
    }
    if free_bytes(dir).is_some_and(|free| free < RESUME_FREE_BYTES) {
        tracing::debug!("the disk is still (nearly) full");
        return Some(Broken::after(broken.failures + 1));
    }
    let test = conn.transaction().and_then(|tx| {
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()
    });
    match test {
        Ok(()) => {
            if let Some(mem) = mem.upgrade() {
                lock(&mem).set_broken(None);
            }
            tracing::warn!("the database takes writes again");
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "the database still refuses writes");
            Some(Broken::after(broken.failures + 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use leasehold_core::{SessionState, Timestamp};
    use leasehold_proto::EndReason;

    use crate::sqlite::SqliteStore;
    use crate::testkit::{open, session_id, tenant, T0};
    use crate::{Store, StoreError};

    fn unavailable<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
        matches!(result, Err(StoreError::Unavailable(_)))
    }

    async fn live_ids(store: &SqliteStore, now: Timestamp) -> Vec<String> {
        let mut ids: Vec<String> = store
            .list_live_sessions("lic", now)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        ids.sort();
        ids
    }

    /// Waits until the store takes writes again (the probe runs after 250 ms, then backs off).
    async fn healthy(store: &SqliteStore) {
        for _ in 0..200 {
            if store.health().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the store did not take writes again");
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing_and_a_retry_afterwards_succeeds_for_real() {
        // Arrange: 2 seats, bob holds one.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leasehold.db");
        let store = SqliteStore::open(&path, T0).unwrap();
        tenant(&store, 2, &["bob"]).await;
        store.open_session(open(1, "bob", "a"), T0).await.unwrap();

        // Act: the disk refuses writes (as a full one does).
        store.inject_write_failures(true);
        let failed_open = store.open_session(open(2, "bob", "b"), T0).await;

        // Assert: 503, and memory does not hold the session the disk refused...
        assert!(unavailable(failed_open));
        assert!(store.health().await.is_err(), "health tells the truth");
        assert_eq!(live_ids(&store, T0).await, vec![session_id(1)]);
        assert_eq!(store.usage("lic", T0).await.unwrap().in_use, 1);
        // ...a retry of the same client instance is refused too (no phantom 200)...
        assert!(unavailable(
            store.open_session(open(3, "bob", "b"), T0).await
        ));
        // ...and a logout the disk refused leaves the session live.
        assert!(unavailable(
            store
                .end_session(&session_id(1), EndReason::Logout, T0)
                .await
        ));
        assert!(unavailable(store.heartbeat(&session_id(1), T0).await));
        assert_eq!(live_ids(&store, T0).await, vec![session_id(1)]);
        assert!(
            store
                .reap_expired(T0.plus_secs(3600))
                .await
                .unwrap()
                .total()
                == 0
        );

        // Act: space is back; the retries go through.
        store.inject_write_failures(false);
        healthy(&store).await;
        let retried = store.open_session(open(4, "bob", "b"), T0).await.unwrap();
        store
            .end_session(&session_id(1), EndReason::Logout, T0)
            .await
            .unwrap();

        // Assert: memory and, after a restart, the disk agree.
        assert!(retried.created);
        assert_eq!(live_ids(&store, T0).await, vec![session_id(4)]);
        drop(store);
        let reopened = SqliteStore::open(&path, T0).unwrap();
        assert_eq!(live_ids(&reopened, T0).await, vec![session_id(4)]);
        let logout = reopened.get_session(&session_id(1)).await.unwrap().unwrap();
        assert_eq!(logout.state, SessionState::Ended(EndReason::Logout));
        assert!(reopened
            .get_session(&session_id(2))
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn failed_opens_never_fill_a_license() {
        // Arrange: 1 seat.
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("leasehold.db"), T0).unwrap();
        tenant(&store, 1, &["bob", "carol"]).await;

        // Act: five opens fail on the disk.
        store.inject_write_failures(true);
        for n in 1..=5 {
            assert!(unavailable(
                store
                    .open_session(open(n, "bob", &format!("i{n}")), T0)
                    .await
            ));
        }
        store.inject_write_failures(false);
        healthy(&store).await;

        // Assert: nobody holds the seat, so carol gets it.
        assert_eq!(store.usage("lic", T0).await.unwrap().in_use, 0);
        let carol = store.open_session(open(9, "carol", "x"), T0).await.unwrap();
        assert!(carol.created);
    }

    #[tokio::test]
    async fn heartbeats_answered_before_a_failure_keep_their_expiry() {
        // Arrange
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("leasehold.db"), T0).unwrap();
        tenant(&store, 2, &["bob"]).await;
        store.open_session(open(1, "bob", "a"), T0).await.unwrap();
        let later = T0.plus_secs(30);
        let beat = store.heartbeat(&session_id(1), later).await.unwrap();

        // Act: the next write fails, and memory is rebuilt from the disk (which has the
        // expiry of the open: the heartbeat's touch was not written yet).
        store.inject_write_failures(true);
        assert!(unavailable(
            store.open_session(open(2, "bob", "b"), later).await
        ));
        store.inject_write_failures(false);
        healthy(&store).await;

        // Assert: the expiry the heartbeat answered holds.
        let now = store.get_session(&session_id(1)).await.unwrap().unwrap();
        assert_eq!(now.session.clock.expires_at, beat.clock.expires_at);
        assert!(store.reap_expired(T0.plus_secs(61)).await.unwrap().total() == 0);
    }
}
