//! The account-wide audit log (`Store::audit_page`) on PostgreSQL, with a horizon that keeps
//! cursor pagination stable while other nodes append.
//!
//! `seq` is taken from a sequence when a row is inserted, not when its transaction commits: a
//! transaction holding `seq` 10 may commit after one holding 11 was read. A reader paging by
//! `seq` would then step past 10 for good. So each page first finds its *horizon*: it takes
//! `SHARE` on `audit_events` (which waits for the transactions that have inserted into it and
//! holds back new inserts for that instant), reads the greatest `seq` committed, and lets go at
//! once. Every row at or below the horizon is committed by then, and every later insert gets a
//! greater `seq`; the page reads only rows at or below it, without the lock. The cost is paid
//! by the reader: inserts wait at most for the lock's instant (the lock waits at most
//! `HORIZON_LOCK_TIMEOUT`, then the page is 503 `store_unavailable`).
//!
//! Retention (`prune_audit`) deletes the oldest events in bounded batches.

use sqlx::postgres::PgPool;
use sqlx::Row;

use super::errors::db_error;
use super::rows::{audit_event_from_offset, fetch_rows};
use crate::audit::{select_sql, AuditEntry, AuditParam, AuditQuery};
use crate::StoreResult;

/// Longest a page waits for the transactions writing audit events.
const HORIZON_LOCK_TIMEOUT: &str = "5s";

/// The greatest `seq` below which no audit event can still appear.
async fn horizon(pool: &PgPool) -> StoreResult<i64> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    sqlx::query(&format!(
        "SET LOCAL lock_timeout = '{HORIZON_LOCK_TIMEOUT}'"
    ))
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    sqlx::query("LOCK TABLE audit_events IN SHARE MODE")
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let max: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM audit_events")
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(max.unwrap_or(0))
}

/// Retention: deletes the events older than `before` among the oldest `batch`; answers how
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
         USING (SELECT seq FROM audit_events ORDER BY seq LIMIT $2) oldest
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
pub(super) async fn audit_page(pool: &PgPool, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
    let below = horizon(pool).await?;
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
