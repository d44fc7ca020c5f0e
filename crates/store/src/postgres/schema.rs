//! The database itself: building a node's connection pool, and the migrations, applied under
//! an advisory lock so that nodes starting at once wait for each other.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::errors::db_error;
use super::node::PgOptions;
use crate::{StoreError, StoreResult};

/// The migrations, in order; migration N here is migration N of the SQLite history.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_models.sql"),
    include_str!("../../migrations/postgres/0003_queue.sql"),
    // Usernames fold to lowercase; mixed-case ones are folded, collisions renamed.
    include_str!("../../migrations/postgres/0004_usernames.sql"),
    // Mass ends: floors over a license or a user, and the session sequence they cut at.
    include_str!("../../migrations/postgres/0005_mass_ends.sql"),
    // Offline borrowing: a borrowed session's `borrow_until`.
    include_str!("../../migrations/postgres/0006_borrowing.sql"),
    include_str!("../../migrations/postgres/0007_live_counts.sql"),
    // The account-wide audit log: an account's events in `seq` order, and their origins.
    include_str!("../../migrations/postgres/0008_account_audit.sql"),
    // Webhooks: endpoints, deliveries, the dispatcher's cursor, alert state.
    include_str!("../../migrations/postgres/0009_webhooks.sql"),
    // Usage series: bucket rows folded from the audit log (`crate::usage`).
    include_str!("../../migrations/postgres/0010_usage_rollups.sql"),
    // Sessions: room for heartbeat rewrites and autovacuum that keeps up (a no-op on SQLite).
    include_str!("../../migrations/postgres/0011_session_upkeep.sql"),
    // Reapers find sessions by `reap_at`, not `expires_at`: heartbeat rewrites become HOT.
    include_str!("../../migrations/postgres/0012_reap_at.sql"),
    // Live counts per statement for inserts, and counted by the mass-end drain itself.
    include_str!("../../migrations/postgres/0013_bulk_live_counts.sql"),
];
/// The schema version this binary migrates to (the same number on SQLite).
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();
/// Key of the advisory lock that serializes migrations of nodes starting at once.
const MIGRATION_LOCK: i64 = 0x6c65_6173_6568_6f6c; // "leasehol"

/// Builds a pool for `url` (a `postgres://` URL) without connecting yet.
pub fn pool(url: &str, options: &PgOptions) -> StoreResult<PgPool> {
    let connect = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Unavailable(format!("invalid database URL: {e}")))?
        .application_name("leasehold")
        // A node that stalls or is cut off inside a transaction must not hold a license's lock
        // (and with it every other node's opens) for long: the server aborts it.
        .options([("idle_in_transaction_session_timeout", "10s")]);
    Ok(PgPoolOptions::new()
        .max_connections(options.max_connections.max(2))
        .min_connections(0)
        .acquire_timeout(options.acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(60)))
        .test_before_acquire(true)
        .connect_lazy_with(connect))
}

/// Applies pending migrations under an advisory lock (nodes starting at once wait for each
/// other); answers how many were applied. Downgrades are refused.
pub async fn migrate(pool: &PgPool) -> StoreResult<usize> {
    let mut conn = pool.acquire().await.map_err(db_error)?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    let result = apply_migrations(&mut conn).await;
    // Closing the connection would release the lock too; unlock so the pool can reuse it.
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    if unlocked.is_err() {
        conn.detach();
    }
    result
}

/// Applies the migrations the database has not seen yet, each in its own transaction with its
/// version row.
async fn apply_migrations(conn: &mut sqlx::PgConnection) -> StoreResult<usize> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    let version: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM schema_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
    let version = version.unwrap_or(0).max(0) as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Unavailable(format!(
            "the database schema (version {version}) is newer than this binary ({}): downgrades are not supported",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(db_error)?;
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind((i + 1) as i32)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        tracing::info!(version = i + 1, "applied PostgreSQL migration");
    }
    Ok(MIGRATIONS.len() - version)
}

/// Connects to `url` and applies pending migrations; answers how many were applied.
pub async fn migrate_url(url: &str) -> StoreResult<usize> {
    let pool = pool(url, &PgOptions::default())?;
    let applied = migrate(&pool).await;
    pool.close().await;
    applied
}
