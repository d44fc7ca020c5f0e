//! The database schema: connection settings, the numbered migrations (shared with PostgreSQL's
//! schema version) and this store's own session indexes.

use std::path::Path;

use rusqlite::Connection;

use crate::{StoreError, StoreResult};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_models.sql"),
    // Creates the PostgreSQL queue's tables, unused here (the queue is in memory, see `Mem`).
    include_str!("../../migrations/sqlite/0003_queue.sql"),
    include_str!("../../migrations/sqlite/0004_mass_ends.sql"),
];

/// Indexes of the session table for this store's own access pattern, applied after the
/// numbered migrations at every start (idempotent). Not a numbered migration: the schema
/// version is shared with PostgreSQL (`leasehold copy-to-postgres` checks it), and neither the
/// schema of the rows nor what the copy reads changes.
///
/// `sessions_live_expiry` (on `expires_at`) was rewritten by every persisted heartbeat, yet
/// nothing queries by expiry on disk (the reaper works from memory): it went. Live sessions are
/// found by license instead (the load at start reads them by it). Heartbeats never change it.
const SESSION_INDEXES: &str = "
    DROP INDEX IF EXISTS sessions_live_expiry;
    CREATE INDEX IF NOT EXISTS sessions_live_by_license ON sessions (license_id)
        WHERE ended_at IS NULL;
";

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: every commit is fsync'd, so an acknowledged open survives power loss too.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

/// Opens a connection configured as the store uses it (WAL, fsync'd commits).
pub fn open_connection(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    Ok(conn)
}

/// Applies pending migrations; the schema version is `PRAGMA user_version`.
pub fn migrate(conn: &mut Connection) -> StoreResult<usize> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Unavailable(format!(
            "the database schema (version {version}) is newer than this binary ({}): downgrades are not supported",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    conn.execute_batch(SESSION_INDEXES)?;
    Ok(MIGRATIONS.len() - version)
}
