//! The queue listener: LISTENs for outcomes addressed to this node and delivers them. Its
//! connection's backend is this node's liveness signal (`nodes.pid`).

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};

use super::{deliver_from_db, QueueCtx};
use crate::postgres::rows::TermsCache;
use crate::postgres::QUEUE_CHANNEL;

/// Pause before the queue listener reconnects after a failure.
const LISTEN_RETRY: Duration = Duration::from_millis(500);

/// LISTENs for queue outcomes addressed to this node and delivers them. `PgListener`
/// reconnects by itself; notifications sent while it was away are found by the sweep, which a
/// reconnection wakes at once.
pub(in crate::postgres) async fn listener(
    pool: PgPool,
    queue: Arc<QueueCtx>,
    cache: Arc<TermsCache>,
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
        if let Err(e) = listener.listen(QUEUE_CHANNEL).await {
            tracing::debug!(error = %e, "queue listener cannot LISTEN; retrying");
            tokio::time::sleep(LISTEN_RETRY).await;
            continue;
        }
        if let Err(e) = listening(&mut listener, &queue).await {
            tracing::debug!(error = %e, "queue listener cannot register; retrying");
            tokio::time::sleep(LISTEN_RETRY).await;
            continue;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(first)) => {
                    let mut tickets = Vec::new();
                    let mut next = Some(first);
                    while let Some(n) = next {
                        if let Some((node, ticket)) = n.payload().split_once(':') {
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
