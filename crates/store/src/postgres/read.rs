//! Point reads, batched: every request authenticates (`find_credential`), and opens and
//! heartbeats look up a license, a user or a session first. The lookups of one kind that arrive
//! while a batch is in flight share the next `= ANY($1)` query. A batch starts after each of
//! its requests arrived, so it is exactly as fresh as a query per request.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::Row;
use tokio::sync::mpsc;

use super::errors::db_error;
use super::lanes::{self, answer_each, Job, KeptConnection, Lane};
use super::rows::{
    credential_from, user_from, LicenseRow, SessionRow, TermsCache, CREDENTIAL_COLS, LICENSE_COLS,
    SESSION_COLS,
};
use crate::records::*;
use crate::StoreResult;

/// Batchers per node for each kind of point read (credential, user, license, session).
const READ_LANES: usize = 1;

/// A point read that concurrent requests of one node share: one query per batch of keys.
#[async_trait]
pub(super) trait Loader: Send + Sync + 'static {
    type Key: Eq + Hash + Clone + Send + Sync + 'static;
    /// `Err` is a record that cannot be read (its cause), reported to that key's callers only.
    type Value: Clone + Send + 'static;
    async fn load(
        &self,
        conn: &mut PgConnection,
        keys: &[Self::Key],
    ) -> Result<HashMap<Self::Key, Self::Value>, sqlx::Error>;
}

/// A request of a read lane: a key, answered with its record if there is one.
type ReadJob<L> = Job<<L as Loader>::Key, Option<<L as Loader>::Value>>;

/// `READ_LANES` lanes of one loader; a key always goes to the same lane.
pub(super) struct Reader<L: Loader> {
    lanes: Vec<mpsc::Sender<ReadJob<L>>>,
}

impl<L: Loader> Reader<L> {
    pub(super) fn spawn(pool: &PgPool, loader: L) -> Self {
        let loader = Arc::new(loader);
        let (lanes, receivers) = lanes::channels(READ_LANES);
        for rx in receivers {
            let lane = ReadLane {
                conn: KeptConnection::new(pool.clone()),
                loader: loader.clone(),
            };
            lanes::spawn(lane, rx);
        }
        Reader { lanes }
    }

    /// The record of `key`, read in the next batch of its lane.
    pub(super) async fn get(&self, key: L::Key) -> StoreResult<Option<L::Value>> {
        let lane = lanes::lane_of(&key, self.lanes.len());
        lanes::ask(&self.lanes, lane, key, "a read batcher has stopped").await
    }
}

/// A read lane: a batch is its requests' distinct keys, read in one query (not retried: a read
/// meets no deadlock), on the connection the lane keeps while busy.
struct ReadLane<L> {
    conn: KeptConnection,
    loader: Arc<L>,
}

/// The requests of a read batch, and their distinct keys.
struct ReadBatch<L: Loader> {
    jobs: Vec<ReadJob<L>>,
    keys: Vec<L::Key>,
}

impl<L: Loader> Lane for ReadLane<L> {
    type Job = ReadJob<L>;
    type Batch = ReadBatch<L>;
    type Done = HashMap<L::Key, L::Value>;
    const KIND: &'static str = "read";
    const ATTEMPTS: usize = 1;

    fn gather(&mut self, received: &mut Vec<ReadJob<L>>) -> ReadBatch<L> {
        let jobs = std::mem::take(received);
        let mut seen = HashSet::new();
        let keys = jobs
            .iter()
            .filter(|j| seen.insert(j.ask.clone()))
            .map(|j| j.ask.clone())
            .collect();
        ReadBatch { jobs, keys }
    }

    fn idle(&mut self) {
        self.conn.release();
    }

    async fn run(&mut self, batch: &ReadBatch<L>) -> Result<Self::Done, sqlx::Error> {
        if let Some(conn) = self.conn.kept() {
            match self.loader.load(conn, &batch.keys).await {
                Ok(found) => return Ok(found),
                // A kept connection that died meanwhile (PostgreSQL restarted, the backend was
                // terminated): the read once more on a fresh one, as a read may be.
                Err(_) => self.conn.release(),
            }
        }
        let conn = self.conn.fresh().await?;
        let found = self.loader.load(conn, &batch.keys).await;
        if found.is_err() {
            self.conn.release();
        }
        found
    }

    /// Not logged here: each caller gets the error and reports it.
    fn report(&self, _batch: &ReadBatch<L>, _error: &sqlx::Error) {}

    fn answer(&mut self, batch: ReadBatch<L>, found: StoreResult<Self::Done>) {
        let results = found.map(|found| {
            batch
                .jobs
                .iter()
                .map(|job| Ok(found.get(&job.ask).cloned()))
                .collect()
        });
        answer_each(batch.jobs, results);
    }
}

/// Credentials by token hash.
pub(super) struct CredentialLoader;

#[async_trait]
impl Loader for CredentialLoader {
    type Key = TokenHash;
    type Value = Credential;

    async fn load(
        &self,
        conn: &mut PgConnection,
        keys: &[TokenHash],
    ) -> Result<HashMap<TokenHash, Credential>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {CREDENTIAL_COLS} FROM credentials WHERE hash = ANY($1)"
        ))
        .bind(keys.iter().map(|k| k.to_vec()).collect::<Vec<_>>())
        .fetch_all(conn)
        .await?;
        let mut found = HashMap::new();
        for row in &rows {
            if let Some(credential) = credential_from(row)? {
                found.insert(credential.hash, credential);
            }
        }
        Ok(found)
    }
}

/// Users by (account id, username).
pub(super) struct UserLoader;

#[async_trait]
impl Loader for UserLoader {
    type Key = (String, String);
    type Value = User;

    async fn load(
        &self,
        conn: &mut PgConnection,
        keys: &[(String, String)],
    ) -> Result<HashMap<(String, String), User>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT u.account_id, u.username, u.kind, u.active, u.client_id,
                    u.client_secret_hash, u.created_at
             FROM unnest($1::text[], $2::text[]) AS k(a, n)
             CROSS JOIN LATERAL (
                 SELECT * FROM users u WHERE u.account_id = k.a AND u.username = k.n
             ) u",
        )
        .bind(keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.1.clone()).collect::<Vec<_>>())
        .fetch_all(conn)
        .await?;
        let mut found = HashMap::new();
        for row in &rows {
            let user = user_from(row)?;
            found.insert((user.account_id.clone(), user.username.clone()), user);
        }
        Ok(found)
    }
}

/// Reads a row into its id and its record (or why the record cannot be read).
type ReadById<T> = fn(&PgRow, &TermsCache) -> Result<(String, StoreResult<T>), sqlx::Error>;

/// Records by id, read by one `SELECT … WHERE id = ANY($1)` each batch: licenses, sessions.
/// A record that cannot be read is its cause, reported to that id's callers only.
pub(super) struct ById<T> {
    sql: String,
    read: ReadById<T>,
    cache: Arc<TermsCache>,
}

impl ById<License> {
    /// Licenses by id.
    pub(super) fn licenses(cache: Arc<TermsCache>) -> Self {
        ById {
            sql: format!("SELECT {LICENSE_COLS} FROM licenses WHERE id = ANY($1)"),
            read: |row, cache| {
                let license = LicenseRow::read(row)?;
                let id = license.id.clone();
                Ok((id, license.parse(|id, terms| cache.owned(id, terms))))
            },
            cache,
        }
    }
}

impl ById<SessionRow> {
    /// Sessions (live or ended, with their terms) by id.
    pub(super) fn sessions(cache: Arc<TermsCache>) -> Self {
        ById {
            sql: format!(
                "SELECT {SESSION_COLS} FROM sessions s JOIN licenses l ON l.id = s.license_id
                 WHERE s.id = ANY($1)"
            ),
            read: |row, cache| Ok((row.try_get(0)?, SessionRow::read(row, cache))),
            cache,
        }
    }
}

#[async_trait]
impl<T: Clone + Send + Sync + 'static> Loader for ById<T> {
    type Key = String;
    type Value = Result<T, String>;

    async fn load(
        &self,
        conn: &mut PgConnection,
        keys: &[String],
    ) -> Result<HashMap<String, Self::Value>, sqlx::Error> {
        let rows = sqlx::query(&self.sql).bind(keys).fetch_all(conn).await?;
        let mut found = HashMap::new();
        for row in &rows {
            let (id, record) = (self.read)(row, &self.cache)?;
            found.insert(id, record.map_err(|e| e.to_string()));
        }
        Ok(found)
    }
}

/// A session (live or ended) read at once, not batched: the rare second look of a heartbeat or
/// a logout that found its session not live.
pub(super) async fn fetch_session(
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
