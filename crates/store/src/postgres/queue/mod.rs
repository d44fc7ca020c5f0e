//! This node's side of the cross-node queue: its waiting clients (ticket -> sender), the
//! delivery of outcomes to them, serve requests to the open lanes, leaving and listing. The
//! queue itself lives in the database (`queue_entries`); grants are decided by the open batch
//! (`open`). Outcomes reach the nodes by NOTIFY (`listener`), and by a sweep as a safety net
//! (`sweeper`); `nodes` keeps track of which nodes are alive.

mod listener;
mod nodes;
mod sweeper;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use leasehold_core::{RuleError, Timestamp};
use leasehold_proto::EndReason;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use super::end::{EndAsk, EndJob};
use super::errors::db_error;
use super::lanes::{lane_of, Job};
use super::open::LaneJob;
use super::rows::{fetch_rows, SessionRow, TermsCache, SESSION_COLS, SESSION_COLS_N};
use super::LIVE_NODE;
use crate::codec::refusal_from;
use crate::records::*;
use crate::{StoreError, StoreResult};

pub(super) use listener::listener;
pub(super) use nodes::{beat, forget_node};
pub(super) use sweeper::sweeper;

/// A client of this node waiting in a queue.
struct Waiter {
    license_id: String,
    tx: oneshot::Sender<StoreResult<Grant>>,
}

/// This node's side of the cross-node queue, shared by its batchers and background tasks.
pub(super) struct QueueCtx {
    /// Random, per store: the `node_id` of this node's queue entries and `nodes` row.
    pub(super) node_id: String,
    /// This node's waiters by ticket. An outcome is sent under this lock, so that whoever
    /// finds a ticket gone knows its outcome has been handed over.
    waiters: Mutex<HashMap<i64, Waiter>>,
    /// Tickets of this node that are settled (served or left): removed by the next sweep.
    finished: Mutex<Vec<i64>>,
    /// The open lanes (to serve a license's queue) and the logout lanes (to end a grant nobody
    /// can receive). Weak: the store's own senders decide when the batchers stop.
    opens: Vec<mpsc::WeakSender<LaneJob>>,
    ends: Vec<mpsc::WeakSender<EndJob>>,
    /// The latest `now` this store was given, for what it does on its own (ending a grant
    /// nobody can receive, serving queues again). No wall clock is read here.
    last_now: AtomicI64,
    /// Wakes the sweeper at once (after the listener reconnected).
    sweep_now: tokio::sync::Notify,
}

impl QueueCtx {
    /// The queue side of a new node, serving through `opens` and ending through `ends`.
    pub(super) fn new(opens: &[mpsc::Sender<LaneJob>], ends: &[mpsc::Sender<EndJob>]) -> Self {
        QueueCtx {
            node_id: format!("node-{}", uuid::Uuid::new_v4().simple()),
            waiters: Mutex::new(HashMap::new()),
            finished: Mutex::new(Vec::new()),
            opens: opens.iter().map(mpsc::Sender::downgrade).collect(),
            ends: ends.iter().map(mpsc::Sender::downgrade).collect(),
            last_now: AtomicI64::new(0),
            sweep_now: tokio::sync::Notify::new(),
        }
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Waiter>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a time this store was given.
    pub(super) fn saw(&self, now: Timestamp) {
        self.last_now.fetch_max(now.millis(), Ordering::Relaxed);
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.last_now.load(Ordering::Relaxed))
    }

    fn settled(&self, tickets: impl IntoIterator<Item = i64>) {
        self.finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tickets);
    }

    /// Asks this node's open lane of `license_id` to serve its queue (a seat may have freed).
    pub(super) fn serve(&self, license_id: &str, now: Timestamp) {
        self.saw(now);
        let Some(lane) = self
            .opens
            .get(lane_of(license_id, self.opens.len()))
            .and_then(mpsc::WeakSender::upgrade)
        else {
            return;
        };
        let job = LaneJob::Serve {
            license_id: license_id.to_owned(),
            now,
        };
        if let Err(mpsc::error::TrySendError::Full(job)) = lane.try_send(job) {
            tokio::spawn(async move {
                let _ = lane.send(job).await;
            });
        }
    }

    /// Serves the queues this node has waiters in.
    fn serve_local(&self) {
        let licenses: HashSet<String> = self
            .lock_waiters()
            .values()
            .map(|w| w.license_id.clone())
            .collect();
        for license_id in licenses {
            self.serve(&license_id, self.now());
        }
    }

    /// Hands a served ticket's outcome to its waiter, if it still waits here (a ticket not
    /// found here has had its outcome handed over, or has left). A grant whose waiter is gone
    /// (receiver dropped) is ended at once: no seat is held by nobody.
    pub(super) fn deliver(&self, ticket: i64, outcome: Result<Opened, RuleError>) {
        let orphan = {
            let mut waiters = self.lock_waiters();
            let Some(waiter) = waiters.remove(&ticket) else {
                return;
            };
            match outcome {
                Ok(opened) => {
                    let (ack, durable) = oneshot::channel();
                    // Durable already: the grant was committed before anyone heard of it.
                    let _ = ack.send(Ok(()));
                    let created = opened.created;
                    match waiter.tx.send(Ok(Grant { opened, durable })) {
                        Ok(()) => None,
                        Err(Ok(grant)) if created => Some(grant.opened.session),
                        Err(_) => None,
                    }
                }
                Err(refusal) => {
                    let _ = waiter.tx.send(Err(StoreError::Rule(refusal)));
                    None
                }
            }
        };
        self.settled([ticket]);
        if let Some(session) = orphan {
            self.end_orphan(session);
        }
    }

    /// Ends a session granted to a waiter that went away (which serves the queue again).
    fn end_orphan(&self, session: Session) {
        let now = self.now().max(session.clock.opened_at);
        let Some(lane) = self
            .ends
            .get(lane_of(&session.id, self.ends.len()))
            .and_then(mpsc::WeakSender::upgrade)
        else {
            return;
        };
        tracing::debug!(session = %session.id, "a granted waiter is gone; ending its session");
        tokio::spawn(async move {
            let (job, answer) = Job::new(EndAsk {
                session_id: session.id,
                reason: EndReason::Logout,
                now,
                // No request asks: the server ends it.
                origin: crate::Origin::default(),
            });
            if lane.send(job).await.is_ok() {
                let _ = answer.await;
            }
        });
    }
}

/// Queue tickets of one batch, registered with the node's waiters before the commit and taken
/// out again unless the commit succeeded (`keep`).
pub(super) struct Registration<'a> {
    queue: &'a QueueCtx,
    tickets: Vec<i64>,
}

impl<'a> Registration<'a> {
    pub(super) fn new(queue: &'a QueueCtx) -> Self {
        Registration {
            queue,
            tickets: Vec::new(),
        }
    }

    /// Registers a waiter for `ticket`; answers the receiver of its grant.
    pub(super) fn add(
        &mut self,
        ticket: i64,
        license_id: &str,
    ) -> oneshot::Receiver<StoreResult<Grant>> {
        let (tx, rx) = oneshot::channel();
        self.queue.lock_waiters().insert(
            ticket,
            Waiter {
                license_id: license_id.to_owned(),
                tx,
            },
        );
        self.tickets.push(ticket);
        rx
    }

    /// The batch committed: its waiters stay.
    pub(super) fn keep(mut self) {
        self.tickets.clear();
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if self.tickets.is_empty() {
            return;
        }
        let mut waiters = self.queue.lock_waiters();
        for t in &self.tickets {
            waiters.remove(t);
        }
    }
}

/// Columns of a served queue entry with its session, as `read_served` expects.
fn served_select(condition: &str) -> String {
    format!(
        "SELECT {SESSION_COLS}, q.ticket, q.state, q.refusal, q.new_id
         FROM queue_entries q
         LEFT JOIN sessions s ON s.id = q.session_id
         LEFT JOIN licenses l ON l.id = s.license_id
         WHERE {condition} AND q.state IN ('granted', 'refused')"
    )
}

/// Reads a row of `served_select`: the ticket and its outcome.
fn read_served(row: &PgRow, cache: &TermsCache) -> StoreResult<(i64, Result<Opened, RuleError>)> {
    let get = |e: sqlx::Error| StoreError::Unavailable(format!("reading a queue entry: {e}"));
    let ticket: i64 = row.try_get(SESSION_COLS_N).map_err(get)?;
    let state: String = row.try_get(SESSION_COLS_N + 1).map_err(get)?;
    if state != "granted" {
        let refusal: Option<String> = row.try_get(SESSION_COLS_N + 2).map_err(get)?;
        return Ok((
            ticket,
            Err(refusal_from(refusal.as_deref().unwrap_or("{}"))),
        ));
    }
    let new_id: String = row.try_get(SESSION_COLS_N + 3).map_err(get)?;
    let session = SessionRow::read(row, cache)?.session;
    let created = session.id == new_id;
    Ok((ticket, Ok(Opened { session, created })))
}

/// Reads the outcomes of `tickets` that are served and hands them to their waiters here;
/// answers the tickets delivered.
async fn deliver_from_db(
    pool: &PgPool,
    queue: &QueueCtx,
    cache: &TermsCache,
    tickets: &[i64],
) -> StoreResult<HashSet<i64>> {
    let rows = sqlx::query(&served_select("q.ticket = ANY($1)"))
        .bind(tickets)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    deliver_rows(queue, cache, &rows)
}

/// Hands the outcomes of `rows` (of `served_select`) to their waiters here.
fn deliver_rows(queue: &QueueCtx, cache: &TermsCache, rows: &[PgRow]) -> StoreResult<HashSet<i64>> {
    let mut delivered = HashSet::new();
    for row in rows {
        let (ticket, outcome) = read_served(row, cache)?;
        queue.deliver(ticket, outcome);
        delivered.insert(ticket);
    }
    Ok(delivered)
}

/// Leaves the queue: `UPDATE … SET state = 'left' WHERE state = 'waiting'`. When that changes
/// nothing the entry was served meanwhile, on whichever node: its outcome is handed to the
/// waiter before this answers false, so that the caller's next look at its ticket finds it.
pub(super) async fn leave(
    pool: &PgPool,
    queue: &QueueCtx,
    cache: &TermsCache,
    license_id: &str,
    ticket: u64,
) -> StoreResult<bool> {
    let Ok(ticket) = i64::try_from(ticket) else {
        return Ok(false);
    };
    let left = sqlx::query(
        "UPDATE queue_entries SET state = 'left'
         WHERE ticket = $1 AND license_id = $2 AND state = 'waiting'",
    )
    .bind(ticket)
    .bind(license_id)
    .execute(pool)
    .await
    .map_err(db_error)?
    .rows_affected()
        > 0;
    if left {
        queue.lock_waiters().remove(&ticket);
        queue.settled([ticket]);
        // The head may have changed: a grant blocked behind it may go through now.
        queue.serve(license_id, queue.now());
        return Ok(true);
    }
    let delivered = deliver_from_db(pool, queue, cache, &[ticket]).await?;
    if !delivered.contains(&ticket) {
        // No outcome to give (the entry is gone): the place is dropped.
        queue.lock_waiters().remove(&ticket);
    }
    Ok(false)
}

/// The license's live waiters, in ticket order (an empty list for an unknown license too).
pub(super) async fn list(
    pool: &PgPool,
    license_id: &str,
    now: Timestamp,
) -> StoreResult<Vec<QueuedRequest>> {
    let sql = format!(
        "SELECT q.ticket, q.username, q.device_id, q.instance_id, q.enqueued_at
         FROM queue_entries q JOIN nodes n ON n.node_id = q.node_id
         WHERE q.license_id = $1 AND q.state = 'waiting' AND q.deadline > $2 AND {LIVE_NODE}
         ORDER BY q.ticket"
    );
    let query = sqlx::query(&sql).bind(license_id).bind(now.millis());
    let mut position: u32 = 0;
    fetch_rows(query, pool, |r| {
        position = position.saturating_add(1);
        Ok(QueuedRequest {
            ticket: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
            position,
            username: r.try_get(1)?,
            device_id: r.try_get(2)?,
            instance_id: r.try_get(3)?,
            since: Timestamp::from_millis(r.try_get(4)?),
        })
    })
    .await
}
