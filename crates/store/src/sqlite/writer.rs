//! The writer thread: it drains the queued jobs (up to `MAX_BATCH`), applies them in one
//! transaction, commits, then acknowledges every job of the batch (group commit). Heartbeats'
//! new expiries wait in a map of pending touches, the latest per session, written with the
//! batch due `TOUCH_DELAY` after the first of them (see the backend's doc for the bound this
//! puts on the expiry on disk).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use leasehold_core::session::SessionClock;
use leasehold_core::Timestamp;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::mem::Mem;
use super::ops::{apply_op, WriteOp};
use super::recovery::{self, Broken};
use super::slab::{pack_time, unpack_time, Sid};
use crate::{StoreError, StoreResult};

/// Most jobs applied in one transaction.
const MAX_BATCH: usize = 8192;

/// Longest a heartbeat's new expiry waits before the writer persists it (see the module doc).
const TOUCH_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes queued by memory, and who awaits their commit. A job with no ops and no ack is a
/// heartbeat's wake-up: it starts the touch clock.
pub(super) struct Job {
    pub(super) ops: Vec<WriteOp>,
    pub(super) ack: Option<oneshot::Sender<Result<(), String>>>,
}

/// The commit of a job, awaited with `acked`.
pub(super) type Ack = oneshot::Receiver<Result<(), String>>;

/// Heartbeat expiries not yet persisted: session id -> its timing (`expires_at`, `hard_end`,
/// `license_end`, packed as in `Live`), the latest per session. Shared by the store (which fills
/// it) and the writer (which empties it).
type TouchMap = HashMap<Sid, [i64; 3]>;

pub(super) fn packed_clock(clock: &SessionClock) -> [i64; 3] {
    [
        clock.expires_at.millis(),
        pack_time(clock.hard_end),
        pack_time(clock.license_end),
    ]
}

pub(super) type Touches = Arc<Mutex<TouchMap>>;

pub(super) fn lock_touches(touches: &Touches) -> MutexGuard<'_, TouchMap> {
    touches.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits for a job's commit: a failed write, or a writer that has stopped, is `Unavailable`.
pub(super) async fn acked(rx: Ack) -> StoreResult<()> {
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StoreError::Unavailable(e)),
        Err(_) => Err(StoreError::Unavailable(
            "the database writer has stopped".into(),
        )),
    }
}

/// Starts the writer thread on `conn`; it stops once every sender of `rx` is gone, after
/// writing the pending touches. `mem` is memory, rebuilt from the disk after a failed write
/// (see `recovery`).
pub(super) fn spawn(
    conn: Connection,
    dir: PathBuf,
    rx: Receiver<Job>,
    touches: Touches,
    mem: Weak<Mutex<Mem>>,
    faults: Faults,
) -> StoreResult<()> {
    std::thread::Builder::new()
        .name("leasehold-sqlite-writer".into())
        .spawn(move || writer_loop(conn, &dir, rx, touches, mem, faults))
        .map(drop)
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// Set, the disk refuses every write, as a full one would (`SqliteStore::inject_write_failures`).
pub(super) type Faults = Arc<AtomicBool>;

/// The error an injected fault answers: the one SQLite gives on a full disk.
pub(super) fn injected_full() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
        Some("database or disk is full (injected)".into()),
    )
}

fn writer_loop(
    mut conn: Connection,
    dir: &Path,
    rx: Receiver<Job>,
    touches: Touches,
    mem: Weak<Mutex<Mem>>,
    faults: Faults,
) {
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::Instant;
    let mut spare = TouchMap::new();
    // When the pending touches must be written: `TOUCH_DELAY` after the wake-up of the first.
    let mut touch_deadline: Option<Instant> = None;
    // Writes refused since a batch failed, until a probe succeeds (see `recovery`).
    let mut broken: Option<Broken> = None;
    // Failed batches in a row: how long the next probe waits.
    let mut failures = 0;
    // A heartbeat's wake-up (no ops, no ack) only starts the touch clock.
    let keep = |job: Job, batch: &mut Vec<Job>, deadline: &mut Option<Instant>| {
        if job.ops.is_empty() && job.ack.is_none() {
            deadline.get_or_insert_with(|| Instant::now() + TOUCH_DELAY);
        } else {
            batch.push(job);
        }
    };
    loop {
        // While broken, touches wait for the disk; the probe has its own deadline.
        let wake = match (&broken, touch_deadline) {
            (Some(b), _) => Some(b.next_probe),
            (None, deadline) => deadline,
        };
        let first = match wake {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        let mut batch = Vec::new();
        // The store is gone: write what is pending, then stop.
        let stopping = matches!(first, Err(RecvTimeoutError::Disconnected));
        if let Ok(job) = first {
            keep(job, &mut batch, &mut touch_deadline);
        }
        if let Some(b) = broken.take() {
            if stopping {
                return;
            }
            if !batch.is_empty() {
                // Queued by a path that does not ask memory first: it ran on memory the disk
                // has not got, so memory is rebuilt again.
                let reason = "writes are refused until the disk takes them again";
                broken = Some(recovery::fail(
                    &conn,
                    &mem,
                    &rx,
                    &touches,
                    Vec::new(),
                    reason,
                    b.failures,
                ));
                for job in batch.drain(..) {
                    if let Some(ack) = job.ack {
                        let _ = ack.send(Err(reason.to_owned()));
                    }
                }
                continue;
            }
            broken = if b.next_probe <= Instant::now() {
                recovery::probe(&mut conn, dir, &mem, b, &faults)
            } else {
                Some(b)
            };
            if broken.is_none() {
                failures = 0;
            }
            continue;
        }
        // Taken before the queue is drained: a touched session's insert was queued before its
        // touch, so it is in this batch (or an earlier one) and the update finds its row. The
        // map handed back keeps its capacity, so heartbeats do not regrow it under the lock.
        let mut pending = None;
        if stopping || touch_deadline.is_some_and(|at| at <= Instant::now()) {
            spare.clear();
            let empty = std::mem::take(&mut spare);
            pending = Some(std::mem::replace(&mut *lock_touches(&touches), empty));
            touch_deadline = None;
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => keep(job, &mut batch, &mut touch_deadline),
                Err(_) => break,
            }
        }
        if let Some(mut pending) = pending {
            if batch.len() == MAX_BATCH {
                // Jobs may remain queued, an insert among them: these touches wait for the
                // next batch (unless a newer heartbeat replaced them meanwhile).
                let mut map = lock_touches(&touches);
                for (id, t) in pending.drain() {
                    map.entry(id).or_insert(t);
                }
                touch_deadline = Some(Instant::now());
            } else {
                // In id order (ids are time-ordered): the updates walk the session B-tree.
                let mut touched: Vec<_> = pending.drain().collect();
                touched.sort_unstable_by_key(|&(id, _)| id);
                batch.push(Job {
                    ops: touched
                        .into_iter()
                        .map(|(id, [expires_at, hard_end, license_end])| WriteOp::Touch {
                            id,
                            expires_at: Timestamp::from_millis(expires_at),
                            hard_end: unpack_time(hard_end),
                            license_end: unpack_time(license_end),
                        })
                        .collect(),
                    ack: None,
                });
            }
            spare = pending;
        }
        if !batch.is_empty() {
            let applied = if faults.load(Ordering::Acquire) {
                Err(injected_full())
            } else {
                apply_batch(&mut conn, &batch)
            };
            match applied {
                Ok(()) => {
                    failures = 0;
                    for job in batch {
                        if let Some(ack) = job.ack {
                            let _ = ack.send(Ok(()));
                        }
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    let touched = recovery::touches_of(&batch);
                    // Memory is put right before anyone hears of the failure: a client told
                    // 503 never finds the refused change in memory afterwards.
                    if !stopping {
                        broken = Some(recovery::fail(
                            &conn, &mem, &rx, &touches, touched, &reason, failures,
                        ));
                        failures += 1;
                    }
                    for job in batch {
                        if let Some(ack) = job.ack {
                            let _ = ack.send(Err(reason.clone()));
                        }
                    }
                    if stopping {
                        return;
                    }
                    // The touch clock restarts once writes are taken again.
                    touch_deadline = Some(Instant::now() + TOUCH_DELAY);
                }
            }
        }
        if stopping && touch_deadline.is_none() {
            return;
        }
    }
}

fn apply_batch(conn: &mut Connection, batch: &[Job]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for job in batch {
        for op in &job.ops {
            apply_op(&tx, op)?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::{open_connection, SqliteStore};
    use crate::Store;

    /// The expiry on disk after heartbeats: behind memory for at most about `TOUCH_DELAY`, and
    /// many heartbeats of one session in that window are one write.
    #[tokio::test]
    async fn heartbeats_reach_the_disk_within_the_touch_delay() {
        use crate::testkit::{open, session_id, tenant, T0};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leasehold.db");
        let t0 = T0;
        let store = SqliteStore::open(&path, t0).unwrap();
        tenant(&store, 2, &["bob"]).await;
        let id = session_id(1);
        let id = id.as_str();
        store.open_session(open(1, "bob", "app"), t0).await.unwrap();
        let on_disk = || -> i64 {
            open_connection(&path)
                .unwrap()
                .query_row("SELECT expires_at FROM sessions WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .unwrap()
        };
        assert_eq!(on_disk(), t0.millis() + 60_000, "the open is durable");

        // Act: a burst of heartbeats, each sliding the expiry.
        let mut last = t0;
        for ms in 1..=50 {
            last = Timestamp::from_millis(t0.millis() + ms * 10);
            store.heartbeat(id, last).await.unwrap();
        }

        // Assert: the latest expiry is on disk within the delay (plus slack for a busy machine).
        let started = std::time::Instant::now();
        while on_disk() != last.millis() + 60_000 {
            assert!(
                started.elapsed() < TOUCH_DELAY * 5,
                "the heartbeat's expiry did not reach the disk"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
