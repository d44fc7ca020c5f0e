//! The queue sweeper, this node's safety net against missed notices: once a second it refreshes
//! the node's `nodes.seen_at`, purges its settled entries, delivers the outcomes of its waiting
//! tickets that are served, and lets waiters whose client is gone leave. It also follows the
//! database's clock (`clock`), and every few rounds serves again the queues this node has
//! waiters on and forgets nodes gone for long.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPool;

use super::nodes::forget_gone_nodes;
use super::{deliver_rows, served_select, QueueCtx};
use crate::postgres::clock::DbClock;
use crate::postgres::errors::db_error;
use crate::postgres::rows::TermsCache;
use crate::StoreResult;

/// How often a node refreshes its `nodes.seen_at` and checks its own waiting tickets.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Sweeps between two safety-net serves of the licenses this node has waiters on.
const RESERVE_EVERY: u32 = 5;
/// Sweeps between two clean-ups of nodes gone for long.
const CLEANUP_EVERY: u32 = 60;

/// Once a second (and when the listener reconnected): refreshes this node's `nodes.seen_at`
/// (database clock), purges its settled entries and checks its waiting tickets, one statement
/// in all; delivers what a missed notification left behind. Tickets whose client is gone
/// (receiver dropped without leaving) leave the queue. Every `RESERVE_EVERY` sweeps the
/// licenses this node has waiters on are served again (a safety net for a lost trigger), and
/// every `CLEANUP_EVERY` sweeps nodes gone for long are forgotten with their entries.
pub(in crate::postgres) async fn sweeper(
    pool: PgPool,
    queue: Arc<QueueCtx>,
    cache: Arc<TermsCache>,
    clock: Arc<DbClock>,
) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u32 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = queue.sweep_now.notified() => {}
        }
        round = round.wrapping_add(1);
        if let Err(e) = clock.follow(&pool).await {
            tracing::debug!(error = %e, "reading the database clock failed");
        }
        if let Err(e) = sweep(&pool, &queue, &cache).await {
            if pool.is_closed() {
                return;
            }
            tracing::debug!(error = %e, "queue sweep failed");
        }
        if round.is_multiple_of(RESERVE_EVERY) {
            queue.serve_local();
        }
        if round.is_multiple_of(CLEANUP_EVERY) {
            if let Err(e) = forget_gone_nodes(&pool).await {
                tracing::debug!(error = %e, "forgetting gone nodes failed");
            }
        }
    }
}

/// One sweep (see `sweeper`).
async fn sweep(pool: &PgPool, queue: &QueueCtx, cache: &TermsCache) -> StoreResult<()> {
    let (waiting, gone): (Vec<i64>, Vec<i64>) = {
        let waiters = queue.lock_waiters();
        let gone = waiters
            .iter()
            .filter(|(_, w)| w.tx.is_closed())
            .map(|(t, _)| *t)
            .collect();
        (waiters.keys().copied().collect(), gone)
    };
    if !gone.is_empty() {
        // Rows a batch is serving right now are skipped: their outcome comes, finds nobody,
        // and a grant is ended then.
        let left: Vec<i64> = sqlx::query_scalar(
            "UPDATE queue_entries SET state = 'left'
             WHERE ticket IN (SELECT ticket FROM queue_entries
                              WHERE ticket = ANY($1) AND state = 'waiting'
                              FOR UPDATE SKIP LOCKED)
             RETURNING ticket",
        )
        .bind(&gone)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
        let mut licenses = HashSet::new();
        {
            let mut waiters = queue.lock_waiters();
            for t in &left {
                if let Some(w) = waiters.remove(t) {
                    licenses.insert(w.license_id);
                }
            }
        }
        queue.settled(left);
        for license_id in licenses {
            queue.serve(&license_id, queue.now());
        }
    }
    let finished: Vec<i64> =
        std::mem::take(&mut *queue.finished.lock().unwrap_or_else(|e| e.into_inner()));
    let sql = format!(
        "WITH beat AS (
             INSERT INTO nodes (node_id, seen_at) VALUES ($1, clock_timestamp())
             ON CONFLICT (node_id) DO UPDATE SET seen_at = excluded.seen_at
         ), purged AS (
             DELETE FROM queue_entries WHERE ticket = ANY($3) AND state <> 'waiting'
         )
         {}",
        served_select("q.ticket = ANY($2)")
    );
    let rows = sqlx::query(&sql)
        .bind(&queue.node_id)
        .bind(&waiting)
        .bind(&finished)
        .fetch_all(pool)
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            // Purged next time.
            queue.settled(finished);
            return Err(db_error(e));
        }
    };
    deliver_rows(queue, cache, &rows)?;
    Ok(())
}
