//! The ends feed: what lets a node answer heartbeats from memory (`hold`) without asking the
//! database whether each session still lives. Every `FEED_EVERY` the node reads every end
//! committed since its previous read: the `ended` audit events past the last `seq` it read, up
//! to the audit log's horizon (`audit::horizon`: no event can still appear below it), written
//! by every path that ends a single session (logouts, revokes, reapers, expired sessions found
//! by heartbeats or opens, deactivations), in the end's own transaction; and the floor, end
//! and terms of each license it holds sessions of (a mass end or a license's end sets them
//! first, before any session row). Those sessions leave memory. Memory answers only while the
//! last complete read started less than `HOLD_TRUST_MS` ago, so a failing feed (the database
//! unreachable) sends heartbeats to the database within that bound.
//!
//! Polling is the truth here: nothing depends on `NOTIFY`.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPool;
use sqlx::Row;

use super::audit::horizon;
use super::errors::db_error;
use super::hold::Hold;
use crate::StoreResult;

/// How often a node reads the ends committed since its previous read.
const FEED_EVERY: Duration = Duration::from_millis(500);

/// The node's feed task, for as long as the store runs.
pub(super) async fn feed(pool: PgPool, hold: Arc<Hold>) {
    let known = AtomicI64::new(0);
    let mut last: Option<i64> = None;
    let mut every = tokio::time::interval(FEED_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match read(&pool, &hold, &known, last).await {
            Ok(seq) => last = Some(seq),
            Err(e) => tracing::debug!(error = %e, "reading the ends feed failed; trying again"),
        }
    }
}

/// One read: from `last` (the first read only marks where the feed starts) up to the horizon.
/// Answers the `seq` read up to.
async fn read(
    pool: &PgPool,
    hold: &Hold,
    known: &AtomicI64,
    last: Option<i64>,
) -> StoreResult<i64> {
    let started = Instant::now();
    let upto = horizon(pool, known).await?;
    if last.is_none() {
        // Every end of `seq` up to the horizon committed before it was found, and every later
        // one has a greater `seq`: what is read from now on may be held, the feed covers the
        // ends after it.
        hold.start_epoch(Instant::now());
    }
    if let Some(from) = last.filter(|&from| upto > from) {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT session_id FROM audit_events
             WHERE seq > $1 AND seq <= $2 AND event = 'ended' AND session_id IS NOT NULL",
        )
        .bind(from)
        .bind(upto)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
        if !ids.is_empty() {
            hold.ended(ids);
        }
    }
    let licenses = hold.licenses();
    if !licenses.is_empty() {
        let ids: Vec<&str> = licenses.iter().map(|(id, _)| id.as_str()).collect();
        let rows = sqlx::query(
            "SELECT id, end_below, ends_at, hashtext(terms) FROM licenses WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
        for row in &rows {
            let id: String = row.try_get(0).map_err(db_error)?;
            let mark = (
                row.try_get(1).map_err(db_error)?,
                row.try_get(2).map_err(db_error)?,
                row.try_get(3).map_err(db_error)?,
            );
            hold.license_read(&id, mark);
        }
    }
    hold.fed(started);
    Ok(upto.max(last.unwrap_or(0)))
}
