//! The in-memory state of the SQLite backend, the authority every answer comes from: records
//! by id, licenses with their live-session indexes, the slab of live sessions, the recently
//! ended ones. Every change is made under the store's one lock and queued to the writer under
//! the same lock (`send`, `send_unacked`, `touch`), so the writer's order is memory's order.
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

mod admit;
mod clock;
mod end;
mod index;
mod license;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::mpsc::Sender;

use hashbrown::{DefaultHashBuilder, HashTable};
use leasehold_core::session::SessionClock;
use leasehold_core::Timestamp;
use leasehold_proto::EndReason;
use tokio::sync::oneshot;

use super::ops::WriteOp;
use super::slab::{format_sid, parse_sid, Live, Names, Sid};
use super::writer::{lock_touches, packed_clock, Job, Touches};
use crate::records::*;

pub(crate) use admit::AdmitStep;
pub(crate) use end::{Ended, REAP_CHUNK};
pub(crate) use license::LicenseState;

pub(crate) struct Mem {
    pub(crate) writer: Sender<Job>,
    pub(crate) touches: Touches,
    pub(crate) settings: HashMap<String, String>,
    pub(crate) accounts: HashMap<String, Account>,
    pub(crate) credentials: HashMap<TokenHash, Credential>,
    pub(crate) credential_expiry: BTreeSet<(Timestamp, TokenHash)>,
    pub(crate) users: HashMap<(String, String), User>,
    pub(crate) client_ids: HashMap<String, (String, String)>,
    /// Licenses by index (never removed), and their indexes by id.
    pub(crate) licenses: Vec<LicenseState>,
    pub(crate) license_index: HashMap<String, u32>,
    /// Live sessions (see the module doc); free slots are listed in `free`.
    pub(crate) slots: Vec<Live>,
    pub(crate) free: Vec<u32>,
    /// Slots of live sessions, found by id.
    pub(crate) by_id: HashTable<u32>,
    pub(crate) names: Names,
    /// Keyed hasher of `by_instance` (its keys come from clients).
    pub(crate) keys: DefaultHashBuilder,
    pub(crate) ended: HashMap<Sid, Ended>,
    pub(crate) ended_order: VecDeque<(i64, Sid)>,
    pub(crate) started: Timestamp,
    /// Queueing licenses that may have a free seat for their waiters, served after the
    /// change that freed it is queued for writing (so a grant never reaches disk before it).
    pub(crate) to_serve: Vec<u32>,
    /// The latest `now` seen, for grants made on behalf of waiters.
    pub(crate) last_now: Timestamp,
    pub(crate) next_ticket: u64,
}

/// A session found by id in memory.
pub(crate) enum Found {
    Live(u32),
    Ended(EndReason),
}

impl Mem {
    pub(crate) fn new(writer: Sender<Job>, now: Timestamp) -> Self {
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

    pub(crate) fn add_license(&mut self, license: License) {
        let i = self.licenses.len() as u32;
        self.license_index.insert(license.id.clone(), i);
        self.licenses.push(LicenseState::new(license));
    }

    pub(crate) fn license_at(&self, id: &str) -> Option<usize> {
        self.license_index.get(id).map(|&i| i as usize)
    }

    pub(crate) fn lic(&self, id: &str) -> Option<&LicenseState> {
        self.licenses.get(self.license_at(id)?)
    }

    pub(crate) fn lic_mut(&mut self, id: &str) -> Option<&mut LicenseState> {
        let i = self.license_at(id)?;
        self.licenses.get_mut(i)
    }

    /// A session in memory: live (its slot) or recently ended.
    pub(crate) fn lookup(&self, session_id: &str) -> Option<Found> {
        let id = parse_sid(session_id)?;
        if let Some(slot) = self.find(id) {
            return Some(Found::Live(slot));
        }
        self.ended.get(&id).map(|e| Found::Ended(e.reason))
    }

    /// The `Session` record of a live slot.
    pub(crate) fn session(&self, slot: u32) -> Session {
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

    pub(crate) fn send(&mut self, ops: Vec<WriteOp>) -> oneshot::Receiver<Result<(), String>> {
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
    pub(crate) fn touch(&mut self, id: Sid, clock: &SessionClock) {
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

    pub(crate) fn send_unacked(&mut self, ops: Vec<WriteOp>) {
        if !ops.is_empty() {
            let _ = self.writer.send(Job { ops, ack: None });
        }
        self.serve_queues();
    }
}
