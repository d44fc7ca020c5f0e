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
//!   costs O(licenses + expired), never a scan of all sessions.
//!
//! At start the live state is loaded from the database (sessions with `ended_at IS NULL`).
//! Sessions that expired while the server was down are reaped by the first tick.
//!
//! # Memory: a compact record per live session
//!
//! A million live sessions must fit in a few hundred megabytes, so a live session is not kept
//! as a `Session` (five strings, ~220 bytes inline) but as an 80-byte `Live` record in a slab
//! (`Mem::slots`, reused through a free list): its id as the 128 bits of its UUID, its license
//! as an index, its username interned (`Names`, one copy per distinct name), its device and
//! instance ids in one allocation, and its times as milliseconds. The indexes hold slot numbers
//! only: `by_id` (4 bytes a bucket, hashed from the id), each license's `by_instance` (hashed
//! from user, device and instance, compared against the slot) and `expiry` (`(expires_at,
//! slot)`). A `Session` is built when one is answered. Session ids are the UUIDs the server
//! writes (lowercase, hyphenated, see `parse_sid`); the store refuses to open others.
//!
//! Ended sessions keep only their account, user and reason in memory (`Ended`), for the
//! `session_ended` answers of the following minutes, and at most `ENDED_MAX` of them: older
//! ones are read from the database.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use hashbrown::{DefaultHashBuilder, HashTable};
use leasehold_core::seats::{decide_device_activation, decide_user_activation};
use leasehold_core::session::SessionClock;
use leasehold_core::{LicenseTerms, OpenDecision, RuleError, SessionState, Timestamp, Username};
use leasehold_proto::{EndReason, LicenseModel, UserKind};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use crate::admission::{self, OpenedVia, SeatCounts, Verdict};
use crate::codec::{
    hash_from, parse_end_reason, parse_kind, parse_model, parse_terms, principal_columns,
    principal_from, session_clock, terms_json,
};
use crate::records::*;
use crate::{Store, StoreError, StoreResult};

/// Most jobs applied in one transaction.
const MAX_BATCH: usize = 8192;
/// Most sessions one reaper pass ends while holding the lock (see `reap_expired`).
const REAP_CHUNK: usize = 1000;
/// Longest a heartbeat's new expiry waits before the writer persists it (see the module doc).
const TOUCH_DELAY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long an ended session's reason is kept in memory (then it is read from disk).
const ENDED_MEMORY_MILLIS: i64 = 10 * 60 * 1000;
/// Most ended sessions remembered in memory (the oldest are forgotten first).
const ENDED_MAX: usize = 400_000;

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_models.sql"),
    // Creates the PostgreSQL queue's tables, unused here (the queue is in memory, see `Mem`).
    include_str!("../migrations/sqlite/0003_queue.sql"),
];

/// Indexes of the session table for this store's own access pattern, applied after the
/// numbered migrations at every start (idempotent). Not a numbered migration: the schema
/// version is shared with PostgreSQL (`leasehold copy-to-postgres` checks it), and neither the
/// schema of the rows nor what the copy reads changes.
///
/// `sessions_live_expiry` (on `expires_at`) was rewritten by every persisted heartbeat, yet
/// nothing queries by expiry on disk (the reaper works from memory): it went. Live sessions are
/// found by license instead: the load at start, and a license end change (`CapLicenseEnd`),
/// which this index turns from a table scan into a search. Heartbeats never change it.
const SESSION_INDEXES: &str = "
    DROP INDEX IF EXISTS sessions_live_expiry;
    CREATE INDEX IF NOT EXISTS sessions_live_by_license ON sessions (license_id)
        WHERE ended_at IS NULL;
";

/// A session id in memory: the 128 bits of its UUID.
type Sid = u128;

/// The id of a session of this store: a UUID written as the server writes it (36 characters,
/// lowercase hexadecimal, hyphenated). Any other spelling is no id of a session in memory.
fn parse_sid(s: &str) -> Option<Sid> {
    let bytes = s.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut id: Sid = 0;
    for (i, &c) in bytes.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        id = (id << 4) | Sid::from(digit);
    }
    Some(id)
}

/// The text of a session id (the inverse of `parse_sid`).
fn format_sid(id: Sid) -> String {
    SidText::new(id).as_str().to_owned()
}

/// The text of a session id without an allocation (for the writer's statements).
struct SidText([u8; 36]);

impl SidText {
    fn new(id: Sid) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 36];
        let mut at = 0;
        for i in 0..32 {
            if matches!(i, 8 | 12 | 16 | 20) {
                at += 1;
            }
            out[at] = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
            at += 1;
        }
        SidText(out)
    }

    fn as_str(&self) -> &str {
        // Hexadecimal digits and hyphens: always ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Hash of a session id for `Mem::by_id`. The server draws the ids (74 random bits), clients do
/// not choose them, so a multiplicative mix is enough.
fn sid_hash(id: Sid) -> u64 {
    ((id as u64) ^ ((id >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// `Option<Timestamp>` in a record: `NO_TIME` is `None`.
const NO_TIME: i64 = i64::MIN;

fn pack_time(t: Option<Timestamp>) -> i64 {
    t.map_or(NO_TIME, Timestamp::millis)
}

fn unpack_time(ms: i64) -> Option<Timestamp> {
    (ms != NO_TIME).then(|| Timestamp::from_millis(ms))
}

/// A live session in memory (80 bytes; see the module doc).
struct Live {
    /// The session id, high and low 64 bits.
    id: [u64; 2],
    /// `device_id` followed by `instance_id` (one allocation).
    ids: Box<str>,
    /// Length of `device_id` in `ids`.
    device_len: u32,
    /// Index in `Mem::licenses`; `VACANT` for a free slot.
    license: u32,
    /// Index in `Mem::names`.
    user: u32,
    kind: UserKind,
    overdraft: bool,
    opened_at: i64,
    expires_at: i64,
    hard_end: i64,
    license_end: i64,
}

/// `Live::license` of a free slot.
const VACANT: u32 = u32::MAX;

impl Live {
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: Sid,
        license: u32,
        user: u32,
        kind: UserKind,
        device_id: &str,
        instance_id: &str,
        clock: &SessionClock,
        overdraft: bool,
    ) -> Self {
        let mut ids = String::with_capacity(device_id.len() + instance_id.len());
        ids.push_str(device_id);
        ids.push_str(instance_id);
        Live {
            id: [(id >> 64) as u64, id as u64],
            ids: ids.into_boxed_str(),
            device_len: device_id.len() as u32,
            license,
            user,
            kind,
            overdraft,
            opened_at: clock.opened_at.millis(),
            expires_at: clock.expires_at.millis(),
            hard_end: pack_time(clock.hard_end),
            license_end: pack_time(clock.license_end),
        }
    }

    fn vacant() -> Self {
        Live {
            id: [0, 0],
            ids: Box::default(),
            device_len: 0,
            license: VACANT,
            user: 0,
            kind: UserKind::Interactive,
            overdraft: false,
            opened_at: 0,
            expires_at: 0,
            hard_end: NO_TIME,
            license_end: NO_TIME,
        }
    }

    fn is_vacant(&self) -> bool {
        self.license == VACANT
    }

    fn sid(&self) -> Sid {
        (Sid::from(self.id[0]) << 64) | Sid::from(self.id[1])
    }

    fn device(&self) -> &str {
        self.ids.get(..self.device_len as usize).unwrap_or("")
    }

    fn instance(&self) -> &str {
        self.ids.get(self.device_len as usize..).unwrap_or("")
    }

    fn clock(&self) -> SessionClock {
        SessionClock {
            opened_at: Timestamp::from_millis(self.opened_at),
            expires_at: Timestamp::from_millis(self.expires_at),
            hard_end: unpack_time(self.hard_end),
            license_end: unpack_time(self.license_end),
        }
    }
}

/// Usernames of live (and recently ended) sessions, one copy each, by index.
#[derive(Default)]
struct Names {
    index: HashMap<Arc<str>, u32>,
    list: Vec<Arc<str>>,
}

impl Names {
    fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.list.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.list.push(name.clone());
        self.index.insert(name, i);
        i
    }

    fn name(&self, i: u32) -> &str {
        self.list.get(i as usize).map_or("", |n| n)
    }

    fn shared(&self, i: u32) -> Arc<str> {
        self.list
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }
}

/// What memory keeps of an ended session: enough for ownership checks and `session_ended`.
struct Ended {
    license: u32,
    user: u32,
    reason: EndReason,
}

/// One change to persist. Large records are boxed: a mass expiry queues a million ops.
#[derive(Debug)]
enum WriteOp {
    Setting(String, String),
    Account(Account),
    Credential(Box<Credential>),
    DeleteCredential(TokenHash),
    User(Box<User>),
    License(Box<License>),
    InsertSession(Box<Session>),
    Touch {
        id: Sid,
        expires_at: Timestamp,
        hard_end: Option<Timestamp>,
        license_end: Option<Timestamp>,
    },
    /// The license end changed: every live session of the license gets it as `license_end`
    /// and ends no later than it.
    CapLicenseEnd {
        license_id: String,
        end: Option<Timestamp>,
    },
    LicenseUser(LicenseUser),
    Device(DeviceActivation),
    DeleteDevice {
        license_id: String,
        fingerprint: String,
    },
    /// A session ended, and its `ended` audit event (no string is copied for it).
    EndSession {
        id: Sid,
        at: Timestamp,
        reason: EndReason,
        account_id: Arc<str>,
        license_id: Arc<str>,
        username: Arc<str>,
    },
    Audit(Box<AuditEvent>),
}

struct Job {
    ops: Vec<WriteOp>,
    ack: Option<oneshot::Sender<Result<(), String>>>,
}

/// Heartbeat expiries not yet persisted: session id -> its timing (`expires_at`, `hard_end`,
/// `license_end`, packed as in `Live`), the latest per session. Shared by the store (which fills
/// it) and the writer (which empties it).
type TouchMap = HashMap<Sid, [i64; 3]>;

fn packed_clock(clock: &SessionClock) -> [i64; 3] {
    [
        clock.expires_at.millis(),
        pack_time(clock.hard_end),
        pack_time(clock.license_end),
    ]
}
type Touches = Arc<Mutex<TouchMap>>;

fn lock_touches(touches: &Touches) -> MutexGuard<'_, TouchMap> {
    touches.lock().unwrap_or_else(|e| e.into_inner())
}

struct LicenseState {
    license: License,
    id: Arc<str>,
    account_id: Arc<str>,
    live: u32,
    /// Live sessions per user (`Names` index).
    per_user: HashMap<u32, u32>,
    /// The latest live session of each client instance (user, device, instance), as slots.
    by_instance: HashTable<u32>,
    /// Live sessions by expiry: `(expires_at, slot)`.
    expiry: BTreeSet<(i64, u32)>,
    high_water: u32,
    low_water: u32,
    denials: u64,
    overdraft_live: u32,
    /// `registered_users`: registrations, and how many are active.
    users: HashMap<String, LicenseUser>,
    active_users: u32,
    /// `node_locked`: activated devices by fingerprint.
    devices: HashMap<String, DeviceActivation>,
    /// Clients waiting for a seat, first come first served (`on_full: "queue"`).
    queue: VecDeque<Waiting>,
}

impl LicenseState {
    fn new(license: License) -> Self {
        LicenseState {
            id: Arc::from(license.id.as_str()),
            account_id: Arc::from(license.account_id.as_str()),
            license,
            live: 0,
            per_user: HashMap::new(),
            by_instance: HashTable::new(),
            expiry: BTreeSet::new(),
            high_water: 0,
            low_water: 0,
            denials: 0,
            overdraft_live: 0,
            users: HashMap::new(),
            active_users: 0,
            devices: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    fn activations(&self) -> Option<u32> {
        match self.license.terms.model {
            LicenseModel::ConcurrentSessions => None,
            LicenseModel::RegisteredUsers => Some(self.active_users),
            LicenseModel::NodeLocked => Some(self.devices.len() as u32),
        }
    }

    /// The license's counts as the seat rule reads them (users are counted by interned name).
    fn seats<'a>(&'a self, names: &'a Names) -> LicenseSeats<'a> {
        LicenseSeats { lic: self, names }
    }
}

/// A license in memory with the names its per-user counts are keyed by.
struct LicenseSeats<'a> {
    lic: &'a LicenseState,
    names: &'a Names,
}

impl SeatCounts for LicenseSeats<'_> {
    fn terms(&self) -> &LicenseTerms {
        &self.lic.license.terms
    }

    fn live_sessions(&self) -> u32 {
        self.lic.live
    }

    fn user_live_sessions(&self, username: &str) -> u32 {
        self.names
            .get(username)
            .and_then(|u| self.lic.per_user.get(&u))
            .copied()
            .unwrap_or(0)
    }

    fn active_users(&self) -> u32 {
        self.lic.active_users
    }

    fn user_active(&self, username: &str) -> bool {
        self.lic.users.get(username).is_some_and(|u| u.active)
    }

    fn device_activated(&self, device_id: &str) -> bool {
        self.lic.devices.contains_key(device_id)
    }
}

struct Mem {
    writer: Sender<Job>,
    touches: Touches,
    settings: HashMap<String, String>,
    accounts: HashMap<String, Account>,
    credentials: HashMap<TokenHash, Credential>,
    credential_expiry: BTreeSet<(Timestamp, TokenHash)>,
    users: HashMap<(String, String), User>,
    client_ids: HashMap<String, (String, String)>,
    /// Licenses by index (never removed), and their indexes by id.
    licenses: Vec<LicenseState>,
    license_index: HashMap<String, u32>,
    /// Live sessions (see the module doc); free slots are listed in `free`.
    slots: Vec<Live>,
    free: Vec<u32>,
    /// Slots of live sessions, found by id.
    by_id: HashTable<u32>,
    names: Names,
    /// Keyed hasher of `by_instance` (its keys come from clients).
    keys: DefaultHashBuilder,
    ended: HashMap<Sid, Ended>,
    ended_order: VecDeque<(i64, Sid)>,
    started: Timestamp,
    /// Queueing licenses that may have a free seat for their waiters, served after the
    /// change that freed it is queued for writing (so a grant never reaches disk before it).
    to_serve: Vec<u32>,
    /// The latest `now` seen, for grants made on behalf of waiters.
    last_now: Timestamp,
    next_ticket: u64,
}

/// One client waiting for a seat.
struct Waiting {
    ticket: u64,
    req: OpenRequest,
    since: Timestamp,
    tx: oneshot::Sender<StoreResult<Grant>>,
}

/// What admission decided, before waiting for the disk.
enum AdmitStep {
    Reopened(Opened),
    Granted(Session, oneshot::Receiver<Result<(), String>>),
    Queued(QueueTicket),
}

/// A session found by id in memory.
enum Found {
    Live(u32),
    Ended(EndReason),
}

impl Mem {
    fn new(writer: Sender<Job>, now: Timestamp) -> Self {
        Mem {
            writer,
            touches: Touches::default(),
            settings: HashMap::new(),
            accounts: HashMap::new(),
            credentials: HashMap::new(),
            credential_expiry: BTreeSet::new(),
            users: HashMap::new(),
            client_ids: HashMap::new(),
            licenses: Vec::new(),
            license_index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashTable::new(),
            names: Names::default(),
            keys: DefaultHashBuilder::default(),
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
            started: now,
            to_serve: Vec::new(),
            last_now: now,
            next_ticket: 0,
        }
    }

    fn add_license(&mut self, license: License) {
        let i = self.licenses.len() as u32;
        self.license_index.insert(license.id.clone(), i);
        self.licenses.push(LicenseState::new(license));
    }

    fn license_at(&self, id: &str) -> Option<usize> {
        self.license_index.get(id).map(|&i| i as usize)
    }

    fn lic(&self, id: &str) -> Option<&LicenseState> {
        self.licenses.get(self.license_at(id)?)
    }

    fn lic_mut(&mut self, id: &str) -> Option<&mut LicenseState> {
        let i = self.license_at(id)?;
        self.licenses.get_mut(i)
    }

    /// The slot of a live session.
    fn find(&self, id: Sid) -> Option<u32> {
        let slots = &self.slots;
        self.by_id
            .find(sid_hash(id), |&s| slots[s as usize].sid() == id)
            .copied()
    }

    /// A session in memory: live (its slot) or recently ended.
    fn lookup(&self, session_id: &str) -> Option<Found> {
        let id = parse_sid(session_id)?;
        if let Some(slot) = self.find(id) {
            return Some(Found::Live(slot));
        }
        self.ended.get(&id).map(|e| Found::Ended(e.reason))
    }

    fn instance_hash(&self, user: u32, device_id: &str, instance_id: &str) -> u64 {
        self.keys.hash_one((user, device_id, instance_id))
    }

    /// The latest live session of a client instance.
    fn instance_slot(
        &self,
        li: usize,
        username: &str,
        device_id: &str,
        instance_id: &str,
    ) -> Option<u32> {
        let user = self.names.get(username)?;
        let hash = self.instance_hash(user, device_id, instance_id);
        let slots = &self.slots;
        self.licenses
            .get(li)?
            .by_instance
            .find(hash, |&s| {
                let r = &slots[s as usize];
                r.user == user && r.device() == device_id && r.instance() == instance_id
            })
            .copied()
    }

    /// Slots of the license's live sessions (one per client instance) matching `pred`.
    fn license_slots(&self, li: usize, pred: impl Fn(&Live) -> bool) -> Vec<u32> {
        let Some(lic) = self.licenses.get(li) else {
            return Vec::new();
        };
        lic.by_instance
            .iter()
            .copied()
            .filter(|&s| pred(&self.slots[s as usize]))
            .collect()
    }

    /// The `Session` record of a live slot.
    fn session(&self, slot: u32) -> Session {
        let r = &self.slots[slot as usize];
        let lic = &self.licenses[r.license as usize];
        Session {
            id: format_sid(r.sid()),
            license_id: lic.id.clone(),
            account_id: lic.account_id.clone(),
            username: self.names.name(r.user).to_owned(),
            kind: r.kind,
            device_id: r.device().to_owned(),
            instance_id: r.instance().to_owned(),
            clock: r.clock(),
            heartbeat_interval_secs: lic.license.terms.heartbeat_interval_secs(),
            overdraft: r.overdraft,
        }
    }

    /// Adds a live session to the slab and the indexes; answers its slot.
    fn insert_live(&mut self, live: Live) -> u32 {
        let li = live.license as usize;
        let (id, user, expires_at, overdraft) =
            (live.sid(), live.user, live.expires_at, live.overdraft);
        let hash = self.instance_hash(user, live.device(), live.instance());
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = live;
                s
            }
            None => {
                self.slots.push(live);
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.by_id
            .insert_unique(sid_hash(id), slot, |&s| sid_hash(slots[s as usize].sid()));
        let keys = &self.keys;
        let lic = &mut self.licenses[li];
        lic.live += 1;
        lic.overdraft_live += u32::from(overdraft);
        *lic.per_user.entry(user).or_default() += 1;
        let new = &slots[slot as usize];
        let same = |s: &u32| {
            let r = &slots[*s as usize];
            r.user == new.user && r.device() == new.device() && r.instance() == new.instance()
        };
        // A client instance's key finds its latest session (an older one left live by a queue
        // grant stays counted, as before).
        match lic.by_instance.find_mut(hash, same) {
            Some(existing) => *existing = slot,
            None => {
                lic.by_instance.insert_unique(hash, slot, |&s| {
                    let r = &slots[s as usize];
                    keys.hash_one((r.user, r.device(), r.instance()))
                });
            }
        }
        lic.expiry.insert((expires_at, slot));
        lic.high_water = lic.high_water.max(lic.live);
        slot
    }

    /// Takes a live session out of the slab and the indexes.
    fn remove_live(&mut self, slot: u32) -> Option<Live> {
        let r = self.slots.get(slot as usize).filter(|r| !r.is_vacant())?;
        let hash = self.instance_hash(r.user, r.device(), r.instance());
        if let Ok(entry) = self.by_id.find_entry(sid_hash(r.sid()), |&s| s == slot) {
            entry.remove();
        }
        let lic = self.licenses.get_mut(r.license as usize)?;
        lic.live = lic.live.saturating_sub(1);
        lic.overdraft_live = lic.overdraft_live.saturating_sub(u32::from(r.overdraft));
        if let Some(n) = lic.per_user.get_mut(&r.user) {
            *n -= 1;
            if *n == 0 {
                lic.per_user.remove(&r.user);
            }
        }
        if let Ok(entry) = lic.by_instance.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        lic.expiry.remove(&(r.expires_at, slot));
        lic.low_water = lic.low_water.min(lic.live);
        let live = std::mem::replace(&mut self.slots[slot as usize], Live::vacant());
        self.free.push(slot);
        Some(live)
    }

    /// Stores a live session's new timing, keeping the expiry index in step.
    fn set_clock(&mut self, slot: u32, clock: &SessionClock) {
        let r = &mut self.slots[slot as usize];
        let new = clock.expires_at.millis();
        if r.expires_at != new {
            if let Some(lic) = self.licenses.get_mut(r.license as usize) {
                lic.expiry.remove(&(r.expires_at, slot));
                lic.expiry.insert((new, slot));
            }
            r.expires_at = new;
        }
        r.opened_at = clock.opened_at.millis();
        r.hard_end = pack_time(clock.hard_end);
        r.license_end = pack_time(clock.license_end);
    }

    /// A heartbeat of a live session: slides its expiry (persisted with the next batch), or
    /// ends it if it has expired meanwhile.
    fn beat(&mut self, slot: u32, now: Timestamp) -> StoreResult<SessionClock> {
        let r = &self.slots[slot as usize];
        let mut clock = r.clock();
        let Some(lic) = self.licenses.get(r.license as usize) else {
            return Err(StoreError::NotFound("license"));
        };
        match clock.heartbeat(&lic.license.terms, now) {
            Ok(_) => {
                let id = r.sid();
                self.set_clock(slot, &clock);
                self.touch(id, &clock);
                Ok(clock)
            }
            Err(err) => {
                // Expired but not yet reaped: end it now, it never comes back.
                let reason = clock.expiry_reason();
                if let Some((_, ops)) = self.end_live(slot, reason, now) {
                    self.send_unacked(ops);
                }
                Err(err.into())
            }
        }
    }

    fn send(&mut self, ops: Vec<WriteOp>) -> oneshot::Receiver<Result<(), String>> {
        let (ack, rx) = oneshot::channel();
        // A send error means the writer thread died; the dropped ack reports it.
        let _ = self.writer.send(Job {
            ops,
            ack: Some(ack),
        });
        self.serve_queues();
        rx
    }

    /// Records a heartbeat's new expiry for the writer (coalesced, see `Touches`).
    fn touch(&mut self, id: Sid, clock: &SessionClock) {
        let first = {
            let mut touches = lock_touches(&self.touches);
            let first = touches.is_empty();
            touches.insert(id, packed_clock(clock));
            first
        };
        if first {
            // Starts the writer's `TOUCH_DELAY` clock; further heartbeats join the same write.
            let _ = self.writer.send(Job {
                ops: Vec::new(),
                ack: None,
            });
        }
        self.serve_queues();
    }

    fn send_unacked(&mut self, ops: Vec<WriteOp>) {
        if !ops.is_empty() {
            let _ = self.writer.send(Job { ops, ack: None });
        }
        self.serve_queues();
    }

    /// Admits an open: the client instance's live session, a new session, a place in the
    /// queue (when `wait` and the license queues), or a refusal.
    fn admit(&mut self, req: &OpenRequest, wait: bool, now: Timestamp) -> StoreResult<AdmitStep> {
        self.last_now = self.last_now.max(now);
        let username = Username::parse(&req.username)?;
        let Some(li) = self.license_at(&req.license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        if parse_sid(&req.new_id).is_none() {
            return Err(bad_new_id(&req.new_id));
        }
        let mut ops = Vec::new();
        // Idempotent re-open: the client instance's live session is returned, refreshed.
        if let Some(slot) = self.instance_slot(li, &req.username, &req.device_id, &req.instance_id)
        {
            let mut clock = self.slots[slot as usize].clock();
            if clock.is_live(now) {
                clock.heartbeat(&self.licenses[li].license.terms, now)?;
                self.set_clock(slot, &clock);
                let id = self.slots[slot as usize].sid();
                self.send_unacked(vec![WriteOp::Touch {
                    id,
                    expires_at: clock.expires_at,
                    hard_end: clock.hard_end,
                    license_end: clock.license_end,
                }]);
                return Ok(AdmitStep::Reopened(Opened {
                    session: self.session(slot),
                    created: false,
                }));
            }
            if let Some((_, mut o)) = self.end_live(slot, clock.expiry_reason(), now) {
                ops.append(&mut o);
            }
        }
        let decide = |mem: &Mem| {
            let seats = mem.licenses[li].seats(&mem.names);
            admission::decide(&seats, &username, &req.device_id, now)
        };
        let mut decision = decide(self);
        if matches!(
            decision,
            OpenDecision::Deny(RuleError::NoSeatAvailable { .. })
        ) {
            // A full license reclaims its own expired sessions before refusing anyone.
            let (_, mut o) = self.reap_license_upto(li, now, usize::MAX);
            ops.append(&mut o);
            decision = decide(self);
        }
        let lic = &mut self.licenses[li];
        lic.queue.retain(|w| !w.tx.is_closed());
        let waiting = lic.queue.len();
        let verdict = admission::newcomer_verdict(
            &lic.license.terms,
            decision,
            waiting,
            wait,
            &req.device_id,
        );
        let overdraft = match verdict {
            Verdict::Grant { overdraft } => overdraft,
            Verdict::Queue => {
                self.next_ticket += 1;
                let ticket = self.next_ticket;
                let (tx, granted) = oneshot::channel();
                let lic = &mut self.licenses[li];
                lic.queue.push_back(Waiting {
                    ticket,
                    req: req.clone(),
                    since: now,
                    tx,
                });
                let position = lic.queue.len() as u32;
                self.send_unacked(ops);
                return Ok(AdmitStep::Queued(QueueTicket {
                    ticket,
                    position,
                    granted,
                }));
            }
            Verdict::Refuse { refusal, denial } => {
                if denial {
                    lic.denials += 1;
                }
                let denied = admission::denied(&lic.license, &req.username, &refusal, now);
                ops.push(WriteOp::Audit(Box::new(denied)));
                self.send_unacked(ops);
                return Err(StoreError::Rule(refusal));
            }
        };
        let (_, session, mut o) = self.grant(req, overdraft, now, OpenedVia::Request)?;
        ops.append(&mut o);
        Ok(AdmitStep::Granted(session, self.send(ops)))
    }

    /// Creates the session of a granted open; answers its slot, the session and the ops that
    /// persist it.
    fn grant(
        &mut self,
        req: &OpenRequest,
        overdraft: bool,
        now: Timestamp,
        via: OpenedVia,
    ) -> StoreResult<(u32, Session, Vec<WriteOp>)> {
        let Some(id) = parse_sid(&req.new_id) else {
            return Err(bad_new_id(&req.new_id));
        };
        let Some(li) = self.license_at(&req.license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        let clock = SessionClock::open(req.kind, &self.licenses[li].license.terms, now);
        let user = self.names.intern(&req.username);
        let slot = self.insert_live(Live::new(
            id,
            li as u32,
            user,
            req.kind,
            &req.device_id,
            &req.instance_id,
            &clock,
            overdraft,
        ));
        let session = self.session(slot);
        let audit = WriteOp::Audit(Box::new(admission::opened(&session, now, via)));
        let ops = vec![WriteOp::InsertSession(Box::new(session.clone())), audit];
        Ok((slot, session, ops))
    }

    /// Grants free seats of queueing licenses to their longest waiters, in order. A waiter
    /// that has gone away is skipped; a grant its waiter can no longer receive is ended at
    /// once, so no seat is ever held by nobody.
    fn serve_queues(&mut self) {
        while let Some(li) = self.to_serve.pop() {
            let li = li as usize;
            let now = self.last_now;
            while let Some(lic) = self.licenses.get_mut(li) {
                lic.queue.retain(|w| !w.tx.is_closed());
                let Some(head) = lic.queue.front() else {
                    break;
                };
                let Ok(username) = Username::parse(&head.req.username) else {
                    lic.queue.pop_front();
                    continue;
                };
                let device_id = &head.req.device_id;
                let decision =
                    admission::decide(&lic.seats(&self.names), &username, device_id, now);
                let verdict = admission::queue_head_verdict(decision, device_id);
                let Some(head) = (match &verdict {
                    Verdict::Queue => None,
                    _ => lic.queue.pop_front(),
                }) else {
                    break;
                };
                let overdraft = match verdict {
                    Verdict::Grant { overdraft } => overdraft,
                    Verdict::Refuse { refusal, .. } => {
                        // The license changed under the waiter (suspended, limit...): tell it.
                        let _ = head.tx.send(Err(StoreError::Rule(refusal)));
                        continue;
                    }
                    Verdict::Queue => break,
                };
                let Ok((slot, session, ops)) =
                    self.grant(&head.req, overdraft, now, OpenedVia::Queue)
                else {
                    break;
                };
                let (ack, durable) = oneshot::channel();
                let _ = self.writer.send(Job {
                    ops,
                    ack: Some(ack),
                });
                let grant = Grant {
                    opened: Opened {
                        session,
                        created: true,
                    },
                    durable,
                };
                if head.tx.send(Ok(grant)).is_err() {
                    // The waiter left between the check and the grant: give the seat back.
                    if let Some((_, ops)) = self.end_live(slot, EndReason::Logout, now) {
                        let _ = self.writer.send(Job { ops, ack: None });
                    }
                }
            }
        }
    }

    /// Ends a live session in memory and returns it and the ops that persist it.
    fn end_live(
        &mut self,
        slot: u32,
        reason: EndReason,
        now: Timestamp,
    ) -> Option<(Session, Vec<WriteOp>)> {
        if self.slots.get(slot as usize)?.is_vacant() {
            return None;
        }
        let session = self.session(slot);
        let live = self.remove_live(slot)?;
        let li = live.license as usize;
        if self.licenses.get(li).is_some_and(|l| !l.queue.is_empty()) {
            self.to_serve.push(live.license);
        }
        self.last_now = self.last_now.max(now);
        let id = live.sid();
        self.ended.insert(
            id,
            Ended {
                license: live.license,
                user: live.user,
                reason,
            },
        );
        self.ended_order.push_back((now.millis(), id));
        while self.ended_order.len() > ENDED_MAX {
            if let Some((_, old)) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
        let ops = vec![WriteOp::EndSession {
            id,
            at: now,
            reason,
            account_id: session.account_id.clone(),
            license_id: session.license_id.clone(),
            username: self.names.shared(live.user),
        }];
        Some((session, ops))
    }

    /// Ends at most `limit` expired sessions of one license (the earliest expired); returns
    /// them and the ops that persist it.
    fn reap_license_upto(
        &mut self,
        li: usize,
        now: Timestamp,
        limit: usize,
    ) -> (Vec<Session>, Vec<WriteOp>) {
        let mut expired = Vec::new();
        if let Some(lic) = self.licenses.get(li) {
            for &(at, slot) in lic.expiry.iter().take(limit) {
                if at > now.millis() {
                    break;
                }
                expired.push(slot);
            }
        }
        let mut ended = Vec::new();
        let mut ops = Vec::new();
        for slot in expired {
            let reason = self.slots[slot as usize].clock().expiry_reason();
            if let Some((s, mut o)) = self.end_live(slot, reason, now) {
                ended.push(s);
                ops.append(&mut o);
            }
        }
        (ended, ops)
    }

    /// The wall clock stepped by `delta_ms`: every live session keeps its remaining life
    /// (`SessionClock::shift_for_clock_step`); the new timings reach the disk as touches.
    /// Answers how many sessions moved.
    fn shift_live(&mut self, delta_ms: i64) -> usize {
        let mut moved = 0;
        for li in 0..self.licenses.len() {
            let slots: Vec<u32> = self.licenses[li].expiry.iter().map(|&(_, s)| s).collect();
            for slot in slots {
                let mut clock = self.slots[slot as usize].clock();
                clock.shift_for_clock_step(delta_ms);
                self.set_clock(slot, &clock);
                let id = self.slots[slot as usize].sid();
                self.touch(id, &clock);
                moved += 1;
            }
        }
        moved
    }

    fn forget_old_ends(&mut self, now: Timestamp) {
        while let Some(&(at, id)) = self.ended_order.front() {
            if now.millis() - at < ENDED_MEMORY_MILLIS {
                break;
            }
            self.ended_order.pop_front();
            self.ended.remove(&id);
        }
    }

    /// Live sessions of a user on the account's licenses, as slots.
    fn user_slots(&self, account_id: &str, username: &str) -> Vec<u32> {
        let Some(user) = self.names.get(username) else {
            return Vec::new();
        };
        (0..self.licenses.len())
            .filter(|&li| {
                let l = &self.licenses[li];
                &*l.account_id == account_id && l.per_user.contains_key(&user)
            })
            .flat_map(|li| self.license_slots(li, |r| r.user == user))
            .collect()
    }
}

fn bad_new_id(id: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "session id {id:?} is not a lowercase hyphenated UUID"
    ))
}

/// The embedded SQLite store.
pub struct SqliteStore {
    mem: Mutex<Mem>,
    reader: Mutex<Connection>,
}

async fn acked(rx: oneshot::Receiver<Result<(), String>>) -> StoreResult<()> {
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StoreError::Unavailable(e)),
        Err(_) => Err(StoreError::Unavailable(
            "the database writer has stopped".into(),
        )),
    }
}

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

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, migrates it and loads the live state.
    pub fn open(path: &Path, now: Timestamp) -> StoreResult<Self> {
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel();
        let mem = load(&conn, tx, now)?;
        let touches = mem.touches.clone();
        let reader = open_connection(path)?;
        std::thread::Builder::new()
            .name("leasehold-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, touches))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(SqliteStore {
            mem: Mutex::new(mem),
            reader: Mutex::new(reader),
        })
    }

    fn mem(&self) -> MutexGuard<'_, Mem> {
        // A panic while holding the lock must not take the whole server down with it.
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(&conn)?)
    }

    /// The answer about a session that is not live in memory: `SessionEnded` with the reason
    /// on disk, or not found.
    async fn ended_on_disk<T>(&self, session_id: &str) -> StoreResult<T> {
        match self.get_session(session_id).await? {
            Some(SessionLookup {
                state: SessionState::Ended(reason),
                ..
            }) => Err(RuleError::SessionEnded(reason).into()),
            _ => Err(StoreError::NotFound("session")),
        }
    }
}

fn load(conn: &Connection, writer: Sender<Job>, now: Timestamp) -> StoreResult<Mem> {
    let mut mem = Mem::new(writer, now);
    let mut stmt = conn.prepare("SELECT key, value FROM settings")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (k, v) = row?;
        mem.settings.insert(k, v);
    }
    let mut stmt = conn.prepare("SELECT id, name, created_at FROM accounts")?;
    for row in stmt.query_map([], |r| {
        Ok(Account {
            id: r.get(0)?,
            name: r.get(1)?,
            created_at: Timestamp::from_millis(r.get(2)?),
        })
    })? {
        let a = row?;
        mem.accounts.insert(a.id.clone(), a);
    }
    let mut stmt =
        conn.prepare("SELECT hash, kind, account_id, username, expires_at FROM credentials")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<i64>>(4)?,
        ))
    })?;
    for row in rows {
        let (hash, kind, account_id, username, expires_at) = row?;
        let Some(hash) = hash_from(hash) else {
            continue;
        };
        let Some(principal) = principal_from(&kind, account_id, username) else {
            continue;
        };
        let expires_at = expires_at.map(Timestamp::from_millis);
        if let Some(at) = expires_at {
            mem.credential_expiry.insert((at, hash));
        }
        mem.credentials.insert(
            hash,
            Credential {
                hash,
                principal,
                expires_at,
            },
        );
    }
    let mut stmt = conn.prepare(
        "SELECT account_id, username, kind, active, client_id, client_secret_hash, created_at FROM users",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(User {
            account_id: r.get(0)?,
            username: r.get(1)?,
            kind: parse_kind(&r.get::<_, String>(2)?),
            active: r.get(3)?,
            client_id: r.get(4)?,
            client_secret_hash: r.get::<_, Option<Vec<u8>>>(5)?.and_then(hash_from),
            created_at: Timestamp::from_millis(r.get(6)?),
        })
    })?;
    for row in rows {
        let u = row?;
        if let Some(cid) = &u.client_id {
            mem.client_ids
                .insert(cid.clone(), (u.account_id.clone(), u.username.clone()));
        }
        mem.users
            .insert((u.account_id.clone(), u.username.clone()), u);
    }
    let mut stmt = conn.prepare("SELECT id, account_id, model, terms, created_at FROM licenses")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (id, account_id, model, terms, created_at) = row?;
        let terms = parse_terms(&id, &terms)?;
        let model = parse_model(&id, &model)?;
        mem.add_license(License {
            id,
            account_id,
            model,
            terms,
            created_at: Timestamp::from_millis(created_at),
        });
    }
    let mut stmt = conn.prepare(
        "SELECT id, license_id, username, kind, device_id, instance_id, opened_at, expires_at, hard_end,
                overdraft, license_end
         FROM sessions WHERE ended_at IS NULL",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, Option<i64>>(8)?,
            r.get::<_, bool>(9)?,
            r.get::<_, Option<i64>>(10)?,
        ))
    })?;
    for row in rows {
        let (
            id,
            license_id,
            username,
            kind,
            device_id,
            instance_id,
            opened,
            expires,
            hard_end,
            overdraft,
            license_end,
        ) = row?;
        let Some(li) = mem.license_at(&license_id) else {
            continue;
        };
        let Some(sid) = parse_sid(&id) else {
            // Never written by this server (its ids are UUIDs): not held in memory.
            tracing::warn!(session = %id, "live session with a malformed id left out");
            continue;
        };
        let clock = session_clock(opened, expires, hard_end, license_end);
        let user = mem.names.intern(&username);
        mem.insert_live(Live::new(
            sid,
            li as u32,
            user,
            parse_kind(&kind),
            &device_id,
            &instance_id,
            &clock,
            overdraft,
        ));
    }
    let mut stmt =
        conn.prepare("SELECT license_id, username, active, updated_at FROM license_users")?;
    let rows = stmt.query_map([], |r| {
        Ok(LicenseUser {
            license_id: r.get(0)?,
            username: r.get(1)?,
            active: r.get(2)?,
            updated_at: Timestamp::from_millis(r.get(3)?),
        })
    })?;
    for row in rows {
        let u = row?;
        if let Some(lic) = mem.lic_mut(&u.license_id) {
            lic.active_users += u32::from(u.active);
            lic.users.insert(u.username.clone(), u);
        }
    }
    let mut stmt =
        conn.prepare("SELECT license_id, fingerprint, name, activated_at FROM license_devices")?;
    let rows = stmt.query_map([], |r| {
        Ok(DeviceActivation {
            license_id: r.get(0)?,
            fingerprint: r.get(1)?,
            name: r.get(2)?,
            activated_at: Timestamp::from_millis(r.get(3)?),
        })
    })?;
    for row in rows {
        let d = row?;
        if let Some(lic) = mem.lic_mut(&d.license_id) {
            lic.devices.insert(d.fingerprint.clone(), d);
        }
    }
    for lic in &mut mem.licenses {
        lic.high_water = lic.live;
        lic.low_water = lic.live;
    }
    Ok(mem)
}

fn writer_loop(mut conn: Connection, rx: Receiver<Job>, touches: Touches) {
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::Instant;
    let mut spare = TouchMap::new();
    // When the pending touches must be written: `TOUCH_DELAY` after the wake-up of the first.
    let mut touch_deadline: Option<Instant> = None;
    // A heartbeat's wake-up (no ops, no ack) only starts the touch clock.
    let keep = |job: Job, batch: &mut Vec<Job>, deadline: &mut Option<Instant>| {
        if job.ops.is_empty() && job.ack.is_none() {
            deadline.get_or_insert_with(|| Instant::now() + TOUCH_DELAY);
        } else {
            batch.push(job);
        }
    };
    loop {
        let first = match touch_deadline {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        let mut batch = Vec::new();
        // The store is gone: write what is pending, then stop.
        let stopping = matches!(first, Err(RecvTimeoutError::Disconnected));
        if let Ok(job) = first {
            keep(job, &mut batch, &mut touch_deadline);
        }
        // Taken before the queue is drained: a touched session's insert was queued before its
        // touch, so it is in this batch (or an earlier one) and the update finds its row. The
        // map handed back keeps its capacity, so heartbeats do not regrow it under the lock.
        let mut pending = None;
        if stopping || touch_deadline.is_some_and(|at| at <= Instant::now()) {
            spare.clear();
            let empty = std::mem::take(&mut spare);
            pending = Some(std::mem::replace(&mut *lock_touches(&touches), empty));
            touch_deadline = None;
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => keep(job, &mut batch, &mut touch_deadline),
                Err(_) => break,
            }
        }
        if let Some(mut pending) = pending {
            if batch.len() == MAX_BATCH {
                // Jobs may remain queued, an insert among them: these touches wait for the
                // next batch (unless a newer heartbeat replaced them meanwhile).
                let mut map = lock_touches(&touches);
                for (id, t) in pending.drain() {
                    map.entry(id).or_insert(t);
                }
                touch_deadline = Some(Instant::now());
            } else {
                // In id order (ids are time-ordered): the updates walk the session B-tree.
                let mut touched: Vec<_> = pending.drain().collect();
                touched.sort_unstable_by_key(|&(id, _)| id);
                batch.push(Job {
                    ops: touched
                        .into_iter()
                        .map(|(id, [expires_at, hard_end, license_end])| WriteOp::Touch {
                            id,
                            expires_at: Timestamp::from_millis(expires_at),
                            hard_end: unpack_time(hard_end),
                            license_end: unpack_time(license_end),
                        })
                        .collect(),
                    ack: None,
                });
            }
            spare = pending;
        }
        if !batch.is_empty() {
            let result = apply_batch(&mut conn, &batch).map_err(|e| {
                tracing::error!(error = %e, jobs = batch.len(), "database write failed");
                e.to_string()
            });
            for job in batch {
                if let Some(ack) = job.ack {
                    let _ = ack.send(result.clone());
                }
            }
        }
        if stopping && touch_deadline.is_none() {
            return;
        }
    }
}

fn apply_batch(conn: &mut Connection, batch: &[Job]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for job in batch {
        for op in &job.ops {
            apply_op(&tx, op)?;
        }
    }
    tx.commit()
}

fn apply_op(tx: &rusqlite::Transaction<'_>, op: &WriteOp) -> rusqlite::Result<()> {
    match op {
        WriteOp::Setting(k, v) => {
            tx.prepare_cached("INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)")?
                .execute(params![k, v])?;
        }
        WriteOp::Account(a) => {
            tx.prepare_cached("INSERT INTO accounts (id, name, created_at) VALUES (?1, ?2, ?3)")?
                .execute(params![a.id, a.name, a.created_at.millis()])?;
        }
        WriteOp::Credential(c) => {
            let (account_id, username) = principal_columns(&c.principal);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO credentials (hash, kind, account_id, username, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                &c.hash[..],
                c.principal.kind_str(),
                account_id,
                username,
                c.expires_at.map(Timestamp::millis)
            ])?;
        }
        WriteOp::DeleteCredential(hash) => {
            tx.prepare_cached("DELETE FROM credentials WHERE hash = ?1")?
                .execute(params![&hash[..]])?;
        }
        WriteOp::User(u) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO users
                 (account_id, username, kind, active, client_id, client_secret_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                u.account_id,
                u.username,
                u.kind.as_str(),
                u.active,
                u.client_id,
                u.client_secret_hash.map(|h| h.to_vec()),
                u.created_at.millis()
            ])?;
        }
        WriteOp::License(l) => {
            let terms = terms_json(&l.terms)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            tx.prepare_cached(
                "INSERT INTO licenses (id, account_id, model, terms, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET terms = excluded.terms, model = excluded.model",
            )?
            .execute(params![
                l.id,
                l.account_id,
                l.model.as_str(),
                terms,
                l.created_at.millis()
            ])?;
        }
        WriteOp::InsertSession(s) => {
            tx.prepare_cached(
                "INSERT INTO sessions (id, license_id, username, kind, device_id, instance_id,
                                       opened_at, expires_at, hard_end, overdraft, license_end)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                s.id,
                &*s.license_id,
                s.username,
                s.kind.as_str(),
                s.device_id,
                s.instance_id,
                s.clock.opened_at.millis(),
                s.clock.expires_at.millis(),
                s.clock.hard_end.map(Timestamp::millis),
                s.overdraft,
                s.clock.license_end.map(Timestamp::millis)
            ])?;
        }
        WriteOp::Touch {
            id,
            expires_at,
            hard_end,
            license_end,
        } => {
            // A touch made before a license end changed (still pending when the change was
            // written) is stale: skipped, so the disk never holds a later expiry than memory.
            // `hard_end` moves only with a wall-clock step (`shift_live`).
            tx.prepare_cached(
                "UPDATE sessions SET expires_at = ?2, license_end = ?3, hard_end = ?4
                 WHERE id = ?1 AND ended_at IS NULL AND license_end IS ?3",
            )?
            .execute(params![
                SidText::new(*id).as_str(),
                expires_at.millis(),
                license_end.map(Timestamp::millis),
                hard_end.map(Timestamp::millis)
            ])?;
        }
        WriteOp::CapLicenseEnd { license_id, end } => {
            let end = end.map(Timestamp::millis);
            tx.prepare_cached(
                "UPDATE sessions SET license_end = ?2, expires_at = MIN(expires_at, COALESCE(?2, expires_at))
                 WHERE license_id = ?1 AND ended_at IS NULL",
            )?
            .execute(params![license_id, end])?;
        }
        WriteOp::LicenseUser(u) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO license_users (license_id, username, active, updated_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                u.license_id,
                u.username,
                u.active,
                u.updated_at.millis()
            ])?;
        }
        WriteOp::Device(d) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO license_devices (license_id, fingerprint, name, activated_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                d.license_id,
                d.fingerprint,
                d.name,
                d.activated_at.millis()
            ])?;
        }
        WriteOp::DeleteDevice {
            license_id,
            fingerprint,
        } => {
            tx.prepare_cached(
                "DELETE FROM license_devices WHERE license_id = ?1 AND fingerprint = ?2",
            )?
            .execute(params![license_id, fingerprint])?;
        }
        WriteOp::EndSession {
            id,
            at,
            reason,
            account_id,
            license_id,
            username,
        } => {
            let id = SidText::new(*id);
            tx.prepare_cached(
                "UPDATE sessions SET ended_at = ?2, end_reason = ?3 WHERE id = ?1 AND ended_at IS NULL",
            )?
            .execute(params![id.as_str(), at.millis(), reason.as_str()])?;
            tx.prepare_cached(
                "INSERT INTO audit_events (at, account_id, license_id, session_id, username, event, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'ended', ?6)",
            )?
            .execute(params![
                at.millis(),
                &**account_id,
                &**license_id,
                id.as_str(),
                &**username,
                reason.as_str()
            ])?;
        }
        WriteOp::Audit(e) => {
            tx.prepare_cached(
                "INSERT INTO audit_events (at, account_id, license_id, session_id, username, event, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                e.at.millis(),
                e.account_id,
                e.license_id,
                e.session_id,
                e.username,
                e.event,
                e.detail
            ])?;
        }
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(self.mem().settings.get(key).cloned())
    }

    async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        let rx = {
            let mut mem = self.mem();
            mem.settings.insert(key.into(), value.into());
            mem.send(vec![WriteOp::Setting(key.into(), value.into())])
        };
        acked(rx).await
    }

    async fn put_credential(&self, credential: Credential) -> StoreResult<()> {
        let rx = {
            let mut mem = self.mem();
            if let Some(at) = credential.expires_at {
                mem.credential_expiry.insert((at, credential.hash));
            }
            mem.credentials.insert(credential.hash, credential.clone());
            mem.send(vec![WriteOp::Credential(Box::new(credential))])
        };
        acked(rx).await
    }

    async fn find_credential(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<Credential>> {
        let mem = self.mem();
        Ok(mem
            .credentials
            .get(hash)
            .filter(|c| c.expires_at.is_none_or(|at| now < at))
            .cloned())
    }

    async fn create_account(&self, account: Account, admin: Credential) -> StoreResult<()> {
        let rx = {
            let mut mem = self.mem();
            if mem.accounts.contains_key(&account.id) {
                return Err(StoreError::Conflict(format!(
                    "account {} exists",
                    account.id
                )));
            }
            mem.accounts.insert(account.id.clone(), account.clone());
            mem.credentials.insert(admin.hash, admin.clone());
            mem.send(vec![
                WriteOp::Account(account),
                WriteOp::Credential(Box::new(admin)),
            ])
        };
        acked(rx).await
    }

    async fn get_account(&self, id: &str) -> StoreResult<Option<Account>> {
        Ok(self.mem().accounts.get(id).cloned())
    }

    async fn get_user(&self, account_id: &str, username: &str) -> StoreResult<Option<User>> {
        Ok(self
            .mem()
            .users
            .get(&(account_id.to_owned(), username.to_owned()))
            .cloned())
    }

    async fn put_user(&self, user: User) -> StoreResult<bool> {
        let (rx, created) = {
            let mut mem = self.mem();
            if !mem.accounts.contains_key(&user.account_id) {
                return Err(StoreError::NotFound("account"));
            }
            if let Some(cid) = &user.client_id {
                mem.client_ids.insert(
                    cid.clone(),
                    (user.account_id.clone(), user.username.clone()),
                );
            }
            let created = mem
                .users
                .insert(
                    (user.account_id.clone(), user.username.clone()),
                    user.clone(),
                )
                .is_none();
            (mem.send(vec![WriteOp::User(Box::new(user))]), created)
        };
        acked(rx).await?;
        Ok(created)
    }

    async fn find_user_by_client_id(&self, client_id: &str) -> StoreResult<Option<User>> {
        let mem = self.mem();
        Ok(mem
            .client_ids
            .get(client_id)
            .and_then(|key| mem.users.get(key))
            .cloned())
    }

    async fn list_users(&self, account_id: &str) -> StoreResult<Vec<User>> {
        let mem = self.mem();
        let mut users: Vec<User> = mem
            .users
            .values()
            .filter(|u| u.account_id == account_id)
            .cloned()
            .collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    async fn list_licenses(&self, account_id: &str) -> StoreResult<Vec<License>> {
        let mem = self.mem();
        let mut licenses: Vec<License> = mem
            .licenses
            .iter()
            .filter(|l| l.license.account_id == account_id)
            .map(|l| l.license.clone())
            .collect();
        licenses.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(licenses)
    }

    async fn create_license(&self, license: License) -> StoreResult<()> {
        let rx = {
            let mut mem = self.mem();
            if !mem.accounts.contains_key(&license.account_id) {
                return Err(StoreError::NotFound("account"));
            }
            if mem.license_index.contains_key(&license.id) {
                return Err(StoreError::Conflict(format!(
                    "license {} exists",
                    license.id
                )));
            }
            let ops = vec![
                WriteOp::License(Box::new(license.clone())),
                WriteOp::Audit(Box::new(admission::license_created(&license))),
            ];
            mem.add_license(license);
            mem.send(ops)
        };
        acked(rx).await
    }

    async fn get_license(&self, id: &str) -> StoreResult<Option<License>> {
        Ok(self.mem().lic(id).map(|l| l.license.clone()))
    }

    async fn update_license(&self, license: License, now: Timestamp) -> StoreResult<()> {
        let rx = {
            let mut mem = self.mem();
            let Some(li) = mem.license_at(&license.id) else {
                return Err(StoreError::NotFound("license"));
            };
            let state = &mut mem.licenses[li];
            let end_changed = state.license.terms.expires_at != license.terms.expires_at;
            state.license = license.clone();
            let mut ops = vec![
                WriteOp::Audit(Box::new(admission::license_updated(&license, now))),
                WriteOp::License(Box::new(license.clone())),
            ];
            if end_changed {
                // Live sessions end with the license: bring their expiry forward if needed.
                // On disk one statement does the same for all of them (`CapLicenseEnd`).
                for slot in mem.license_slots(li, |_| true) {
                    let mut clock = mem.slots[slot as usize].clock();
                    clock.cap_at_license_end(license.terms.expires_at);
                    mem.set_clock(slot, &clock);
                }
                ops.push(WriteOp::CapLicenseEnd {
                    license_id: license.id.clone(),
                    end: license.terms.expires_at,
                });
            }
            // More seats (or lifted suspension) may serve the queue.
            mem.to_serve.push(li as u32);
            mem.last_now = mem.last_now.max(now);
            mem.send(ops)
        };
        acked(rx).await
    }

    async fn open_session(&self, req: OpenRequest, now: Timestamp) -> StoreResult<Opened> {
        match self.admit(req, false, now).await? {
            Admission::Opened(opened) => Ok(opened),
            // Not asked to wait: admission answers at once.
            Admission::Queued(_) => Err(StoreError::Unavailable("unexpected queue entry".into())),
        }
    }

    async fn admit(&self, req: OpenRequest, wait: bool, now: Timestamp) -> StoreResult<Admission> {
        let step = self.mem().admit(&req, wait, now)?;
        match step {
            AdmitStep::Reopened(opened) => Ok(Admission::Opened(opened)),
            AdmitStep::Granted(session, rx) => {
                acked(rx).await?;
                Ok(Admission::Opened(Opened {
                    session,
                    created: true,
                }))
            }
            AdmitStep::Queued(ticket) => Ok(Admission::Queued(ticket)),
        }
    }

    async fn leave_queue(&self, license_id: &str, ticket: u64) -> StoreResult<bool> {
        let mut mem = self.mem();
        let Some(li) = mem.license_at(license_id) else {
            return Ok(false);
        };
        let lic = &mut mem.licenses[li];
        let before = lic.queue.len();
        lic.queue.retain(|w| w.ticket != ticket);
        let left = lic.queue.len() < before;
        if left {
            // The head may have changed: a grant blocked behind it may now go through.
            mem.to_serve.push(li as u32);
            mem.serve_queues();
        }
        Ok(left)
    }

    async fn list_queue(
        &self,
        license_id: &str,
        _now: Timestamp,
    ) -> StoreResult<Vec<QueuedRequest>> {
        let mem = self.mem();
        let Some(lic) = mem.lic(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        Ok(lic
            .queue
            .iter()
            .filter(|w| !w.tx.is_closed())
            .enumerate()
            .map(|(i, w)| QueuedRequest {
                ticket: w.ticket,
                position: i as u32 + 1,
                username: w.req.username.clone(),
                device_id: w.req.device_id.clone(),
                instance_id: w.req.instance_id.clone(),
                since: w.since,
            })
            .collect())
    }

    async fn heartbeat(&self, session_id: &str, now: Timestamp) -> StoreResult<Session> {
        {
            let mut mem = self.mem();
            match mem.lookup(session_id) {
                Some(Found::Live(slot)) => {
                    mem.beat(slot, now)?;
                    return Ok(mem.session(slot));
                }
                Some(Found::Ended(reason)) => return Err(RuleError::SessionEnded(reason).into()),
                None => {}
            }
        }
        self.ended_on_disk(session_id).await
    }

    async fn heartbeat_owned(
        &self,
        session_id: &str,
        account_id: &str,
        username: &str,
        now: Timestamp,
    ) -> StoreResult<OwnedHeartbeat> {
        {
            let mut mem = self.mem();
            if let Some(id) = parse_sid(session_id) {
                // One lock hold: ownership, then the heartbeat in place.
                let (license, user, live) = if let Some(slot) = mem.find(id) {
                    let r = &mem.slots[slot as usize];
                    (r.license, r.user, Some(slot))
                } else if let Some(e) = mem.ended.get(&id) {
                    (e.license, e.user, None)
                } else {
                    (VACANT, 0, None)
                };
                if license != VACANT {
                    let owner = mem.licenses.get(license as usize);
                    if owner.is_none_or(|l| &*l.account_id != account_id) {
                        return Err(StoreError::NotFound("session"));
                    }
                    if mem.names.name(user) != username {
                        return Ok(OwnedHeartbeat::NotOwner);
                    }
                    return match live {
                        Some(slot) => Ok(OwnedHeartbeat::Beat(mem.beat(slot, now)?.expires_at)),
                        None => match mem.ended.get(&id) {
                            Some(e) => Err(RuleError::SessionEnded(e.reason).into()),
                            None => Err(StoreError::NotFound("session")),
                        },
                    };
                }
            }
        }
        // Not in memory: ended long ago (or unknown); the database knows whose it was.
        let found = self
            .get_session(session_id)
            .await?
            .filter(|s| &*s.session.account_id == account_id)
            .ok_or(StoreError::NotFound("session"))?;
        if found.session.username != username {
            return Ok(OwnedHeartbeat::NotOwner);
        }
        match found.state {
            SessionState::Ended(reason) => Err(RuleError::SessionEnded(reason).into()),
            SessionState::Live => Err(StoreError::NotFound("session")),
        }
    }

    async fn end_session(
        &self,
        session_id: &str,
        reason: EndReason,
        now: Timestamp,
    ) -> StoreResult<Session> {
        let ended = {
            let mut mem = self.mem();
            match mem.lookup(session_id) {
                Some(Found::Live(slot)) => {
                    let clock = mem.slots[slot as usize].clock();
                    if !clock.is_live(now) {
                        let expiry = clock.expiry_reason();
                        if let Some((_, ops)) = mem.end_live(slot, expiry, now) {
                            mem.send_unacked(ops);
                        }
                        return Err(RuleError::SessionEnded(expiry).into());
                    }
                    mem.end_live(slot, reason, now)
                        .map(|(s, ops)| (s, mem.send(ops)))
                }
                Some(Found::Ended(reason)) => return Err(RuleError::SessionEnded(reason).into()),
                None => None,
            }
        };
        match ended {
            Some((session, rx)) => {
                acked(rx).await?;
                Ok(session)
            }
            None => self.ended_on_disk(session_id).await,
        }
    }

    async fn get_session(&self, session_id: &str) -> StoreResult<Option<SessionLookup>> {
        // An ended session in memory: its reason is known even while its end is in flight.
        let ended = {
            let mem = self.mem();
            match mem.lookup(session_id) {
                Some(Found::Live(slot)) => {
                    return Ok(Some(SessionLookup {
                        session: mem.session(slot),
                        state: SessionState::Live,
                    }));
                }
                Some(Found::Ended(reason)) => parse_sid(session_id)
                    .and_then(|id| mem.ended.get(&id))
                    .and_then(|e| {
                        let lic = mem.licenses.get(e.license as usize)?;
                        Some((
                            reason,
                            lic.id.clone(),
                            lic.account_id.clone(),
                            mem.names.name(e.user).to_owned(),
                        ))
                    }),
                None => None,
            }
        };
        let row = self.read(|conn| {
            conn.prepare_cached(
                "SELECT s.license_id, l.account_id, s.username, s.kind, s.device_id, s.instance_id,
                        s.opened_at, s.expires_at, s.hard_end, s.end_reason
                 FROM sessions s JOIN licenses l ON l.id = s.license_id WHERE s.id = ?1",
            )?
            .query_row(params![session_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                ))
            })
            .optional()
        })?;
        let Some((
            license_id,
            account_id,
            username,
            kind,
            device_id,
            instance_id,
            opened,
            expires,
            hard_end,
            reason,
        )) = row
        else {
            // Ended before its row was written (a grant nobody received): what memory knows.
            return Ok(
                ended.map(|(reason, license_id, account_id, username)| SessionLookup {
                    session: Session {
                        id: session_id.to_owned(),
                        license_id,
                        account_id,
                        username,
                        kind: UserKind::Interactive,
                        device_id: String::new(),
                        instance_id: String::new(),
                        clock: SessionClock {
                            opened_at: Timestamp::from_millis(0),
                            expires_at: Timestamp::from_millis(0),
                            hard_end: None,
                            license_end: None,
                        },
                        heartbeat_interval_secs: 0,
                        overdraft: false,
                    },
                    state: SessionState::Ended(reason),
                }),
            );
        };
        let state = match (reason, ended) {
            (_, Some((known, ..))) => SessionState::Ended(known),
            (Some(r), None) => SessionState::Ended(parse_end_reason(&r)),
            // Committed as live but no longer in memory: it ended and the end is in flight.
            (None, None) => SessionState::Ended(EndReason::Unknown),
        };
        Ok(Some(SessionLookup {
            session: Session {
                id: session_id.to_owned(),
                license_id: Arc::from(license_id.as_str()),
                account_id: Arc::from(account_id.as_str()),
                username,
                kind: parse_kind(&kind),
                device_id,
                instance_id,
                clock: session_clock(opened, expires, hard_end, None),
                heartbeat_interval_secs: 0,
                overdraft: false,
            },
            state,
        }))
    }

    async fn list_live_sessions(
        &self,
        license_id: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let mem = self.mem();
        let Some(li) = mem.license_at(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        let mut out: Vec<Session> = mem
            .license_slots(li, |r| now.millis() < r.expires_at)
            .into_iter()
            .map(|slot| mem.session(slot))
            .collect();
        out.sort_by(|a, b| (a.clock.opened_at, &a.id).cmp(&(b.clock.opened_at, &b.id)));
        Ok(out)
    }

    async fn usage(&self, license_id: &str, _now: Timestamp) -> StoreResult<UsageStats> {
        let mem = self.mem();
        let Some(lic) = mem.lic(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        Ok(UsageStats {
            seats: lic.license.terms.seats,
            in_use: lic.live,
            high_water: lic.high_water,
            low_water: lic.low_water,
            denials: lic.denials,
            since: mem.started,
            overdraft_in_use: lic.overdraft_live,
            activations: lic.activations(),
        })
    }

    async fn reap_expired(&self, now: Timestamp) -> StoreResult<Vec<Session>> {
        // Mass expiries (a license ending under a million sessions) are reaped in chunks,
        // letting go of the lock between them so heartbeats and opens are not held up.
        let mut ended = Vec::new();
        loop {
            let more = {
                let mut mem = self.mem();
                let due: Vec<usize> = (0..mem.licenses.len())
                    .filter(|&li| {
                        mem.licenses[li]
                            .expiry
                            .first()
                            .is_some_and(|&(at, _)| at <= now.millis())
                    })
                    .collect();
                let mut ops = Vec::new();
                let mut budget = REAP_CHUNK;
                for li in due {
                    if budget == 0 {
                        break;
                    }
                    let (mut e, mut o) = mem.reap_license_upto(li, now, budget);
                    budget = budget.saturating_sub(e.len());
                    ended.append(&mut e);
                    ops.append(&mut o);
                }
                if !ops.is_empty() {
                    mem.send_unacked(ops);
                }
                budget == 0
            };
            if !more {
                break;
            }
            tokio::task::yield_now().await;
        }
        let mut mem = self.mem();
        let mut ops = Vec::new();
        // Expired access tokens are dropped the same way: O(expired).
        while let Some(&(at, hash)) = mem.credential_expiry.first() {
            if at > now {
                break;
            }
            mem.credential_expiry.pop_first();
            mem.credentials.remove(&hash);
            ops.push(WriteOp::DeleteCredential(hash));
        }
        mem.forget_old_ends(now);
        if !ops.is_empty() {
            mem.send_unacked(ops);
        }
        Ok(ended)
    }

    async fn in_use_by_license(&self) -> StoreResult<Vec<(String, u32)>> {
        let mem = self.mem();
        Ok(mem
            .licenses
            .iter()
            .map(|l| (l.license.id.clone(), l.live))
            .collect())
    }

    async fn audit_log(&self, license_id: &str, limit: usize) -> StoreResult<Vec<AuditEvent>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT at, account_id, license_id, session_id, username, event, detail
                 FROM audit_events WHERE license_id = ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![license_id, limit as i64], |r| {
                Ok(AuditEvent {
                    at: Timestamp::from_millis(r.get(0)?),
                    account_id: r.get(1)?,
                    license_id: r.get(2)?,
                    session_id: r.get(3)?,
                    username: r.get(4)?,
                    event: r.get(5)?,
                    detail: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }

    async fn set_license_user(
        &self,
        license_id: &str,
        username: &str,
        active: bool,
        now: Timestamp,
    ) -> StoreResult<(LicenseUserChange, bool)> {
        let (rx, change, created) = {
            let mut mem = self.mem();
            let Some(li) = mem.license_at(license_id) else {
                return Err(StoreError::NotFound("license"));
            };
            let lic = &mut mem.licenses[li];
            let previous = lic.users.get(username).cloned();
            let was_active = previous.as_ref().is_some_and(|u| u.active);
            if active {
                decide_user_activation(&lic.license.terms, lic.active_users, was_active)?;
            } else if lic.license.terms.model != LicenseModel::RegisteredUsers {
                decide_user_activation(&lic.license.terms, 0, true)?;
            }
            let user = LicenseUser {
                license_id: license_id.to_owned(),
                username: username.to_owned(),
                active,
                updated_at: now,
            };
            match (was_active, active) {
                (false, true) => lic.active_users += 1,
                (true, false) => lic.active_users = lic.active_users.saturating_sub(1),
                _ => {}
            }
            lic.users.insert(username.to_owned(), user.clone());
            let mut ops = vec![WriteOp::LicenseUser(user.clone())];
            let mut ended = Vec::new();
            if let (false, Some(user)) = (active, mem.names.get(username)) {
                for slot in mem.license_slots(li, |r| r.user == user) {
                    if let Some((s, mut o)) = mem.end_live(slot, EndReason::UserDeactivated, now) {
                        ended.push(s);
                        ops.append(&mut o);
                    }
                }
            }
            (
                mem.send(ops),
                LicenseUserChange { user, ended },
                previous.is_none(),
            )
        };
        acked(rx).await?;
        Ok((change, created))
    }

    async fn list_license_users(&self, license_id: &str) -> StoreResult<Vec<LicenseUser>> {
        let mem = self.mem();
        let Some(lic) = mem.lic(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        let mut users: Vec<LicenseUser> = lic.users.values().cloned().collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    async fn activate_device(
        &self,
        license_id: &str,
        fingerprint: &str,
        name: &str,
        now: Timestamp,
    ) -> StoreResult<(DeviceActivation, bool)> {
        let (rx, device) = {
            let mut mem = self.mem();
            let Some(lic) = mem.lic_mut(license_id) else {
                return Err(StoreError::NotFound("license"));
            };
            let existing = lic.devices.get(fingerprint).cloned();
            decide_device_activation(
                &lic.license.terms,
                lic.devices.len() as u32,
                existing.is_some(),
            )?;
            if let Some(device) = existing {
                return Ok((device, false));
            }
            let device = DeviceActivation {
                license_id: license_id.to_owned(),
                fingerprint: fingerprint.to_owned(),
                name: name.to_owned(),
                activated_at: now,
            };
            lic.devices.insert(fingerprint.to_owned(), device.clone());
            let audit = WriteOp::Audit(Box::new(admission::device_activated(
                &lic.license.account_id,
                license_id,
                fingerprint,
                now,
            )));
            (
                mem.send(vec![WriteOp::Device(device.clone()), audit]),
                device,
            )
        };
        acked(rx).await?;
        Ok((device, true))
    }

    async fn deactivate_device(
        &self,
        license_id: &str,
        fingerprint: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let (rx, ended) = {
            let mut mem = self.mem();
            let Some(li) = mem.license_at(license_id) else {
                return Err(StoreError::NotFound("license"));
            };
            let lic = &mut mem.licenses[li];
            if lic.devices.remove(fingerprint).is_none() {
                return Err(StoreError::NotFound("device"));
            }
            let mut ops = vec![
                WriteOp::DeleteDevice {
                    license_id: license_id.to_owned(),
                    fingerprint: fingerprint.to_owned(),
                },
                WriteOp::Audit(Box::new(admission::device_deactivated(
                    &lic.license.account_id,
                    license_id,
                    fingerprint,
                    now,
                ))),
            ];
            let mut ended = Vec::new();
            for slot in mem.license_slots(li, |r| r.device() == fingerprint) {
                if let Some((s, mut o)) = mem.end_live(slot, EndReason::DeviceDeactivated, now) {
                    ended.push(s);
                    ops.append(&mut o);
                }
            }
            (mem.send(ops), ended)
        };
        acked(rx).await?;
        Ok(ended)
    }

    async fn list_devices(&self, license_id: &str) -> StoreResult<Vec<DeviceActivation>> {
        let mem = self.mem();
        let Some(lic) = mem.lic(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        let mut devices: Vec<DeviceActivation> = lic.devices.values().cloned().collect();
        devices.sort_by(|a, b| {
            (a.activated_at, &a.fingerprint).cmp(&(b.activated_at, &b.fingerprint))
        });
        Ok(devices)
    }

    async fn list_user_sessions(
        &self,
        account_id: &str,
        username: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let mem = self.mem();
        let mut out: Vec<Session> = mem
            .user_slots(account_id, username)
            .into_iter()
            .filter(|&slot| now.millis() < mem.slots[slot as usize].expires_at)
            .map(|slot| mem.session(slot))
            .collect();
        out.sort_by(|a, b| (a.clock.opened_at, &a.id).cmp(&(b.clock.opened_at, &b.id)));
        Ok(out)
    }

    async fn end_user_sessions(
        &self,
        account_id: &str,
        username: &str,
        reason: EndReason,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let (rx, ended) = {
            let mut mem = self.mem();
            let mut ops = Vec::new();
            let mut ended = Vec::new();
            for slot in mem.user_slots(account_id, username) {
                if let Some((s, mut o)) = mem.end_live(slot, reason, now) {
                    ended.push(s);
                    ops.append(&mut o);
                }
            }
            (mem.send(ops), ended)
        };
        acked(rx).await?;
        Ok(ended)
    }

    async fn shift_live_sessions(&self, delta_ms: i64) -> StoreResult<usize> {
        Ok(self.mem().shift_live(delta_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_round_trip_through_their_128_bits() {
        for text in [
            "0190f5a2-3b4c-7d8e-9f00-112233445566",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ] {
            assert_eq!(parse_sid(text).map(format_sid).as_deref(), Some(text));
        }
        assert_eq!(
            parse_sid("0190f5a2-3b4c-7d8e-9f00-112233445566"),
            Some(0x0190f5a2_3b4c_7d8e_9f00_112233445566)
        );
    }

    #[test]
    fn other_spellings_are_not_session_ids() {
        for text in [
            "0190F5A2-3B4C-7D8E-9F00-112233445566",
            "0190f5a23b4c7d8e9f00112233445566",
            "{0190f5a2-3b4c-7d8e-9f00-112233445566}",
            "0190f5a2-3b4c-7d8e-9f00-11223344556",
            "0190f5a2_3b4c-7d8e-9f00-112233445566",
            "nonexistent",
            "",
        ] {
            assert_eq!(parse_sid(text), None, "{text}");
        }
    }

    #[test]
    fn a_live_record_is_compact() {
        assert!(std::mem::size_of::<Live>() <= 80);
        let clock = SessionClock {
            opened_at: Timestamp::from_millis(1),
            expires_at: Timestamp::from_millis(2),
            hard_end: None,
            license_end: Some(Timestamp::from_millis(3)),
        };
        let live = Live::new(7, 1, 2, UserKind::Service, "dev", "inst", &clock, true);
        assert_eq!((live.device(), live.instance()), ("dev", "inst"));
        assert_eq!(live.clock(), clock);
        assert_eq!(live.sid(), 7);
    }

    /// The expiry on disk after heartbeats: behind memory for at most about `TOUCH_DELAY`, and
    /// many heartbeats of one session in that window are one write.
    #[tokio::test]
    async fn heartbeats_reach_the_disk_within_the_touch_delay() {
        use leasehold_core::PlanCatalog;
        use leasehold_proto::CreateLicense;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leasehold.db");
        let t0 = Timestamp::from_millis(1_800_000_000_000);
        let store = SqliteStore::open(&path, t0).unwrap();
        store
            .create_account(
                Account {
                    id: "acme".into(),
                    name: "Acme".into(),
                    created_at: t0,
                },
                Credential {
                    hash: [7; 32],
                    principal: Principal::AccountAdmin {
                        account_id: "acme".into(),
                    },
                    expires_at: None,
                },
            )
            .await
            .unwrap();
        let req = CreateLicense {
            account_id: "acme".into(),
            product: "cad".into(),
            seats: Some(2),
            inactivity_timeout_secs: Some(60),
            ..Default::default()
        };
        let terms = LicenseTerms::from_create(&req, &PlanCatalog::default()).unwrap();
        store
            .create_license(License {
                id: "lic".into(),
                account_id: "acme".into(),
                model: terms.model,
                terms,
                created_at: t0,
            })
            .await
            .unwrap();
        let id = "0190f5a2-3b4c-7d8e-9f00-112233445566";
        store
            .open_session(
                OpenRequest {
                    new_id: id.into(),
                    license_id: "lic".into(),
                    username: "bob".into(),
                    kind: UserKind::Interactive,
                    device_id: "pc".into(),
                    instance_id: "app".into(),
                },
                t0,
            )
            .await
            .unwrap();
        let on_disk = || -> i64 {
            open_connection(&path)
                .unwrap()
                .query_row("SELECT expires_at FROM sessions WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .unwrap()
        };
        assert_eq!(on_disk(), t0.millis() + 60_000, "the open is durable");

        // Act: a burst of heartbeats, each sliding the expiry.
        let mut last = t0;
        for ms in 1..=50 {
            last = Timestamp::from_millis(t0.millis() + ms * 10);
            store.heartbeat(id, last).await.unwrap();
        }

        // Assert: the latest expiry is on disk within the delay (plus slack for a busy machine).
        let started = std::time::Instant::now();
        while on_disk() != last.millis() + 60_000 {
            assert!(
                started.elapsed() < TOUCH_DELAY * 5,
                "the heartbeat's expiry did not reach the disk"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
