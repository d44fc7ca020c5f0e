//! Session events across nodes: `Publisher` NOTIFYs events on `EVENTS_CHANNEL`, and every
//! node's queue listener (`queue/listener.rs`, the one LISTEN connection of a node, which
//! listens on this channel too) hands what it hears to its own `EventHub`. A node that lost
//! its LISTEN connection may have missed events: once listening again it wakes every stream
//! of its hub to re-read its session (`EventHub::wake_all`), so no end is missed for good.
//!
//! Events are a speed-up, not the truth (a stream re-reads its session, clients learn an end
//! at their next heartbeat): so the request that ended a session does not wait for its
//! NOTIFY. `publish` hands the event to the node's publisher task, which sends whatever
//! arrived while its previous statement ran as one statement: a logout costs the database a
//! share of one round trip instead of one each (under load, hundreds share it).

use sqlx::postgres::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::errors::db_error;
use crate::events::SessionEvent;
use crate::{StoreError, StoreResult};

/// The NOTIFY channel of session events; a payload is `SessionEvent::encode`'s text.
pub(super) const EVENTS_CHANNEL: &str = "leasehold_events";

/// Events waiting for the publisher at most: beyond, `publish` refuses (the database is not
/// keeping up; streams still learn ends by re-reading, clients at their next heartbeat).
const BACKLOG: usize = 65_536;
/// Most events in one statement.
const MAX_BATCH: usize = 1_024;

/// The node's side of the publisher task.
pub(super) struct Publisher {
    tx: mpsc::Sender<String>,
}

impl Publisher {
    /// The publisher, and its task (stopped with the store).
    pub(super) fn spawn(pool: PgPool) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(BACKLOG);
        (Publisher { tx }, tokio::spawn(run(pool, rx)))
    }

    /// Queues `event` for every node (this one included: its listener hears its own NOTIFYs),
    /// to be sent after the change it reports was committed (the caller's commit is done).
    pub(super) fn publish(&self, event: &SessionEvent) -> StoreResult<()> {
        self.tx.try_send(event.encode()).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                StoreError::Unavailable("the session event backlog is full".into())
            }
            mpsc::error::TrySendError::Closed(_) => {
                StoreError::Unavailable("the session event publisher has stopped".into())
            }
        })
    }
}

/// Sends what arrived while the previous statement ran, in arrival order, one statement a
/// batch; a failed statement is logged and its events dropped (see the module doc).
async fn run(pool: PgPool, mut rx: mpsc::Receiver<String>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if let Err(e) = notify_all(&pool, &batch).await {
            tracing::warn!(error = %e, events = batch.len(), "could not raise session events; clients learn them at their next heartbeat");
        }
        batch.clear();
    }
}

/// One statement NOTIFYing `payloads` in order.
async fn notify_all(pool: &PgPool, payloads: &[String]) -> StoreResult<()> {
    // `unnest` yields in array order, and NOTIFYs are delivered in the order they were sent.
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(EVENTS_CHANNEL)
        .bind(payloads)
        .execute(pool)
        .await
        .map(drop)
        .map_err(db_error)
}
