//! The account-wide audit log (`Store::audit_page`) on PostgreSQL, with a horizon that keeps
//! cursor pagination stable while other nodes append.
//!
//! `seq` is taken from a sequence when a row is inserted, not when its transaction commits: a
//! transaction holding `seq` 10 may commit after one holding 11 was read. A reader paging by
//! `seq` would then step past 10 for good. So each page first finds its *horizon*, without
//! taking any lock a writer could queue behind: one statement reads the greatest `seq` visible
//! and the snapshot it was read in; every transaction that could still commit a smaller `seq`
//! was in progress in that snapshot (one that started later drew its `seq` after the greatest
//! was committed). The page waits until each of those has ended (`pg_xact_status`, polled
//! every few milliseconds; transactions of other databases on the same server are left out), and then reads only rows at or below the greatest `seq`. A horizon
//! once safe stays safe, so each node keeps the last one it found: when a transaction stays
//! open past `HORIZON_WAIT`, the page is answered up to that earlier horizon instead (the rest
//! comes with a later page), or 503 `store_unavailable` if there is none yet. (A first version
//! took `SHARE` on `audit_events`, which made every insert of the seat path wait behind a
//! reader waiting for the longest open writer: one tenant's audit reads stalled every tenant's
//! opens.)
//!
//! Retention (`prune_audit`) deletes the oldest events in bounded batches.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPool;
use sqlx::Row;

use super::errors::db_error;
use super::rows::{audit_event_from_offset, fetch_rows};
use crate::audit::{select_sql, AuditEntry, AuditParam, AuditQuery};
use crate::{StoreError, StoreResult};

/// Longest a page waits for the transactions that were in progress when it read the greatest
/// `seq`.
const HORIZON_WAIT: Duration = Duration::from_secs(2);

/// How often a page looks again whether those transactions have ended.
const HORIZON_POLL: Duration = Duration::from_millis(5);

/// How many transactions of a snapshot (`$1`) are still in progress, leaving out those of
/// backends connected to another database of the server: the snapshot lists the whole
/// cluster's, and none of those can write this database's audit log (a backend stays in its
/// database for life). Read after the snapshot was taken, so a transaction of this database
/// still open then is never left out; a backend whose `backend_xid` this role may not see is
/// waited for, as before.
const OPEN_WRITERS: &str = "SELECT count(*) FROM pg_snapshot_xip($1::pg_snapshot) AS x
     WHERE pg_xact_status(x) = 'in progress'
       AND x::xid NOT IN (
           SELECT a.backend_xid FROM pg_stat_activity a
           WHERE a.backend_xid IS NOT NULL AND a.datid IS DISTINCT FROM
                 (SELECT oid FROM pg_database WHERE datname = current_database()))";

/// The greatest `seq` below which no audit event can still appear; `known` is the greatest
/// this node found so far (raised here).
pub(super) async fn horizon(pool: &PgPool, known: &AtomicI64) -> StoreResult<i64> {
    let (max, snapshot): (Option<i64>, String) =
        sqlx::query_as("SELECT (SELECT max(seq) FROM audit_events), pg_current_snapshot()::text")
            .fetch_one(pool)
            .await
            .map_err(db_error)?;
    let max = max.unwrap_or(0);
    let started = Instant::now();
    loop {
        let open: i64 = sqlx::query_scalar(OPEN_WRITERS)
            .bind(&snapshot)
            .fetch_one(pool)
            .await
            .map_err(db_error)?;
        if open == 0 {
            return Ok(known.fetch_max(max, Ordering::Relaxed).max(max));
        }
        if started.elapsed() >= HORIZON_WAIT {
            return match known.load(Ordering::Relaxed) {
                0 => Err(StoreError::Unavailable(
                    "a transaction writing audit events stayed open; try again".into(),
                )),
                earlier => Ok(earlier),
            };
        }
        tokio::time::sleep(HORIZON_POLL).await;
    }
}

/// Retention: deletes the events older than `before` among the oldest `batch` both the usage
/// fold (`usage_watermark`) and the webhook fan-out (`webhook_cursor`) have read; answers how
/// many. The first statement reads only the oldest event (the primary key's first entry).
pub(super) async fn prune_audit(pool: &PgPool, before: i64, batch: usize) -> StoreResult<usize> {
    let oldest: Option<i64> =
        sqlx::query_scalar("SELECT at FROM audit_events ORDER BY seq LIMIT 1")
            .fetch_optional(pool)
            .await
            .map_err(db_error)?;
    if oldest.is_none_or(|at| at >= before) {
        return Ok(0);
    }
    let deleted = sqlx::query(
        "DELETE FROM audit_events a
         USING (SELECT seq FROM audit_events
                WHERE seq <= LEAST((SELECT seq FROM usage_watermark),
                                  (SELECT seq FROM webhook_cursor WHERE name = 'fanout'))
                ORDER BY seq LIMIT $2) oldest
         WHERE a.seq = oldest.seq AND a.at < $1",
    )
    .bind(before)
    .bind(i64::try_from(batch).unwrap_or(i64::MAX))
    .execute(pool)
    .await
    .map_err(db_error)?;
    Ok(usize::try_from(deleted.rows_affected()).unwrap_or(usize::MAX))
}

/// The events `query` selects, in `seq` order, up to the horizon.
pub(super) async fn audit_page(
    pool: &PgPool,
    known: &AtomicI64,
    query: &AuditQuery,
) -> StoreResult<Vec<AuditEntry>> {
    let below = horizon(pool, known).await?;
    if query.after_seq.is_some_and(|after| after >= below) {
        return Ok(Vec::new());
    }
    let (sql, params) = select_sql(query, Some(below), |n| format!("${n}"));
    let mut q = sqlx::query(&sql);
    for p in params {
        q = match p {
            AuditParam::Text(s) => q.bind(s),
            AuditParam::Int(i) => q.bind(i),
        };
    }
    fetch_rows(q, pool, |row| {
        Ok(AuditEntry {
            seq: row.try_get(0)?,
            event: audit_event_from_offset(row, 1)?,
        })
    })
    .await
}
