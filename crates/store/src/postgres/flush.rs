//! The flusher: every `FLUSH_EVERY` it writes the expiries of the heartbeats this node answered
//! from memory (`hold`), the latest per session, in bulk (`UPDATE … FROM unnest(…)`, at most
//! `FLUSH_CHUNK` rows a statement, each its own commit, in id order). The update is guarded like
//! a heartbeat's: only a session still live (not ended, not under its license's floor or past
//! its license's end, and not reapable: stored expiry later than the heartbeat's time minus
//! `REAP_LAG_MS`) is written. The sessions it does not find live leave memory, so their next
//! heartbeat asks the database and hears the end. A flush that fails puts its expiries back
//! for the next one, keeping their age: once one waits longer than `HOLD_TRUST_MS`, memory
//! stops answering (see `hold` for the bound).

use std::sync::Arc;
use std::time::Instant;

use sqlx::postgres::PgPool;
use sqlx::Row;

use super::errors::is_retryable;
use super::hold::{Hold, PendingBeat, FLUSH_EVERY, REAP_LAG_MS};
use super::mass::LIVE_UNDER_LICENSE;
use super::MAX_ATTEMPTS;
use crate::metrics::BatchMetrics;

/// Most rows one flush statement writes.
const FLUSH_CHUNK: usize = 4_096;
/// Flush rounds between two prunes of expired entries.
const PRUNE_EVERY: u32 = 10;

/// The guarded bulk update of pending expiries; answers the sessions written and their
/// license's mark (`hold::LicenseMark`: the hash of its terms, its floor and its end).
pub(super) fn flush_sql() -> String {
    format!(
        "UPDATE sessions s SET expires_at = GREATEST(s.expires_at, v.exp)
         FROM unnest($1::text[], $2::int8[], $3::int8[]) AS v(id, exp, now), licenses l
         WHERE s.id = v.id AND s.ended_at IS NULL AND s.expires_at > v.now - {REAP_LAG_MS}
           AND l.id = s.license_id AND {LIVE_UNDER_LICENSE}
         RETURNING s.id, s.expires_at, hashtext(l.terms), l.end_below, l.ends_at"
    )
}

/// The node's flushing task, for as long as the store runs.
pub(super) async fn flusher(pool: PgPool, hold: Arc<Hold>) {
    let metrics = BatchMetrics::new("postgres", "flush");
    let mut every = tokio::time::interval(FLUSH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u32;
    loop {
        every.tick().await;
        let started = Instant::now();
        let written = flush(&pool, &hold).await;
        if written > 0 {
            metrics.record(written, started.elapsed());
        }
        round = round.wrapping_add(1);
        if round.is_multiple_of(PRUNE_EVERY) {
            hold.prune();
        }
    }
}

/// Writes every pending expiry (see the module doc); answers how many there were.
pub(super) async fn flush(pool: &PgPool, hold: &Hold) -> usize {
    let (pending, since) = hold.take_pending();
    if pending.is_empty() {
        return 0;
    }
    let mut beats: Vec<(Arc<str>, PendingBeat)> = pending.into_iter().collect();
    beats.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut failed = Vec::new();
    let mut chunks = beats.chunks(FLUSH_CHUNK);
    for chunk in chunks.by_ref() {
        if let Err(e) = write_chunk(pool, hold, chunk).await {
            tracing::warn!(error = %e, pending = beats.len(), "could not write held heartbeats; retrying at the next flush");
            failed.extend_from_slice(chunk);
            break;
        }
    }
    for chunk in chunks {
        failed.extend_from_slice(chunk);
    }
    if !failed.is_empty() {
        hold.restore_pending(failed, since);
    }
    beats.len()
}

/// One statement of a flush (again on a deadlock or serialization conflict).
async fn write_chunk(
    pool: &PgPool,
    hold: &Hold,
    chunk: &[(Arc<str>, PendingBeat)],
) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = chunk.iter().map(|(id, _)| &**id).collect();
    let exps: Vec<i64> = chunk.iter().map(|(_, b)| b.exp).collect();
    let nows: Vec<i64> = chunk.iter().map(|(_, b)| b.now).collect();
    let sql = flush_sql();
    let mut attempt = 1;
    let rows = loop {
        match sqlx::query(&sql)
            .bind(&ids)
            .bind(&exps)
            .bind(&nows)
            .fetch_all(pool)
            .await
        {
            Ok(rows) => break rows,
            Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => attempt += 1,
            Err(e) => return Err(e),
        }
    };
    let mut live = std::collections::HashSet::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.try_get(0)?;
        let hash: i32 = row.try_get(2)?;
        live.insert(id.clone());
        hold.confirm(&id, hash);
    }
    for (id, _) in chunk {
        if !live.contains(&**id) {
            // Ended, under a floor, past its license's end, or reaped: no longer held.
            hold.forget(id);
        }
    }
    Ok(())
}
