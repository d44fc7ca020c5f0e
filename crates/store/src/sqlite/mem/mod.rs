//! The in-memory state of the SQLite backend, the authority every answer comes from: records
//! by id, licenses with their live-session indexes, the slab of live sessions, the recently
//! ended ones. Every change is made under the store's one lock and queued to the writer under
//! the same lock (`send`, `send_unacked`, `touch`), so the writer's order is memory's order.
//!
//! # Memory: a compact record per live session
//!
//! A million live sessions must fit in a few hundred megabytes, so a live session is not kept
//! as a `Session` (five strings, ~220 bytes inline) but as an 80-byte `Live` record in a slab
//! (`Slab`, its slots reused through a free list): its id as the 128 bits of its UUID, its
//! license as an index, its username interned (`Names`, one copy per distinct name), its device
//! and instance ids in one allocation, and its times as milliseconds. The indexes hold slot
//! numbers only: the slab's `by_id` (4 bytes a bucket, hashed from the id), each license's
//! `by_instance` (hashed from user, device and instance, compared against the slot) and
//! `expiry` (`(expires_at, slot)`, see `index`). A `Session` is built when one is answered. Session ids are the UUIDs the server
//! writes (lowercase, hyphenated, see `parse_sid`); the store refuses to open others.
//!
//! A session whose end is decided but not yet on disk stays in the slab, *ending*: counted out
//! of its license and answered as ended (see `ending`, which also tells how a million sessions
//! end at once in O(1) and reach the disk in the background). Ended sessions keep only their
//! account, user and reason in memory (`Ended`), for the `session_ended` answers of the
//! following minutes, and at most `ENDED_MAX` of them: older ones are read from the database.

mod admit;
mod borrow;
mod clock;
mod delegation;
mod end;
mod ending;
mod index;
mod license;
mod models;
mod recover;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::mpsc::Sender;

use hashbrown::DefaultHashBuilder;
use leasehold_core::session::SessionClock;
use leasehold_core::Timestamp;
use leasehold_proto::EndReason;
use tokio::sync::oneshot;

use super::ops::WriteOp;
use super::slab::{format_sid, parse_sid, Names, Sid, Slab};
use super::writer::{lock_touches, packed_clock, Ack, Job, Touches};
use crate::records::*;
use crate::{StoreError, StoreResult};

pub(super) use admit::AdmitStep;
use end::Ended;
pub(super) use end::EndedSession;
pub(super) use ending::Floor;
use license::LicenseState;

/// Everything the SQLite backend knows, behind the store's lock.
pub(super) struct Mem {
    writer: Sender<Job>,
    /// Heartbeat expiries not yet persisted, shared with the writer.
    pub(super) touches: Touches,
    pub(super) settings: HashMap<String, String>,
    pub(super) accounts: HashMap<String, Account>,
    pub(super) credentials: HashMap<TokenHash, Credential>,
    pub(super) credential_expiry: BTreeSet<(Timestamp, TokenHash)>,
    pub(super) users: HashMap<(String, String), User>,
    pub(super) client_ids: HashMap<String, (String, String)>,
    /// Licenses by index (never removed), and their indexes by id.
    pub(super) licenses: Vec<LicenseState>,
    license_index: HashMap<String, u32>,
    /// Live sessions (see the module doc).
    pub(super) slab: Slab,
    pub(super) names: Names,
    /// Keyed hasher of `by_instance` (its keys come from clients).
    keys: DefaultHashBuilder,
    ended: HashMap<Sid, Ended>,
    ended_order: VecDeque<(i64, Sid)>,
    pub(super) started: Timestamp,
    /// Queueing licenses that may have a free seat for their waiters, served after the
    /// change that freed it is queued for writing (so a grant never reaches disk before it).
    to_serve: Vec<u32>,
    /// The `now` of the latest change, for the grants it lets the queue make.
    last_now: Timestamp,
    next_ticket: u64,
    /// Why writes are refused: the disk refused one, and memory is being (or was) rebuilt from
    /// it (see `recover`).
    broken: Option<String>,
    /// The `seq` of the next session opened (see `ending`).
    pub(super) next_seq: u64,
    /// Mass ends decided so far (orders `Floor`s).
    decided: u64,
    /// Where the drain's walk over the slab goes on, and how many slots it has looked at since
    /// it last found an ending session.
    drain_cursor: u32,
    drain_idle: u32,
    /// The writer was told that decided ends wait, and has not found them all written yet.
    drain_woken: bool,
}

/// A session found by id in memory.
pub(super) enum Found {
    Live(u32),
    Ended(EndReason),
}

impl Mem {
    pub(super) fn new(writer: Sender<Job>, now: Timestamp) -> Self {
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
            slab: Slab::new(),
            names: Names::default(),
            keys: DefaultHashBuilder::default(),
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
            started: now,
            to_serve: Vec::new(),
            last_now: now,
            next_ticket: 0,
            broken: None,
            next_seq: 1,
            decided: 0,
            drain_cursor: 0,
            drain_idle: 0,
            drain_woken: false,
        }
    }

    pub(super) fn add_license(&mut self, license: License) {
        let i = self.licenses.len() as u32;
        self.license_index.insert(license.id.clone(), i);
        self.licenses.push(LicenseState::new(license));
    }

    /// The index of a license in `licenses`.
    pub(super) fn license_at(&self, id: &str) -> Option<usize> {
        self.license_index.get(id).map(|&i| i as usize)
    }

    pub(super) fn lic(&self, id: &str) -> Option<&LicenseState> {
        self.licenses.get(self.license_at(id)?)
    }

    pub(super) fn lic_mut(&mut self, id: &str) -> Option<&mut LicenseState> {
        let i = self.license_at(id)?;
        self.licenses.get_mut(i)
    }

    /// The license at an index (from `license_at`, or a record's `license`).
    fn lic_at(&self, li: usize) -> StoreResult<&LicenseState> {
        self.licenses.get(li).ok_or(StoreError::NotFound("license"))
    }

    fn lic_at_mut(&mut self, li: usize) -> StoreResult<&mut LicenseState> {
        self.licenses
            .get_mut(li)
            .ok_or(StoreError::NotFound("license"))
    }

    /// A session in memory: live (its slot), or ended (recently, or its end decided and on
    /// its way to the disk).
    pub(super) fn lookup(&self, session_id: &str) -> Option<Found> {
        let id = parse_sid(session_id)?;
        if let Some(slot) = self.slab.find(id) {
            return Some(match self.ending_of(slot) {
                Some((reason, _)) => Found::Ended(reason),
                None => Found::Live(slot),
            });
        }
        self.ended.get(&id).map(|e| Found::Ended(e.reason))
    }

    /// The timing of the session in a slot: its own, capped by its license's end (which caps
    /// every session of the license from the moment it is set, with no work per session).
    pub(super) fn clock(&self, slot: u32) -> Option<SessionClock> {
        let r = self.slab.get(slot)?;
        let mut clock = r.own_clock();
        let lic = self.licenses.get(r.license as usize)?;
        clock.cap_at_end_of(&lic.license.terms);
        Some(clock)
    }

    /// The `Session` record of a slot.
    pub(super) fn session(&self, slot: u32) -> Option<Session> {
        let r = self.slab.get(slot)?;
        let lic = self.licenses.get(r.license as usize)?;
        Some(Session {
            id: format_sid(r.sid()),
            license_id: lic.id.clone(),
            account_id: lic.account_id.clone(),
            username: self.names.name(r.user).to_owned(),
            kind: r.kind,
            device_id: r.device().to_owned(),
            instance_id: r.instance().to_owned(),
            clock: self.clock(slot)?,
            heartbeat_interval_secs: lic.license.terms.heartbeat_interval_secs(),
            overdraft: r.overdraft,
        })
    }

    /// The `Session` record of a slot an index just gave (so it is live).
    fn indexed_session(&self, slot: u32) -> StoreResult<Session> {
        self.session(slot).ok_or(StoreError::NotFound("session"))
    }

    /// The `now` of the latest change.
    pub(super) fn last_now(&self) -> Timestamp {
        self.last_now
    }

    /// A sender to the writer (for the memory rebuilt after a failed write).
    pub(in crate::sqlite) fn writer(&self) -> Sender<Job> {
        self.writer.clone()
    }

    /// Queues writes whose durability the caller awaits (the returned `Ack`).
    pub(super) fn send(&mut self, ops: Vec<WriteOp>) -> Ack {
        let (ack, rx) = oneshot::channel();
        // A send error means the writer thread died; the dropped ack reports it.
        let _ = self.writer.send(Job::Write {
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
            let _ = self.writer.send(Job::Touch);
        }
        self.serve_queues();
    }

    /// Queues writes nobody waits for.
    pub(super) fn send_unacked(&mut self, ops: Vec<WriteOp>) {
        if !ops.is_empty() {
            let _ = self.writer.send(Job::Write { ops, ack: None });
        }
        self.serve_queues();
    }
}
