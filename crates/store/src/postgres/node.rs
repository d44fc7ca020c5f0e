//! This node: a `PgStore` is a connection pool plus the node's lanes (opens, heartbeats,
//! logouts, point reads) and its side of the cross-node queue (waiters, LISTEN, sweep), all
//! started with the store and stopped with it.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPool;
use tokio::sync::mpsc;

use super::clock::{DbClock, NodeClock};
use super::end::{EndAsk, EndJob, END_LANES};
use super::errors::db_error;
use super::events::Publisher;
use super::flush;
use super::heartbeat::{HeartbeatJob, HeartbeatLane, HEARTBEAT_LANES};
use super::hold::Hold;
use super::lanes::{self, SessionLane};
use super::live;
use super::open::{LaneJob, OpenLane, OPEN_LANES};
use super::queue::{self, QueueCtx};
use super::read::{ById, CredentialLoader, Reader, UserLoader};
use super::retry::again;
use super::rows::{SessionRow, TermsCache};
use super::schema::{migrate, pool};
use crate::records::License;
use crate::{EventHub, StoreResult};

/// Connection settings of a `PgStore`.
#[derive(Clone)]
pub struct PgOptions {
    /// Largest number of connections this node holds.
    pub max_connections: u32,
    /// How long a request waits for a connection before it fails as unavailable.
    pub acquire_timeout: Duration,
    /// This node's clock: set, session times are judged by the database's clock (see
    /// `clock`); unset, the times callers pass are used as they are.
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

/// The PostgreSQL store: a connection pool plus this node's batchers, and its side of the
/// cross-node queue (waiters, LISTEN, sweep).
pub struct PgStore {
    pub(super) pool: PgPool,
    pub(super) cache: Arc<TermsCache>,
    pub(super) queue: Arc<QueueCtx>,
    pub(super) opens: Vec<mpsc::Sender<LaneJob>>,
    pub(super) heartbeats: Vec<mpsc::Sender<HeartbeatJob>>,
    /// The sessions this node holds in memory for heartbeats (see `hold`).
    pub(super) hold: Arc<Hold>,
    pub(super) ends: Vec<mpsc::Sender<EndJob>>,
    pub(super) credentials: Reader<CredentialLoader>,
    /// Credentials read lately (see `tokens`).
    pub(super) tokens: super::tokens::Tokens,
    pub(super) users: Reader<UserLoader>,
    pub(super) licenses: Reader<ById<License>>,
    pub(super) sessions: Reader<ById<SessionRow>>,
    /// The queue listener and sweeper, stopped with the store.
    background: Vec<tokio::task::JoinHandle<()>>,
    /// The database's clock as this node reads it: every `now` passed in goes through it.
    pub(super) clock: Arc<DbClock>,
    /// The event streams held by this node (fed by its listener, see `events`).
    pub(super) events: Arc<EventHub>,
    /// Sends this node's session events to every node, batched (see `events`).
    pub(super) publisher: Publisher,
    /// The greatest audit `seq` this node found safe to page up to (see `audit`).
    pub(super) audit_horizon: AtomicI64,
    /// This node's usage fold (`usage`).
    pub(super) rollup: super::usage::PgRollup,
}

impl PgStore {
    /// Connects to `url`, applies pending migrations, registers this node and starts its
    /// batchers.
    pub async fn connect(url: &str, options: PgOptions) -> StoreResult<Self> {
        let pool = pool(url, &options)?;
        // Nodes starting at once (or beside running ones) on an engine where every transaction
        // is `SERIALIZABLE` can lose races to each other here too: each step runs again.
        again(|| migrate(&pool)).await?;
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
        again(|| async {
            queue::beat(&store.pool, &store.queue.node_id)
                .await
                .map_err(db_error)
        })
        .await?;
        Ok(store)
    }

    /// A store over an existing, migrated pool, taking the times callers pass as they are.
    pub fn with_pool(pool: PgPool) -> Self {
        Self::with_clock(pool, Arc::new(DbClock::new(None)))
    }

    /// Starts the node's lanes and background tasks over `pool`.
    fn with_clock(pool: PgPool, clock: Arc<DbClock>) -> Self {
        let cache = Arc::new(TermsCache::default());
        let (opens, open_rx) = lanes::channels(OPEN_LANES);
        let (ends, end_rx) = lanes::channels(END_LANES);
        let queue = Arc::new(QueueCtx::new(&opens, &ends));
        let hold = Arc::new(Hold::default());
        for rx in open_rx {
            lanes::spawn(OpenLane::new(pool.clone(), queue.clone(), hold.clone()), rx);
        }
        for rx in end_rx {
            let lane = SessionLane::<EndAsk>::new(pool.clone(), cache.clone(), queue.clone());
            lanes::spawn(lane, rx);
        }
        let (heartbeats, heartbeat_rx) = lanes::channels(HEARTBEAT_LANES);
        for (tx, rx) in heartbeats.iter().zip(heartbeat_rx) {
            let lane = HeartbeatLane::new(
                pool.clone(),
                cache.clone(),
                queue.clone(),
                hold.clone(),
                tx.downgrade(),
            );
            lanes::spawn(lane, rx);
        }
        let events = EventHub::new();
        let (publisher, publishing) = Publisher::spawn(pool.clone());
        let background = vec![
            publishing,
            tokio::spawn(queue::listener(
                pool.clone(),
                queue.clone(),
                cache.clone(),
                events.clone(),
            )),
            tokio::spawn(queue::sweeper(
                pool.clone(),
                queue.clone(),
                cache.clone(),
                clock.clone(),
            )),
            tokio::spawn(live::folder(pool.clone())),
            tokio::spawn(flush::flusher(pool.clone(), hold.clone())),
            tokio::spawn(super::ends::feed(pool.clone(), hold.clone())),
        ];
        PgStore {
            credentials: Reader::spawn(&pool, CredentialLoader),
            tokens: Default::default(),
            users: Reader::spawn(&pool, UserLoader),
            licenses: Reader::spawn(&pool, ById::licenses(cache.clone())),
            sessions: Reader::spawn(&pool, ById::sessions(cache.clone())),
            pool,
            cache,
            queue,
            opens,
            heartbeats,
            hold,
            ends,
            background,
            clock,
            events,
            publisher,
            audit_horizon: AtomicI64::new(0),
            rollup: Default::default(),
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
        // The heartbeats answered from memory are written before the node goes.
        flush::flush(&self.pool, &self.hold).await;
        let _ = queue::forget_node(&self.pool, &self.queue.node_id).await;
        self.pool.close().await;
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
            let hold = self.hold.clone();
            runtime.spawn(async move {
                flush::flush(&pool, &hold).await;
                let _ = queue::forget_node(&pool, &node_id).await;
            });
        }
    }
}
