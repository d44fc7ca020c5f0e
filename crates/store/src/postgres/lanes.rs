//! Batch lanes, written once for every kind of batch: requests of one kind queue on a channel,
//! and the lane's task takes whatever arrived while its previous batch ran (at most
//! `MAX_BATCH`), runs it as one batch (again on a deadlock or serialization conflict, up to
//! `MAX_ATTEMPTS`), then answers each request. A key (a license, a session, a record) always
//! goes to the same lane of its kind (`lane_of`).
//!
//! A kind of batch is a `Lane`: opens (`open`), point reads (`read`), and the session lanes of
//! heartbeats and logouts (`SessionLane`, over a `SessionBatch`).

use std::collections::HashMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold_core::Timestamp;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::Postgres;
use tokio::sync::{mpsc, oneshot};

use super::errors::{clone_error, db_error, is_retryable};
use super::queue::QueueCtx;
use super::rows::TermsCache;
use super::MAX_ATTEMPTS;
use crate::metrics::BatchMetrics;
use crate::records::Session;
use crate::{StoreError, StoreResult};

/// Most requests in one batch.
const MAX_BATCH: usize = 512;

/// A request of a lane, and the channel its answer goes back on.
pub(super) struct Job<Q, A> {
    pub(super) ask: Q,
    reply: oneshot::Sender<StoreResult<A>>,
}

impl<Q, A> Job<Q, A> {
    /// A job, and the receiver of its answer.
    pub(super) fn new(ask: Q) -> (Self, oneshot::Receiver<StoreResult<A>>) {
        let (reply, answer) = oneshot::channel();
        (Job { ask, reply }, answer)
    }

    /// Answers the job (a caller gone meanwhile does not mind).
    pub(super) fn answer(self, result: StoreResult<A>) {
        let _ = self.reply.send(result);
    }
}

/// Answers each job with its result: the results of a batch that ran, in job order, or its
/// error for every job.
pub(super) fn answer_each<Q, A>(jobs: Vec<Job<Q, A>>, results: StoreResult<Vec<StoreResult<A>>>) {
    match results {
        Ok(results) => {
            for (job, result) in jobs.into_iter().zip(results) {
                job.answer(result);
            }
        }
        Err(err) => {
            for job in jobs {
                job.answer(Err(clone_error(&err)));
            }
        }
    }
}

/// One kind of batch: how a lane gathers the requests it received, runs them, and answers.
pub(super) trait Lane: Send + 'static {
    /// What the lane's channel carries.
    type Job: Send + 'static;
    /// The requests of one batch, as `run` takes them.
    type Batch: Send;
    /// What a batch that ran answers.
    type Done: Send;
    /// The kind's name in logs.
    const KIND: &'static str;
    /// Attempts of a batch that failed on a deadlock or serialization conflict.
    const ATTEMPTS: usize = MAX_ATTEMPTS;

    /// Work the previous batch left over: the next batch goes on without waiting for a request.
    fn has_leftovers(&self) -> bool {
        false
    }

    /// How long a batch waits for more requests after its first one (zero: it takes what has
    /// arrived). A statement's cost is mostly per statement, so a kind whose requests are
    /// cheap to delay a little gathers more of them per statement.
    fn linger(&self) -> Duration {
        Duration::ZERO
    }

    /// The lane has nothing to do and is about to wait for a request (e.g. to give back a
    /// connection it keeps while busy).
    fn idle(&mut self) {}

    /// One batch of the requests received, taken out of `received` (and of what the previous
    /// batch left over).
    fn gather(&mut self, received: &mut Vec<Self::Job>) -> Self::Batch;

    /// One attempt at the batch: one transaction (or one statement).
    fn run(
        &mut self,
        batch: &Self::Batch,
    ) -> impl Future<Output = Result<Self::Done, sqlx::Error>> + Send;

    /// Reports a batch that failed for good (its requests get the error next).
    fn report(&self, batch: &Self::Batch, error: &sqlx::Error);

    /// Answers every request of the batch: what it did, or why it failed.
    fn answer(&mut self, batch: Self::Batch, done: StoreResult<Self::Done>);
}

/// Channels for `lanes` lanes: the senders for the store, the receivers for `spawn`.
pub(super) fn channels<J>(lanes: usize) -> (Vec<mpsc::Sender<J>>, Vec<mpsc::Receiver<J>>) {
    (0..lanes).map(|_| mpsc::channel(4 * MAX_BATCH)).unzip()
}

/// Runs `lane` on the requests of `rx` until every sender is gone.
pub(super) fn spawn<L: Lane>(lane: L, rx: mpsc::Receiver<L::Job>) {
    tokio::spawn(run(lane, rx));
}

/// The lane's loop: receive, gather, run (retried), answer.
async fn run<L: Lane>(mut lane: L, mut rx: mpsc::Receiver<L::Job>) {
    let mut received = Vec::with_capacity(MAX_BATCH);
    let metrics = BatchMetrics::new("postgres", L::KIND);
    loop {
        if lane.has_leftovers() {
            while received.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => received.push(job),
                    Err(_) => break,
                }
            }
        } else {
            if rx.is_empty() {
                lane.idle();
            }
            if rx.recv_many(&mut received, MAX_BATCH).await == 0 {
                break;
            }
            if !lane.linger().is_zero() {
                let until = tokio::time::Instant::now() + lane.linger();
                while received.len() < MAX_BATCH {
                    let room = MAX_BATCH - received.len();
                    match tokio::time::timeout_at(until, rx.recv_many(&mut received, room)).await {
                        Ok(n) if n > 0 => {}
                        _ => break,
                    }
                }
            }
        }
        let before = received.len();
        let batch = lane.gather(&mut received);
        let jobs = before.saturating_sub(received.len());
        let started = Instant::now();
        let mut attempt = 1;
        let done = loop {
            match lane.run(&batch).await {
                Ok(done) => break Ok(done),
                Err(e) if attempt < L::ATTEMPTS && is_retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "{} batch conflicted; retrying", L::KIND);
                    attempt += 1;
                }
                Err(e) => {
                    lane.report(&batch, &e);
                    break Err(db_error(e));
                }
            }
        };
        metrics.record(jobs, started.elapsed());
        lane.answer(batch, done);
    }
}

/// The connection a lane keeps while it is busy: a connection taken from the pool and given
/// back costs a round trip more per batch (the pool pings it before handing it out), one of
/// every two a point read made under load. The lane lets go of it when it has nothing to do.
pub(super) struct KeptConnection {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
}

impl KeptConnection {
    pub(super) fn new(pool: PgPool) -> Self {
        KeptConnection { pool, conn: None }
    }

    /// The connection kept from the previous batch, if there is one.
    pub(super) fn kept(&mut self) -> Option<&mut PoolConnection<Postgres>> {
        self.conn.as_mut()
    }

    /// A fresh connection from the pool, kept from now on.
    pub(super) async fn fresh(&mut self) -> Result<&mut PoolConnection<Postgres>, sqlx::Error> {
        self.conn = None;
        Ok(self.conn.insert(self.pool.acquire().await?))
    }

    /// Gives the connection back to the pool (idle, or in a state the lane cannot vouch for).
    pub(super) fn release(&mut self) {
        self.conn = None;
    }
}

/// The lane of `key` among `lanes` lanes.
pub(super) fn lane_of<K: Hash + ?Sized>(key: &K, lanes: usize) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % lanes.max(1) as u64) as usize
}

/// Sends `ask` to lane `lane` of `lanes` and waits for its answer. A lane whose task has
/// stopped makes the store unavailable with the message `stopped`.
pub(super) async fn ask<J, Q, A>(
    lanes: &[mpsc::Sender<J>],
    lane: usize,
    ask: Q,
    stopped: &'static str,
) -> StoreResult<A>
where
    J: From<Job<Q, A>>,
{
    let stopped = || StoreError::Unavailable(stopped.into());
    let (job, answer) = Job::new(ask);
    lanes
        .get(lane)
        .ok_or_else(stopped)?
        .send(J::from(job))
        .await
        .map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())?
}

// ---- session lanes: heartbeats and logouts ----

/// A request on a session, answered with the session: a heartbeat (`heartbeat::Beat`), a
/// logout or revoke (`end::EndAsk`). Its batch is what the request type implements.
pub(super) trait SessionBatch: Sized + Send + Sync + 'static {
    /// The kind's name in logs.
    const KIND: &'static str;

    /// One attempt at a batch of these requests. The queueing licenses of sessions it finds
    /// ended go to `serve` (kept over attempts: an end an attempt committed is served all the
    /// same).
    fn run(
        pool: &PgPool,
        cache: &TermsCache,
        jobs: &[Job<Self, Session>],
        serve: &mut HashMap<String, Timestamp>,
    ) -> impl Future<Output = Result<Vec<StoreResult<Session>>, sqlx::Error>> + Send;
}

/// A lane of session requests `B`: after each batch, the queues of the licenses whose seats it
/// freed are served (by their open lanes), then every request is answered.
pub(super) struct SessionLane<B> {
    pool: PgPool,
    cache: Arc<TermsCache>,
    queue: Arc<QueueCtx>,
    serve: HashMap<String, Timestamp>,
    kind: PhantomData<fn() -> B>,
}

impl<B> SessionLane<B> {
    pub(super) fn new(pool: PgPool, cache: Arc<TermsCache>, queue: Arc<QueueCtx>) -> Self {
        SessionLane {
            pool,
            cache,
            queue,
            serve: HashMap::new(),
            kind: PhantomData,
        }
    }
}

impl<B: SessionBatch> Lane for SessionLane<B> {
    type Job = Job<B, Session>;
    type Batch = Vec<Self::Job>;
    type Done = Vec<StoreResult<Session>>;
    const KIND: &'static str = B::KIND;

    fn gather(&mut self, received: &mut Vec<Self::Job>) -> Self::Batch {
        std::mem::take(received)
    }

    async fn run(&mut self, jobs: &Self::Batch) -> Result<Self::Done, sqlx::Error> {
        B::run(&self.pool, &self.cache, jobs, &mut self.serve).await
    }

    fn report(&self, jobs: &Self::Batch, error: &sqlx::Error) {
        tracing::warn!(error = %error, jobs = jobs.len(), "{} batch failed", B::KIND);
    }

    fn answer(&mut self, jobs: Self::Batch, done: StoreResult<Self::Done>) {
        // Freed seats of queueing licenses go to their waiters: the open lane serves them.
        for (license_id, now) in self.serve.drain() {
            self.queue.serve(&license_id, now);
        }
        answer_each(jobs, done);
    }
}
