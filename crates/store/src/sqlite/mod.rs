//! The embedded SQLite backend: one process, zero configuration.
//!
//! # Design: in-memory authority, group-committed durability
//!
//! All records live in memory behind one mutex; every seat decision (count, decide, insert) is
//! made under that mutex, so it is atomic without touching the disk. Each change is turned into
//! write operations that are queued, *under the same lock*, to a single writer thread: the queue
//! order is the order in which memory changed. The writer drains whatever is queued (up to
//! `MAX_BATCH` jobs), applies it in one transaction, commits (WAL, `synchronous=FULL`: the commit
//! is fsync'd), and only then acknowledges every job of the batch. So:
//!
//! - an open, a logout or a revoke is answered only after its batch is on disk (a `kill -9`
//!   cannot lose an acknowledged session), yet concurrent requests share one fsync;
//! - a heartbeat is answered from memory at once; its new expiry waits in a map of pending
//!   touches (the latest per session) that the writer writes `TOUCH_DELAY` (1 s) after the
//!   first pending one, with whatever batch is then due. Heartbeats of one session within that
//!   window cost one write, and a heartbeat never costs an fsync of its own: a session
//!   heartbeating every few milliseconds costs the disk one row update a second. The expiry on
//!   disk is thus behind memory by at most `TOUCH_DELAY` plus one batch. After a crash a
//!   session can expire at most that much (about a second) earlier than its owner was last
//!   told; never later. (Pending touches are also written when the store is dropped.)
//! - the reaper pops expired sessions from a per-license index ordered by `expires_at`, so a tick
//!   costs O(licenses + expired), never a scan of all sessions;
//! - an end decided for many sessions at once (a license's end, a revoke of all its sessions, a
//!   user's deactivation) costs O(1) under the lock and is durable as one small record; the
//!   sessions' own ends, like expiries, are written in the background in bounded chunks that
//!   never hold up acknowledged writes for long (`mem::ending`, `drain`).
//!
//! At start the live state is loaded from the database (sessions with `ended_at IS NULL`).
//! Sessions that expired while the server was down are reaped by the first tick.
//!
//! How memory holds a million live sessions in a few hundred megabytes is told in `mem`.
//!
//! # Modules
//!
//! - `store`: `SqliteStore`, the `Store` implementation: lock, call `Mem`, send, await the ack.
//! - `mem`: the in-memory state and every decision made under its lock (admission and the
//!   queue, heartbeats, ends and reaping, licensing-model registrations).
//! - `slab`: the compact record of a live session and the slab that holds them.
//! - `ops`: the write operations memory queues, and the SQL each one runs.
//! - `writer`: the writer thread: batches, group commit, coalesced heartbeat touches.
//! - `drain`: the writer's bulk lane: decided ends (mass ends, expiries) written in bounded
//!   chunks between batches of acknowledged writes.
//! - `recovery`: what the writer does when the disk refuses a write (memory rebuilt from the
//!   disk, writes refused until a test write commits).
//! - `schema`: the connection settings, migrations and this store's own indexes.
//! - `load`: the live state read back from the database at start.
//! - `read`: what is answered from the database rather than memory.
//! - `webhooks`: webhook endpoints, deliveries and the dispatcher's cursor (`crate::webhooks`).

mod audit;
mod drain;
mod load;
mod mem;
mod ops;
mod read;
mod recovery;
mod schema;
mod slab;
mod store;
mod usage;
mod webhooks;
mod writer;

pub use schema::{migrate, open_connection};
pub use store::SqliteStore;
