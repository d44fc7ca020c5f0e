//! Mass ends on PostgreSQL: a revoke of every session of a license, and a license's end. The
//! decision is one small write under the license's row lock (its *floor*, `licenses.end_below`
//! with its reason and time), durable before the caller hears of it; the sessions' own ends are
//! written afterwards by the nodes' reapers, in bounded batches (`DRAIN_BATCH` rows a
//! transaction, one node at a time per license: no batch holds a lock that another license's
//! opens need, nor more than `DRAIN_BATCH` rows, and a mass end keeps one connection of the
//! database busy, whatever the number of nodes).
//!
//! A floor covers every live session of its license whose `seq` (drawn from `session_seq` by
//! the insert, under the same row lock) is below it: exactly the sessions committed before the
//! decision. From the decision on, no covered session is answered as live on any node: reads
//! of a session treat one under its license's floor as ended with the floor's reason
//! (`SessionRow::read`), heartbeats and logouts never slide or end it (`LIVE_UNDER_LICENSE`),
//! listings, usage and the seat views leave it out, and an idempotent re-open of its client
//! instance ends it and opens a new one. A license's end caps its sessions' expiries when they
//! are read (`rows::capped`) from the instant it passes; the reaper then turns it into a floor
//! (`reason = license_expired`), so that a later change of the end cannot bring them back.
//!
//! A node killed in the middle loses nothing: the floor is on disk before any end, every end
//! is a guarded update (`ended_at IS NULL`) written with its audit event in one statement, and
//! `end_pending` stays set until a batch finds no covered session left. A license holds one
//! floor: a second mass end before the first is written through ends the rest of the first's
//! sessions with the second's reason.
//!
//! Deactivations of users end the user's sessions in the deactivation's own transaction
//! (bounded by that user's sessions; see `accounts::put_user`, `models::set_license_user`).

use std::sync::atomic::{AtomicI64, Ordering};

use leasehold_core::Timestamp;
use leasehold_proto::{EndReason, OnFull};
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};

use super::errors::db_error;
use super::queue::QueueCtx;
use super::retry::transaction;
use super::rows::{insert_audit, AuditRows, LicenseRow, TermsCache, LICENSE_COLS};
use crate::admission;
use crate::codec::parse_end_reason;
use crate::records::EndCounts;
use crate::{StoreError, StoreResult};

/// SQL condition (over a session `s`, its license `l` and a batch value `v.now`): the session
/// is not under its license's floor, and its license's end has not passed. Guards every
/// statement that slides or ends a live session on someone's request.
pub(super) const LIVE_UNDER_LICENSE: &str =
    "s.seq >= l.end_below AND (l.ends_at IS NULL OR l.ends_at > v.now)";

/// Most sessions one drain transaction ends.
const DRAIN_BATCH: i64 = 500;

/// Fewest sessions one drain transaction ends (the progress kept on a saturated database).
const DRAIN_MIN_BATCH: i64 = 50;

/// How long one drain transaction should take. Its size follows: after each full one, the
/// next is scaled by how far it was from this (`next_drain_size`). A fixed 500 took ~65 ms of
/// the database on a quiet machine but ~130–160 ms on a loaded one, so each reaper tick's
/// drain overran its budget and took the database from other licenses when it was scarcest.
const DRAIN_TARGET: std::time::Duration = std::time::Duration::from_millis(25);

/// The size of this process's next drain transaction (a tuning figure only: any value between
/// the bounds is correct).
static DRAIN_SIZE: AtomicI64 = AtomicI64::new(DRAIN_BATCH);

/// The next drain size after a full transaction of `size` rows took `took`.
fn next_drain_size(size: i64, took: std::time::Duration) -> i64 {
    let scaled = size as f64 * DRAIN_TARGET.as_secs_f64() / took.as_secs_f64().max(1e-3);
    (scaled as i64).clamp(DRAIN_MIN_BATCH, DRAIN_BATCH)
}

/// How long one reaper tick on one node may spend draining (the next tick goes on): with
/// transactions of about `DRAIN_TARGET`, two a tick. The reaper ticks every 200 ms by default:
/// the drain then takes about a quarter of one connection's time and leaves the rest of the
/// database to other licenses. Draining without a pause (40 transactions of 1,000 a tick) took
/// the database from other licenses' opens: their p99 went from 85 to 259 ms on three nodes
/// while 100,000 sessions were ended.
const DRAIN_BUDGET: std::time::Duration = std::time::Duration::from_millis(40);

/// Sets the floor of a license whose row the caller's transaction has locked: every live
/// session of it committed so far ends (`reason`, at `now`). The sequence value is drawn after
/// the lock, so no session committed after it is below it. Answers the previous floor.
pub(super) async fn floor_locked(
    tx: &mut Transaction<'_, Postgres>,
    license_id: &str,
    reason: EndReason,
    now: Timestamp,
) -> Result<i64, sqlx::Error> {
    let previous: i64 = sqlx::query_scalar(
        "WITH old AS (SELECT end_below FROM licenses WHERE id = $1)
         UPDATE licenses l SET end_below = nextval('session_seq'), end_reason = $2,
                end_at = $3, end_pending = TRUE
         FROM old WHERE l.id = $1
         RETURNING old.end_below",
    )
    .bind(license_id)
    .bind(reason.as_str())
    .bind(now.millis())
    .fetch_one(&mut **tx)
    .await?;
    Ok(previous)
}

/// Revokes every live session of a license: its floor, and a `sessions_revoked` event with how
/// many, in one transaction under the license's row lock. Answers how many.
pub(super) async fn revoke_all(
    pool: &PgPool,
    cache: &TermsCache,
    license_id: &str,
    now: Timestamp,
) -> StoreResult<u32> {
    transaction!(pool, |tx| {
        let row = sqlx::query(&format!(
            "SELECT {LICENSE_COLS} FROM licenses WHERE id = $1 FOR UPDATE"
        ))
        .bind(license_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound("license"));
        };
        let license = LicenseRow::read(&row)
            .map_err(db_error)?
            .parse(|id, terms| cache.owned(id, terms))?;
        let previous = floor_locked(tx, license_id, EndReason::Revoked, now)
            .await
            .map_err(db_error)?;
        // Live sessions committed so far that no earlier floor covers (nor the license's end):
        // those of the previous floor's epoch (see `live`).
        let revoked: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(c.live), 0)::int8 FROM license_live c
             JOIN licenses l ON l.id = c.license_id
             WHERE c.license_id = $1 AND c.epoch = $2 AND (l.ends_at IS NULL OR l.ends_at > $3)",
        )
        .bind(license_id)
        .bind(previous)
        .bind(now.millis())
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?;
        let revoked = u32::try_from(revoked).unwrap_or(u32::MAX);
        insert_audit(
            tx,
            AuditRows::of(admission::sessions_revoked(&license, revoked, now)),
        )
        .await
        .map_err(db_error)?;
        Ok(revoked)
    })
}

/// The reaper's part of mass ends, run each tick on every node: licenses whose end has passed
/// get their floor, then the live sessions under floors are ended in batches (for at most
/// `DRAIN_BUDGET` per tick). Their counts go to `ended`; queueing licenses get their freed
/// seats served.
pub(super) async fn reap(
    pool: &PgPool,
    cache: &TermsCache,
    queue: &QueueCtx,
    now: Timestamp,
    ended: &mut EndCounts,
) -> StoreResult<()> {
    floor_passed_ends(pool, now).await.map_err(db_error)?;
    let pending = sqlx::query(
        "SELECT id, end_below, end_reason, end_at, terms FROM licenses WHERE end_pending",
    )
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    let started = std::time::Instant::now();
    for row in &pending {
        let license_id: String = row.try_get(0).map_err(db_error)?;
        let below: i64 = row.try_get(1).map_err(db_error)?;
        let reason: Option<String> = row.try_get(2).map_err(db_error)?;
        let at: Option<i64> = row.try_get(3).map_err(db_error)?;
        let terms: String = row.try_get(4).map_err(db_error)?;
        let reason = reason
            .as_deref()
            .map_or(EndReason::Unknown, parse_end_reason);
        let at = Timestamp::from_millis(at.unwrap_or_else(|| now.millis()));
        let queues = cache
            .get(&license_id, &terms)
            .is_ok_and(|t| t.on_full == OnFull::Queue);
        while started.elapsed() < DRAIN_BUDGET {
            let size = DRAIN_SIZE.load(Ordering::Relaxed);
            let batch_started = std::time::Instant::now();
            let drained = drain_batch(pool, &license_id, below, size, reason, at)
                .await
                .map_err(db_error)?;
            let Some(n) = drained else {
                // Another node is draining it.
                break;
            };
            ended.add(&license_id, reason, n);
            if n > 0 && queues {
                queue.serve(&license_id, now);
            }
            if n >= size as u64 {
                let next = next_drain_size(size, batch_started.elapsed());
                DRAIN_SIZE.store(next, Ordering::Relaxed);
            } else {
                settle(pool, &license_id, below).await.map_err(db_error)?;
                break;
            }
        }
    }
    Ok(())
}

/// Licenses whose end has passed since their last floor get one (`license_expired`, or the
/// delegation's reason on a local server: `LicenseTerms::end_reason`), each under its row lock
/// (taken first, in id order, as open batches take them).
async fn floor_passed_ends(pool: &PgPool, now: Timestamp) -> Result<(), sqlx::Error> {
    let due: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM licenses
         WHERE ends_at <= $1 AND (end_at IS NULL OR end_at < ends_at)
           AND EXISTS (SELECT 1 FROM sessions s WHERE s.license_id = licenses.id
                       AND s.ended_at IS NULL AND s.seq >= licenses.end_below)",
    )
    .bind(now.millis())
    .fetch_all(pool)
    .await?;
    for license_id in due {
        let mut tx = pool.begin().await?;
        // Locked, then checked again: another node may have done it meanwhile.
        let still: Option<(bool, String)> = sqlx::query_as(
            "SELECT ends_at <= $2 AND (end_at IS NULL OR end_at < ends_at), terms
             FROM licenses WHERE id = $1 FOR UPDATE",
        )
        .bind(&license_id)
        .bind(now.millis())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((true, terms)) = still {
            // Terms that do not parse are answered 503 everywhere else; here the end is still
            // the license's.
            let reason = crate::codec::parse_terms(&license_id, &terms)
                .map_or(EndReason::LicenseExpired, |t| t.end_reason());
            floor_locked(&mut tx, &license_id, reason, now).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// One drain transaction: ends at most `size` live sessions of the license under its
/// floor, with their `ended` events and their live counts (one counter update per epoch, not
/// one per session: see migration 0013), in one statement. One node at a time drains a license
/// (a transaction-scoped advisory lock; the others skip it this round), so a mass end takes
/// one connection's worth of the database, not one per node. Answers how many it ended, or
/// `None` when another node holds the license's drain.
async fn drain_batch(
    pool: &PgPool,
    license_id: &str,
    below: i64,
    size: i64,
    reason: EndReason,
    at: Timestamp,
) -> Result<Option<u64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The statement below counts its own ends (migration 0013): the row trigger stands aside
    // for this transaction.
    let ours: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtext('leasehold-drain:' || $1))
                AND set_config('leasehold.ends_counted', 'on', true) = 'on'",
    )
    .bind(license_id)
    .fetch_one(&mut *tx)
    .await?;
    if !ours {
        tx.rollback().await?;
        return Ok(None);
    }
    let done = sqlx::query(
        "WITH c AS (
             SELECT s.id FROM sessions s
             WHERE s.license_id = $1 AND s.ended_at IS NULL AND s.seq < $2
             LIMIT $3 FOR UPDATE SKIP LOCKED
         ), e AS (
             UPDATE sessions s SET ended_at = $4, end_reason = $5
             FROM c WHERE s.id = c.id AND s.ended_at IS NULL
             RETURNING s.id, s.license_id, s.username, s.epoch, s.overdraft
         ), counted AS (
             INSERT INTO license_live AS n (license_id, epoch, shard, live, overdraft)
             SELECT e.license_id, e.epoch, pg_backend_pid(), -count(*),
                    -count(*) FILTER (WHERE e.overdraft)
             FROM e GROUP BY e.license_id, e.epoch
             ON CONFLICT (license_id, epoch, shard) DO UPDATE
                 SET live = n.live + EXCLUDED.live, overdraft = n.overdraft + EXCLUDED.overdraft
         )
         INSERT INTO audit_events (at, account_id, license_id, session_id, username, event, detail)
         SELECT $4, l.account_id, e.license_id, e.id, e.username, 'ended', $5
         FROM e JOIN licenses l ON l.id = e.license_id",
    )
    .bind(license_id)
    .bind(below)
    .bind(size)
    .bind(at.millis())
    .bind(reason.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(done.rows_affected()))
}

/// The license's floor is written through when no live session is under it any more (rows
/// another node is ending are still live: the next tick looks again).
async fn settle(pool: &PgPool, license_id: &str, below: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE licenses SET end_pending = FALSE
         WHERE id = $1 AND end_below = $2 AND (
             SELECT COALESCE(sum(c.live), 0) FROM license_live c
             WHERE c.license_id = $1 AND c.epoch < $2) = 0",
    )
    .bind(license_id)
    .bind(below)
    .execute(pool)
    .await?;
    Ok(())
}

/// Ends the live sessions under their license's floor of the client instances `keys`
/// (license, user, device, instance), with their `ended` events: an open batch does this for
/// its asking instances before it looks for their live sessions, so that a client instance
/// whose session was revoked gets a new one (one live session per instance).
pub(super) async fn end_covered_instances(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[(String, String, String, String)],
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH c AS (
             SELECT s.id
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS k(l, u, d, i)
             CROSS JOIN LATERAL (
                 SELECT s.id FROM sessions s JOIN licenses l ON l.id = s.license_id
                 WHERE s.license_id = k.l AND s.username = k.u AND s.device_id = k.d
                   AND s.instance_id = k.i AND s.ended_at IS NULL AND s.seq < l.end_below
                 FOR UPDATE OF s
             ) s
         ), e AS (
             UPDATE sessions s SET ended_at = l.end_at, end_reason = l.end_reason
             FROM c, licenses l
             WHERE s.id = c.id AND l.id = s.license_id AND s.ended_at IS NULL
             RETURNING s.id, s.license_id, s.username, s.ended_at, s.end_reason
         )
         INSERT INTO audit_events (at, account_id, license_id, session_id, username, event, detail)
         SELECT e.ended_at, l.account_id, e.license_id, e.id, e.username, 'ended', e.end_reason
         FROM e JOIN licenses l ON l.id = e.license_id",
    )
    .bind(keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.3.clone()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_drain_transaction_is_sized_to_its_target_within_bounds() {
        // On target: the same size again.
        assert_eq!(next_drain_size(200, DRAIN_TARGET), 200);
        // Twice too slow: half as many; twice too fast: twice as many.
        assert_eq!(next_drain_size(200, DRAIN_TARGET * 2), 100);
        assert_eq!(next_drain_size(200, DRAIN_TARGET / 2), 400);
        // Never past the bounds, however slow or fast.
        assert_eq!(
            next_drain_size(500, Duration::from_secs(10)),
            DRAIN_MIN_BATCH
        );
        assert_eq!(next_drain_size(500, Duration::ZERO), DRAIN_BATCH);
    }
}
