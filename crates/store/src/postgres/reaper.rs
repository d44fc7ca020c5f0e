//! Expiry: `reap_expired` (run by every node's reaper) takes at most `REAP_BATCH` live
//! sessions whose `reap_at` has passed by `REAP_LAG_SQL` (while other nodes live,
//! `REAP_LAG_MS`: the most a stored expiry lags one answered from a node's memory, see `hold`)
//! through the partial index `sessions_live_reap` with `FOR UPDATE SKIP LOCKED`. `reap_at` is a
//! lower bound of `expires_at` (set at open; heartbeats raise only `expires_at`, so their
//! rewrites change no indexed column and stay HOT): a session found due whose expiry has moved
//! on, or that is live in this node's own memory, gets `reap_at` raised to its expiry instead;
//! the others end, with their `ended` events, in the same transaction. A session locked by one
//! node is skipped by the others, and the end is guarded by `ended_at IS NULL`: each expired
//! session is ended exactly once, with one `ended` event, whichever nodes run the reaper. A tick
//! costs O(due), never a scan of the sessions table.

use std::collections::HashSet;

use leasehold_core::Timestamp;
use leasehold_proto::OnFull;
use sqlx::postgres::PgPool;
use sqlx::Row;

use super::end::end_expired;
use super::errors::{db_error, is_retryable};
use super::hold::{Hold, REAP_LAG_SQL};
use super::mass;
use super::queue::QueueCtx;
use super::rows::{insert_audit, AuditRows, SessionRow, TermsCache, SESSION_COLS, SESSION_COLS_N};
use super::{MAX_ATTEMPTS, REAP_BATCH};
use crate::records::{EndCounts, Session};
use crate::StoreResult;

/// Most reaper transactions per `reap_expired` call (then the next tick goes on).
const REAP_ROUNDS: usize = 20;

/// Ends every session whose expiry has passed (up to `REAP_ROUNDS` full transactions), and
/// the expired access tokens; answers the ended sessions. The queues of the licenses whose
/// seats it reclaimed are served after each transaction.
pub(super) async fn reap_expired(
    pool: &PgPool,
    cache: &TermsCache,
    hold: &Hold,
    queue: &QueueCtx,
    now: Timestamp,
) -> StoreResult<EndCounts> {
    let mut ended = EndCounts::default();
    for _ in 0..REAP_ROUNDS {
        let mut attempt = 1;
        let (batch, queueing, full) = loop {
            match reap_batch(pool, cache, hold, now).await {
                Ok(batch) => break batch,
                Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => attempt += 1,
                Err(e) => return Err(db_error(e)),
            }
        };
        // Reclaimed seats of queueing licenses go to their waiters.
        for license_id in queueing {
            queue.serve(&license_id, now);
        }
        for s in &batch {
            ended.add(&s.license_id, s.clock.expiry_reason(), 1);
        }
        if !full {
            break;
        }
    }
    // Mass ends: passed license ends become floors, and the sessions under floors end in
    // bounded batches (see `mass`).
    mass::reap(pool, cache, queue, now, &mut ended).await?;
    // Expired access tokens go the same way: O(expired), by their index.
    sqlx::query(
        "DELETE FROM credentials WHERE hash IN (
             SELECT hash FROM credentials WHERE expires_at <= $1
             LIMIT 1000 FOR UPDATE SKIP LOCKED)",
    )
    .bind(now.millis())
    .execute(pool)
    .await
    .map_err(db_error)?;
    Ok(ended)
}

/// One reaper transaction: lock up to `REAP_BATCH` due live sessions no other node holds,
/// end the expired ones and write their events, raise the others' `reap_at`. Answers the
/// ended sessions, the queueing licenses among theirs, and whether the batch was full.
async fn reap_batch(
    pool: &PgPool,
    cache: &TermsCache,
    hold: &Hold,
    now: Timestamp,
) -> Result<(Vec<Session>, HashSet<String>, bool), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(&format!(
        "SELECT {SESSION_COLS}, s.expires_at <= $1 - {REAP_LAG_SQL}
         FROM sessions s JOIN licenses l ON l.id = s.license_id
         WHERE s.ended_at IS NULL AND s.reap_at <= $1 - {REAP_LAG_SQL}
         ORDER BY s.reap_at LIMIT $2
         FOR UPDATE OF s SKIP LOCKED"
    ))
    .bind(now.millis())
    .bind(REAP_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok((Vec::new(), HashSet::new(), false));
    }
    let full = rows.len() as i64 >= REAP_BATCH;
    let mut sessions = Vec::with_capacity(rows.len());
    let mut queueing = HashSet::new();
    let (mut kept, mut kept_exp) = (Vec::new(), Vec::new());
    for row in &rows {
        match SessionRow::read(row, cache) {
            Ok(mut r) => {
                // Due by `reap_at` but its stored expiry moved on (heartbeats): not expired.
                let stored = r.session.clock.expires_at.millis();
                if !row.try_get::<bool, _>(SESSION_COLS_N)? {
                    let exp = hold.expiry(&r.session.id).map_or(stored, |h| h.max(stored));
                    kept.push(r.session.id);
                    kept_exp.push(exp);
                    continue;
                }
                // Live in this node's memory (an expiry answered, not written yet): written now
                // instead of ended. Expired there too: it ends as its latest expiry says (an
                // inactivity timeout or a lifetime).
                if let Some(exp) = hold.expiry(&r.session.id) {
                    if exp > now.millis() {
                        kept.push(r.session.id);
                        kept_exp.push(exp);
                        continue;
                    }
                    if exp > r.session.clock.expires_at.millis() {
                        r.session.clock.expires_at = Timestamp::from_millis(exp);
                    }
                }
                if r.terms.on_full == OnFull::Queue {
                    queueing.insert(r.session.license_id.to_string());
                }
                sessions.push(r.session);
            }
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable session"),
        }
    }
    if !kept.is_empty() {
        sqlx::query(
            "UPDATE sessions s SET expires_at = GREATEST(s.expires_at, v.exp),
                                   reap_at = GREATEST(s.expires_at, v.exp)
             FROM unnest($1::text[], $2::int8[]) AS v(id, exp) WHERE s.id = v.id",
        )
        .bind(&kept)
        .bind(&kept_exp)
        .execute(&mut *tx)
        .await?;
    }
    let mut audit = AuditRows::default();
    end_expired(&mut tx, &sessions, now, &mut audit).await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok((sessions, queueing, full))
}
