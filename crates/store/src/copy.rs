//! Copies a SQLite data folder's database into PostgreSQL, so that a growing installation moves
//! to several nodes without losing a seat: settings (root token hash), accounts, credentials,
//! users, licenses with their active users and activated devices, live sessions and the whole
//! audit log, in one PostgreSQL transaction.
//!
//! The SQLite database is opened read-only and must not be served while it is copied (a session
//! opened after the copy would be lost). Live sessions whose end was decided before the server
//! stopped (under a mass end's floor, see `sqlite::mem::ending`) are copied ended, with their
//! `ended` events: the copy finishes the mass end. The target must hold no accounts or licenses yet; a
//! copy that fails changes nothing, so it can simply be run again.

use std::path::Path;

use leasehold_core::Timestamp;
use rusqlite::{Connection, OpenFlags};

use crate::postgres::{PgStore, SCHEMA_VERSION};
use crate::StoreError;
use crate::StoreResult;

/// Rows per multi-row insert.
const CHUNK: usize = 5000;

/// What was copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub settings: usize,
    pub accounts: usize,
    pub credentials: usize,
    pub users: usize,
    pub licenses: usize,
    pub license_users: usize,
    pub devices: usize,
    pub live_sessions: usize,
    pub audit_events: usize,
}

struct SessionRows {
    id: Vec<String>,
    license_id: Vec<String>,
    username: Vec<String>,
    kind: Vec<String>,
    device_id: Vec<String>,
    instance_id: Vec<String>,
    opened_at: Vec<i64>,
    expires_at: Vec<i64>,
    hard_end: Vec<Option<i64>>,
    overdraft: Vec<bool>,
    license_end: Vec<Option<i64>>,
    borrow_until: Vec<Option<i64>>,
    /// Set for a session whose end was decided (a mass end under way when it stopped), or a
    /// borrowed session ended before its `borrow_until` (a revoked lease, still listed).
    ended_at: Vec<Option<i64>>,
    end_reason: Vec<Option<String>>,
}

struct AuditRows {
    at: Vec<i64>,
    account_id: Vec<String>,
    license_id: Vec<String>,
    session_id: Vec<Option<String>>,
    username: Vec<Option<String>>,
    event: Vec<String>,
    detail: Vec<Option<String>>,
    actor: Vec<Option<String>>,
    request_id: Vec<Option<String>>,
    client_addr: Vec<Option<String>>,
}

type CredentialRow = (Vec<u8>, String, Option<String>, Option<String>, Option<i64>);
type UserRow = (
    String,
    String,
    String,
    bool,
    Option<String>,
    Option<Vec<u8>>,
    i64,
);
type LicenseRow = (String, String, String, String, i64);
type LicenseUserRow = (String, String, bool, i64);
type DeviceRow = (String, String, String, i64);

/// Everything read from the SQLite database.
struct Snapshot {
    settings: Vec<(String, String)>,
    accounts: Vec<(String, String, i64)>,
    credentials: Vec<CredentialRow>,
    users: Vec<UserRow>,
    licenses: Vec<LicenseRow>,
    license_users: Vec<LicenseUserRow>,
    devices: Vec<DeviceRow>,
    sessions: SessionRows,
    audit: AuditRows,
}

fn read_sqlite(path: &Path, now: Timestamp) -> StoreResult<Snapshot> {
    if !path.exists() {
        return Err(StoreError::NotFound("SQLite database"));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version != SCHEMA_VERSION {
        return Err(StoreError::Conflict(format!(
            "the SQLite database has schema version {version}, this binary copies version \
             {SCHEMA_VERSION}: run `leasehold migrate --data-dir …` with this binary first"
        )));
    }
    // One read transaction: a consistent snapshot even if a writer were still around.
    conn.execute_batch("BEGIN")?;
    let settings = conn
        .prepare("SELECT key, value FROM settings ORDER BY key")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let accounts = conn
        .prepare("SELECT id, name, created_at FROM accounts ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let credentials = conn
        .prepare(
            "SELECT hash, kind, account_id, username, expires_at FROM credentials
             WHERE expires_at IS NULL OR expires_at > ?1",
        )?
        .query_map([now.millis()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let users = conn
        .prepare(
            "SELECT account_id, username, kind, active, client_id, client_secret_hash, created_at
             FROM users",
        )?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let licenses = conn
        .prepare("SELECT id, account_id, model, terms, created_at FROM licenses")?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let license_users = conn
        .prepare("SELECT license_id, username, active, updated_at FROM license_users")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let devices = conn
        .prepare("SELECT license_id, fingerprint, name, activated_at FROM license_devices")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut sessions = SessionRows {
        id: Vec::new(),
        license_id: Vec::new(),
        username: Vec::new(),
        kind: Vec::new(),
        device_id: Vec::new(),
        instance_id: Vec::new(),
        opened_at: Vec::new(),
        expires_at: Vec::new(),
        hard_end: Vec::new(),
        overdraft: Vec::new(),
        license_end: Vec::new(),
        borrow_until: Vec::new(),
        ended_at: Vec::new(),
        end_reason: Vec::new(),
    };
    // The `ended` events of sessions whose end was decided: appended to the audit log.
    let mut decided = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT s.id, s.license_id, s.username, s.kind, s.device_id, s.instance_id,
                    s.opened_at, s.expires_at, s.hard_end, s.overdraft, s.license_end,
                    CASE WHEN s.seq < l.end_below THEN l.end_reason
                         WHEN s.seq < COALESCE(u.end_below, 0)
                           OR s.seq < COALESCE(lu.end_below, 0) THEN 'user_deactivated' END,
                    CASE WHEN s.seq < l.end_below THEN l.end_at
                         WHEN s.seq < COALESCE(u.end_below, 0) THEN u.end_at
                         WHEN s.seq < COALESCE(lu.end_below, 0) THEN lu.end_at END,
                    l.account_id, s.borrow_until, s.ended_at, s.end_reason
             FROM sessions s JOIN licenses l ON l.id = s.license_id
             LEFT JOIN users u ON u.account_id = l.account_id AND u.username = s.username
             LEFT JOIN license_users lu
               ON lu.license_id = s.license_id AND lu.username = s.username
             WHERE s.ended_at IS NULL
                OR (s.borrow_until IS NOT NULL AND s.borrow_until > ?1
                    AND s.ended_at < s.borrow_until)
             ORDER BY s.opened_at, s.id",
        )?;
        let mut rows = stmt.query([now.millis()])?;
        while let Some(r) = rows.next()? {
            sessions.borrow_until.push(r.get(14)?);
            if let Some(ended_at) = r.get::<_, Option<i64>>(15)? {
                // A revoked lease: copied ended as it is, listed on PostgreSQL too.
                sessions.ended_at.push(Some(ended_at));
                sessions.end_reason.push(r.get(16)?);
                sessions.id.push(r.get(0)?);
                sessions.license_id.push(r.get(1)?);
                sessions.username.push(r.get(2)?);
                sessions.kind.push(r.get(3)?);
                sessions.device_id.push(r.get(4)?);
                sessions.instance_id.push(r.get(5)?);
                sessions.opened_at.push(r.get(6)?);
                sessions.expires_at.push(r.get(7)?);
                sessions.hard_end.push(r.get(8)?);
                sessions.overdraft.push(r.get(9)?);
                sessions.license_end.push(r.get(10)?);
                continue;
            }
            let reason: Option<String> = r.get(11)?;
            let at: Option<i64> = r
                .get::<_, Option<i64>>(12)?
                .or(reason.as_ref().map(|_| now.millis()));
            if let (Some(reason), Some(at)) = (&reason, at) {
                decided.push((
                    at,
                    r.get::<_, String>(13)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(2)?,
                    reason.clone(),
                ));
            }
            sessions.ended_at.push(at);
            sessions.end_reason.push(reason);
            sessions.id.push(r.get(0)?);
            sessions.license_id.push(r.get(1)?);
            sessions.username.push(r.get(2)?);
            sessions.kind.push(r.get(3)?);
            sessions.device_id.push(r.get(4)?);
            sessions.instance_id.push(r.get(5)?);
            sessions.opened_at.push(r.get(6)?);
            sessions.expires_at.push(r.get(7)?);
            sessions.hard_end.push(r.get(8)?);
            sessions.overdraft.push(r.get(9)?);
            sessions.license_end.push(r.get(10)?);
        }
    }
    let mut audit = AuditRows {
        at: Vec::new(),
        account_id: Vec::new(),
        license_id: Vec::new(),
        session_id: Vec::new(),
        username: Vec::new(),
        event: Vec::new(),
        detail: Vec::new(),
        actor: Vec::new(),
        request_id: Vec::new(),
        client_addr: Vec::new(),
    };
    {
        let mut stmt = conn.prepare(
            "SELECT at, account_id, license_id, session_id, username, event, detail,
                    actor, request_id, client_addr
             FROM audit_events ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            audit.at.push(r.get(0)?);
            audit.account_id.push(r.get(1)?);
            audit.license_id.push(r.get(2)?);
            audit.session_id.push(r.get(3)?);
            audit.username.push(r.get(4)?);
            audit.event.push(r.get(5)?);
            audit.detail.push(r.get(6)?);
            audit.actor.push(r.get(7)?);
            audit.request_id.push(r.get(8)?);
            audit.client_addr.push(r.get(9)?);
        }
    }
    for (at, account_id, license_id, session_id, username, reason) in decided {
        audit.at.push(at);
        audit.account_id.push(account_id);
        audit.license_id.push(license_id);
        audit.session_id.push(Some(session_id));
        audit.username.push(Some(username));
        audit.event.push("ended".into());
        audit.detail.push(Some(reason));
        audit.actor.push(None);
        audit.request_id.push(None);
        audit.client_addr.push(None);
    }
    conn.execute_batch("COMMIT")?;
    Ok(Snapshot {
        settings,
        accounts,
        credentials,
        users,
        licenses,
        license_users,
        devices,
        sessions,
        audit,
    })
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Copies the SQLite database at `sqlite_path` into `pg` (migrated, holding no accounts or
/// licenses yet). `extra_settings` are stored too, replacing copied ones (the CLI passes the
/// lease signing key from the data folder this way, so leases signed before stay valid).
pub async fn copy_sqlite_to_postgres(
    sqlite_path: &Path,
    pg: &PgStore,
    extra_settings: &[(String, String)],
    now: Timestamp,
) -> StoreResult<CopyReport> {
    let path = sqlite_path.to_path_buf();
    let snap = tokio::task::spawn_blocking(move || read_sqlite(&path, now))
        .await
        .map_err(|e| StoreError::Unavailable(format!("reading SQLite: {e}")))??;
    let mut tx = pg.pool().begin().await.map_err(db)?;
    let occupied: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM accounts) OR EXISTS (SELECT 1 FROM licenses)",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?;
    if occupied {
        return Err(StoreError::Conflict(
            "the PostgreSQL database already holds accounts or licenses; copy into an empty one"
                .into(),
        ));
    }
    let mut report = CopyReport::default();
    let mut settings = snap.settings;
    settings.retain(|(k, _)| !extra_settings.iter().any(|(e, _)| e == k));
    settings.extend(extra_settings.iter().cloned());
    for (key, value) in &settings {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    report.settings = settings.len();
    for (id, name, created_at) in &snap.accounts {
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(created_at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    report.accounts = snap.accounts.len();
    for (hash, kind, account_id, username, expires_at) in &snap.credentials {
        sqlx::query(
            "INSERT INTO credentials (hash, kind, account_id, username, expires_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (hash) DO UPDATE SET kind = excluded.kind,
                 account_id = excluded.account_id, username = excluded.username,
                 expires_at = excluded.expires_at",
        )
        .bind(hash)
        .bind(kind)
        .bind(account_id)
        .bind(username)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    report.credentials = snap.credentials.len();
    for (account_id, username, kind, active, client_id, secret, created_at) in &snap.users {
        sqlx::query(
            "INSERT INTO users
                 (account_id, username, kind, active, client_id, client_secret_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(account_id)
        .bind(username)
        .bind(kind)
        .bind(active)
        .bind(client_id)
        .bind(secret)
        .bind(created_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    report.users = snap.users.len();
    for (id, account_id, model, terms, created_at) in &snap.licenses {
        sqlx::query(
            "INSERT INTO licenses (id, account_id, model, terms, created_at, ends_at)
             VALUES ($1, $2, $3, $4, $5, ($4::jsonb ->> 'expires_at')::int8)",
        )
        .bind(id)
        .bind(account_id)
        .bind(model)
        .bind(terms)
        .bind(created_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let sessions = &snap.sessions;
        let live = (sessions.license_id.iter().zip(&sessions.ended_at))
            .filter(|(l, ended)| *l == id && ended.is_none())
            .count();
        let live = i32::try_from(live).unwrap_or(i32::MAX);
        sqlx::query(
            "INSERT INTO license_usage (license_id, since, high_water, low_water)
             VALUES ($1, $2, $3, $3)",
        )
        .bind(id)
        .bind(now.millis())
        .bind(live)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    report.licenses = snap.licenses.len();
    for (license_id, username, active, updated_at) in &snap.license_users {
        sqlx::query(
            "INSERT INTO license_users (license_id, username, active, updated_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(license_id)
        .bind(username)
        .bind(active)
        .bind(updated_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    report.license_users = snap.license_users.len();
    for (license_id, fingerprint, name, activated_at) in &snap.devices {
        sqlx::query(
            "INSERT INTO license_devices (license_id, fingerprint, name, activated_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(license_id)
        .bind(fingerprint)
        .bind(name)
        .bind(activated_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    report.devices = snap.devices.len();
    let s = &snap.sessions;
    for start in (0..s.id.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(s.id.len());
        sqlx::query(
            "INSERT INTO sessions (id, license_id, username, kind, device_id, instance_id,
                                   opened_at, expires_at, hard_end, overdraft, license_end,
                                   ended_at, end_reason, borrow_until, reap_at)
             SELECT *, e FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::bool[],
                                  $11::int8[], $12::int8[], $13::text[], $14::int8[])
                 AS v(i, l, u, k, d, n, o, e, h, od, le, en, er, bu)",
        )
        .bind(chunk(&s.id, start, end))
        .bind(chunk(&s.license_id, start, end))
        .bind(chunk(&s.username, start, end))
        .bind(chunk(&s.kind, start, end))
        .bind(chunk(&s.device_id, start, end))
        .bind(chunk(&s.instance_id, start, end))
        .bind(chunk(&s.opened_at, start, end))
        .bind(chunk(&s.expires_at, start, end))
        .bind(chunk(&s.hard_end, start, end))
        .bind(chunk(&s.overdraft, start, end))
        .bind(chunk(&s.license_end, start, end))
        .bind(chunk(&s.ended_at, start, end))
        .bind(chunk(&s.end_reason, start, end))
        .bind(chunk(&s.borrow_until, start, end))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    report.live_sessions = s.ended_at.iter().filter(|e| e.is_none()).count();
    let a = &snap.audit;
    for start in (0..a.at.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(a.at.len());
        sqlx::query(
            "INSERT INTO audit_events (at, account_id, license_id, session_id, username, event, detail,
                                       actor, request_id, client_addr)
             SELECT a, b, c, d, e, f, g, h, i, j
             FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
                  WITH ORDINALITY AS t(a, b, c, d, e, f, g, h, i, j, n)
             ORDER BY n",
        )
        .bind(chunk(&a.at, start, end))
        .bind(chunk(&a.account_id, start, end))
        .bind(chunk(&a.license_id, start, end))
        .bind(chunk(&a.session_id, start, end))
        .bind(chunk(&a.username, start, end))
        .bind(chunk(&a.event, start, end))
        .bind(chunk(&a.detail, start, end))
        .bind(chunk(&a.actor, start, end))
        .bind(chunk(&a.request_id, start, end))
        .bind(chunk(&a.client_addr, start, end))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    report.audit_events = a.at.len();
    tx.commit().await.map_err(db)?;
    Ok(report)
}

/// Rows `start..end` of a column (empty if out of range, which the chunking never asks).
fn chunk<T>(column: &[T], start: usize, end: usize) -> &[T] {
    column.get(start..end).unwrap_or_default()
}
