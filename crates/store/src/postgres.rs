//! The PostgreSQL backend: several server nodes share one database, which is the single source
//! of truth. No node keeps authoritative state in memory, so any node serves any request and a
//! node can die (`kill -9`) at any moment without losing an acknowledged session.
//!
//! # Seat arbitration
//!
//! The seat rule is `leasehold_core::decide_open`, applied as `crate::admission` says (seat view,
//! verdict, audit events, the same for SQLite); this module only counts what the view needs in
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
//! # The queue: one per license, across nodes
//!
//! On an `on_full: "queue"` license a client may wait for a seat. The queue lives in the
//! database (`queue_entries`), so it is one queue whichever nodes the waiters are connected to;
//! each node only keeps, in memory, the channels of its own waiting clients (ticket -> sender).
//!
//! - **Admission.** An open batch that locked a queueing license also counts its live waiting
//!   entries and takes its longest ones (`FOR UPDATE`, at most `QUEUE_HEADS`). A newcomer is
//!   decided by `decide_open`, then `must_queue(terms, &decision, waiting)`: a newcomer never
//!   takes a seat owed to waiters (strict first come, first served), and a reserved user with
//!   no session takes their reserved slot at once. With `wait` the request gets an entry
//!   (`INSERT … RETURNING ticket`; the ticket sequence is taken under the license lock, so
//!   tickets are the order of arrival across nodes) and `Admission::Queued` with its position;
//!   without, it is refused with `no_seat_available`. The entry's sender is registered with
//!   the node *before* the batch commits: no outcome can be committed, let alone notified,
//!   before its waiter is known.
//! - **Grants.** Whatever may free a seat of a queueing license (logout or revoke, the reaper,
//!   a heartbeat or logout that finds its session expired, deactivating a user or device,
//!   `end_user_sessions`, `update_license`, a waiter leaving) pushes a *serve* job into the
//!   license's open lane, after its own commit. The next batch of that lane (the same code: the
//!   license lock, the views, `decide_open`) serves the heads in ticket order *before* any
//!   newcomer of the batch: a granted head gets its session inserted on its behalf (with the
//!   waiter's `new_id`, audit detail `… queued`) and `state = 'granted'`; a head refused for
//!   another reason (suspended, per-user limit…) gets `state = 'refused'` with the refusal;
//!   the first head refused for want of a seat stops the license's queue. In the same
//!   transaction `NOTIFY leasehold_queue, '<node_id>:<ticket>'` goes to the other nodes whose
//!   waiters were served (delivered on commit); this node's own waiters get their outcome
//!   directly after the commit. A batch that touches no queueing license runs no queue
//!   statement at all.
//! - **Delivery.** Each node LISTENs (`PgListener`, which reconnects) and, on a notice for one
//!   of its tickets, reads the entry (and the session) and sends `Grant { opened, durable }`
//!   (durable already: the grant was committed before it was notified) or the refusal. As a
//!   safety net against missed notices, each node sweeps once a second: one statement refreshes
//!   its `nodes.seen_at` (by the database clock, `clock_timestamp()`: no wall clock is read
//!   here), purges its settled entries and reads the outcomes of its still-waiting tickets.
//!   Every few sweeps it also serves again the licenses it has waiters in (a lost serve
//!   trigger, e.g. a node killed between a logout and its serve, costs seconds, not the wait).
//! - **Leaving.** `leave_queue` is `UPDATE … SET state = 'left' WHERE state = 'waiting'`. When
//!   it changes nothing the entry was served meanwhile: its outcome is handed to the waiter
//!   before `leave_queue` answers false, so the caller's next look at its ticket finds it. An
//!   outcome is sent under the lock of the node's waiter map, so whoever finds a ticket gone
//!   from the map knows its outcome was handed over. A grant whose receiver is gone (a client
//!   that went away without leaving) is ended at once, which frees the seat and serves the
//!   queue again: no seat is held by nobody.
//! - **Dead nodes.** A node's waiters are live while its `nodes` row was seen in the last 5 s
//!   *and* the backend of its LISTEN connection (`nodes.pid`) still exists: a killed node's
//!   connections close at once, so grants skip its waiters within milliseconds; a node cut
//!   off from the network is skipped after 5 s. An entry is also skipped after its deadline
//!   (the license's longest wait plus a margin). A node that stops (the store is dropped or
//!   closed) deletes its entries; nodes unseen for 10 minutes are forgotten with theirs.
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
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use leasehold_core::seats::{decide_device_activation, decide_user_activation};
use leasehold_core::session::SessionClock;
use leasehold_core::{LicenseTerms, RuleError, SessionState, Timestamp, Username};
use leasehold_proto::{EndReason, LicenseModel, OnFull};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::admission::{self, OpenedVia, SeatCounts, Verdict};
use crate::codec::{
    hash_from, parse_end_reason, parse_kind, parse_model, parse_terms, principal_columns,
    principal_from, refusal_from, refusal_json, session_clock, terms_json,
};
use crate::pg_clock::DbClock;
pub use crate::pg_clock::NodeClock;
use crate::records::*;
use crate::{Store, StoreError, StoreResult};

/// The migrations, in order; migration N here is migration N of the SQLite history.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_init.sql"),
    include_str!("../migrations/postgres/0002_models.sql"),
    include_str!("../migrations/postgres/0003_queue.sql"),
];
/// The schema version this binary migrates to (the same number on SQLite).
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();
/// Key of the advisory lock that serializes migrations of nodes starting at once.
const MIGRATION_LOCK: i64 = 0x6c65_6173_6568_6f6c; // "leasehol"
/// Open batchers per node; a license always goes to the same one.
const OPEN_LANES: usize = 4;
/// Heartbeat batchers per node; a session always goes to the same one. One lane (as for ends
/// and point reads): a batch takes whatever arrived while the previous one ran, so one lane
/// makes batches twice as large as two lanes under the same load, and the statement a batch
/// costs (PostgreSQL's and the node's CPU per statement dominate) is paid half as often.
/// `leasehold bench pg` (3 nodes, 64 connections): two lanes each → one, CPU per heartbeat
/// (nodes + PostgreSQL) ~680 → ~390 µs, per checkout cycle ~1.8 → ~1.2 ms (BENCHMARKS.md).
const HEARTBEAT_LANES: usize = 1;
/// Most requests in one batch.
const MAX_BATCH: usize = 512;
/// Logout/revoke batchers per node; a session always goes to the same one.
const END_LANES: usize = 1;
/// Batchers per node for each kind of point read (credential, user, license, session).
const READ_LANES: usize = 1;
/// Most expired sessions ended by one reaper transaction.
const REAP_BATCH: i64 = 1000;
/// Most reaper transactions per `reap_expired` call (then the next tick goes on).
const REAP_ROUNDS: usize = 20;
/// Attempts of a batch transaction that failed on a deadlock or serialization conflict.
const MAX_ATTEMPTS: usize = 5;
/// The NOTIFY channel of queue outcomes; a payload is `<node_id>:<ticket>`.
const QUEUE_CHANNEL: &str = "leasehold_queue";
/// How often a node refreshes its `nodes.seen_at` and checks its own waiting tickets.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// SQL condition (over `nodes n`): the node is alive. It was seen lately (database clock; a node
/// unseen for 5 s, five sweeps missed, is gone) and its LISTEN connection's backend is still
/// there (a killed node's connections close at once, so its death shows in milliseconds).
/// Grants skip the waiters of other nodes, listings omit them.
const LIVE_NODE: &str = "n.seen_at > now() - interval '5 seconds' \
     AND (n.pid IS NULL OR EXISTS (SELECT 1 FROM pg_stat_get_activity(n.pid)))";
/// Nodes unseen this long are forgotten, with their queue entries.
const NODE_FORGET: &str = "10 minutes";
/// Most queue heads of one license one batch takes (the next batch goes on).
const QUEUE_HEADS: i64 = 64;
/// Added to a license's longest wait for a queue entry's deadline.
const QUEUE_DEADLINE_MARGIN_MILLIS: i64 = 5_000;
/// Sweeps between two safety-net serves of the licenses this node has waiters on.
const RESERVE_EVERY: u32 = 5;
/// Sweeps between two clean-ups of nodes gone for long.
const CLEANUP_EVERY: u32 = 60;
/// Pause before the queue listener reconnects after a failure.
const LISTEN_RETRY: Duration = Duration::from_millis(500);

/// Connection settings of a `PgStore`.
#[derive(Clone)]
pub struct PgOptions {
    /// Largest number of connections this node holds.
    pub max_connections: u32,
    /// How long a request waits for a connection before it fails as unavailable.
    pub acquire_timeout: Duration,
    /// This node's clock: set, session times are judged by the database's clock (see
    /// `pg_clock`); unset, the times callers pass are used as they are.
    pub node_clock: Option<NodeClock>,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("database_clock", &self.node_clock.is_some())
            .finish()
    }
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            node_clock: None,
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
        let terms = Arc::new(parse_terms(license_id, json)?);
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
                .map_or(EndReason::Unknown, parse_end_reason)
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
            clock: session_clock(
                row.try_get(7).map_err(get)?,
                row.try_get(8).map_err(get)?,
                row.try_get(9).map_err(get)?,
                row.try_get(14).map_err(get)?,
            ),
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
        audit.push(admission::ended(s, now, s.clock.expiry_reason()));
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
        clock: session_clock(
            row.try_get(6)?,
            row.try_get(7)?,
            row.try_get(8)?,
            row.try_get(10)?,
        ),
        heartbeat_interval_secs: license.license.terms.heartbeat_interval_secs(),
        overdraft: row.try_get(9)?,
    })
}

// ---------------------------------------------------------------------------------------------
// Opens, and grants to the waiters of a license's queue
// ---------------------------------------------------------------------------------------------

struct OpenJob {
    req: OpenRequest,
    /// May join the license's queue instead of being refused (`admit` with `wait`).
    wait: bool,
    now: Timestamp,
    reply: oneshot::Sender<StoreResult<Admission>>,
}

/// What an open lane carries: opens, and requests to serve a license's queue because a seat
/// may have freed. Both go through the same batch code (license lock, views, `decide_open`).
enum LaneJob {
    Open(OpenJob),
    Serve { license_id: String, now: Timestamp },
}

/// A waiting queue entry at the head of its license's queue, locked by the batch.
struct QueueHead {
    ticket: i64,
    node_id: String,
    req: OpenRequest,
}

/// What a batch decided for a queue head: a session (granted) or a refusal.
struct Served {
    ticket: i64,
    node_id: String,
    outcome: Result<Opened, RuleError>,
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
    /// The batch counts and serves this license's queue (it queues, or was asked to serve).
    queue: bool,
    /// Live waiters not served yet: what `must_queue` and queue positions count.
    waiting: u32,
    /// The longest live waiters, in ticket order (at most `QUEUE_HEADS`), locked.
    heads: Vec<QueueHead>,
}

/// The counts the batch read under the license's lock, updated as it grants. Registrations are
/// known for the asking users and devices only (see `model_views`).
impl SeatCounts for LicState {
    fn terms(&self) -> &LicenseTerms {
        &self.license.terms
    }

    fn live_sessions(&self) -> u32 {
        self.live
    }

    fn user_live_sessions(&self, username: &str) -> u32 {
        self.per_user.get(username).copied().unwrap_or(0)
    }

    fn active_users(&self) -> u32 {
        self.active_users
    }

    fn user_active(&self, username: &str) -> bool {
        self.active_asking.contains(username)
    }

    fn device_activated(&self, device_id: &str) -> bool {
        self.activated_asking.contains(device_id)
    }
}

impl LicState {
    /// Takes a seat for `req` (granted by the caller): the new session, counted in the view,
    /// with its `opened` event.
    fn take_seat(
        &mut self,
        req: &OpenRequest,
        overdraft: bool,
        now: Timestamp,
        via: OpenedVia,
        audit: &mut AuditRows,
    ) -> Session {
        let terms = &self.license.terms;
        let session = Session {
            id: req.new_id.clone(),
            license_id: self.id.clone(),
            account_id: self.account_id.clone(),
            username: req.username.clone(),
            kind: req.kind,
            device_id: req.device_id.clone(),
            instance_id: req.instance_id.clone(),
            clock: SessionClock::open(req.kind, terms, now),
            heartbeat_interval_secs: terms.heartbeat_interval_secs(),
            overdraft,
        };
        self.live += 1;
        *self.per_user.entry(req.username.clone()).or_default() += 1;
        audit.push(admission::opened(&session, now, via));
        session
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
    /// Joined the license's queue (the ticket is filled in once the entry is inserted).
    Queued(Option<QueueTicket>),
}

/// What an open batch decided.
#[derive(Default)]
struct BatchDone {
    outcomes: Vec<Outcome>,
    /// Queue heads granted or refused (delivered after the commit).
    served: Vec<Served>,
    /// Licenses whose queue has more heads to serve than the batch took.
    again: HashMap<String, Timestamp>,
}

async fn open_batcher(pool: PgPool, queue: Arc<QueueCtx>, mut rx: mpsc::Receiver<LaneJob>) {
    let mut lane_jobs = Vec::with_capacity(MAX_BATCH);
    // Licenses with queue heads left over by the previous batch: served by the next one.
    let mut pending: HashMap<String, Timestamp> = HashMap::new();
    loop {
        if pending.is_empty() {
            if rx.recv_many(&mut lane_jobs, MAX_BATCH).await == 0 {
                break;
            }
        } else {
            while lane_jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => lane_jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        let mut serve = std::mem::take(&mut pending);
        let mut batch = Vec::with_capacity(lane_jobs.len());
        for job in lane_jobs.drain(..) {
            match job {
                LaneJob::Open(job) => batch.push(job),
                LaneJob::Serve { license_id, now } => {
                    let at = serve.entry(license_id).or_insert(now);
                    *at = (*at).max(now);
                }
            }
        }
        let mut attempt = 1;
        let result = loop {
            match open_batch(&pool, &queue, &batch, &serve).await {
                Ok(done) => break Ok(done),
                Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "open batch conflicted; retrying");
                    attempt += 1;
                }
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(done) => {
                pending = done.again;
                for served in done.served {
                    if served.node_id == queue.node_id {
                        queue.deliver(served.ticket, served.outcome);
                    }
                }
                answer_opens(batch, done.outcomes);
            }
            Err(e) => {
                // The serve requests of a failed batch are not lost for good: every node serves
                // the licenses it has waiters on again every few seconds (see `sweeper`).
                tracing::warn!(error = %e, opens = batch.len(), serves = serve.len(), "open batch failed");
                let err = db_error(e);
                let outcomes = batch
                    .iter()
                    .map(|_| Outcome::Done(Err(clone_error(&err))))
                    .collect();
                answer_opens(batch, outcomes);
            }
        }
    }
}

fn answer_opens(batch: Vec<OpenJob>, results: Vec<Outcome>) {
    let resolved: Vec<Option<StoreResult<Opened>>> = results
        .iter()
        .map(|o| match o {
            Outcome::Done(Ok(opened)) => Some(Ok(opened.clone())),
            Outcome::Done(Err(e)) => Some(Err(clone_error(e))),
            Outcome::SameAs(j) => Some(match results.get(*j) {
                Some(Outcome::Done(Ok(opened))) => Ok(Opened {
                    session: opened.session.clone(),
                    created: false,
                }),
                Some(Outcome::Done(Err(e))) => Err(clone_error(e)),
                _ => Err(StoreError::Unavailable("open batch lost a result".into())),
            }),
            Outcome::Queued(_) => None,
        })
        .collect();
    for ((job, outcome), resolved) in batch.into_iter().zip(results).zip(resolved) {
        let answer = match (outcome, resolved) {
            (Outcome::Queued(Some(ticket)), _) => Ok(Admission::Queued(ticket)),
            (_, Some(result)) => result.map(Admission::Opened),
            (_, None) => Err(StoreError::Unavailable(
                "open batch lost a queue ticket".into(),
            )),
        };
        // A queued client gone meanwhile drops its ticket: the sweep takes it out of the queue.
        let _ = job.reply.send(answer);
    }
}

/// Takes the queue's live waiters (count and locked heads) of the batch's licenses that serve
/// their queue. A waiter is live when its node was seen lately and its deadline is ahead.
async fn queue_heads(
    tx: &mut Transaction<'_, Postgres>,
    lics: &mut HashMap<String, LicState>,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let queueing: Vec<String> = lics
        .values()
        .filter(|l| l.queue)
        .map(|l| l.license.id.clone())
        .collect();
    if queueing.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query(&format!(
        "SELECT k.id, c.waiting, h.ticket, h.node_id, h.username, h.kind, h.device_id,
                h.instance_id, h.new_id
         FROM unnest($1::text[]) AS k(id)
         CROSS JOIN LATERAL (
             SELECT count(*) AS waiting FROM queue_entries q JOIN nodes n ON n.node_id = q.node_id
             WHERE q.license_id = k.id AND q.state = 'waiting' AND q.deadline > $2 AND {LIVE_NODE}
         ) AS c
         LEFT JOIN LATERAL (
             SELECT q.ticket, q.node_id, q.username, q.kind, q.device_id, q.instance_id, q.new_id
             FROM queue_entries q JOIN nodes n ON n.node_id = q.node_id
             WHERE q.license_id = k.id AND q.state = 'waiting' AND q.deadline > $2 AND {LIVE_NODE}
             ORDER BY q.ticket LIMIT $3
             FOR UPDATE OF q
         ) AS h ON c.waiting > 0
         ORDER BY k.id, h.ticket"
    ))
    .bind(&queueing)
    .bind(now.millis())
    .bind(QUEUE_HEADS)
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        let license_id: String = row.try_get(0)?;
        let Some(lic) = lics.get_mut(&license_id) else {
            continue;
        };
        lic.waiting = u32::try_from(row.try_get::<i64, _>(1)?).unwrap_or(u32::MAX);
        let Some(ticket) = row.try_get::<Option<i64>, _>(2)? else {
            continue;
        };
        let kind: String = row.try_get(5)?;
        lic.heads.push(QueueHead {
            ticket,
            node_id: row.try_get(3)?,
            req: OpenRequest {
                new_id: row.try_get(8)?,
                license_id: license_id.clone(),
                username: row.try_get(4)?,
                kind: parse_kind(&kind),
                device_id: row.try_get(6)?,
                instance_id: row.try_get(7)?,
            },
        });
    }
    Ok(())
}

/// One open batch: one transaction, a handful of statements whatever its size (three more
/// when it touches a queueing license: the queue's heads, new entries, outcome notices).
async fn open_batch(
    pool: &PgPool,
    queue: &QueueCtx,
    jobs: &[OpenJob],
    serve: &HashMap<String, Timestamp>,
) -> Result<BatchDone, sqlx::Error> {
    if jobs.is_empty() && serve.is_empty() {
        return Ok(BatchDone::default());
    }
    let now = jobs
        .iter()
        .map(|j| j.now)
        .chain(serve.values().copied())
        .max()
        .unwrap_or(Timestamp::from_millis(0));
    let mut tx = pool.begin().await?;

    // 1. Lock the licenses, in id order: the seat decision of each is now ours alone.
    let mut license_ids: Vec<String> = jobs.iter().map(|j| j.req.license_id.clone()).collect();
    license_ids.extend(serve.keys().cloned());
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
        let parsed =
            parse_model(&id, &model).and_then(|model| Ok((model, parse_terms(&id, &terms)?)));
        let (model, terms) = match parsed {
            Ok(v) => v,
            Err(e) => {
                broken.insert(id, e);
                continue;
            }
        };
        let account_id: String = row.try_get(1)?;
        let queue = terms.on_full == OnFull::Queue || serve.contains_key(&id);
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
                queue,
                waiting: 0,
                heads: Vec::new(),
            },
        );
    }
    let locked: Vec<String> = lics.keys().cloned().collect();

    // 2. The queues of queueing licenses: how many wait, and the longest waiters (locked, so
    //    that a waiter leaving meanwhile waits for this batch and then finds it served).
    queue_heads(&mut tx, &mut lics, now).await?;

    // The client instances asking in this batch: newcomers and queue heads.
    let mut asking: Vec<InstanceKey> = jobs
        .iter()
        .filter(|j| lics.contains_key(&j.req.license_id))
        .map(|j| instance_key(&j.req))
        .collect();
    for lic in lics.values() {
        asking.extend(lic.heads.iter().map(|h| instance_key(&h.req)));
    }

    // 3. The live sessions of the asking client instances (idempotent re-open), locked.
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
        .bind(asking.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
        .bind(asking.iter().map(|k| k.1.clone()).collect::<Vec<_>>())
        .bind(asking.iter().map(|k| k.2.clone()).collect::<Vec<_>>())
        .bind(asking.iter().map(|k| k.3.clone()).collect::<Vec<_>>())
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

    // 4. Reclaim the batch's licenses' expired sessions before counting (the reaper would
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

    // 5. The seat views: live sessions per license, per asking user and per reserved user.
    if !locked.is_empty() {
        let mut pair_l = Vec::new();
        let mut pair_u = Vec::new();
        for k in &asking {
            pair_l.push(k.0.clone());
            pair_u.push(k.1.clone());
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

    // 6. Serve the queues first: a freed seat belongs to the longest waiter, before any
    //    newcomer of this batch. Heads are taken in ticket order; the first one refused for
    //    want of a seat stops its license's queue (strict first come, first served).
    let mut opened: Vec<Session> = Vec::new();
    let mut granted_here: HashMap<InstanceKey, Session> = HashMap::new();
    let mut served: Vec<Served> = Vec::new();
    let mut again: HashMap<String, Timestamp> = HashMap::new();
    let mut queued_ids: Vec<&String> = lics
        .iter()
        .filter(|(_, l)| !l.heads.is_empty())
        .map(|(id, _)| id)
        .collect();
    queued_ids.sort();
    let queued_ids: Vec<String> = queued_ids.into_iter().cloned().collect();
    for id in queued_ids {
        let Some(lic) = lics.get_mut(&id) else {
            continue;
        };
        let heads = std::mem::take(&mut lic.heads);
        let fetched = heads.len();
        let mut taken = 0;
        for head in heads {
            let key = instance_key(&head.req);
            let outcome = if let Some(s) = granted_here.get(&key).or_else(|| existing.get(&key)) {
                // The waiting instance has a live session already: it is the answer.
                Ok(Opened {
                    session: s.clone(),
                    created: false,
                })
            } else {
                match Username::parse(&head.req.username) {
                    Err(e) => Err(e),
                    Ok(username) => {
                        let device_id = &head.req.device_id;
                        let decision = admission::decide(&*lic, &username, device_id, now);
                        match admission::queue_head_verdict(decision, device_id) {
                            Verdict::Queue => break,
                            Verdict::Refuse { refusal, .. } => Err(refusal),
                            Verdict::Grant { overdraft } => {
                                let session = lic.take_seat(
                                    &head.req,
                                    overdraft,
                                    now,
                                    OpenedVia::Queue,
                                    &mut audit,
                                );
                                opened.push(session.clone());
                                granted_here.insert(key, session.clone());
                                Ok(Opened {
                                    session,
                                    created: true,
                                })
                            }
                        }
                    }
                }
            };
            taken += 1;
            lic.waiting = lic.waiting.saturating_sub(1);
            served.push(Served {
                ticket: head.ticket,
                node_id: head.node_id,
                outcome,
            });
        }
        if taken == fetched && lic.waiting > 0 {
            again.insert(id, now);
        }
    }

    // 7. Decide every newcomer, in arrival order, with the core rule; on a queueing license a
    //    newcomer never takes a seat owed to waiters (`must_queue`).
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(jobs.len());
    let mut seen: HashMap<InstanceKey, usize> = HashMap::new();
    let mut slides: (Vec<String>, Vec<i64>) = (Vec::new(), Vec::new());
    // (job index, position) of the newcomers that join a queue.
    let mut to_queue: Vec<(usize, u32)> = Vec::new();
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
            if !matches!(outcomes.get(first), Some(Outcome::Queued(_))) {
                outcomes.push(Outcome::SameAs(first));
                continue;
            }
        } else {
            seen.insert(key.clone(), i);
        }
        if let Some(session) = granted_here.get(&key) {
            outcomes.push(Outcome::Done(Ok(Opened {
                session: session.clone(),
                created: false,
            })));
            continue;
        }
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
        let decision = admission::decide(&*lic, &username, &req.device_id, now);
        let waiting = lic.waiting as usize;
        let verdict = admission::newcomer_verdict(
            &lic.license.terms,
            decision,
            waiting,
            job.wait,
            &req.device_id,
        );
        let overdraft = match verdict {
            Verdict::Grant { overdraft } => overdraft,
            Verdict::Queue => {
                lic.waiting += 1;
                to_queue.push((i, lic.waiting));
                outcomes.push(Outcome::Queued(None));
                continue;
            }
            Verdict::Refuse { refusal, denial } => {
                if denial {
                    lic.denials += 1;
                }
                audit.push(admission::denied(
                    &lic.license,
                    &req.username,
                    &refusal,
                    now,
                ));
                outcomes.push(Outcome::Done(Err(StoreError::Rule(refusal))));
                continue;
            }
        };
        let session = lic.take_seat(req, overdraft, now, OpenedVia::Request, &mut audit);
        opened.push(session.clone());
        outcomes.push(Outcome::Done(Ok(Opened {
            session,
            created: true,
        })));
    }

    // 8. New queue entries (their tickets taken here, under the license locks, in arrival
    //    order), each registered with this node's waiters *before* the commit: no outcome
    //    can be committed, let alone notified, before its waiter is known here.
    let mut registration = Registration {
        queue,
        tickets: Vec::new(),
    };
    if !to_queue.is_empty() {
        let mut cols: [Vec<String>; 6] = Default::default();
        let mut deadlines: Vec<i64> = Vec::with_capacity(to_queue.len());
        for &(i, _) in &to_queue {
            let Some(job) = jobs.get(i) else { continue };
            let req = &job.req;
            cols[0].push(req.license_id.clone());
            cols[1].push(req.username.clone());
            cols[2].push(req.kind.as_str().to_owned());
            cols[3].push(req.device_id.clone());
            cols[4].push(req.instance_id.clone());
            cols[5].push(req.new_id.clone());
            let max_wait = lics
                .get(&req.license_id)
                .map_or(0, |l| l.license.terms.max_queue_wait_secs);
            let wait_millis = i64::try_from(max_wait.saturating_mul(1000)).unwrap_or(i64::MAX);
            deadlines.push(
                now.millis()
                    .saturating_add(wait_millis)
                    .saturating_add(QUEUE_DEADLINE_MARGIN_MILLIS),
            );
        }
        let [licenses, users, kinds, devices, instances, new_ids] = cols;
        let rows = sqlx::query(
            "INSERT INTO queue_entries (license_id, node_id, username, kind, device_id,
                                        instance_id, new_id, enqueued_at, deadline)
             SELECT v.l, $1, v.u, v.k, v.d, v.i, v.n, $2, v.dl
             FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::int8[]) WITH ORDINALITY AS v(l, u, k, d, i, n, dl, ord)
             ORDER BY v.ord
             RETURNING ticket, new_id",
        )
        .bind(&queue.node_id)
        .bind(now.millis())
        .bind(licenses)
        .bind(users)
        .bind(kinds)
        .bind(devices)
        .bind(instances)
        .bind(new_ids)
        .bind(deadlines)
        .fetch_all(&mut *tx)
        .await?;
        let mut tickets: HashMap<String, i64> = HashMap::new();
        for row in &rows {
            tickets.insert(row.try_get(1)?, row.try_get(0)?);
        }
        for (i, position) in to_queue {
            let (Some(job), Some(slot)) = (jobs.get(i), outcomes.get_mut(i)) else {
                continue;
            };
            let Some(&ticket) = tickets.get(&job.req.new_id) else {
                *slot = Outcome::Done(Err(StoreError::Unavailable(
                    "a queue entry was not stored".into(),
                )));
                continue;
            };
            let granted = registration.add(ticket, &job.req.license_id);
            *slot = Outcome::Queued(Some(QueueTicket {
                ticket: ticket as u64,
                position,
                granted,
            }));
        }
    }

    // 9. Every other write of the batch in one statement, then one commit.
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
    // The served heads' new states: (ticket, state, session id, refusal).
    let mut served_tickets: Vec<i64> = Vec::with_capacity(served.len());
    let mut served_states: Vec<&str> = Vec::with_capacity(served.len());
    let mut served_sessions: Vec<Option<String>> = Vec::with_capacity(served.len());
    let mut served_refusals: Vec<Option<String>> = Vec::with_capacity(served.len());
    for s in &served {
        served_tickets.push(s.ticket);
        match &s.outcome {
            Ok(opened) => {
                served_states.push("granted");
                served_sessions.push(Some(opened.session.id.clone()));
                served_refusals.push(None);
            }
            Err(refusal) => {
                served_states.push("refused");
                served_sessions.push(None);
                served_refusals.push(Some(refusal_json(refusal)));
            }
        }
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
         ), served AS (
             UPDATE queue_entries q SET state = v.state, session_id = v.sid, refusal = v.refusal
             FROM unnest($25::int8[], $26::text[], $27::text[], $28::text[])
                  AS v(ticket, state, sid, refusal)
             WHERE q.ticket = v.ticket AND q.state = 'waiting'
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
    .bind(served_tickets)
    .bind(served_states)
    .bind(served_sessions)
    .bind(served_refusals)
    .execute(&mut *tx)
    .await?;

    // 10. Tell the other nodes whose waiters were served (delivered when we commit). This
    //     node's own waiters are handed their outcome directly after the commit.
    let notices: Vec<String> = served
        .iter()
        .filter(|s| s.node_id != queue.node_id)
        .map(|s| format!("{}:{}", s.node_id, s.ticket))
        .collect();
    if !notices.is_empty() {
        sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(QUEUE_CHANNEL)
            .bind(notices)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    registration.keep();
    Ok(BatchDone {
        outcomes,
        served,
        again,
    })
}

/// Queue tickets of one batch, registered with the node's waiters before the commit and taken
/// out again unless the commit succeeded (`keep`).
struct Registration<'a> {
    queue: &'a QueueCtx,
    tickets: Vec<i64>,
}

impl Registration<'_> {
    fn add(&mut self, ticket: i64, license_id: &str) -> oneshot::Receiver<StoreResult<Grant>> {
        let (tx, rx) = oneshot::channel();
        self.queue.lock_waiters().insert(
            ticket,
            Waiter {
                license_id: license_id.to_owned(),
                tx,
            },
        );
        self.tickets.push(ticket);
        rx
    }

    fn keep(mut self) {
        self.tickets.clear();
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if self.tickets.is_empty() {
            return;
        }
        let mut waiters = self.queue.lock_waiters();
        for t in &self.tickets {
            waiters.remove(t);
        }
    }
}

/// The model-specific part of the seat views of a batch's (locked) licenses: active users of
/// `registered_users` licenses, activated devices of `node_locked` ones. Activations take the
/// same license lock, so these counts cannot change under the batch.
async fn model_views(
    tx: &mut Transaction<'_, Postgres>,
    lics: &mut HashMap<String, LicState>,
    asking: &[InstanceKey],
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
    let locked_devices: Vec<&InstanceKey> = asking
        .iter()
        .filter(|k| {
            lics.get(&k.0)
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
                .map(|k| k.0.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            locked_devices
                .iter()
                .map(|k| k.2.clone())
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
// The queue across nodes: waiters of this node, outcome delivery, liveness
// ---------------------------------------------------------------------------------------------

/// A client of this node waiting in a queue.
struct Waiter {
    license_id: String,
    tx: oneshot::Sender<StoreResult<Grant>>,
}

/// This node's side of the cross-node queue, shared by its batchers and background tasks.
struct QueueCtx {
    /// Random, per store: the `node_id` of this node's queue entries and `nodes` row.
    node_id: String,
    /// This node's waiters by ticket. An outcome is sent under this lock, so that whoever
    /// finds a ticket gone knows its outcome has been handed over.
    waiters: Mutex<HashMap<i64, Waiter>>,
    /// Tickets of this node that are settled (served or left): removed by the next sweep.
    finished: Mutex<Vec<i64>>,
    /// The open lanes (to serve a license's queue) and the logout lanes (to end a grant nobody
    /// can receive). Weak: the store's own senders decide when the batchers stop.
    opens: Vec<mpsc::WeakSender<LaneJob>>,
    ends: Vec<mpsc::WeakSender<EndJob>>,
    /// The latest `now` this store was given, for what it does on its own (ending a grant
    /// nobody can receive, serving queues again). No wall clock is read here.
    last_now: AtomicI64,
    /// Wakes the sweeper at once (after the listener reconnected).
    sweep_now: tokio::sync::Notify,
}

impl QueueCtx {
    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Waiter>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn saw(&self, now: Timestamp) {
        self.last_now.fetch_max(now.millis(), Ordering::Relaxed);
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.last_now.load(Ordering::Relaxed))
    }

    fn settled(&self, tickets: impl IntoIterator<Item = i64>) {
        self.finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tickets);
    }

    /// Asks this node's open lane of `license_id` to serve its queue (a seat may have freed).
    fn serve(&self, license_id: &str, now: Timestamp) {
        self.saw(now);
        let Some(lane) = self
            .opens
            .get(lane_of(license_id, self.opens.len()))
            .and_then(mpsc::WeakSender::upgrade)
        else {
            return;
        };
        let job = LaneJob::Serve {
            license_id: license_id.to_owned(),
            now,
        };
        if let Err(mpsc::error::TrySendError::Full(job)) = lane.try_send(job) {
            tokio::spawn(async move {
                let _ = lane.send(job).await;
            });
        }
    }

    /// Serves the queues this node has waiters in.
    fn serve_local(&self) {
        let licenses: HashSet<String> = self
            .lock_waiters()
            .values()
            .map(|w| w.license_id.clone())
            .collect();
        for license_id in licenses {
            self.serve(&license_id, self.now());
        }
    }

    /// Hands a served ticket's outcome to its waiter, if it still waits here (a ticket not
    /// found here has had its outcome handed over, or has left). A grant whose waiter is gone
    /// (receiver dropped) is ended at once: no seat is held by nobody.
    fn deliver(&self, ticket: i64, outcome: Result<Opened, RuleError>) {
        let orphan = {
            let mut waiters = self.lock_waiters();
            let Some(waiter) = waiters.remove(&ticket) else {
                return;
            };
            match outcome {
                Ok(opened) => {
                    let (ack, durable) = oneshot::channel();
                    // Durable already: the grant was committed before anyone heard of it.
                    let _ = ack.send(Ok(()));
                    let created = opened.created;
                    match waiter.tx.send(Ok(Grant { opened, durable })) {
                        Ok(()) => None,
                        Err(Ok(grant)) if created => Some(grant.opened.session),
                        Err(_) => None,
                    }
                }
                Err(refusal) => {
                    let _ = waiter.tx.send(Err(StoreError::Rule(refusal)));
                    None
                }
            }
        };
        self.settled([ticket]);
        if let Some(session) = orphan {
            self.end_orphan(session);
        }
    }

    /// Ends a session granted to a waiter that went away (which serves the queue again).
    fn end_orphan(&self, session: Session) {
        let now = self.now().max(session.clock.opened_at);
        let Some(lane) = self
            .ends
            .get(lane_of(&session.id, self.ends.len()))
            .and_then(mpsc::WeakSender::upgrade)
        else {
            return;
        };
        tracing::debug!(session = %session.id, "a granted waiter is gone; ending its session");
        tokio::spawn(async move {
            let (reply, rx) = oneshot::channel();
            let job = EndJob {
                session_id: session.id,
                reason: EndReason::Logout,
                now,
                reply,
            };
            if lane.send(job).await.is_ok() {
                let _ = rx.await;
            }
        });
    }
}

/// Columns of a served queue entry with its session, as `read_served` expects.
fn served_select(condition: &str) -> String {
    format!(
        "SELECT {SESSION_COLS}, q.ticket, q.state, q.refusal, q.new_id
         FROM queue_entries q
         LEFT JOIN sessions s ON s.id = q.session_id
         LEFT JOIN licenses l ON l.id = s.license_id
         WHERE {condition} AND q.state IN ('granted', 'refused')"
    )
}

fn read_served(row: &PgRow, cache: &TermsCache) -> StoreResult<(i64, Result<Opened, RuleError>)> {
    let get = |e: sqlx::Error| StoreError::Unavailable(format!("reading a queue entry: {e}"));
    let ticket: i64 = row.try_get(15).map_err(get)?;
    let state: String = row.try_get(16).map_err(get)?;
    if state != "granted" {
        let refusal: Option<String> = row.try_get(17).map_err(get)?;
        return Ok((
            ticket,
            Err(refusal_from(refusal.as_deref().unwrap_or("{}"))),
        ));
    }
    let new_id: String = row.try_get(18).map_err(get)?;
    let session = SessionRow::read(row, cache)?.session;
    let created = session.id == new_id;
    Ok((ticket, Ok(Opened { session, created })))
}

/// Reads the outcomes of `tickets` that are served and hands them to their waiters here;
/// answers the tickets delivered.
async fn deliver_from_db(
    pool: &PgPool,
    queue: &QueueCtx,
    cache: &TermsCache,
    tickets: &[i64],
) -> StoreResult<HashSet<i64>> {
    let rows = sqlx::query(&served_select("q.ticket = ANY($1)"))
        .bind(tickets)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    deliver_rows(queue, cache, &rows)
}

fn deliver_rows(queue: &QueueCtx, cache: &TermsCache, rows: &[PgRow]) -> StoreResult<HashSet<i64>> {
    let mut delivered = HashSet::new();
    for row in rows {
        let (ticket, outcome) = read_served(row, cache)?;
        queue.deliver(ticket, outcome);
        delivered.insert(ticket);
    }
    Ok(delivered)
}

/// LISTENs for queue outcomes addressed to this node and delivers them. `PgListener`
/// reconnects by itself; notifications sent while it was away are found by the sweep, which a
/// reconnection wakes at once.
async fn listener(pool: PgPool, queue: Arc<QueueCtx>, cache: Arc<TermsCache>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::debug!(error = %e, "queue listener cannot connect; retrying");
                tokio::time::sleep(LISTEN_RETRY).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(QUEUE_CHANNEL).await {
            tracing::debug!(error = %e, "queue listener cannot LISTEN; retrying");
            tokio::time::sleep(LISTEN_RETRY).await;
            continue;
        }
        if let Err(e) = listening(&mut listener, &queue).await {
            tracing::debug!(error = %e, "queue listener cannot register; retrying");
            tokio::time::sleep(LISTEN_RETRY).await;
            continue;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(first)) => {
                    let mut tickets = Vec::new();
                    let mut next = Some(first);
                    while let Some(n) = next {
                        if let Some((node, ticket)) = n.payload().split_once(':') {
                            if node == queue.node_id {
                                if let Ok(t) = ticket.parse::<i64>() {
                                    tickets.push(t);
                                }
                            }
                        }
                        next = listener.next_buffered();
                    }
                    {
                        let waiters = queue.lock_waiters();
                        tickets.retain(|t| waiters.contains_key(t));
                    }
                    if tickets.is_empty() {
                        continue;
                    }
                    if let Err(e) = deliver_from_db(&pool, &queue, &cache, &tickets).await {
                        tracing::warn!(error = %e, "delivering queue outcomes failed");
                        queue.sweep_now.notify_one();
                    }
                }
                // The connection was lost and is back (listening again, on a new backend).
                Ok(None) => {
                    if let Err(e) = listening(&mut listener, &queue).await {
                        tracing::debug!(error = %e, "queue listener cannot register; reconnecting");
                        tokio::time::sleep(LISTEN_RETRY).await;
                        break;
                    }
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "queue listener failed; reconnecting");
                    tokio::time::sleep(LISTEN_RETRY).await;
                    break;
                }
            }
        }
    }
}

/// Records the listener's backend as this node's (if this process dies, so does the backend,
/// and other nodes skip its waiters at once). Then outcomes sent while this node was not
/// listening are looked for by the sweep, and its waiters (skipped while its listener was
/// away) are served again.
async fn listening(listener: &mut PgListener, queue: &QueueCtx) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO nodes (node_id, seen_at, pid) VALUES ($1, clock_timestamp(), pg_backend_pid())
         ON CONFLICT (node_id) DO UPDATE SET seen_at = excluded.seen_at, pid = excluded.pid",
    )
    .bind(&queue.node_id)
    .execute(&mut *listener)
    .await?;
    queue.sweep_now.notify_one();
    queue.serve_local();
    Ok(())
}

/// Once a second (and when the listener reconnected): refreshes this node's `nodes.seen_at`
/// (database clock), purges its settled entries and checks its waiting tickets, one statement
/// in all; delivers what a missed notification left behind. Tickets whose client is gone
/// (receiver dropped without leaving) leave the queue. Every `RESERVE_EVERY` sweeps the
/// licenses this node has waiters on are served again (a safety net for a lost trigger), and
/// every `CLEANUP_EVERY` sweeps nodes gone for long are forgotten with their entries.
async fn sweeper(pool: PgPool, queue: Arc<QueueCtx>, cache: Arc<TermsCache>, clock: Arc<DbClock>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u32 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = queue.sweep_now.notified() => {}
        }
        round = round.wrapping_add(1);
        if let Err(e) = clock.follow(&pool).await {
            tracing::debug!(error = %e, "reading the database clock failed");
        }
        if let Err(e) = sweep(&pool, &queue, &cache).await {
            if pool.is_closed() {
                return;
            }
            tracing::debug!(error = %e, "queue sweep failed");
        }
        if round.is_multiple_of(RESERVE_EVERY) {
            queue.serve_local();
        }
        if round.is_multiple_of(CLEANUP_EVERY) {
            if let Err(e) = forget_gone_nodes(&pool).await {
                tracing::debug!(error = %e, "forgetting gone nodes failed");
            }
        }
    }
}

async fn sweep(pool: &PgPool, queue: &QueueCtx, cache: &TermsCache) -> StoreResult<()> {
    let (waiting, gone): (Vec<i64>, Vec<i64>) = {
        let waiters = queue.lock_waiters();
        let gone = waiters
            .iter()
            .filter(|(_, w)| w.tx.is_closed())
            .map(|(t, _)| *t)
            .collect();
        (waiters.keys().copied().collect(), gone)
    };
    if !gone.is_empty() {
        // Rows a batch is serving right now are skipped: their outcome comes, finds nobody,
        // and a grant is ended then.
        let left: Vec<i64> = sqlx::query_scalar(
            "UPDATE queue_entries SET state = 'left'
             WHERE ticket IN (SELECT ticket FROM queue_entries
                              WHERE ticket = ANY($1) AND state = 'waiting'
                              FOR UPDATE SKIP LOCKED)
             RETURNING ticket",
        )
        .bind(&gone)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
        let mut licenses = HashSet::new();
        {
            let mut waiters = queue.lock_waiters();
            for t in &left {
                if let Some(w) = waiters.remove(t) {
                    licenses.insert(w.license_id);
                }
            }
        }
        queue.settled(left);
        for license_id in licenses {
            queue.serve(&license_id, queue.now());
        }
    }
    let finished: Vec<i64> =
        std::mem::take(&mut *queue.finished.lock().unwrap_or_else(|e| e.into_inner()));
    let sql = format!(
        "WITH beat AS (
             INSERT INTO nodes (node_id, seen_at) VALUES ($1, clock_timestamp())
             ON CONFLICT (node_id) DO UPDATE SET seen_at = excluded.seen_at
         ), purged AS (
             DELETE FROM queue_entries WHERE ticket = ANY($3) AND state <> 'waiting'
         )
         {}",
        served_select("q.ticket = ANY($2)")
    );
    let rows = sqlx::query(&sql)
        .bind(&queue.node_id)
        .bind(&waiting)
        .bind(&finished)
        .fetch_all(pool)
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            // Purged next time.
            queue.settled(finished);
            return Err(db_error(e));
        }
    };
    deliver_rows(queue, cache, &rows)?;
    Ok(())
}

/// Forgets nodes unseen for long, and the queue entries of nodes that are gone.
async fn forget_gone_nodes(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "WITH gone AS (
             DELETE FROM nodes WHERE seen_at < now() - interval '{NODE_FORGET}'
             RETURNING node_id
         )
         DELETE FROM queue_entries q
         WHERE q.node_id IN (SELECT node_id FROM gone)
            OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = q.node_id)"
    ))
    .execute(pool)
    .await?;
    Ok(())
}

/// Records this node as seen now (database clock).
async fn beat(pool: &PgPool, node_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO nodes (node_id, seen_at) VALUES ($1, clock_timestamp())
         ON CONFLICT (node_id) DO UPDATE SET seen_at = excluded.seen_at",
    )
    .bind(node_id)
    .execute(pool)
    .await?;
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
    queue: Arc<QueueCtx>,
    mut rx: mpsc::Receiver<HeartbeatJob>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let batch = std::mem::take(&mut jobs);
        let mut attempt = 1;
        let mut serve = HashMap::new();
        let results = loop {
            match heartbeat_batch(&pool, &cache, &batch, &mut serve).await {
                Ok(results) => break results,
                Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => attempt += 1,
                Err(e) => {
                    tracing::warn!(error = %e, heartbeats = batch.len(), "heartbeat batch failed");
                    let err = db_error(e);
                    break batch.iter().map(|_| Err(clone_error(&err))).collect();
                }
            }
        };
        for (license_id, now) in serve {
            queue.serve(&license_id, now);
        }
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

/// One heartbeat batch: one read, one guarded multi-row update (its own commit). The queueing
/// licenses of sessions it found expired (and ended) go to `serve`.
async fn heartbeat_batch(
    pool: &PgPool,
    cache: &TermsCache,
    jobs: &[HeartbeatJob],
    serve: &mut HashMap<String, Timestamp>,
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
                        if row.terms.on_full == OnFull::Queue {
                            serve.insert(session.license_id.to_string(), job.now);
                        }
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

async fn end_batcher(
    pool: PgPool,
    cache: Arc<TermsCache>,
    queue: Arc<QueueCtx>,
    mut rx: mpsc::Receiver<EndJob>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let batch = std::mem::take(&mut jobs);
        let mut attempt = 1;
        let mut serve = HashMap::new();
        let results = loop {
            match end_batch(&pool, &cache, &batch, &mut serve).await {
                Ok(results) => break results,
                Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => attempt += 1,
                Err(e) => {
                    tracing::warn!(error = %e, ends = batch.len(), "logout batch failed");
                    let err = db_error(e);
                    break batch.iter().map(|_| Err(clone_error(&err))).collect();
                }
            }
        };
        // Freed seats of queueing licenses go to their waiters: the open lane serves them.
        for (license_id, now) in serve {
            queue.serve(&license_id, now);
        }
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

/// One logout batch: a single statement ends every still-live session and writes its event.
/// The queueing licenses of the sessions it ended go to `serve`.
async fn end_batch(
    pool: &PgPool,
    cache: &TermsCache,
    jobs: &[EndJob],
    serve: &mut HashMap<String, Timestamp>,
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
        let read = SessionRow::read(row, cache);
        if let Ok(r) = &read {
            if r.terms.on_full == OnFull::Queue {
                let now = first
                    .get(id.as_str())
                    .and_then(|&i| jobs.get(i))
                    .map_or(r.session.clock.opened_at, |j| j.now);
                serve.insert(r.session.license_id.to_string(), now);
            }
        }
        ended.insert(id, read.map(|r| r.session));
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
                        if row.terms.on_full == OnFull::Queue {
                            serve.insert(row.session.license_id.to_string(), job.now);
                        }
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

/// The PostgreSQL store: a connection pool plus this node's batchers, and its side of the
/// cross-node queue (waiters, LISTEN, sweep).
pub struct PgStore {
    pool: PgPool,
    cache: Arc<TermsCache>,
    queue: Arc<QueueCtx>,
    opens: Vec<mpsc::Sender<LaneJob>>,
    heartbeats: Vec<mpsc::Sender<HeartbeatJob>>,
    ends: Vec<mpsc::Sender<EndJob>>,
    credentials: Reader<CredentialLoader>,
    users: Reader<UserLoader>,
    licenses: Reader<LicenseLoader>,
    sessions: Reader<SessionLoader>,
    /// The queue listener and sweeper, stopped with the store.
    background: Vec<tokio::task::JoinHandle<()>>,
    /// The database's clock as this node reads it: every `now` passed in goes through it.
    clock: Arc<DbClock>,
}

impl PgStore {
    /// Connects to `url`, applies pending migrations, registers this node and starts its
    /// batchers.
    pub async fn connect(url: &str, options: PgOptions) -> StoreResult<Self> {
        let pool = pool(url, &options)?;
        migrate(&pool).await?;
        let clock = Arc::new(DbClock::new(options.node_clock.clone()));
        clock.set(&pool).await.map_err(db_error)?;
        if clock.offset_millis().abs() > 1_000 {
            tracing::warn!(
                offset_ms = clock.offset_millis(),
                "this node's clock is off the database's: session times follow the database"
            );
        }
        let store = Self::with_clock(pool, clock);
        // Seen before it queues anyone: its waiters count from the start.
        beat(&store.pool, &store.queue.node_id)
            .await
            .map_err(db_error)?;
        Ok(store)
    }

    /// A store over an existing, migrated pool, taking the times callers pass as they are.
    pub fn with_pool(pool: PgPool) -> Self {
        Self::with_clock(pool, Arc::new(DbClock::new(None)))
    }

    fn with_clock(pool: PgPool, clock: Arc<DbClock>) -> Self {
        let cache = Arc::new(TermsCache::default());
        let (open_tx, open_rx): (Vec<_>, Vec<_>) = (0..OPEN_LANES)
            .map(|_| mpsc::channel(4 * MAX_BATCH))
            .unzip();
        let (end_tx, end_rx): (Vec<_>, Vec<_>) =
            (0..END_LANES).map(|_| mpsc::channel(4 * MAX_BATCH)).unzip();
        let queue = Arc::new(QueueCtx {
            node_id: format!("node-{}", uuid::Uuid::new_v4().simple()),
            waiters: Mutex::new(HashMap::new()),
            finished: Mutex::new(Vec::new()),
            opens: open_tx.iter().map(mpsc::Sender::downgrade).collect(),
            ends: end_tx.iter().map(mpsc::Sender::downgrade).collect(),
            last_now: AtomicI64::new(0),
            sweep_now: tokio::sync::Notify::new(),
        });
        for rx in open_rx {
            tokio::spawn(open_batcher(pool.clone(), queue.clone(), rx));
        }
        for rx in end_rx {
            tokio::spawn(end_batcher(pool.clone(), cache.clone(), queue.clone(), rx));
        }
        let heartbeats = (0..HEARTBEAT_LANES)
            .map(|_| {
                let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
                tokio::spawn(heartbeat_batcher(
                    pool.clone(),
                    cache.clone(),
                    queue.clone(),
                    rx,
                ));
                tx
            })
            .collect();
        let background = vec![
            tokio::spawn(listener(pool.clone(), queue.clone(), cache.clone())),
            tokio::spawn(sweeper(
                pool.clone(),
                queue.clone(),
                cache.clone(),
                clock.clone(),
            )),
        ];
        PgStore {
            ends: end_tx,
            credentials: Reader::spawn(&pool, CredentialLoader),
            users: Reader::spawn(&pool, UserLoader),
            licenses: Reader::spawn(&pool, LicenseLoader(cache.clone())),
            sessions: Reader::spawn(&pool, SessionLoader(cache.clone())),
            pool,
            cache,
            queue,
            opens: open_tx,
            heartbeats,
            background,
            clock,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// This node's id in the `nodes` table and in its queue entries.
    pub fn node_id(&self) -> &str {
        &self.queue.node_id
    }

    /// Takes this node out of the queue (its waiters are gone with it), then closes every
    /// connection (the batchers stop when the store is dropped).
    pub async fn close(&self) {
        for task in &self.background {
            task.abort();
        }
        let _ = forget_node(&self.pool, &self.queue.node_id).await;
        self.pool.close().await;
    }

    async fn send_open(
        &self,
        req: OpenRequest,
        wait: bool,
        now: Timestamp,
    ) -> StoreResult<Admission> {
        self.queue.saw(now);
        let stopped = || StoreError::Unavailable("the open batcher has stopped".into());
        let lane = lane_of(&req.license_id, self.opens.len());
        let (reply, rx) = oneshot::channel();
        self.opens
            .get(lane)
            .ok_or_else(stopped)?
            .send(LaneJob::Open(OpenJob {
                req,
                wait,
                now,
                reply,
            }))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
        // A node that stops takes its waiters' entries along (they have nobody to go to).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (pool, node_id) = (self.pool.clone(), self.queue.node_id.clone());
            runtime.spawn(async move {
                let _ = forget_node(&pool, &node_id).await;
            });
        }
    }
}

/// Removes a node and its queue entries.
async fn forget_node(pool: &PgPool, node_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH entries AS (DELETE FROM queue_entries WHERE node_id = $1)
         DELETE FROM nodes WHERE node_id = $1",
    )
    .bind(node_id)
    .execute(pool)
    .await?;
    Ok(())
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
        let now = self.clock.db(now);
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
        audit.push(admission::license_created(&license));
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
        let now = self.clock.db(now);
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
        audit.push(admission::license_updated(&license, now));
        insert_audit(&mut tx, audit).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        // More seats (or a lifted suspension) may serve the queue.
        self.queue.serve(&license.id, now);
        Ok(())
    }

    async fn admit(&self, req: OpenRequest, wait: bool, now: Timestamp) -> StoreResult<Admission> {
        let now = self.clock.db(now);
        self.send_open(req, wait, now).await
    }

    async fn leave_queue(&self, license_id: &str, ticket: u64) -> StoreResult<bool> {
        let Ok(ticket) = i64::try_from(ticket) else {
            return Ok(false);
        };
        let left = sqlx::query(
            "UPDATE queue_entries SET state = 'left'
             WHERE ticket = $1 AND license_id = $2 AND state = 'waiting'",
        )
        .bind(ticket)
        .bind(license_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?
        .rows_affected()
            > 0;
        if left {
            self.queue.lock_waiters().remove(&ticket);
            self.queue.settled([ticket]);
            // The head may have changed: a grant blocked behind it may go through now.
            self.queue.serve(license_id, self.queue.now());
            return Ok(true);
        }
        // Served meanwhile, on whichever node: the outcome reaches the waiter before this
        // answers, so that the caller's next look at its ticket finds it.
        let delivered = deliver_from_db(&self.pool, &self.queue, &self.cache, &[ticket]).await?;
        if !delivered.contains(&ticket) {
            // No outcome to give (the entry is gone): the place is dropped.
            self.queue.lock_waiters().remove(&ticket);
        }
        Ok(false)
    }

    async fn list_queue(
        &self,
        license_id: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<QueuedRequest>> {
        let now = self.clock.db(now);
        let rows = sqlx::query(&format!(
            "SELECT q.ticket, q.username, q.device_id, q.instance_id, q.enqueued_at
             FROM queue_entries q JOIN nodes n ON n.node_id = q.node_id
             WHERE q.license_id = $1 AND q.state = 'waiting' AND q.deadline > $2 AND {LIVE_NODE}
             ORDER BY q.ticket"
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
            .enumerate()
            .map(|(i, r)| {
                Ok(QueuedRequest {
                    ticket: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
                    position: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    username: r.try_get(1)?,
                    device_id: r.try_get(2)?,
                    instance_id: r.try_get(3)?,
                    since: Timestamp::from_millis(r.try_get(4)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }

    async fn open_session(&self, req: OpenRequest, now: Timestamp) -> StoreResult<Opened> {
        let now = self.clock.db(now);
        match self.send_open(req, false, now).await? {
            Admission::Opened(opened) => Ok(opened),
            // Not asked to wait: admission answers at once.
            Admission::Queued(_) => Err(StoreError::Unavailable("unexpected queue entry".into())),
        }
    }

    async fn heartbeat(&self, session_id: &str, now: Timestamp) -> StoreResult<Session> {
        let now = self.clock.db(now);
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
        let now = self.clock.db(now);
        self.queue.saw(now);
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
        let now = self.clock.db(now);
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
        let now = self.clock.db(now);
        self.queue.saw(now);
        let mut ended = Vec::new();
        for _ in 0..REAP_ROUNDS {
            let mut attempt = 1;
            let (batch, queueing) = loop {
                match reap_batch(&self.pool, &self.cache, now).await {
                    Ok(batch) => break batch,
                    Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => attempt += 1,
                    Err(e) => return Err(db_error(e)),
                }
            };
            // Reclaimed seats of queueing licenses go to their waiters.
            for license_id in queueing {
                self.queue.serve(&license_id, now);
            }
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
        let now = self.clock.db(now);
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
        // Deactivating frees the user's seats; activating raises the active-user count.
        self.queue.serve(license_id, now);
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
        let now = self.clock.db(now);
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
        audit.push(admission::device_activated(
            &account_id,
            license_id,
            fingerprint,
            now,
        ));
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
        let now = self.clock.db(now);
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
        audit.push(admission::device_deactivated(
            &account_id,
            license_id,
            fingerprint,
            now,
        ));
        insert_audit(&mut tx, audit).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        if !ended.is_empty() {
            self.queue.serve(license_id, now);
        }
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
        let now = self.clock.db(now);
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
        let now = self.clock.db(now);
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
        let licenses: HashSet<&str> = ended.iter().map(|s| &*s.license_id).collect();
        for license_id in licenses {
            self.queue.serve(license_id, now);
        }
        Ok(ended)
    }

    /// Nothing to move: on PostgreSQL a session's expiry is judged by the database's clock,
    /// which a step of this node's clock does not change; the node's offset to it moves
    /// instead (see `pg_clock`).
    async fn shift_live_sessions(&self, delta_ms: i64) -> StoreResult<usize> {
        self.clock.node_stepped(delta_ms);
        Ok(0)
    }

    /// One round trip on a pooled connection (bounded by the pool's acquire timeout).
    async fn health(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db_error)
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
        audit.push(admission::ended(&session, now, reason));
        ended.push(session);
    }
    insert_audit(tx, audit).await.map_err(db_error)?;
    Ok(ended)
}

/// One reaper transaction: lock up to `REAP_BATCH` expired live sessions no other node holds,
/// end them and write their events. Answers them and the queueing licenses among theirs.
async fn reap_batch(
    pool: &PgPool,
    cache: &TermsCache,
    now: Timestamp,
) -> Result<(Vec<Session>, HashSet<String>), sqlx::Error> {
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
        return Ok((Vec::new(), HashSet::new()));
    }
    let mut sessions = Vec::with_capacity(rows.len());
    let mut queueing = HashSet::new();
    for row in &rows {
        match SessionRow::read(row, cache) {
            Ok(r) => {
                if r.terms.on_full == OnFull::Queue {
                    queueing.insert(r.session.license_id.to_string());
                }
                sessions.push(r.session);
            }
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable session"),
        }
    }
    let mut audit = AuditRows::default();
    end_expired(&mut tx, &sessions, now, &mut audit).await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok((sessions, queueing))
}
