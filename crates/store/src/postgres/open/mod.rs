//! Opens, and grants to the waiters of a license's queue: the open lanes and their batch.
//!
//! An open batch is one transaction, a handful of statements whatever its size (three more
//! when it touches a queueing license: the queue's heads, new entries, outcome notices):
//!
//! 1. lock the batch's licenses, in id order (`view`);
//! 2. read the queue heads of the licenses that serve their queue;
//! 3. read (and lock) the live sessions of the asking client instances;
//! 4. reclaim the licenses' expired sessions;
//! 5. count the seats, and the model views (active users, activated devices);
//! 6. serve the queue heads, in ticket order (`decide`);
//! 7. decide every newcomer, in arrival order;
//! 8. insert the new queue entries, their waiters registered before the commit (`write`);
//! 9. write everything else in one statement;
//! 10. notify the nodes whose waiters were served; commit.

mod decide;
mod view;
mod write;

pub(super) use view::LicState;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use leasehold_core::{LicenseTerms, Timestamp};
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Connection, Postgres, Transaction};

use super::errors::clone_error;
use super::hold::Hold;
use super::lanes::{answer_each, Job, KeptConnection, Lane};
use super::queue::QueueCtx;
use crate::records::*;
use crate::{StoreError, StoreResult};
use decide::{Decided, Served};

/// Open batchers per node; a license always goes to the same one.
pub(super) const OPEN_LANES: usize = 4;

/// An open: the request, whether it may join the license's queue instead of being refused
/// (`admit` with `wait`), and the time it was asked.
pub(super) struct OpenAsk {
    pub(super) req: OpenRequest,
    pub(super) wait: bool,
    pub(super) now: Timestamp,
}

/// A request to open, with its reply channel.
pub(super) type OpenJob = Job<OpenAsk, Admission>;

/// What an open lane carries: opens, and requests to serve a license's queue because a seat
/// may have freed. Both go through the same batch code (license lock, views, `decide_open`).
pub(super) enum LaneJob {
    Open(OpenJob),
    Serve { license_id: String, now: Timestamp },
}

impl From<OpenJob> for LaneJob {
    fn from(job: OpenJob) -> Self {
        LaneJob::Open(job)
    }
}

/// An open lane. Licenses whose queue has heads left over by a batch are served by the next
/// one, which then starts without waiting for a request.
pub(super) struct OpenLane {
    conn: KeptConnection,
    queue: Arc<QueueCtx>,
    /// The expiries this node answered and has not written yet: a session live there is not
    /// reclaimed (see `hold`).
    hold: Arc<Hold>,
    /// Licenses with queue heads left over by the previous batch.
    pending: HashMap<String, Timestamp>,
}

impl OpenLane {
    pub(super) fn new(pool: PgPool, queue: Arc<QueueCtx>, hold: Arc<Hold>) -> Self {
        OpenLane {
            conn: KeptConnection::new(pool),
            hold,
            queue,
            pending: HashMap::new(),
        }
    }
}

/// Begins an open batch's transaction on `conn` and runs `batch` in it: `Err` if `BEGIN`
/// failed (nothing ran), else what the batch did.
async fn begin_and_run(
    conn: &mut PgConnection,
    queue: &QueueCtx,
    hold: &Hold,
    batch: &OpenBatch,
) -> Result<Result<BatchDone, sqlx::Error>, sqlx::Error> {
    let tx = conn.begin().await?;
    Ok(open_batch(tx, queue, hold, &batch.jobs, &batch.serve).await)
}

/// The opens of one batch, and the licenses whose queues it serves (with the latest time each
/// was asked at).
pub(super) struct OpenBatch {
    jobs: Vec<OpenJob>,
    serve: HashMap<String, Timestamp>,
}

impl Lane for OpenLane {
    type Job = LaneJob;
    type Batch = OpenBatch;
    type Done = BatchDone;
    const KIND: &'static str = "open";

    fn has_leftovers(&self) -> bool {
        !self.pending.is_empty()
    }

    fn gather(&mut self, received: &mut Vec<LaneJob>) -> OpenBatch {
        let mut serve = std::mem::take(&mut self.pending);
        let mut jobs = Vec::with_capacity(received.len());
        for job in received.drain(..) {
            match job {
                LaneJob::Open(job) => jobs.push(job),
                LaneJob::Serve { license_id, now } => {
                    let at = serve.entry(license_id).or_insert(now);
                    *at = (*at).max(now);
                }
            }
        }
        OpenBatch { jobs, serve }
    }

    fn idle(&mut self) {
        self.conn.release();
    }

    async fn run(&mut self, batch: &OpenBatch) -> Result<BatchDone, sqlx::Error> {
        if batch.jobs.is_empty() && batch.serve.is_empty() {
            return Ok(BatchDone::default());
        }
        if let Some(conn) = self.conn.kept() {
            match begin_and_run(conn, &self.queue, &self.hold, batch).await {
                Ok(done) => {
                    if done.is_err() {
                        self.conn.release();
                    }
                    return done;
                }
                // A kept connection that died meanwhile (PostgreSQL restarted, the backend was
                // terminated) fails at `BEGIN`, before anything ran: a fresh one from the pool.
                Err(_) => self.conn.release(),
            }
        }
        let conn = self.conn.fresh().await?;
        let done = begin_and_run(conn, &self.queue, &self.hold, batch)
            .await
            .and_then(|done| done);
        if done.is_err() {
            // A batch that failed leaves its connection in a state the lane cannot vouch for.
            self.conn.release();
        }
        done
    }

    fn report(&self, batch: &OpenBatch, error: &sqlx::Error) {
        // The serve requests of a failed batch are not lost for good: every node serves the
        // licenses it has waiters on again every few seconds (see `queue::sweeper`).
        tracing::warn!(error = %error, opens = batch.jobs.len(), serves = batch.serve.len(), "open batch failed");
    }

    fn answer(&mut self, batch: OpenBatch, done: StoreResult<BatchDone>) {
        match done {
            Ok(done) => {
                self.pending = done.again;
                for served in done.served {
                    if served.node_id == self.queue.node_id {
                        self.queue.deliver(served.ticket, served.outcome);
                    }
                }
                answer_opens(batch.jobs, done.outcomes);
            }
            Err(err) => answer_each(batch.jobs, Err(err)),
        }
    }
}

/// What an open batch decided for one newcomer.
enum Outcome {
    Done(StoreResult<Opened>),
    /// The same client instance asked twice in one batch: the same session, not created again.
    SameAs(usize),
    /// Joined the license's queue (the ticket is filled in once the entry is inserted).
    Queued(Option<QueueTicket>),
}

/// What an open batch did, answered once it committed.
#[derive(Default)]
pub(super) struct BatchDone {
    outcomes: Vec<Outcome>,
    /// Queue heads granted or refused (delivered after the commit).
    served: Vec<Served>,
    /// Licenses whose queue has more heads to serve than the batch took.
    again: HashMap<String, Timestamp>,
}

/// Answers each open of a committed batch with its outcome.
fn answer_opens(jobs: Vec<OpenJob>, results: Vec<Outcome>) {
    let resolved: Vec<Option<StoreResult<Opened>>> = results
        .iter()
        .map(|o| match o {
            Outcome::Done(Ok(opened)) => Some(Ok(opened.clone())),
            Outcome::Done(Err(e)) => Some(Err(clone_error(e))),
            Outcome::SameAs(j) => Some(match results.get(*j) {
                Some(Outcome::Done(Ok(opened))) => Ok(Opened {
                    session: opened.session.clone(),
                    created: false,
                }),
                Some(Outcome::Done(Err(e))) => Err(clone_error(e)),
                _ => Err(StoreError::Unavailable("open batch lost a result".into())),
            }),
            Outcome::Queued(_) => None,
        })
        .collect();
    for ((job, outcome), resolved) in jobs.into_iter().zip(results).zip(resolved) {
        let answer = match (outcome, resolved) {
            (Outcome::Queued(Some(ticket)), _) => Ok(Admission::Queued(ticket)),
            (_, Some(result)) => result.map(Admission::Opened),
            (_, None) => Err(StoreError::Unavailable(
                "open batch lost a queue ticket".into(),
            )),
        };
        // A queued client gone meanwhile drops its ticket: the sweep takes it out of the queue.
        job.answer(answer);
    }
}

/// Holds the sessions a batch opened in this node's memory, so that their heartbeats here are
/// answered from it from the first one (`hold`): each is live as committed, under its license
/// as locked (`mark`), read no earlier than `read_at`. An end or a license change since is the
/// ends feed's to see, as for a session read by a heartbeat.
fn hold_opened(
    hold: &Hold,
    lics: &HashMap<String, view::LicState>,
    opened: Vec<Session>,
    read_at: Instant,
) {
    let mut terms: HashMap<String, Arc<LicenseTerms>> = HashMap::new();
    for session in opened {
        let Some(lic) = lics.get(&*session.license_id) else {
            continue;
        };
        let terms = terms
            .entry(lic.license.id.clone())
            .or_insert_with(|| Arc::new(lic.license.terms.clone()))
            .clone();
        hold.put(session, terms, lic.mark, read_at);
    }
}

/// One open batch (the steps above): one transaction, `tx`.
async fn open_batch(
    mut tx: Transaction<'_, Postgres>,
    queue: &QueueCtx,
    hold: &Hold,
    jobs: &[OpenJob],
    serve: &HashMap<String, Timestamp>,
) -> Result<BatchDone, sqlx::Error> {
    let now = jobs
        .iter()
        .map(|j| j.ask.now)
        .chain(serve.values().copied())
        .max()
        .unwrap_or(Timestamp::from_millis(0));
    let read_at = Instant::now();
    let mut decided = Decided::default();
    // 1–5: read under the license locks.
    let mut view = view::read(&mut tx, hold, jobs, serve, now, &mut decided.audit).await?;
    // 6–7: decide, queue heads first.
    let granted_here = decide::serve_heads(&mut view, now, &mut decided);
    decide::newcomers(jobs, &mut view, &granted_here, now, &mut decided);
    // 8–10: write, notify, commit.
    let Decided {
        mut outcomes,
        opened,
        slides,
        audit,
        served,
        again,
        to_queue,
    } = decided;
    let registration = write::enqueue(
        &mut tx,
        queue,
        jobs,
        &view.lics,
        to_queue,
        &mut outcomes,
        now,
    )
    .await?;
    write::changes(&mut tx, &view.lics, slides, &opened, audit, &served).await?;
    write::notify(&mut tx, queue, &served).await?;
    tx.commit().await?;
    registration.keep();
    hold_opened(hold, &view.lics, opened, read_at);
    Ok(BatchDone {
        outcomes,
        served,
        again,
    })
}
