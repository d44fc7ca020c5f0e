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
    // Usernames fold to lowercase; mixed-case ones are folded, collisions renamed.
    include_str!("../../migrations/sqlite/0004_usernames.sql"),
    // Mass ends: floors over a license or a user, and the session sequence they cut at.
    include_str!("../../migrations/sqlite/0005_mass_ends.sql"),
    // Offline borrowing: a borrowed session's `borrow_until`.
    include_str!("../../migrations/sqlite/0006_borrowing.sql"),
    // PostgreSQL's live counters; nothing here (this store counts in memory).
    include_str!("../../migrations/sqlite/0007_live_counts.sql"),
    // The account-wide audit log: an account's events in `seq` order, and their origins.
    include_str!("../../migrations/sqlite/0008_account_audit.sql"),
    // Webhooks: endpoints, deliveries, the dispatcher's cursor, alert state.
    include_str!("../../migrations/sqlite/0009_webhooks.sql"),
    // Usage series: bucket rows folded from the audit log (`crate::usage`).
    include_str!("../../migrations/sqlite/0010_usage_rollups.sql"),
    // Sessions: room for heartbeat rewrites and autovacuum that keeps up (a no-op on SQLite).
    include_str!("../../migrations/sqlite/0011_session_upkeep.sql"),
    // The PostgreSQL reapers' index moves to `reap_at` (a no-op on SQLite).
    include_str!("../../migrations/sqlite/0012_reap_at.sql"),
    // PostgreSQL counts live sessions in bulk (a no-op on SQLite).
    include_str!("../../migrations/sqlite/0013_bulk_live_counts.sql"),
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

/// Opens a connection configured as the store uses it (WAL, fsync'd commits). The database is
/// created readable by its owner only (see `owner_only`).
pub fn open_connection(path: &Path) -> StoreResult<Connection> {
    owner_only(path)?;
    let conn = Connection::open(path)?;
    configure(&conn)?;
    Ok(conn)
}

/// The database and its `-wal` and `-shm` files are readable by their owner only, like the
/// signing key beside them: they hold credential hashes and every tenant's data. A new
/// database file is created here with mode 0600 before SQLite opens it (SQLite would create it
/// 0644 less the umask), and SQLite gives its `-wal` and `-shm` files the database file's
/// mode. Files left readable by others (by an earlier version) are restricted by path.
///
/// An existing database file is never opened here: closing any descriptor of a file drops
/// every POSIX lock this process holds on it, the locks of the store's open connections
/// included (SQLite's "How To Corrupt An SQLite Database File", 2.2). Another process (a
/// reader, a backup) would then take itself for the last user of the database and delete the
/// WAL the server is still committing to.
#[cfg(unix)]
fn owner_only(path: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |what: &str, e: std::io::Error| {
        StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
    };
    if std::fs::symlink_metadata(path).is_err() {
        // No connection of this process can have a file open that did not exist.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("creating", e)),
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        let Ok(meta) = std::fs::metadata(file) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io("restricting the permissions of", e))?;
            tracing::info!(file = %file.display(), "database file made readable by its owner only (0600)");
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn owner_only(_path: &Path) -> StoreResult<()> {
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A database at schema version 3 (before usernames were folded) with mixed-case names.
    fn version_3_with_mixed_case(path: &Path) -> Connection {
        let mut conn = open_connection(path).unwrap();
        for (i, sql) in MIGRATIONS.iter().take(3).enumerate() {
            let tx = conn.transaction().unwrap();
            tx.execute_batch(sql).unwrap();
            tx.pragma_update(None, "user_version", i + 1).unwrap();
            tx.commit().unwrap();
        }
        conn.execute_batch(
            "INSERT INTO accounts VALUES ('a1', 'Acme', 0), ('a2', 'Other', 0);
             INSERT INTO users (account_id, username, kind, active, created_at) VALUES
               ('a1', 'Dave', 'interactive', 1, 10),
               ('a1', 'DAVE', 'interactive', 1, 20),
               ('a1', 'dave', 'interactive', 1, 30),
               ('a1', 'Erin', 'interactive', 1, 40),
               ('a2', 'Dave', 'interactive', 1, 50);
             INSERT INTO credentials (hash, kind, account_id, username) VALUES
               (x'01', 'user', 'a1', 'Dave'), (x'02', 'user', 'a1', 'Erin'),
               (x'03', 'user', 'a2', 'Dave'), (x'04', 'admin', 'a1', NULL);
             INSERT INTO licenses VALUES ('l1', 'a1', 'registered_users', '{}', 0);
             INSERT INTO sessions (id, license_id, username, kind, device_id, instance_id, opened_at, expires_at)
               VALUES ('s1', 'l1', 'Erin', 'interactive', 'pc', 'x', 0, 100),
                      ('s2', 'l1', 'DAVE', 'interactive', 'pc', 'y', 0, 100);
             INSERT INTO license_users VALUES ('l1', 'Erin', 1, 0);
             INSERT INTO audit_events (at, account_id, license_id, username, event)
               VALUES (0, 'a1', 'l1', 'Erin', 'opened');",
        )
        .unwrap();
        conn
    }

    fn column(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn migration_4_folds_usernames_and_renames_the_ones_that_collide() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut conn = version_3_with_mixed_case(&path);

        assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len() - 3);

        // The lowercase one keeps the name, the others (oldest first) get .2, .3.
        assert_eq!(
            column(
                &conn,
                "SELECT username FROM users WHERE account_id = 'a1' ORDER BY created_at"
            ),
            ["dave.2", "dave.3", "dave", "erin"]
        );
        // Another account's Dave is simply folded.
        assert_eq!(
            column(&conn, "SELECT username FROM users WHERE account_id = 'a2'"),
            ["dave"]
        );
        // Everything that names a user follows.
        assert_eq!(
            column(
                &conn,
                "SELECT username FROM credentials WHERE username IS NOT NULL ORDER BY hash"
            ),
            ["dave.2", "erin", "dave"]
        );
        assert_eq!(
            column(&conn, "SELECT username FROM sessions ORDER BY id"),
            ["erin", "dave.3"]
        );
        assert_eq!(
            column(&conn, "SELECT username FROM license_users"),
            ["erin"]
        );
        assert_eq!(column(&conn, "SELECT username FROM audit_events"), ["erin"]);
        // And the renames are listed.
        assert_eq!(
            column(
                &conn,
                "SELECT account_id || ':' || old_name || '>' || new_name FROM username_renames ORDER BY 1"
            ),
            ["a1:DAVE>dave.3", "a1:Dave>dave.2", "a1:Erin>erin", "a2:Dave>dave"]
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_database_and_its_wal_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leasehold.db");
        let mut conn = open_connection(&path).unwrap();
        migrate(&mut conn).unwrap();
        conn.execute_batch("INSERT INTO settings VALUES ('k', 'v')")
            .unwrap();
        let mode = |suffix: &str| {
            let p = format!("{}{suffix}", path.display());
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        for suffix in ["", "-wal", "-shm"] {
            assert_eq!(mode(suffix), 0o600, "{suffix}");
        }
        drop(conn);
        // A file an earlier version left readable by others is restricted when opened.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _conn = open_connection(&path).unwrap();
        assert_eq!(mode(""), 0o600);
    }
}
