//! The PostgreSQL backend: several server nodes share one database, which is the single source
//! of truth. No node keeps authoritative state in memory, so any node serves any request and a
//! node can die (`kill -9`) at any moment without losing an acknowledged session.
//!
//! # Seat arbitration
//!
//! The seat rule is `leasehold_core::decide_open`; this module only computes its `SeatView` in
//! SQL and makes "count, decide, insert" one indivisible step across nodes:
//!
//! - An open locks its license row (`SELECT … FROM licenses … ORDER BY id FOR UPDATE`) and only
//!   then counts the live sessions (per license, per asking user, per reserved user) through the
//!   partial index `sessions_live_by_user`. Live sessions are *inserted* only under that lock, so
//!   the count (taken after the lock, under READ COMMITTED a fresh snapshot) can only
//!   over-estimate (a concurrent logout not yet committed), never under-estimate: the seat count
//!   is never exceeded, however requests are spread over nodes.
//! - Logouts, revokes, heartbeats and the reaper never take the license lock: they lock single
//!   session rows, so the only serialized step of a license is the open itself.
//! - The lock is taken once per *batch*, not per request: each node runs `OPEN_LANES` open
//!   batchers (a license always maps to the same lane). A batcher drains every open queued while
//!   the previous batch committed, locks the batch's licenses in id order (no deadlock between
//!   nodes), decides every request in arrival order against a view it updates as it grants, and
//!   writes all new sessions, slid re-opens, usage statistics and audit events in one multi-row
//!   statement and one commit. Under load a hot license is thus locked by at most one
//!   transaction per node at a time, whatever the request rate: the cost of the hot row is paid
//!   per batch, not per open.
//! - Idempotent re-open works across nodes: a client instance's live session is found by the
//!   unique partial index `sessions_live_instance` (which also forbids two live sessions of one
//!   instance outright), locked, slid and returned.
//!
//! # Heartbeats
//!
//! Heartbeats go to `HEARTBEAT_LANES` batchers per node. A batch reads the sessions and their
//! terms in one query, runs `SessionClock::heartbeat` for each, and writes every new expiry in
//! one guarded multi-row `UPDATE … WHERE ended_at IS NULL AND expires_at > now`: a session that
//! expired or ended meanwhile is never resurrected. The expiry only moves forward
//! (`GREATEST`), so two nodes racing on one session cannot shorten it. A heartbeat is answered
//! once its batch is committed: the expiry other nodes rely on is never behind what a client was
//! told.
//!
//! Logouts and revokes are batched the same way: one multi-row `UPDATE … RETURNING` that also
//! writes the `ended` events, guarded by `ended_at IS NULL AND expires_at > now`, per batch.
//!
//! # Point reads
//!
//! Every request authenticates (`find_credential`), and opens and heartbeats look up a license,
//! a user or a session first. Those point reads go through per-node read batchers too: the
//! lookups that arrive while one batch is in flight share the next `= ANY($1)` query. A batch
//! starts after each of its requests arrived, so it is exactly as fresh as a query per request.
//!
//! # Expiry
//!
//! `reap_expired` (run by every node's reaper) takes at most `REAP_BATCH` live sessions past
//! their expiry through the partial index `sessions_live_expiry` with `FOR UPDATE SKIP LOCKED`,
//! ends them and writes their `ended` audit events in the same transaction. A session locked by
//! one node is skipped by the others, and the end is guarded by `ended_at IS NULL`: each expired
//! session is ended exactly once, with one `ended` event, whichever nodes run the reaper. A tick
//! costs O(expired), never a scan of the sessions table.
//!
//! # Failures
//!
//! Connection errors (and any other database failure) map to `StoreError::Unavailable` (503
//! `store_unavailable`). The pool tests connections before handing them out and opens new ones
//! on demand, so service resumes by itself when PostgreSQL is back. Deadlocks and serialization
//! failures are retried a few times before they are reported.
//!
//! Nodes must keep their clocks synchronized (NTP): `now` comes from the node that handles a
//! request, as with every other rule of the server.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use leasehold_core::seats::{decide_device_activation, decide_user_activation};
use leasehold_core::session::SessionClock;
use leasehold_core::{
    decide_open, LicenseTerms, OpenDecision, RuleError, SeatView, SessionState, Timestamp, Username,
};
use leasehold_proto::{EndReason, LicenseModel, UserKind};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::records::*;
use crate::{Store, StoreError, StoreResult};

/// The migrations, in order; migration N here is migration N of the SQLite history.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_init.sql"),
    include_str!("../migrations/postgres/0002_models.sql"),
];
/// The schema version this binary migrates to (the same number on SQLite).
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();
/// Key of the advisory lock that serializes migrations of nodes starting at once.
const MIGRATION_LOCK: i64 = 0x6c65_6173_6568_6f6c; // "leasehol"
/// Open batchers per node; a license always goes to the same one.
const OPEN_LANES: usize = 4;
/// Heartbeat batchers per node; a session always goes to the same one.
const HEARTBEAT_LANES: usize = 2;
/// Most requests in one batch.
const MAX_BATCH: usize = 512;
/// Logout/revoke batchers per node; a session always goes to the same one.
const END_LANES: usize = 2;
/// Batchers per node for each kind of point read (credential, user, license, session).
const READ_LANES: usize = 2;
/// Most expired sessions ended by one reaper transaction.
const REAP_BATCH: i64 = 1000;
/// Most reaper transactions per `reap_expired` call (then the next tick goes on).
const REAP_ROUNDS: usize = 20;
/// Attempts of a batch transaction that failed on a deadlock or serialization conflict.
const MAX_ATTEMPTS: usize = 5;

/// Connection settings of a `PgStore`.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Largest number of connections this node holds.
    pub max_connections: u32,
    /// How long a request waits for a connection before it fails as unavailable.
    pub acquire_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

fn db_error(e: sqlx::Error) -> StoreError {
    if let Some(d) = e.as_database_error() {
        if d.is_unique_violation() {
            return StoreError::Conflict(d.message().to_owned());
        }
    }
    StoreError::Unavailable(e.to_string())
}

fn is_retryable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation())
}

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

fn parse_kind(s: &str) -> UserKind {
    if s == "service" {
        UserKind::Service
    } else {
        UserKind::Interactive
    }
}

fn parse_model(id: &str, model: &str) -> StoreResult<LicenseModel> {
    serde_json::from_value(serde_json::Value::String(model.to_owned()))
        .map_err(|e| StoreError::Unavailable(format!("license {id}: bad model: {e}")))
}

fn terms_json(terms: &LicenseTerms) -> StoreResult<String> {
    serde_json::to_string(terms)
        .map_err(|e| StoreError::Unavailable(format!("encoding terms: {e}")))
}

fn hash_from(v: Vec<u8>) -> Option<TokenHash> {
    v.try_into().ok()
}

fn clone_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound(what) => StoreError::NotFound(what),
        StoreError::Conflict(msg) => StoreError::Conflict(msg.clone()),
        StoreError::Rule(rule) => StoreError::Rule(rule.clone()),
        StoreError::Unavailable(msg) => StoreError::Unavailable(msg.clone()),
    }
}

fn lane_of(key: &str, lanes: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

/// Parsed license terms, cached per node by the exact JSON text stored: a PATCH from any node
/// changes the text, so a stale entry is never used.
#[derive(Default)]
struct TermsCache(Mutex<HashMap<String, (String, Arc<LicenseTerms>)>>);

impl TermsCache {
    fn get(&self, license_id: &str, json: &str) -> StoreResult<Arc<LicenseTerms>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((text, terms)) = map.get(license_id) {
            if text == json {
                return Ok(terms.clone());
            }
        }
        let terms: LicenseTerms = serde_json::from_str(json).map_err(|e| {
            StoreError::Unavailable(format!("license {license_id}: bad terms: {e}"))
        })?;
        let terms = Arc::new(terms);
        map.insert(license_id.to_owned(), (json.to_owned(), terms.clone()));
        Ok(terms)
    }
}

/// Columns of a session joined with its license, in the order `SessionRow::read` expects.
const SESSION_COLS: &str = "s.id, s.license_id, l.account_id, s.username, s.kind, s.device_id, \
     s.instance_id, s.opened_at, s.expires_at, s.hard_end, s.ended_at, s.end_reason, l.terms, \
     s.overdraft, s.license_end";

#[derive(Clone)]
struct SessionRow {
    session: Session,
    ended: Option<EndReason>,
    terms: Arc<LicenseTerms>,
}

impl SessionRow {
    fn read(row: &PgRow, cache: &TermsCache) -> StoreResult<Self> {
        let get = |e: sqlx::Error| StoreError::Unavailable(format!("reading a session: {e}"));
        let license_id: String = row.try_get(1).map_err(get)?;
        let terms_text: String = row.try_get(12).map_err(get)?;
        let terms = cache.get(&license_id, &terms_text)?;
        let ended_at: Option<i64> = row.try_get(10).map_err(get)?;
        let end_reason: Option<String> = row.try_get(11).map_err(get)?;
        let ended = ended_at.map(|_| {
            end_reason
                .as_deref()
                .and_then(EndReason::parse)
                .unwrap_or(EndReason::Unknown)
        });
        let kind: String = row.try_get(4).map_err(get)?;
        let session = Session {
            id: row.try_get(0).map_err(get)?,
            license_id: Arc::from(license_id.as_str()),
            account_id: Arc::from(row.try_get::<String, _>(2).map_err(get)?.as_str()),
            username: row.try_get(3).map_err(get)?,
            kind: parse_kind(&kind),
            device_id: row.try_get(5).map_err(get)?,
            instance_id: row.try_get(6).map_err(get)?,
            clock: SessionClock {
                opened_at: Timestamp::from_millis(row.try_get(7).map_err(get)?),
                expires_at: Timestamp::from_millis(row.try_get(8).map_err(get)?),
                hard_end: row
                    .try_get::<Option<i64>, _>(9)
                    .map_err(get)?
                    .map(Timestamp::from_millis),
                license_end: row
                    .try_get::<Option<i64>, _>(14)
                    .map_err(get)?
                    .map(Timestamp::from_millis),
            },
            heartbeat_interval_secs: terms.heartbeat_interval_secs(),
            overdraft: row.try_get(13).map_err(get)?,
        };
        Ok(SessionRow {
            session,
            ended,
            terms,
        })
    }
}

/// Audit events to write, as column arrays for one multi-row `INSERT … SELECT unnest(…)`.
#[derive(Default)]
struct AuditRows {
    at: Vec<i64>,
    account_id: Vec<String>,
    license_id: Vec<String>,
    session_id: Vec<Option<String>>,
    username: Vec<Option<String>>,
    event: Vec<String>,
    detail: Vec<Option<String>>,
}

impl AuditRows {
    fn push(&mut self, e: AuditEvent) {
        self.at.push(e.at.millis());
        self.account_id.push(e.account_id);
        self.license_id.push(e.license_id);
        self.session_id.push(e.session_id);
        self.username.push(e.username);
        self.event.push(e.event);
        self.detail.push(e.detail);
    }

    fn session_event(&mut self, s: &Session, at: Timestamp, event: &str, detail: &str) {
        self.push(AuditEvent {
            at,
            account_id: s.account_id.to_string(),
            license_id: s.license_id.to_string(),
            session_id: Some(s.id.clone()),
            username: Some(s.username.clone()),
            event: event.into(),
            detail: Some(detail.into()),
        });
    }

    fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

const INSERT_AUDIT: &str = "INSERT INTO audit_events
     (at, account_id, license_id, session_id, username, event, detail)
     SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])";

async fn insert_audit(conn: &mut sqlx::PgConnection, rows: AuditRows) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(INSERT_AUDIT)
        .bind(rows.at)
        .bind(rows.account_id)
        .bind(rows.license_id)
        .bind(rows.session_id)
        .bind(rows.username)
        .bind(rows.event)
        .bind(rows.detail)
        .execute(conn)
        .await?;
    Ok(())
}

/// Ends `sessions` (locked by the caller's transaction, still live) because they expired, and
/// queues their `ended` events.
async fn end_expired(
    tx: &mut Transaction<'_, Postgres>,
    sessions: &[Session],
    now: Timestamp,
    audit: &mut AuditRows,
) -> Result<(), sqlx::Error> {
    if sessions.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = sessions.iter().map(|s| s.id.clone()).collect();
    let reasons: Vec<&'static str> = sessions
        .iter()
        .map(|s| s.clock.expiry_reason().as_str())
        .collect();
    sqlx::query(
        "UPDATE sessions s SET ended_at = $1, end_reason = v.reason
         FROM unnest($2::text[], $3::text[]) AS v(id, reason)
         WHERE s.id = v.id AND s.ended_at IS NULL",
    )
    .bind(now.millis())
    .bind(ids)
    .bind(reasons)
    .execute(&mut **tx)
    .await?;
    for s in sessions {
        audit.session_event(s, now, "ended", s.clock.expiry_reason().as_str());
    }
    Ok(())
}

fn plain_session(row: &PgRow, license: &LicState) -> Result<Session, sqlx::Error> {
    Ok(Session {
        id: row.try_get(0)?,
        license_id: license.id.clone(),
        account_id: license.account_id.clone(),
        username: row.try_get(2)?,
        kind: parse_kind(&row.try_get::<String, _>(3)?),
        device_id: row.try_get(4)?,
        instance_id: row.try_get(5)?,
        clock: SessionClock {
            opened_at: Timestamp::from_millis(row.try_get(6)?),
            expires_at: Timestamp::from_millis(row.try_get(7)?),
            hard_end: row
                .try_get::<Option<i64>, _>(8)?
                .map(Timestamp::from_millis),
            license_end: row
                .try_get::<Option<i64>, _>(10)?
                .map(Timestamp::from_millis),
        },
        heartbeat_interval_secs: license.license.terms.heartbeat_interval_secs(),
        overdraft: row.try_get(9)?,
    })
}

// ---------------------------------------------------------------------------------------------
// Opens
// ---------------------------------------------------------------------------------------------

struct OpenJob {
    req: OpenRequest,
    now: Timestamp,
    reply: oneshot::Sender<StoreResult<Opened>>,
}

/// One license of an open batch: its (locked) record and the seat view being updated.
struct LicState {
    license: License,
    id: Arc<str>,
    account_id: Arc<str>,
    live: u32,
    per_user: HashMap<String, u32>,
    low_water: u32,
    denials: i64,
    /// `registered_users`: active users, and the asking users that are active.
    active_users: u32,
    active_asking: HashSet<String>,
    /// `node_locked`: the asking devices that are activated.
    activated_asking: HashSet<String>,
}

impl LicState {
    fn view(&self, username: &str, device_id: &str) -> SeatView {
        let reserved_holders = self
            .license
            .terms
            .reserved
            .iter()
            .filter(|u| self.per_user.get(u.as_str()).copied().unwrap_or(0) > 0)
            .count() as u32;
        SeatView {
            live_sessions: self.live,
            reserved_holders,
            user_live_sessions: self.per_user.get(username).copied().unwrap_or(0),
            user_active_on_license: self.active_asking.contains(username),
            active_users: self.active_users,
            device_activated: self.activated_asking.contains(device_id),
        }
    }
}

type InstanceKey = (String, String, String, String);

fn instance_key(req: &OpenRequest) -> InstanceKey {
    (
        req.license_id.clone(),
        req.username.clone(),
        req.device_id.clone(),
        req.instance_id.clone(),
    )
}

enum Outcome {
    Done(StoreResult<Opened>),
    /// The same client instance asked twice in one batch: the same session, not created again.
    SameAs(usize),
}

async fn open_batcher(pool: PgPool, mut rx: mpsc::Receiver<OpenJob>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let batch = std::mem::take(&mut jobs);
        let mut attempt = 1;
        let results = loop {
            match open_batch(&pool, &batch).await {
                Ok(results) => break results,
                Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "open batch conflicted; retrying");
                    attempt += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, opens = batch.len(), "open batch failed");
                    let err = db_error(e);
                    break batch
                        .iter()
                        .map(|_| Outcome::Done(Err(clone_error(&err))))
                        .collect();
                }
            }
        };
        answer_opens(batch, results);
    }
}

fn answer_opens(batch: Vec<OpenJob>, results: Vec<Outcome>) {
    let resolved: Vec<StoreResult<Opened>> = results
        .iter()
        .map(|o| match o {
            Outcome::Done(Ok(opened)) => Ok(opened.clone()),
            Outcome::Done(Err(e)) => Err(clone_error(e)),
            Outcome::SameAs(j) => match results.get(*j) {
                Some(Outcome::Done(Ok(opened))) => Ok(Opened {
                    session: opened.session.clone(),
                    created: false,
                }),
                Some(Outcome::Done(Err(e))) => Err(clone_error(e)),
                _ => Err(StoreError::Unavailable("open batch lost a result".into())),
            },
        })
        .collect();
    for (job, result) in batch.into_iter().zip(resolved) {
        let _ = job.reply.send(result);
    }
}

/// One open batch: one transaction, a handful of statements whatever its size.
async fn open_batch(pool: &PgPool, jobs: &[OpenJob]) -> Result<Vec<Outcome>, sqlx::Error> {
    let now = jobs
        .iter()
        .map(|j| j.now)
        .max()
        .unwrap_or(Timestamp::from_millis(0));
    let mut tx = pool.begin().await?;

    // 1. Lock the licenses, in id order: the seat decision of each is now ours alone.
    let mut license_ids: Vec<String> = jobs.iter().map(|j| j.req.license_id.clone()).collect();
    license_ids.sort();
    license_ids.dedup();
    let rows = sqlx::query(
        "SELECT id, account_id, model, terms, created_at FROM licenses
         WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&license_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut lics: HashMap<String, LicState> = HashMap::new();
    let mut broken: HashMap<String, StoreError> = HashMap::new();
    for row in &rows {
        let id: String = row.try_get(0)?;
        let model: String = row.try_get(2)?;
        let terms: String = row.try_get(3)?;
        let parsed = parse_model(&id, &model).and_then(|model| {
            let terms: LicenseTerms = serde_json::from_str(&terms)
                .map_err(|e| StoreError::Unavailable(format!("license {id}: bad terms: {e}")))?;
            Ok((model, terms))
        });
        let (model, terms) = match parsed {
            Ok(v) => v,
            Err(e) => {
                broken.insert(id, e);
                continue;
            }
        };
        let account_id: String = row.try_get(1)?;
        let license = License {
            id: id.clone(),
            account_id: account_id.clone(),
            model,
            terms,
            created_at: Timestamp::from_millis(row.try_get(4)?),
        };
        lics.insert(
            id.clone(),
            LicState {
                id: Arc::from(id.as_str()),
                account_id: Arc::from(account_id.as_str()),
                license,
                live: 0,
                per_user: HashMap::new(),
                low_water: 0,
                denials: 0,
                active_users: 0,
                active_asking: HashSet::new(),
                activated_asking: HashSet::new(),
            },
        );
    }
    let locked: Vec<String> = lics.keys().cloned().collect();

    // 2. The live sessions of the asking client instances (idempotent re-open), locked.
    let asking: Vec<&OpenJob> = jobs
        .iter()
        .filter(|j| lics.contains_key(&j.req.license_id))
        .collect();
    let mut existing: HashMap<InstanceKey, Session> = HashMap::new();
    if !asking.is_empty() {
        let rows = sqlx::query(
            "SELECT s.id, s.license_id, s.username, s.kind, s.device_id, s.instance_id,
                    s.opened_at, s.expires_at, s.hard_end, s.overdraft, s.license_end
             FROM sessions s
             JOIN unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS k(l, u, d, i)
               ON s.license_id = k.l AND s.username = k.u AND s.device_id = k.d AND s.instance_id = k.i
             WHERE s.ended_at IS NULL
             ORDER BY s.id
             FOR UPDATE OF s",
        )
        .bind(asking.iter().map(|j| j.req.license_id.clone()).collect::<Vec<_>>())
        .bind(asking.iter().map(|j| j.req.username.clone()).collect::<Vec<_>>())
        .bind(asking.iter().map(|j| j.req.device_id.clone()).collect::<Vec<_>>())
        .bind(asking.iter().map(|j| j.req.instance_id.clone()).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let license_id: String = row.try_get(1)?;
            let Some(lic) = lics.get(&license_id) else {
                continue;
            };
            let s = plain_session(row, lic)?;
            existing.insert(
                (
                    license_id,
                    s.username.clone(),
                    s.device_id.clone(),
                    s.instance_id.clone(),
                ),
                s,
            );
        }
    }

    // 3. Reclaim the batch's licenses' expired sessions before counting (the reaper would
    //    within one tick; a full license must not wait for it). Rows another transaction is
    //    ending are skipped and stay counted: the view can only over-estimate.
    let mut audit = AuditRows::default();
    let mut expired: Vec<Session> = Vec::new();
    let mut expired_ids: HashSet<String> = HashSet::new();
    if !locked.is_empty() {
        let rows = sqlx::query(
            "SELECT s.id, s.license_id, s.username, s.kind, s.device_id, s.instance_id,
                    s.opened_at, s.expires_at, s.hard_end, s.overdraft, s.license_end
             FROM sessions s
             WHERE s.license_id = ANY($1) AND s.ended_at IS NULL AND s.expires_at <= $2
             ORDER BY s.expires_at LIMIT $3
             FOR UPDATE SKIP LOCKED",
        )
        .bind(&locked)
        .bind(now.millis())
        .bind(REAP_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let license_id: String = row.try_get(1)?;
            let Some(lic) = lics.get(&license_id) else {
                continue;
            };
            let s = plain_session(row, lic)?;
            expired_ids.insert(s.id.clone());
            expired.push(s);
        }
    }
    // An asking instance's expired session is locked by us: it ends here in any case.
    existing.retain(|_, s| {
        if s.clock.is_live(now) {
            return true;
        }
        if expired_ids.insert(s.id.clone()) {
            expired.push(s.clone());
        }
        false
    });
    end_expired(&mut tx, &expired, now, &mut audit).await?;

    // 4. The seat views: live sessions per license, per asking user and per reserved user.
    if !locked.is_empty() {
        let mut pair_l = Vec::new();
        let mut pair_u = Vec::new();
        for j in &asking {
            pair_l.push(j.req.license_id.clone());
            pair_u.push(j.req.username.clone());
        }
        for lic in lics.values() {
            for u in &lic.license.terms.reserved {
                pair_l.push(lic.license.id.clone());
                pair_u.push(u.as_str().to_owned());
            }
        }
        let rows = sqlx::query(
            "SELECT license_id, NULL::text, count(*) FROM sessions
             WHERE license_id = ANY($1) AND ended_at IS NULL GROUP BY license_id
             UNION ALL
             SELECT s.license_id, s.username, count(*) FROM sessions s
             JOIN (SELECT DISTINCT l, u FROM unnest($2::text[], $3::text[]) AS k(l, u)) AS k
               ON s.license_id = k.l AND s.username = k.u
             WHERE s.ended_at IS NULL GROUP BY s.license_id, s.username",
        )
        .bind(&locked)
        .bind(pair_l)
        .bind(pair_u)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let license_id: String = row.try_get(0)?;
            let username: Option<String> = row.try_get(1)?;
            let n = u32::try_from(row.try_get::<i64, _>(2)?).unwrap_or(u32::MAX);
            let Some(lic) = lics.get_mut(&license_id) else {
                continue;
            };
            match username {
                None => lic.live = n,
                Some(u) => {
                    lic.per_user.insert(u, n);
                }
            }
        }
        // Our own reclaims above are visible to the count already (same transaction).
        for lic in lics.values_mut() {
            lic.low_water = lic.live;
        }
        model_views(&mut tx, &mut lics, &asking).await?;
    }

    // 5. Decide every request, in arrival order, with the core rule.
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(jobs.len());
    let mut seen: HashMap<InstanceKey, usize> = HashMap::new();
    let mut slides: (Vec<String>, Vec<i64>) = (Vec::new(), Vec::new());
    let mut opened: Vec<Session> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let req = &job.req;
        let Some(lic) = lics.get_mut(&req.license_id) else {
            let err = match broken.get(&req.license_id) {
                Some(e) => clone_error(e),
                None => StoreError::NotFound("license"),
            };
            outcomes.push(Outcome::Done(Err(err)));
            continue;
        };
        let key = instance_key(req);
        if let Some(&first) = seen.get(&key) {
            outcomes.push(Outcome::SameAs(first));
            continue;
        }
        seen.insert(key.clone(), i);
        if let Some(s) = existing.get(&key) {
            let mut session = s.clone();
            let terms = &lic.license.terms;
            if let Err(e) = session.clock.heartbeat(terms, now) {
                outcomes.push(Outcome::Done(Err(e.into())));
                continue;
            }
            session.heartbeat_interval_secs = terms.heartbeat_interval_secs();
            slides.0.push(session.id.clone());
            slides.1.push(session.clock.expires_at.millis());
            outcomes.push(Outcome::Done(Ok(Opened {
                session,
                created: false,
            })));
            continue;
        }
        let username = match Username::parse(&req.username) {
            Ok(u) => u,
            Err(e) => {
                outcomes.push(Outcome::Done(Err(e.into())));
                continue;
            }
        };
        let terms = &lic.license.terms;
        let decision = decide_open(
            terms,
            &username,
            lic.view(&req.username, &req.device_id),
            now,
        );
        if let OpenDecision::Deny(refusal) = decision {
            let refusal = match refusal {
                RuleError::DeviceNotActivated(_) => {
                    RuleError::DeviceNotActivated(req.device_id.clone())
                }
                other => other,
            };
            if matches!(refusal, RuleError::NoSeatAvailable { .. }) {
                lic.denials += 1;
            }
            audit.push(AuditEvent {
                at: now,
                account_id: lic.license.account_id.clone(),
                license_id: lic.license.id.clone(),
                session_id: None,
                username: Some(req.username.clone()),
                event: "denied".into(),
                detail: Some(refusal.code().as_str().into()),
            });
            outcomes.push(Outcome::Done(Err(StoreError::Rule(refusal))));
            continue;
        }
        let overdraft = decision.is_overdraft();
        let session = Session {
            id: req.new_id.clone(),
            license_id: lic.id.clone(),
            account_id: lic.account_id.clone(),
            username: req.username.clone(),
            kind: req.kind,
            device_id: req.device_id.clone(),
            instance_id: req.instance_id.clone(),
            clock: SessionClock::open(req.kind, terms, now),
            heartbeat_interval_secs: terms.heartbeat_interval_secs(),
            overdraft,
        };
        lic.live += 1;
        *lic.per_user.entry(req.username.clone()).or_default() += 1;
        let detail = if overdraft {
            format!("{} overdraft", session.kind.as_str())
        } else {
            session.kind.as_str().to_owned()
        };
        audit.session_event(&session, now, "opened", &detail);
        opened.push(session.clone());
        outcomes.push(Outcome::Done(Ok(Opened {
            session,
            created: true,
        })));
    }

    // 6. Every write of the batch in one statement, then one commit.
    let mut usage: (Vec<String>, Vec<i32>, Vec<i32>, Vec<i64>) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for lic in lics.values() {
        usage.0.push(lic.license.id.clone());
        usage.1.push(i32::try_from(lic.live).unwrap_or(i32::MAX));
        usage
            .2
            .push(i32::try_from(lic.low_water).unwrap_or(i32::MAX));
        usage.3.push(lic.denials);
    }
    sqlx::query(
        "WITH slid AS (
             UPDATE sessions s SET expires_at = GREATEST(s.expires_at, v.exp)
             FROM unnest($1::text[], $2::int8[]) AS v(id, exp)
             WHERE s.id = v.id AND s.ended_at IS NULL
         ), opened AS (
             INSERT INTO sessions (id, license_id, username, kind, device_id, instance_id,
                                   opened_at, expires_at, hard_end, overdraft, license_end)
             SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                                  $8::text[], $9::int8[], $10::int8[], $11::int8[], $23::bool[],
                                  $24::int8[])
         ), usage AS (
             UPDATE license_usage u
             SET high_water = GREATEST(u.high_water, v.hi),
                 low_water = LEAST(u.low_water, v.lo),
                 denials = u.denials + v.d
             FROM unnest($12::text[], $13::int4[], $14::int4[], $15::int8[]) AS v(l, hi, lo, d)
             WHERE u.license_id = v.l
         )
         INSERT INTO audit_events (at, account_id, license_id, session_id, username, event, detail)
         SELECT * FROM unnest($16::int8[], $17::text[], $18::text[], $19::text[], $20::text[],
                              $21::text[], $22::text[])",
    )
    .bind(slides.0)
    .bind(slides.1)
    .bind(opened.iter().map(|s| s.id.clone()).collect::<Vec<_>>())
    .bind(
        opened
            .iter()
            .map(|s| s.license_id.to_string())
            .collect::<Vec<_>>(),
    )
    .bind(
        opened
            .iter()
            .map(|s| s.username.clone())
            .collect::<Vec<_>>(),
    )
    .bind(opened.iter().map(|s| s.kind.as_str()).collect::<Vec<_>>())
    .bind(
        opened
            .iter()
            .map(|s| s.device_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        opened
            .iter()
            .map(|s| s.instance_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        opened
            .iter()
            .map(|s| s.clock.opened_at.millis())
            .collect::<Vec<_>>(),
    )
    .bind(
        opened
            .iter()
            .map(|s| s.clock.expires_at.millis())
            .collect::<Vec<_>>(),
    )
    .bind(
        opened
            .iter()
            .map(|s| s.clock.hard_end.map(Timestamp::millis))
            .collect::<Vec<_>>(),
    )
    .bind(usage.0)
    .bind(usage.1)
    .bind(usage.2)
    .bind(usage.3)
    .bind(audit.at)
    .bind(audit.account_id)
    .bind(audit.license_id)
    .bind(audit.session_id)
    .bind(audit.username)
    .bind(audit.event)
    .bind(audit.detail)
    .bind(opened.iter().map(|s| s.overdraft).collect::<Vec<_>>())
    .bind(
        opened
            .iter()
            .map(|s| s.clock.license_end.map(Timestamp::millis))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// The model-specific part of the seat views of a batch's (locked) licenses: active users of
/// `registered_users` licenses, activated devices of `node_locked` ones. Activations take the
/// same license lock, so these counts cannot change under the batch.
async fn model_views(
    tx: &mut Transaction<'_, Postgres>,
    lics: &mut HashMap<String, LicState>,
    asking: &[&OpenJob],
) -> Result<(), sqlx::Error> {
    let registered: Vec<String> = lics
        .values()
        .filter(|l| l.license.terms.model == LicenseModel::RegisteredUsers)
        .map(|l| l.license.id.clone())
        .collect();
    if !registered.is_empty() {
        let rows = sqlx::query(
            "SELECT license_id, username FROM license_users
             WHERE license_id = ANY($1) AND active",
        )
        .bind(&registered)
        .fetch_all(&mut **tx)
        .await?;
        for row in &rows {
            let license_id: String = row.try_get(0)?;
            if let Some(lic) = lics.get_mut(&license_id) {
                lic.active_users += 1;
                lic.active_asking.insert(row.try_get(1)?);
            }
        }
    }
    let locked_devices: Vec<&&OpenJob> = asking
        .iter()
        .filter(|j| {
            lics.get(&j.req.license_id)
                .is_some_and(|l| l.license.terms.model == LicenseModel::NodeLocked)
        })
        .collect();
    if !locked_devices.is_empty() {
        let rows = sqlx::query(
            "SELECT d.license_id, d.fingerprint FROM license_devices d
             JOIN unnest($1::text[], $2::text[]) AS k(l, f)
               ON d.license_id = k.l AND d.fingerprint = k.f",
        )
        .bind(
            locked_devices
                .iter()
                .map(|j| j.req.license_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            locked_devices
                .iter()
                .map(|j| j.req.device_id.clone())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut **tx)
        .await?;
        for row in &rows {
            let license_id: String = row.try_get(0)?;
            if let Some(lic) = lics.get_mut(&license_id) {
                lic.activated_asking.insert(row.try_get(1)?);
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Heartbeats
// ---------------------------------------------------------------------------------------------

struct HeartbeatJob {
    session_id: String,
    now: Timestamp,
    reply: oneshot::Sender<StoreResult<Session>>,
}

async fn heartbeat_batcher(
    pool: PgPool,
    cache: Arc<TermsCache>,
    mut rx: mpsc::Receiver<HeartbeatJob>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let batch = std::mem::take(&mut jobs);
        let mut attempt = 1;
        let results = loop {
            match heartbeat_batch(&pool, &cache, &batch).await {
                Ok(results) => break results,
                Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => attempt += 1,
                Err(e) => {
                    tracing::warn!(error = %e, heartbeats = batch.len(), "heartbeat batch failed");
                    let err = db_error(e);
                    break batch.iter().map(|_| Err(clone_error(&err))).collect();
                }
            }
        };
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

fn ended_error(row: &SessionRow) -> StoreError {
    let reason = row
        .ended
        .unwrap_or_else(|| row.session.clock.expiry_reason());
    StoreError::Rule(RuleError::SessionEnded(reason))
}

/// One heartbeat batch: one read, one guarded multi-row update (its own commit).
async fn heartbeat_batch(
    pool: &PgPool,
    cache: &TermsCache,
    jobs: &[HeartbeatJob],
) -> Result<Vec<StoreResult<Session>>, sqlx::Error> {
    let ids: Vec<String> = jobs.iter().map(|j| j.session_id.clone()).collect();
    let rows = sqlx::query(&format!(
        "SELECT {SESSION_COLS} FROM sessions s JOIN licenses l ON l.id = s.license_id
         WHERE s.id = ANY($1)"
    ))
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut found: HashMap<String, StoreResult<SessionRow>> = HashMap::new();
    for row in &rows {
        let id: String = row.try_get(0)?;
        found.insert(id, SessionRow::read(row, cache));
    }
    // Each job's new expiry, computed by the core rule; the store keeps the latest per session.
    let mut results: Vec<StoreResult<Session>> = Vec::with_capacity(jobs.len());
    let mut updates: HashMap<String, (i64, i64)> = HashMap::new();
    let mut expired: Vec<(String, i64, &'static str)> = Vec::new();
    for job in jobs {
        let result = match found.get(&job.session_id) {
            None => Err(StoreError::NotFound("session")),
            Some(Err(e)) => Err(clone_error(e)),
            Some(Ok(row)) if row.ended.is_some() => Err(ended_error(row)),
            Some(Ok(row)) => {
                let mut session = row.session.clone();
                match session.clock.heartbeat(&row.terms, job.now) {
                    Ok(exp) => {
                        let entry = updates
                            .entry(session.id.clone())
                            .or_insert((exp.millis(), job.now.millis()));
                        if exp.millis() > entry.0 {
                            *entry = (exp.millis(), job.now.millis());
                        }
                        Ok(session)
                    }
                    Err(e) => {
                        // Expired but not reaped yet: it ends now and never comes back.
                        let reason = session.clock.expiry_reason().as_str();
                        expired.push((session.id.clone(), job.now.millis(), reason));
                        Err(e.into())
                    }
                }
            }
        };
        results.push(result);
    }
    end_now(pool, expired).await?;
    if updates.is_empty() {
        return Ok(results);
    }
    let (mut u_ids, mut u_exp, mut u_now) = (Vec::new(), Vec::new(), Vec::new());
    let mut sorted: Vec<(String, (i64, i64))> = updates.into_iter().collect();
    sorted.sort();
    for (id, (exp, now)) in sorted {
        u_ids.push(id);
        u_exp.push(exp);
        u_now.push(now);
    }
    let rows = sqlx::query(
        "UPDATE sessions s SET expires_at = GREATEST(s.expires_at, v.exp)
         FROM unnest($1::text[], $2::int8[], $3::int8[]) AS v(id, exp, now)
         WHERE s.id = v.id AND s.ended_at IS NULL AND s.expires_at > v.now
         RETURNING s.id, s.expires_at",
    )
    .bind(u_ids)
    .bind(u_exp)
    .bind(u_now)
    .fetch_all(pool)
    .await?;
    let mut stored: HashMap<String, i64> = HashMap::new();
    for row in &rows {
        stored.insert(row.try_get(0)?, row.try_get(1)?);
    }
    for result in results.iter_mut() {
        let Ok(session) = result else { continue };
        match stored.get(&session.id) {
            // Answer what is stored: that is what every other node relies on.
            Some(&exp) => session.clock.expires_at = Timestamp::from_millis(exp),
            None => {
                // Ended or expired between the read and the update: it stays ended.
                let id = session.id.clone();
                let reason = match fetch_session(pool, cache, &id).await {
                    Ok(Some(row)) => Some(ended_error(&row)),
                    Ok(None) => Some(StoreError::NotFound("session")),
                    Err(e) => Some(e),
                };
                if let Some(e) = reason {
                    *result = Err(e);
                }
            }
        }
    }
    Ok(results)
}

/// Ends sessions found expired (`(id, now, reason)`) at once, with their `ended` events. The
/// end is guarded like the reaper's (`ended_at IS NULL`, under the row lock): whichever of a
/// heartbeat, a logout or a reaper on any node comes first ends a session, exactly once.
async fn end_now(
    pool: &PgPool,
    expired: Vec<(String, i64, &'static str)>,
) -> Result<(), sqlx::Error> {
    if expired.is_empty() {
        return Ok(());
    }
    let (mut ids, mut nows, mut reasons) = (Vec::new(), Vec::new(), Vec::new());
    for (id, now, reason) in expired {
        ids.push(id);
        nows.push(now);
        reasons.push(reason);
    }
    sqlx::query(
        "WITH e AS (
             UPDATE sessions s SET ended_at = v.now, end_reason = v.reason
             FROM unnest($1::text[], $2::int8[], $3::text[]) AS v(id, now, reason)
             WHERE s.id = v.id AND s.ended_at IS NULL AND s.expires_at <= v.now
             RETURNING s.id, s.license_id, s.username, v.now AS at, v.reason AS reason
         )
         INSERT INTO audit_events (at, account_id, license_id, session_id, username, event, detail)
         SELECT e.at, l.account_id, e.license_id, e.id, e.username, 'ended', e.reason
         FROM e JOIN licenses l ON l.id = e.license_id",
    )
    .bind(ids)
    .bind(nows)
    .bind(reasons)
    .execute(pool)
    .await?;
    Ok(())
}

async fn fetch_session(
    pool: &PgPool,
    cache: &TermsCache,
    session_id: &str,
) -> StoreResult<Option<SessionRow>> {
    let row = sqlx::query(&format!(
        "SELECT {SESSION_COLS} FROM sessions s JOIN licenses l ON l.id = s.license_id
         WHERE s.id = $1"
    ))
    .bind(session_id)
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    row.map(|r| SessionRow::read(&r, cache)).transpose()
}

// ---------------------------------------------------------------------------------------------
// Logouts and revokes
// ---------------------------------------------------------------------------------------------

struct EndJob {
    session_id: String,
    reason: EndReason,
    now: Timestamp,
    reply: oneshot::Sender<StoreResult<Session>>,
}

async fn end_batcher(pool: PgPool, cache: Arc<TermsCache>, mut rx: mpsc::Receiver<EndJob>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let batch = std::mem::take(&mut jobs);
        let mut attempt = 1;
        let results = loop {
            match end_batch(&pool, &cache, &batch).await {
                Ok(results) => break results,
                Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => attempt += 1,
                Err(e) => {
                    tracing::warn!(error = %e, ends = batch.len(), "logout batch failed");
                    let err = db_error(e);
                    break batch.iter().map(|_| Err(clone_error(&err))).collect();
                }
            }
        };
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

/// One logout batch: a single statement ends every still-live session and writes its event.
async fn end_batch(
    pool: &PgPool,
    cache: &TermsCache,
    jobs: &[EndJob],
) -> Result<Vec<StoreResult<Session>>, sqlx::Error> {
    // The first request for a session ends it; a repeat in the same batch finds it ended.
    let mut first: HashMap<&str, usize> = HashMap::new();
    let (mut ids, mut reasons, mut nows) = (Vec::new(), Vec::new(), Vec::new());
    for (i, job) in jobs.iter().enumerate() {
        if first.insert(job.session_id.as_str(), i).is_none() {
            ids.push(job.session_id.clone());
            reasons.push(job.reason.as_str());
            nows.push(job.now.millis());
        }
    }
    let rows = sqlx::query(&format!(
        "WITH e AS (
             UPDATE sessions s SET ended_at = v.now, end_reason = v.reason
             FROM unnest($1::text[], $2::text[], $3::int8[]) AS v(id, reason, now)
             WHERE s.id = v.id AND s.ended_at IS NULL AND s.expires_at > v.now
             RETURNING s.*
         ), a AS (
             INSERT INTO audit_events (at, account_id, license_id, session_id, username, event, detail)
             SELECT e.ended_at, l.account_id, e.license_id, e.id, e.username, 'ended', e.end_reason
             FROM e JOIN licenses l ON l.id = e.license_id
         )
         SELECT {SESSION_COLS} FROM e AS s JOIN licenses l ON l.id = s.license_id"
    ))
    .bind(ids)
    .bind(reasons)
    .bind(nows)
    .fetch_all(pool)
    .await?;
    let mut ended: HashMap<String, StoreResult<Session>> = HashMap::new();
    for row in &rows {
        let id: String = row.try_get(0)?;
        ended.insert(id, SessionRow::read(row, cache).map(|r| r.session));
    }
    let mut results = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let first_job = first.get(job.session_id.as_str()).copied().unwrap_or(i);
        let result = match ended.get(&job.session_id) {
            Some(Ok(session)) if first_job == i => Ok(session.clone()),
            Some(Ok(_)) => {
                let reason = jobs.get(first_job).map_or(job.reason, |j| j.reason);
                Err(StoreError::Rule(RuleError::SessionEnded(reason)))
            }
            Some(Err(e)) => Err(clone_error(e)),
            // Not live: tell why; an expired session not reaped yet ends now, with its reason.
            None => match fetch_session(pool, cache, &job.session_id).await {
                Ok(Some(row)) => {
                    if row.ended.is_none() {
                        let reason = row.session.clock.expiry_reason().as_str();
                        end_now(
                            pool,
                            vec![(row.session.id.clone(), job.now.millis(), reason)],
                        )
                        .await?;
                    }
                    Err(ended_error(&row))
                }
                Ok(None) => Err(StoreError::NotFound("session")),
                Err(e) => Err(e),
            },
        };
        results.push(result);
    }
    Ok(results)
}

// ---------------------------------------------------------------------------------------------
// Point reads
// ---------------------------------------------------------------------------------------------

/// A point read that concurrent requests of one node share: one query per batch of keys.
#[async_trait]
trait Loader: Send + Sync + 'static {
    type Key: Eq + Hash + Clone + Send + Sync + 'static;
    /// `Err` is a record that cannot be read (its cause), reported to that key's callers only.
    type Value: Clone + Send + 'static;
    async fn load(
        &self,
        pool: &PgPool,
        keys: &[Self::Key],
    ) -> Result<HashMap<Self::Key, Self::Value>, sqlx::Error>;
}

struct ReadJob<K, V> {
    key: K,
    reply: oneshot::Sender<StoreResult<Option<V>>>,
}

/// `READ_LANES` batchers of one loader; a key always goes to the same lane.
struct Reader<L: Loader> {
    lanes: Vec<mpsc::Sender<ReadJob<L::Key, L::Value>>>,
}

impl<L: Loader> Reader<L> {
    fn spawn(pool: &PgPool, loader: L) -> Self {
        let loader = Arc::new(loader);
        let lanes = (0..READ_LANES)
            .map(|_| {
                let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
                tokio::spawn(read_batcher(pool.clone(), loader.clone(), rx));
                tx
            })
            .collect();
        Reader { lanes }
    }

    async fn get(&self, key: L::Key) -> StoreResult<Option<L::Value>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let lane = (h.finish() % self.lanes.len().max(1) as u64) as usize;
        let stopped = || StoreError::Unavailable("a read batcher has stopped".into());
        let (reply, rx) = oneshot::channel();
        self.lanes
            .get(lane)
            .ok_or_else(stopped)?
            .send(ReadJob { key, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn read_batcher<L: Loader>(
    pool: PgPool,
    loader: Arc<L>,
    mut rx: mpsc::Receiver<ReadJob<L::Key, L::Value>>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let batch = std::mem::take(&mut jobs);
        let mut seen = HashSet::new();
        let keys: Vec<L::Key> = batch
            .iter()
            .filter(|j| seen.insert(j.key.clone()))
            .map(|j| j.key.clone())
            .collect();
        match loader.load(&pool, &keys).await {
            Ok(found) => {
                for job in batch {
                    let _ = job.reply.send(Ok(found.get(&job.key).cloned()));
                }
            }
            Err(e) => {
                let err = db_error(e);
                for job in batch {
                    let _ = job.reply.send(Err(clone_error(&err)));
                }
            }
        }
    }
}

struct CredentialLoader;

#[async_trait]
impl Loader for CredentialLoader {
    type Key = TokenHash;
    type Value = Credential;

    async fn load(
        &self,
        pool: &PgPool,
        keys: &[TokenHash],
    ) -> Result<HashMap<TokenHash, Credential>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT hash, kind, account_id, username, expires_at FROM credentials
             WHERE hash = ANY($1)",
        )
        .bind(keys.iter().map(|k| k.to_vec()).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?;
        let mut found = HashMap::new();
        for row in &rows {
            let Some(hash) = hash_from(row.try_get(0)?) else {
                continue;
            };
            let kind: String = row.try_get(1)?;
            let principal = principal_from(&kind, row.try_get(2)?, row.try_get(3)?);
            if let Some(principal) = principal {
                let expires_at: Option<i64> = row.try_get(4)?;
                found.insert(
                    hash,
                    Credential {
                        hash,
                        principal,
                        expires_at: expires_at.map(Timestamp::from_millis),
                    },
                );
            }
        }
        Ok(found)
    }
}

struct UserLoader;

#[async_trait]
impl Loader for UserLoader {
    type Key = (String, String);
    type Value = User;

    async fn load(
        &self,
        pool: &PgPool,
        keys: &[(String, String)],
    ) -> Result<HashMap<(String, String), User>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT u.account_id, u.username, u.kind, u.active, u.client_id,
                    u.client_secret_hash, u.created_at
             FROM users u JOIN unnest($1::text[], $2::text[]) AS k(a, n)
               ON u.account_id = k.a AND u.username = k.n",
        )
        .bind(keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.1.clone()).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?;
        let mut found = HashMap::new();
        for row in &rows {
            let user = user_from(row)?;
            found.insert((user.account_id.clone(), user.username.clone()), user);
        }
        Ok(found)
    }
}

struct LicenseLoader(Arc<TermsCache>);

#[async_trait]
impl Loader for LicenseLoader {
    type Key = String;
    type Value = Result<License, String>;

    async fn load(
        &self,
        pool: &PgPool,
        keys: &[String],
    ) -> Result<HashMap<String, Self::Value>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, account_id, model, terms, created_at FROM licenses WHERE id = ANY($1)",
        )
        .bind(keys)
        .fetch_all(pool)
        .await?;
        let mut found = HashMap::new();
        for row in &rows {
            let id: String = row.try_get(0)?;
            let account_id: String = row.try_get(1)?;
            let model: String = row.try_get(2)?;
            let terms: String = row.try_get(3)?;
            let created_at: i64 = row.try_get(4)?;
            let license = parse_model(&id, &model).and_then(|model| {
                Ok(License {
                    id: id.clone(),
                    account_id,
                    model,
                    terms: (*self.0.get(&id, &terms)?).clone(),
                    created_at: Timestamp::from_millis(created_at),
                })
            });
            found.insert(id, license.map_err(|e| e.to_string()));
        }
        Ok(found)
    }
}

struct SessionLoader(Arc<TermsCache>);

#[async_trait]
impl Loader for SessionLoader {
    type Key = String;
    type Value = Result<SessionRow, String>;

    async fn load(
        &self,
        pool: &PgPool,
        keys: &[String],
    ) -> Result<HashMap<String, Self::Value>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLS} FROM sessions s JOIN licenses l ON l.id = s.license_id
             WHERE s.id = ANY($1)"
        ))
        .bind(keys)
        .fetch_all(pool)
        .await?;
        let mut found = HashMap::new();
        for row in &rows {
            let id: String = row.try_get(0)?;
            found.insert(
                id,
                SessionRow::read(row, &self.0).map_err(|e| e.to_string()),
            );
        }
        Ok(found)
    }
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

/// The PostgreSQL store: a connection pool plus this node's open and heartbeat batchers.
pub struct PgStore {
    pool: PgPool,
    cache: Arc<TermsCache>,
    opens: Vec<mpsc::Sender<OpenJob>>,
    heartbeats: Vec<mpsc::Sender<HeartbeatJob>>,
    ends: Vec<mpsc::Sender<EndJob>>,
    credentials: Reader<CredentialLoader>,
    users: Reader<UserLoader>,
    licenses: Reader<LicenseLoader>,
    sessions: Reader<SessionLoader>,
}

impl PgStore {
    /// Connects to `url`, applies pending migrations and starts this node's batchers.
    pub async fn connect(url: &str, options: PgOptions) -> StoreResult<Self> {
        let pool = pool(url, &options)?;
        migrate(&pool).await?;
        Ok(Self::with_pool(pool))
    }

    /// A store over an existing, migrated pool.
    pub fn with_pool(pool: PgPool) -> Self {
        let cache = Arc::new(TermsCache::default());
        let opens = (0..OPEN_LANES)
            .map(|_| {
                let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
                tokio::spawn(open_batcher(pool.clone(), rx));
                tx
            })
            .collect();
        let heartbeats = (0..HEARTBEAT_LANES)
            .map(|_| {
                let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
                tokio::spawn(heartbeat_batcher(pool.clone(), cache.clone(), rx));
                tx
            })
            .collect();
        let ends = (0..END_LANES)
            .map(|_| {
                let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
                tokio::spawn(end_batcher(pool.clone(), cache.clone(), rx));
                tx
            })
            .collect();
        PgStore {
            ends,
            credentials: Reader::spawn(&pool, CredentialLoader),
            users: Reader::spawn(&pool, UserLoader),
            licenses: Reader::spawn(&pool, LicenseLoader(cache.clone())),
            sessions: Reader::spawn(&pool, SessionLoader(cache.clone())),
            pool,
            cache,
            opens,
            heartbeats,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection (the batchers stop when the store is dropped).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn principal_columns(p: &Principal) -> (Option<&str>, Option<&str>) {
    match p {
        Principal::Root => (None, None),
        Principal::AccountAdmin { account_id } => (Some(account_id), None),
        Principal::User {
            account_id,
            username,
        }
        | Principal::ServiceAccess {
            account_id,
            username,
        } => (Some(account_id), Some(username)),
    }
}

fn principal_from(
    kind: &str,
    account_id: Option<String>,
    username: Option<String>,
) -> Option<Principal> {
    Some(match (kind, account_id, username) {
        ("root", _, _) => Principal::Root,
        ("account_admin", Some(account_id), _) => Principal::AccountAdmin { account_id },
        ("user", Some(account_id), Some(username)) => Principal::User {
            account_id,
            username,
        },
        ("service_access", Some(account_id), Some(username)) => Principal::ServiceAccess {
            account_id,
            username,
        },
        _ => return None,
    })
}

const INSERT_CREDENTIAL: &str =
    "INSERT INTO credentials (hash, kind, account_id, username, expires_at)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (hash) DO UPDATE SET kind = excluded.kind, account_id = excluded.account_id,
         username = excluded.username, expires_at = excluded.expires_at";

fn user_from(row: &PgRow) -> Result<User, sqlx::Error> {
    Ok(User {
        account_id: row.try_get(0)?,
        username: row.try_get(1)?,
        kind: parse_kind(&row.try_get::<String, _>(2)?),
        active: row.try_get(3)?,
        client_id: row.try_get(4)?,
        client_secret_hash: row.try_get::<Option<Vec<u8>>, _>(5)?.and_then(hash_from),
        created_at: Timestamp::from_millis(row.try_get(6)?),
    })
}

const USER_COLS: &str =
    "account_id, username, kind, active, client_id, client_secret_hash, created_at";

#[async_trait]
impl Store for PgStore {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn put_setting_if_absent(&self, key: &str, value: &str) -> StoreResult<String> {
        // Nodes starting at once race here: exactly one insert wins, all read the winner.
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        self.get_setting(key)
            .await?
            .ok_or_else(|| StoreError::Unavailable(format!("setting {key} vanished")))
    }

    async fn put_credential(&self, credential: Credential) -> StoreResult<()> {
        let (account_id, username) = principal_columns(&credential.principal);
        sqlx::query(INSERT_CREDENTIAL)
            .bind(&credential.hash[..])
            .bind(credential.principal.kind_str())
            .bind(account_id)
            .bind(username)
            .bind(credential.expires_at.map(Timestamp::millis))
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn find_credential(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<Credential>> {
        Ok(self
            .credentials
            .get(*hash)
            .await?
            .filter(|c| c.expires_at.is_none_or(|at| now < at)))
    }

    async fn create_account(&self, account: Account, admin: Credential) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&account.id)
        .bind(&account.name)
        .bind(account.created_at.millis())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "account {} exists",
                account.id
            )));
        }
        let (account_id, username) = principal_columns(&admin.principal);
        sqlx::query(INSERT_CREDENTIAL)
            .bind(&admin.hash[..])
            .bind(admin.principal.kind_str())
            .bind(account_id)
            .bind(username)
            .bind(admin.expires_at.map(Timestamp::millis))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn get_account(&self, id: &str) -> StoreResult<Option<Account>> {
        let row = sqlx::query("SELECT id, name, created_at FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| {
            Ok(Account {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                created_at: Timestamp::from_millis(r.try_get(2)?),
            })
        })
        .transpose()
        .map_err(db_error)
    }

    async fn get_user(&self, account_id: &str, username: &str) -> StoreResult<Option<User>> {
        self.users
            .get((account_id.to_owned(), username.to_owned()))
            .await
    }

    async fn put_user(&self, user: User) -> StoreResult<bool> {
        let result = sqlx::query_scalar::<_, bool>(
            "INSERT INTO users
                 (account_id, username, kind, active, client_id, client_secret_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (account_id, username) DO UPDATE SET
                 kind = excluded.kind, active = excluded.active, client_id = excluded.client_id,
                 client_secret_hash = excluded.client_secret_hash
             RETURNING (xmax = 0)",
        )
        .bind(&user.account_id)
        .bind(&user.username)
        .bind(user.kind.as_str())
        .bind(user.active)
        .bind(&user.client_id)
        .bind(user.client_secret_hash.map(|h| h.to_vec()))
        .bind(user.created_at.millis())
        .fetch_one(&self.pool)
        .await;
        match result {
            Ok(created) => Ok(created),
            Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound("account")),
            Err(e) => Err(db_error(e)),
        }
    }

    async fn find_user_by_client_id(&self, client_id: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users WHERE client_id = $1"
        ))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|r| user_from(&r)).transpose().map_err(db_error)
    }

    async fn list_users(&self, account_id: &str) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users WHERE account_id = $1 ORDER BY username"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(user_from)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }

    async fn list_licenses(&self, account_id: &str) -> StoreResult<Vec<License>> {
        let rows = sqlx::query(
            "SELECT id, model, terms, created_at FROM licenses
             WHERE account_id = $1 ORDER BY created_at, id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get(0).map_err(db_error)?;
            let model: String = row.try_get(1).map_err(db_error)?;
            let terms: String = row.try_get(2).map_err(db_error)?;
            out.push(License {
                model: parse_model(&id, &model)?,
                terms: (*self.cache.get(&id, &terms)?).clone(),
                created_at: Timestamp::from_millis(row.try_get(3).map_err(db_error)?),
                account_id: account_id.to_owned(),
                id,
            });
        }
        Ok(out)
    }

    async fn create_license(&self, license: License) -> StoreResult<()> {
        let terms = terms_json(&license.terms)?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let inserted = sqlx::query(
            "INSERT INTO licenses (id, account_id, model, terms, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&license.id)
        .bind(&license.account_id)
        .bind(license.model.as_str())
        .bind(&terms)
        .bind(license.created_at.millis())
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(r) if r.rows_affected() == 0 => {
                return Err(StoreError::Conflict(format!(
                    "license {} exists",
                    license.id
                )))
            }
            Ok(_) => {}
            Err(e) if is_foreign_key_violation(&e) => return Err(StoreError::NotFound("account")),
            Err(e) => return Err(db_error(e)),
        }
        sqlx::query("INSERT INTO license_usage (license_id, since) VALUES ($1, $2)")
            .bind(&license.id)
            .bind(license.created_at.millis())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let mut audit = AuditRows::default();
        audit.push(license_event(
            &license,
            license.created_at,
            "license_created",
        ));
        insert_audit(&mut tx, audit).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn get_license(&self, id: &str) -> StoreResult<Option<License>> {
        self.licenses
            .get(id.to_owned())
            .await?
            .map(|found| found.map_err(StoreError::Unavailable))
            .transpose()
    }

    async fn update_license(&self, license: License, now: Timestamp) -> StoreResult<()> {
        let terms = terms_json(&license.terms)?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Takes the license row's lock: serialized with the opens deciding on the old terms.
        let updated = sqlx::query("UPDATE licenses SET terms = $2, model = $3 WHERE id = $1")
            .bind(&license.id)
            .bind(&terms)
            .bind(license.model.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound("license"));
        }
        // Live sessions end with the license: their expiry never passes its end.
        sqlx::query(
            "UPDATE sessions SET license_end = $2,
                    expires_at = LEAST(expires_at, COALESCE($2, expires_at))
             WHERE license_id = $1 AND ended_at IS NULL
               AND license_end IS DISTINCT FROM $2",
        )
        .bind(&license.id)
        .bind(license.terms.expires_at.map(Timestamp::millis))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let mut audit = AuditRows::default();
        audit.push(license_event(&license, now, "license_updated"));
        insert_audit(&mut tx, audit).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    // Interim: cross-node queueing (issue 7) is not built on PostgreSQL yet; a queueing
    // license answers at once here, as a deny license does.
    async fn admit(&self, req: OpenRequest, _wait: bool, now: Timestamp) -> StoreResult<Admission> {
        self.open_session(req, now).await.map(Admission::Opened)
    }

    async fn leave_queue(&self, _license_id: &str, _ticket: u64) -> StoreResult<bool> {
        Ok(false)
    }

    async fn list_queue(
        &self,
        license_id: &str,
        _now: Timestamp,
    ) -> StoreResult<Vec<QueuedRequest>> {
        if self.get_license(license_id).await?.is_none() {
            return Err(StoreError::NotFound("license"));
        }
        Ok(Vec::new())
    }

    async fn open_session(&self, req: OpenRequest, now: Timestamp) -> StoreResult<Opened> {
        let lane = lane_of(&req.license_id, self.opens.len());
        let (reply, rx) = oneshot::channel();
        let sender = self
            .opens
            .get(lane)
            .ok_or_else(|| StoreError::Unavailable("no open batcher".into()))?;
        sender
            .send(OpenJob { req, now, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the open batcher has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the open batcher has stopped".into()))?
    }

    async fn heartbeat(&self, session_id: &str, now: Timestamp) -> StoreResult<Session> {
        let lane = lane_of(session_id, self.heartbeats.len());
        let (reply, rx) = oneshot::channel();
        let sender = self
            .heartbeats
            .get(lane)
            .ok_or_else(|| StoreError::Unavailable("no heartbeat batcher".into()))?;
        sender
            .send(HeartbeatJob {
                session_id: session_id.to_owned(),
                now,
                reply,
            })
            .await
            .map_err(|_| StoreError::Unavailable("the heartbeat batcher has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the heartbeat batcher has stopped".into()))?
    }

    async fn end_session(
        &self,
        session_id: &str,
        reason: EndReason,
        now: Timestamp,
    ) -> StoreResult<Session> {
        let lane = lane_of(session_id, self.ends.len());
        let stopped = || StoreError::Unavailable("the logout batcher has stopped".into());
        let (reply, rx) = oneshot::channel();
        self.ends
            .get(lane)
            .ok_or_else(stopped)?
            .send(EndJob {
                session_id: session_id.to_owned(),
                reason,
                now,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    async fn get_session(&self, session_id: &str) -> StoreResult<Option<SessionLookup>> {
        let Some(found) = self.sessions.get(session_id.to_owned()).await? else {
            return Ok(None);
        };
        let row = found.map_err(StoreError::Unavailable)?;
        Ok(Some(SessionLookup {
            state: match row.ended {
                Some(reason) => SessionState::Ended(reason),
                None => SessionState::Live,
            },
            session: row.session,
        }))
    }

    async fn list_live_sessions(
        &self,
        license_id: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLS} FROM licenses l
             JOIN sessions s ON s.license_id = l.id AND s.ended_at IS NULL AND s.expires_at > $2
             WHERE l.id = $1
             ORDER BY s.opened_at, s.id"
        ))
        .bind(license_id)
        .bind(now.millis())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        if rows.is_empty() && self.get_license(license_id).await?.is_none() {
            return Err(StoreError::NotFound("license"));
        }
        rows.iter()
            .map(|r| SessionRow::read(r, &self.cache).map(|row| row.session))
            .collect()
    }

    async fn usage(&self, license_id: &str, _now: Timestamp) -> StoreResult<UsageStats> {
        let row = sqlx::query(
            "SELECT l.terms, u.since, u.high_water, u.low_water, u.denials,
                    (SELECT count(*) FROM sessions s WHERE s.license_id = l.id AND s.ended_at IS NULL)
             FROM licenses l LEFT JOIN license_usage u ON u.license_id = l.id
             WHERE l.id = $1",
        )
        .bind(license_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound("license"));
        };
        let (overdraft_in_use, activations): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM sessions
                     WHERE license_id = $1 AND ended_at IS NULL AND overdraft),
                    (SELECT count(*) FROM license_users WHERE license_id = $1 AND active)
                  + (SELECT count(*) FROM license_devices WHERE license_id = $1)",
        )
        .bind(license_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        let read = |row: &PgRow| -> Result<_, sqlx::Error> {
            Ok((
                row.try_get::<String, _>(0)?,
                row.try_get::<Option<i64>, _>(1)?,
                row.try_get::<Option<i32>, _>(2)?,
                row.try_get::<Option<i32>, _>(3)?,
                row.try_get::<Option<i64>, _>(4)?,
                row.try_get::<i64, _>(5)?,
            ))
        };
        let (terms, since, high, low, denials, in_use) = read(&row).map_err(db_error)?;
        let terms = self.cache.get(license_id, &terms)?;
        let in_use = u32::try_from(in_use).unwrap_or(u32::MAX);
        Ok(UsageStats {
            seats: terms.seats,
            in_use,
            high_water: (high.unwrap_or(0).max(0) as u32).max(in_use),
            low_water: (low.unwrap_or(0).max(0) as u32).min(in_use),
            denials: denials.unwrap_or(0).max(0) as u64,
            since: Timestamp::from_millis(since.unwrap_or(0)),
            overdraft_in_use: u32::try_from(overdraft_in_use).unwrap_or(u32::MAX),
            activations: (terms.model != LicenseModel::ConcurrentSessions)
                .then(|| u32::try_from(activations).unwrap_or(u32::MAX)),
        })
    }

    async fn reap_expired(&self, now: Timestamp) -> StoreResult<Vec<Session>> {
        let mut ended = Vec::new();
        for _ in 0..REAP_ROUNDS {
            let mut attempt = 1;
            let batch = loop {
                match reap_batch(&self.pool, &self.cache, now).await {
                    Ok(batch) => break batch,
                    Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => attempt += 1,
                    Err(e) => return Err(db_error(e)),
                }
            };
            let full = batch.len() as i64 >= REAP_BATCH;
            ended.extend(batch);
            if !full {
                break;
            }
        }
        // Expired access tokens go the same way: O(expired), by their index.
        sqlx::query(
            "DELETE FROM credentials WHERE hash IN (
                 SELECT hash FROM credentials WHERE expires_at <= $1
                 LIMIT 1000 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now.millis())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(ended)
    }

    async fn in_use_by_license(&self) -> StoreResult<Vec<(String, u32)>> {
        let rows = sqlx::query(
            "SELECT l.id, count(s.id) FROM licenses l
             LEFT JOIN sessions s ON s.license_id = l.id AND s.ended_at IS NULL
             GROUP BY l.id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>(0)?,
                    u32::try_from(r.try_get::<i64, _>(1)?).unwrap_or(u32::MAX),
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }

    async fn audit_log(&self, license_id: &str, limit: usize) -> StoreResult<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT at, account_id, license_id, session_id, username, event, detail
             FROM audit_events WHERE license_id = $1 ORDER BY seq LIMIT $2",
        )
        .bind(license_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    at: Timestamp::from_millis(r.try_get(0)?),
                    account_id: r.try_get(1)?,
                    license_id: r.try_get(2)?,
                    session_id: r.try_get(3)?,
                    username: r.try_get(4)?,
                    event: r.try_get(5)?,
                    detail: r.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }

    async fn set_license_user(
        &self,
        license_id: &str,
        username: &str,
        active: bool,
        now: Timestamp,
    ) -> StoreResult<(LicenseUserChange, bool)> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let terms = lock_license(&mut tx, &self.cache, license_id).await?;
        let previous: Option<bool> = sqlx::query_scalar(
            "SELECT active FROM license_users WHERE license_id = $1 AND username = $2",
        )
        .bind(license_id)
        .bind(username)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let was_active = previous.unwrap_or(false);
        if active {
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM license_users WHERE license_id = $1 AND active",
            )
            .bind(license_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            decide_user_activation(&terms, u32::try_from(count).unwrap_or(u32::MAX), was_active)?;
        } else {
            decide_user_activation(&terms, 0, true)?;
        }
        sqlx::query(
            "INSERT INTO license_users (license_id, username, active, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (license_id, username)
             DO UPDATE SET active = excluded.active, updated_at = excluded.updated_at",
        )
        .bind(license_id)
        .bind(username)
        .bind(active)
        .bind(now.millis())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let ended = if active {
            Vec::new()
        } else {
            end_sessions(
                &mut tx,
                &self.cache,
                "s.license_id = $3 AND s.username = $4",
                &[license_id, username],
                EndReason::UserDeactivated,
                now,
            )
            .await?
        };
        tx.commit().await.map_err(db_error)?;
        Ok((
            LicenseUserChange {
                user: LicenseUser {
                    license_id: license_id.to_owned(),
                    username: username.to_owned(),
                    active,
                    updated_at: now,
                },
                ended,
            },
            previous.is_none(),
        ))
    }

    async fn list_license_users(&self, license_id: &str) -> StoreResult<Vec<LicenseUser>> {
        if self.get_license(license_id).await?.is_none() {
            return Err(StoreError::NotFound("license"));
        }
        let rows = sqlx::query(
            "SELECT license_id, username, active, updated_at FROM license_users
             WHERE license_id = $1 ORDER BY username",
        )
        .bind(license_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(LicenseUser {
                    license_id: r.try_get(0)?,
                    username: r.try_get(1)?,
                    active: r.try_get(2)?,
                    updated_at: Timestamp::from_millis(r.try_get(3)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }

    async fn activate_device(
        &self,
        license_id: &str,
        fingerprint: &str,
        name: &str,
        now: Timestamp,
    ) -> StoreResult<(DeviceActivation, bool)> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let terms = lock_license(&mut tx, &self.cache, license_id).await?;
        let existing = sqlx::query(
            "SELECT name, activated_at FROM license_devices
             WHERE license_id = $1 AND fingerprint = $2",
        )
        .bind(license_id)
        .bind(fingerprint)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM license_devices WHERE license_id = $1")
                .bind(license_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        decide_device_activation(
            &terms,
            u32::try_from(count).unwrap_or(u32::MAX),
            existing.is_some(),
        )?;
        if let Some(row) = existing {
            let device = DeviceActivation {
                license_id: license_id.to_owned(),
                fingerprint: fingerprint.to_owned(),
                name: row.try_get(0).map_err(db_error)?,
                activated_at: Timestamp::from_millis(row.try_get(1).map_err(db_error)?),
            };
            return Ok((device, false));
        }
        sqlx::query(
            "INSERT INTO license_devices (license_id, fingerprint, name, activated_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(license_id)
        .bind(fingerprint)
        .bind(name)
        .bind(now.millis())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let account_id: String =
            sqlx::query_scalar("SELECT account_id FROM licenses WHERE id = $1")
                .bind(license_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        let mut audit = AuditRows::default();
        audit.push(AuditEvent {
            at: now,
            account_id,
            license_id: license_id.to_owned(),
            session_id: None,
            username: None,
            event: "device_activated".into(),
            detail: Some(fingerprint.to_owned()),
        });
        insert_audit(&mut tx, audit).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok((
            DeviceActivation {
                license_id: license_id.to_owned(),
                fingerprint: fingerprint.to_owned(),
                name: name.to_owned(),
                activated_at: now,
            },
            true,
        ))
    }

    async fn deactivate_device(
        &self,
        license_id: &str,
        fingerprint: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        lock_license(&mut tx, &self.cache, license_id).await?;
        let account_id: Option<String> = sqlx::query_scalar(
            "DELETE FROM license_devices d USING licenses l
             WHERE d.license_id = $1 AND d.fingerprint = $2 AND l.id = d.license_id
             RETURNING l.account_id",
        )
        .bind(license_id)
        .bind(fingerprint)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(account_id) = account_id else {
            return Err(StoreError::NotFound("device"));
        };
        let ended = end_sessions(
            &mut tx,
            &self.cache,
            "s.license_id = $3 AND s.device_id = $4",
            &[license_id, fingerprint],
            EndReason::DeviceDeactivated,
            now,
        )
        .await?;
        let mut audit = AuditRows::default();
        audit.push(AuditEvent {
            at: now,
            account_id,
            license_id: license_id.to_owned(),
            session_id: None,
            username: None,
            event: "device_deactivated".into(),
            detail: Some(fingerprint.to_owned()),
        });
        insert_audit(&mut tx, audit).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(ended)
    }

    async fn list_devices(&self, license_id: &str) -> StoreResult<Vec<DeviceActivation>> {
        if self.get_license(license_id).await?.is_none() {
            return Err(StoreError::NotFound("license"));
        }
        let rows = sqlx::query(
            "SELECT license_id, fingerprint, name, activated_at FROM license_devices
             WHERE license_id = $1 ORDER BY activated_at, fingerprint",
        )
        .bind(license_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(DeviceActivation {
                    license_id: r.try_get(0)?,
                    fingerprint: r.try_get(1)?,
                    name: r.try_get(2)?,
                    activated_at: Timestamp::from_millis(r.try_get(3)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }

    async fn list_user_sessions(
        &self,
        account_id: &str,
        username: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLS} FROM sessions s JOIN licenses l ON l.id = s.license_id
             WHERE s.username = $2 AND l.account_id = $1 AND s.ended_at IS NULL
               AND s.expires_at > $3
             ORDER BY s.opened_at, s.id"
        ))
        .bind(account_id)
        .bind(username)
        .bind(now.millis())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| SessionRow::read(r, &self.cache).map(|row| row.session))
            .collect()
    }

    async fn end_user_sessions(
        &self,
        account_id: &str,
        username: &str,
        reason: EndReason,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let ended = end_sessions(
            &mut tx,
            &self.cache,
            "l.account_id = $3 AND s.username = $4",
            &[account_id, username],
            reason,
            now,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(ended)
    }
}

/// Locks a license row (serializing with the opens of every node) and answers its terms.
async fn lock_license(
    tx: &mut Transaction<'_, Postgres>,
    cache: &TermsCache,
    license_id: &str,
) -> StoreResult<Arc<LicenseTerms>> {
    let terms: Option<String> =
        sqlx::query_scalar("SELECT terms FROM licenses WHERE id = $1 FOR UPDATE")
            .bind(license_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
    let Some(terms) = terms else {
        return Err(StoreError::NotFound("license"));
    };
    cache.get(license_id, &terms)
}

/// Ends the live sessions matching `condition` (over `s` sessions and `l` licenses, with
/// parameters from `$3`) for `reason`, with their `ended` audit events.
async fn end_sessions(
    tx: &mut Transaction<'_, Postgres>,
    cache: &TermsCache,
    condition: &str,
    params: &[&str],
    reason: EndReason,
    now: Timestamp,
) -> StoreResult<Vec<Session>> {
    let sql = format!(
        "UPDATE sessions s SET ended_at = $1, end_reason = $2
         FROM licenses l
         WHERE l.id = s.license_id AND s.ended_at IS NULL AND {condition}
         RETURNING {SESSION_COLS}"
    );
    let mut query = sqlx::query(&sql).bind(now.millis()).bind(reason.as_str());
    for p in params {
        query = query.bind(*p);
    }
    let rows = query.fetch_all(&mut **tx).await.map_err(db_error)?;
    let mut audit = AuditRows::default();
    let mut ended = Vec::with_capacity(rows.len());
    for row in &rows {
        let session = SessionRow::read(row, cache)?.session;
        audit.session_event(&session, now, "ended", reason.as_str());
        ended.push(session);
    }
    insert_audit(tx, audit).await.map_err(db_error)?;
    Ok(ended)
}

fn license_event(license: &License, at: Timestamp, event: &str) -> AuditEvent {
    AuditEvent {
        at,
        account_id: license.account_id.clone(),
        license_id: license.id.clone(),
        session_id: None,
        username: None,
        event: event.into(),
        detail: None,
    }
}

/// One reaper transaction: lock up to `REAP_BATCH` expired live sessions no other node holds,
/// end them and write their events.
async fn reap_batch(
    pool: &PgPool,
    cache: &TermsCache,
    now: Timestamp,
) -> Result<Vec<Session>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(&format!(
        "SELECT {SESSION_COLS} FROM sessions s JOIN licenses l ON l.id = s.license_id
         WHERE s.ended_at IS NULL AND s.expires_at <= $1
         ORDER BY s.expires_at LIMIT $2
         FOR UPDATE OF s SKIP LOCKED"
    ))
    .bind(now.millis())
    .bind(REAP_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(Vec::new());
    }
    let mut sessions = Vec::with_capacity(rows.len());
    for row in &rows {
        match SessionRow::read(row, cache) {
            Ok(r) => sessions.push(r.session),
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable session"),
        }
    }
    let mut audit = AuditRows::default();
    end_expired(&mut tx, &sessions, now, &mut audit).await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(sessions)
}
