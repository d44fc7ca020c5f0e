//! The writer thread: it drains the queued jobs (up to `MAX_BATCH`), applies them in one
//! transaction, commits, then acknowledges every job of the batch (group commit). Heartbeats'
//! new expiries wait in a map of pending touches, the latest per session, written with the
//! batch due `TOUCH_DELAY` after the first of them (see the backend's doc for the bound this
//! puts on the expiry on disk). Between two batches, it writes one chunk of the ends memory
//! has decided (`drain`): acknowledged writes always go first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Instant;

use leasehold_core::session::SessionClock;
use leasehold_core::Timestamp;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::drain::Drain;
use super::mem::Mem;
use super::ops::{apply_op, WriteOp};
use super::recovery::{self, Broken};
use super::slab::{pack_time, unpack_time, Sid};
use crate::metrics::BatchMetrics;
use crate::{StoreError, StoreResult};

/// Most jobs applied in one transaction.
pub(super) const MAX_BATCH: usize = 8192;

/// Longest a heartbeat's new expiry waits before the writer persists it (see the module doc).
const TOUCH_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// What memory queues for the writer, in the order memory changed.
pub(super) enum Job {
    /// Writes, and who awaits their commit (`None`: nobody, e.g. the reaper's).
    Write {
        ops: Vec<WriteOp>,
        ack: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// A heartbeat's new expiry waits in the touch map: starts the touch clock.
    Touch,
    /// Ends are decided and wait in memory: the writer drains them (see `drain`).
    Drain,
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

/// Faults injected by tests, shared by the store and its writer.
#[derive(Debug)]
pub(super) struct FaultState {
    /// Set, the disk refuses every write, as a full one would
    /// (`SqliteStore::inject_write_failures`).
    pub(super) full: AtomicBool,
    /// How many more chunks of decided ends the drain may write (`usize::MAX`: no limit), so a
    /// test can crash the store in the middle of a mass end whatever the machine's speed.
    pub(super) drain_chunks: AtomicUsize,
}

impl Default for FaultState {
    fn default() -> Self {
        FaultState {
            full: AtomicBool::new(false),
            drain_chunks: AtomicUsize::new(usize::MAX),
        }
    }
}

pub(super) type Faults = Arc<FaultState>;

/// The error an injected fault answers: the one SQLite gives on a full disk.
pub(super) fn injected_full() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
        Some("database or disk is full (injected)".into()),
    )
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) conn: Connection,
    dir: PathBuf,
    pub(super) rx: Receiver<Job>,
    pub(super) touches: Touches,
    pub(super) mem: Weak<Mutex<Mem>>,
    faults: Faults,
    /// The touch map handed back to memory at the next swap (keeps its capacity).
    spare: TouchMap,
    /// When the pending touches must be written: `TOUCH_DELAY` after the wake-up of the first.
    touch_deadline: Option<Instant>,
    /// Writes refused since a batch failed, until a probe succeeds (see `recovery`).
    pub(super) broken: Option<Broken>,
    /// Failed batches in a row: how long the next probe waits.
    pub(super) failures: u32,
    /// The decided ends memory holds, written between batches (see `drain`).
    pub(super) drain: Drain,
}

/// What the writer makes of one wait for work.
enum Next {
    Job(Job),
    /// Nothing queued (a deadline passed, or the drain has work).
    Idle,
    /// The store is gone.
    Stop,
}

fn writer_loop(
    conn: Connection,
    dir: &Path,
    rx: Receiver<Job>,
    touches: Touches,
    mem: Weak<Mutex<Mem>>,
    faults: Faults,
) {
    let mut writer = Writer {
        conn,
        dir: dir.to_path_buf(),
        rx,
        touches,
        mem,
        faults,
        spare: TouchMap::new(),
        touch_deadline: None,
        broken: None,
        failures: 0,
        drain: Drain::default(),
    };
    writer.run();
}

impl Writer {
    fn run(&mut self) {
        loop {
            let mut batch = Vec::new();
            let stopping = match self.next() {
                Next::Job(job) => {
                    self.keep(job, &mut batch);
                    false
                }
                Next::Idle => false,
                Next::Stop => true,
            };
            if let Some(b) = self.broken.take() {
                if stopping {
                    return;
                }
                self.while_broken(b, batch);
                continue;
            }
            if self.write(batch, stopping).is_none() || (stopping && self.touch_deadline.is_none())
            {
                return;
            }
            // One chunk of decided ends between two batches of acknowledged writes.
            if self.drain_due() && !stopping {
                self.drain_once();
            }
        }
    }

    /// Waits for the next job: at most until the touch deadline (or, while writes are
    /// refused, the next probe); not at all while the drain has work.
    fn next(&mut self) -> Next {
        use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
        let wake = match (&self.broken, self.touch_deadline) {
            (Some(b), _) => Some(b.next_probe),
            (None, deadline) => deadline,
        };
        if self.drain_due() {
            return match self.rx.try_recv() {
                Ok(job) => Next::Job(job),
                Err(TryRecvError::Empty) => Next::Idle,
                Err(TryRecvError::Disconnected) => Next::Stop,
            };
        }
        let got = match wake {
            None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => self
                .rx
                .recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match got {
            Ok(job) => Next::Job(job),
            Err(RecvTimeoutError::Timeout) => Next::Idle,
            Err(RecvTimeoutError::Disconnected) => Next::Stop,
        }
    }

    /// Keeps a job's writes for the batch; a wake-up only starts the touch clock or the drain.
    fn keep(&mut self, job: Job, batch: &mut Vec<Job>) {
        match job {
            Job::Write { .. } => batch.push(job),
            Job::Touch => {
                self.touch_deadline
                    .get_or_insert_with(|| Instant::now() + TOUCH_DELAY);
            }
            Job::Drain => self.drain.wanted = true,
        }
    }

    /// While writes are refused: what was queued anyway is refused, the disk is probed.
    fn while_broken(&mut self, b: Broken, mut batch: Vec<Job>) {
        if !batch.is_empty() {
            // Queued by a path that does not ask memory first: it ran on memory the disk
            // has not got, so memory is rebuilt again.
            let reason = "writes are refused until the disk takes them again";
            self.broken = Some(recovery::fail(
                &self.conn,
                &self.mem,
                &self.rx,
                &self.touches,
                Vec::new(),
                reason,
                b.failures,
            ));
            for job in batch.drain(..) {
                if let Job::Write { ack: Some(ack), .. } = job {
                    let _ = ack.send(Err(reason.to_owned()));
                }
            }
            return;
        }
        self.broken = if b.next_probe <= Instant::now() {
            recovery::probe(&mut self.conn, &self.dir, &self.mem, b, &self.faults)
        } else {
            Some(b)
        };
        if self.broken.is_none() {
            self.failures = 0;
            // Memory was rebuilt from the disk meanwhile: ends under its floors wait.
            self.drain.wanted = true;
        }
    }

    /// Writes `batch` and whatever else is queued (up to `MAX_BATCH` jobs), with the pending
    /// touches when they are due, in one transaction; then acknowledges every job of it.
    /// Answers how many jobs it wrote (or refused), `None` when the writer must stop (the
    /// store is gone and a write failed).
    pub(super) fn write(&mut self, mut batch: Vec<Job>, stopping: bool) -> Option<usize> {
        // Taken before the queue is drained: a touched session's insert was queued before its
        // touch, so it is in this batch (or an earlier one) and the update finds its row. The
        // map handed back keeps its capacity, so heartbeats do not regrow it under the lock.
        let mut pending = None;
        if stopping || self.touch_deadline.is_some_and(|at| at <= Instant::now()) {
            self.spare.clear();
            let empty = std::mem::take(&mut self.spare);
            pending = Some(std::mem::replace(&mut *lock_touches(&self.touches), empty));
            self.touch_deadline = None;
        }
        while batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(job) => self.keep(job, &mut batch),
                Err(_) => break,
            }
        }
        if let Some(mut pending) = pending {
            if batch.len() == MAX_BATCH {
                // Jobs may remain queued, an insert among them: these touches wait for the
                // next batch (unless a newer heartbeat replaced them meanwhile).
                let mut map = lock_touches(&self.touches);
                for (id, t) in pending.drain() {
                    map.entry(id).or_insert(t);
                }
                self.touch_deadline = Some(Instant::now());
            } else {
                // In id order (ids are time-ordered): the updates walk the session B-tree.
                let mut touched: Vec<_> = pending.drain().collect();
                touched.sort_unstable_by_key(|&(id, _)| id);
                batch.push(Job::Write {
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
            self.spare = pending;
        }
        let jobs = batch.len();
        if batch.is_empty() {
            return Some(0);
        }
        let started = Instant::now();
        let applied = if self.faulty() {
            Err(injected_full())
        } else {
            apply(&mut self.conn, batch.iter().flat_map(job_ops))
        };
        batch_metrics().record(jobs, started.elapsed());
        match applied {
            Ok(()) => {
                self.failures = 0;
                for job in batch {
                    if let Job::Write { ack: Some(ack), .. } = job {
                        let _ = ack.send(Ok(()));
                    }
                }
                Some(jobs)
            }
            Err(e) => {
                let reason = e.to_string();
                let touched = recovery::touches_of(&batch);
                // Memory is put right before anyone hears of the failure: a client told
                // 503 never finds the refused change in memory afterwards.
                if !stopping {
                    self.failed(touched, &reason);
                }
                for job in batch {
                    if let Job::Write { ack: Some(ack), .. } = job {
                        let _ = ack.send(Err(reason.clone()));
                    }
                }
                if stopping {
                    return None;
                }
                // The touch clock restarts once writes are taken again.
                self.touch_deadline = Some(Instant::now() + TOUCH_DELAY);
                Some(jobs)
            }
        }
    }

    /// A write failed: writes are refused and memory is rebuilt from the disk (`recovery`).
    pub(super) fn failed(&mut self, touched: Vec<(Sid, [i64; 3])>, reason: &str) {
        self.broken = Some(recovery::fail(
            &self.conn,
            &self.mem,
            &self.rx,
            &self.touches,
            touched,
            reason,
            self.failures,
        ));
        self.failures += 1;
        self.drain.wanted = true;
    }

    /// Whether the disk refuses writes on purpose (`SqliteStore::inject_write_failures`).
    pub(super) fn faulty(&self) -> bool {
        self.faults.full.load(Ordering::Acquire)
    }

    /// Counts a chunk of decided ends against a test's budget (`SqliteStore::limit_drain`);
    /// without one (`usize::MAX`) nothing changes.
    pub(super) fn spend_drain_chunk(&self) {
        let _ =
            self.faults
                .drain_chunks
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                    (left != usize::MAX).then(|| left.saturating_sub(1))
                });
    }

    /// Whether a chunk of decided ends is to be written now: memory has some, writes are not
    /// refused, and no test has spent the drain's budget.
    pub(super) fn drain_due(&self) -> bool {
        self.drain.wanted
            && self.broken.is_none()
            && self.faults.drain_chunks.load(Ordering::Acquire) > 0
    }
}

/// The writes of a job.
fn job_ops(job: &Job) -> &[WriteOp] {
    match job {
        Job::Write { ops, .. } => ops,
        Job::Touch | Job::Drain => &[],
    }
}

/// The writer's batch histograms, taken once (the server installs its recorder before it opens
/// the store).
fn batch_metrics() -> &'static BatchMetrics {
    static METRICS: OnceLock<BatchMetrics> = OnceLock::new();
    METRICS.get_or_init(|| BatchMetrics::new("sqlite", "write"))
}

/// Applies `ops` in one transaction and commits it.
pub(super) fn apply<'a>(
    conn: &mut Connection,
    ops: impl Iterator<Item = &'a WriteOp>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for op in ops {
        apply_op(&tx, op)?;
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
