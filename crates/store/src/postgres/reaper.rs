//! Expiry: `reap_expired` (run by every node's reaper) takes at most `REAP_BATCH` live
//! sessions past their expiry by `REAP_LAG_SQL` (while other nodes live, `REAP_LAG_MS`: the
//! most a stored expiry lags one answered from a node's memory, see `hold`; a session live in
//! this node's own memory gets that expiry written instead) through the partial index `sessions_live_expiry` with
//! `FOR UPDATE SKIP LOCKED`, ends them and writes their `ended` events in the same
//! transaction. A session locked by one node is skipped by the others, and the end is guarded
//! by `ended_at IS NULL`: each expired session is ended exactly once, with one `ended` event,
//! whichever nodes run the reaper. A tick costs O(expired), never a scan of the sessions table.

use std::collections::HashSet;

use leasehold_core::Timestamp;
use leasehold_proto::OnFull;
use sqlx::postgres::PgPool;

use super::end::end_expired;
use super::errors::{db_error, is_retryable};
use super::hold::{Hold, REAP_LAG_SQL};
use super::mass;
use super::queue::QueueCtx;
use super::rows::{insert_audit, AuditRows, SessionRow, TermsCache, SESSION_COLS};
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
        let (batch, queueing) = loop {
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
        let full = batch.len() as i64 >= REAP_BATCH;
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

/// One reaper transaction: lock up to `REAP_BATCH` expired live sessions no other node holds,
/// end them and write their events. Answers them and the queueing licenses among theirs.
async fn reap_batch(
    pool: &PgPool,
    cache: &TermsCache,
    hold: &Hold,
    now: Timestamp,
) -> Result<(Vec<Session>, HashSet<String>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(&format!(
        "SELECT {SESSION_COLS} FROM sessions s JOIN licenses l ON l.id = s.license_id
         WHERE s.ended_at IS NULL AND s.expires_at <= $1 - {REAP_LAG_SQL}
         ORDER BY s.expires_at LIMIT $2
         FOR UPDATE OF s SKIP LOCKED"
    ))
    .bind(now.millis())
    .bind(REAP_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok((Vec::new(), HashSet::new()));
    }
    let mut sessions = Vec::with_capacity(rows.len());
    let mut queueing = HashSet::new();
    let (mut kept, mut kept_exp) = (Vec::new(), Vec::new());
    for row in &rows {
        match SessionRow::read(row, cache) {
            Ok(mut r) => {
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
            "UPDATE sessions s SET expires_at = GREATEST(s.expires_at, v.exp)
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
    Ok((sessions, queueing))
}
