//! Live sessions per license, counted as they open and end (migration 0007): the seat views,
//! usage, metrics and a revoke of every session read a sum of a few counter rows instead of
//! counting a license's live sessions, so they cost the same on a license of ten as on one of a
//! million.
//!
//! The triggers on `sessions` keep `license_live` exact in the very transaction that inserts or
//! ends a session, one row per (license, epoch, connection): no two transactions ever update the
//! same row, so counting adds no lock wait. A session's `epoch` is its license's floor when it
//! was inserted (under the license's row lock), so the sessions not under the license's floor are
//! exactly those of `epoch = end_below`; the others are ending (see `mass`). Under READ COMMITTED
//! a sum is as fresh as the `count(*)` it replaces: what other transactions committed before the
//! statement, and what this transaction did itself.
//!
//! `fold` (every `FOLD_EVERY`, one node at a time) moves the rows of connections that are gone
//! into shard 0, so a license keeps about one row per open connection that touched it.

use std::time::Duration;

use sqlx::postgres::PgPool;

/// SQL expression (over a license `l`): its live sessions not under its floor. The caller says
/// whether the license's end has passed (then none is in use).
pub(super) const LIVE_ABOVE_FLOOR: &str =
    "(SELECT COALESCE(sum(c.live), 0)::int8 FROM license_live c
       WHERE c.license_id = l.id AND c.epoch = l.end_below)";

/// SQL expression (over a license `l`): the overdraft sessions among `LIVE_ABOVE_FLOOR`.
pub(super) const OVERDRAFT_ABOVE_FLOOR: &str =
    "(SELECT COALESCE(sum(c.overdraft), 0)::int8 FROM license_live c
       WHERE c.license_id = l.id AND c.epoch = l.end_below)";

/// SQL expression (over a license `l`): every live session, under its floor or not.
pub(super) const LIVE_ALL: &str = "(SELECT COALESCE(sum(c.live), 0)::int8 FROM license_live c
       WHERE c.license_id = l.id)";

/// How often a node tries to fold the counter rows of closed connections.
pub(super) const FOLD_EVERY: Duration = Duration::from_secs(10);

/// Folds the counter rows of connections that no longer exist into shard 0, and drops zero rows
/// of epochs under their license's floor (nothing can count there again). One node at a time
/// (an advisory lock; the others skip); rows are taken `SKIP LOCKED`, so a fold never waits for
/// a session transaction (the only one that could hold such a row is a new connection that
/// reuses a gone one's pid: it waits for the fold instead, then starts a fresh row).
pub(super) async fn fold(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ours: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('leasehold-live-fold'))")
            .fetch_one(&mut *tx)
            .await?;
    if !ours {
        tx.rollback().await?;
        return Ok(());
    }
    sqlx::query(
        "WITH gone AS (
             SELECT license_id, epoch, shard FROM license_live c
             WHERE shard <> 0 AND NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(c.shard))
             FOR UPDATE SKIP LOCKED
         ), taken AS (
             DELETE FROM license_live c USING gone g
             WHERE c.license_id = g.license_id AND c.epoch = g.epoch AND c.shard = g.shard
             RETURNING c.license_id, c.epoch, c.live, c.overdraft
         )
         INSERT INTO license_live AS c (license_id, epoch, shard, live, overdraft)
         SELECT license_id, epoch, 0, sum(live), sum(overdraft) FROM taken
         GROUP BY license_id, epoch
         ON CONFLICT (license_id, epoch, shard) DO UPDATE
         SET live = c.live + excluded.live, overdraft = c.overdraft + excluded.overdraft",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM license_live c USING licenses l
         WHERE c.shard = 0 AND c.live = 0 AND c.overdraft = 0
           AND l.id = c.license_id AND c.epoch < l.end_below",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The node's folding task: `fold` every `FOLD_EVERY`, for as long as the store runs. A failed
/// fold changes nothing (one transaction) and is tried again at the next round.
pub(super) async fn folder(pool: PgPool) {
    let mut every = tokio::time::interval(FOLD_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = fold(&pool).await {
            tracing::debug!(error = %e, "folding the live counts failed; trying again later");
        }
    }
}
