//! The node's listener: LISTENs for queue outcomes addressed to this node and delivers them,
//! and for session events (`postgres/events.rs`), which it hands to the node's `EventHub`.
//! Its connection's backend is this node's liveness signal (`nodes.pid`).

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};

use super::{deliver_from_db, QueueCtx};
use crate::events::{EventHub, SessionEvent};
use crate::postgres::events::EVENTS_CHANNEL;
use crate::postgres::rows::TermsCache;
use crate::postgres::QUEUE_CHANNEL;

/// Pause before the queue listener reconnects after a failure.
const LISTEN_RETRY: Duration = Duration::from_millis(500);

/// LISTENs for queue outcomes addressed to this node and delivers them, and for session
/// events, which go to `events`. `PgListener` reconnects by itself; queue outcomes sent while
/// it was away are found by the sweep, which a reconnection wakes at once, and every stream of
/// `events` is woken to re-read its session (events sent meanwhile were missed).
pub(in crate::postgres) async fn listener(
    pool: PgPool,
    queue: Arc<QueueCtx>,
    cache: Arc<TermsCache>,
    events: Arc<EventHub>,
) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::debug!(error = %e, "queue listener cannot connect; retrying");
                tokio::time::sleep(LISTEN_RETRY).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all([QUEUE_CHANNEL, EVENTS_CHANNEL]).await {
            tracing::debug!(error = %e, "queue listener cannot LISTEN; retrying");
            tokio::time::sleep(LISTEN_RETRY).await;
            continue;
        }
        if let Err(e) = listening(&mut listener, &queue).await {
            tracing::debug!(error = %e, "queue listener cannot register; retrying");
            tokio::time::sleep(LISTEN_RETRY).await;
            continue;
        }
        events.wake_all();
        loop {
            match listener.try_recv().await {
                Ok(Some(first)) => {
                    let mut tickets = Vec::new();
                    let mut next = Some(first);
                    while let Some(n) = next {
                        if n.channel() == EVENTS_CHANNEL {
                            match SessionEvent::decode(n.payload()) {
                                Some(event) => events.deliver(&event),
                                None => tracing::debug!(
                                    payload = n.payload(),
                                    "ignored a session event this node cannot read"
                                ),
                            }
                        } else if let Some((node, ticket)) = n.payload().split_once(':') {
                            if node == queue.node_id {
                                if let Ok(t) = ticket.parse::<i64>() {
                                    tickets.push(t);
                                }
                            }
                        }
                        next = listener.next_buffered();
                    }
                    {
                        let waiters = queue.lock_waiters();
                        tickets.retain(|t| waiters.contains_key(t));
                    }
                    if tickets.is_empty() {
                        continue;
                    }
                    if let Err(e) = deliver_from_db(&pool, &queue, &cache, &tickets).await {
                        tracing::warn!(error = %e, "delivering queue outcomes failed");
                        queue.sweep_now.notify_one();
                    }
                }
                // The connection was lost and is back (listening again, on a new backend).
                Ok(None) => {
                    if let Err(e) = listening(&mut listener, &queue).await {
                        tracing::debug!(error = %e, "queue listener cannot register; reconnecting");
                        tokio::time::sleep(LISTEN_RETRY).await;
                        break;
                    }
                    events.wake_all();
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "queue listener failed; reconnecting");
                    tokio::time::sleep(LISTEN_RETRY).await;
                    break;
                }
            }
        }
    }
}

/// Records the listener's backend as this node's (if this process dies, so does the backend,
/// and other nodes skip its waiters at once). Then outcomes sent while this node was not
/// listening are looked for by the sweep, and its waiters (skipped while its listener was
/// away) are served again.
async fn listening(listener: &mut PgListener, queue: &QueueCtx) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO nodes (node_id, seen_at, pid) VALUES ($1, clock_timestamp(), pg_backend_pid())
         ON CONFLICT (node_id) DO UPDATE SET seen_at = excluded.seen_at, pid = excluded.pid",
    )
    .bind(&queue.node_id)
    .execute(&mut *listener)
    .await?;
    queue.sweep_now.notify_one();
    queue.serve_local();
    Ok(())
}
