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
//!   then counts the live sessions: per license from the counter rows the triggers keep (`live`),
//!   per asking user and per reserved user through the partial index `sessions_live_by_user`. Live sessions are *inserted* only under that lock, so
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
//!   `put_user` deactivating, `update_license`, a waiter leaving) pushes a *serve* job into the
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
//! A node answers the heartbeats of a session it holds (`hold`: opened or heartbeated here)
//! from memory while its ends feed (`ends`: every end committed on any node, read every 500 ms)
//! is fresh, and its flusher writes the latest expiry per session once a second in bulk
//! (`flush`). The others go to `HEARTBEAT_LANES`
//! batchers per node (`heartbeat`): a batch reads the sessions it does not hold and their terms
//! in one query, runs `SessionClock::heartbeat` for each, and writes every new expiry in one
//! guarded multi-row `UPDATE … WHERE ended_at IS NULL AND expires_at > now - REAP_LAG_MS`
//! (the flush's statement): a session that ended meanwhile is never resurrected. The expiry
//! only moves forward (`GREATEST`), so two nodes racing on one session cannot shorten it. The
//! stored expiry lags what a node answered by at most `HOLD_TRUST_MS`, so while other nodes
//! live, reapers and seat reclaims end only sessions `REAP_LAG_MS` past it (see `hold`).
//!
//! Logouts and revokes are batched the same way: one multi-row `UPDATE … RETURNING` that also
//! writes the `ended` events, guarded by `ended_at IS NULL AND expires_at > now`, per batch.
//!
//! # Point reads
//!
//! Every request authenticates (`find_credential`), and opens look up a license and a user
//! first (a heartbeat does not: its batch's own read checks whose session it is). Those point reads go through per-node read batchers too: the
//! lookups that arrive while one batch is in flight share the next `= ANY($1)` query. A batch
//! starts after each of its requests arrived, so it is exactly as fresh as a query per request.
//!
//! # Expiry
//!
//! `reap_expired` (run by every node's reaper) takes at most `REAP_BATCH` live sessions
//! past their `reap_at` (by `REAP_LAG_MS` while other nodes live) through the partial index
//! `sessions_live_reap` with `FOR UPDATE SKIP LOCKED`. `reap_at` is a lower bound of the
//! stored expiry, so heartbeats rewrite no indexed column (HOT updates); a session whose expiry
//! moved on gets `reap_at` raised to it, the expired ones end, with their `ended` audit events,
//! in the same transaction. A session locked by
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
//! # Time
//!
//! `now` comes from the node that handles a request, as with every other rule of the server;
//! with a node clock (`PgOptions::node_clock`) it is moved onto the database's clock first
//! (`clock`), so skew between nodes can neither end nor extend a session.
//!
//! # Layout
//!
//! - `store`: `impl Store for PgStore`, thin: the clock, then the module of each concern;
//!   `node`: the store itself, its lanes and background tasks, started and stopped with it.
//! - `lanes`: the batch lanes, written once; `open` (its batch in named steps: `open::view`,
//!   `open::decide`, `open::write`), `heartbeat`, `end` and `read` are its kinds of batch;
//!   `hold`: the sessions a node answers heartbeats for from memory, `flush` writes their
//!   expiries, `tokens` the credentials it read lately.
//! - `queue`: this node's side of the queue (`queue::listener`, `queue::sweeper`,
//!   `queue::nodes`); `reaper`: expiry; `mass`: mass ends; `live`: the live counters.
//! - `accounts`, `licenses`, `models`, `sessions`: the plain records, registrations and
//!   listings; `audit`: the account-wide audit log and its horizon; `rows`: how rows are read and written; `schema`: pool and migrations;
//!   `errors`: database errors as `StoreError`s; `clock`: the database's clock.

mod accounts;
mod audit;
mod borrow;
mod clock;
mod delegation;
mod end;
mod ends;
mod errors;
mod events;
mod flush;
mod heartbeat;
mod hold;
mod lanes;
mod licenses;
mod live;
mod mass;
mod models;
mod node;
mod open;
mod queue;
mod read;
mod reaper;
mod retry;
mod rows;
mod schema;
mod sessions;
mod store;
mod tokens;
mod usage;
mod webhooks;

pub use clock::NodeClock;
pub use node::{PgOptions, PgStore};
pub use schema::{migrate, migrate_url, pool, SCHEMA_VERSION};

/// Attempts of a batch transaction that failed on a deadlock or serialization conflict (every
/// lane, and the reaper).
const MAX_ATTEMPTS: usize = 5;
/// Most expired sessions ended by one reaper transaction (or reclaimed by one open batch).
const REAP_BATCH: i64 = 1000;
/// The NOTIFY channel of queue outcomes (sent by open batches, heard by each node's listener);
/// a payload is `<node_id>:<ticket>`.
const QUEUE_CHANNEL: &str = "leasehold_queue";
/// SQL condition (over `nodes n`): the node is alive. It was seen lately (database clock; a node
/// unseen for 5 s, five sweeps missed, is gone) and its LISTEN connection's backend is still
/// there (a killed node's connections close at once, so its death shows in milliseconds).
/// Grants skip the waiters of other nodes, listings omit them.
const LIVE_NODE: &str = "n.seen_at > now() - interval '5 seconds' \
     AND (n.pid IS NULL OR EXISTS (SELECT 1 FROM pg_stat_get_activity(n.pid)))";
