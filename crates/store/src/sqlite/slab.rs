//! The slab of live sessions and their compact records: a session's id as the 128 bits of its
//! UUID (`Sid`, read by `parse_sid`, written by `SidText`), its times packed as milliseconds,
//! its username interned (`Names`), its device and instance ids in one allocation, its place in
//! the order of opens (`seq`) and whether its end is decided (`Live`); the slots reused through
//! a free list and found by id (`Slab`). See `mem` for why.

use std::collections::HashMap;
use std::sync::Arc;

use hashbrown::HashTable;
use leasehold_core::session::SessionClock;
use leasehold_core::Timestamp;
use leasehold_proto::{EndReason, UserKind};

/// A session id in memory: the 128 bits of its UUID.
pub(super) type Sid = u128;

/// The id of a session of this store: a UUID written as the server writes it (36 characters,
/// lowercase hexadecimal, hyphenated). Any other spelling is no id of a session in memory.
pub(super) fn parse_sid(s: &str) -> Option<Sid> {
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
pub(super) fn format_sid(id: Sid) -> String {
    SidText::new(id).as_str().to_owned()
}

/// The text of a session id without an allocation (for the writer's statements).
pub(super) struct SidText([u8; 36]);

impl SidText {
    pub(super) fn new(id: Sid) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 36];
        // The 32 digits, most significant first, skipping the four hyphens.
        let digits = (0..36).filter(|at| !matches!(at, 8 | 13 | 18 | 23));
        for (i, at) in digits.enumerate() {
            let nibble = ((id >> (124 - 4 * i)) & 0xf) as usize;
            if let (Some(slot), Some(&digit)) = (out.get_mut(at), HEX.get(nibble)) {
                *slot = digit;
            }
        }
        SidText(out)
    }

    pub(super) fn as_str(&self) -> &str {
        // Hexadecimal digits and hyphens: always ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Hash of a session id for `Mem::by_id`. The server draws the ids (74 random bits), clients do
/// not choose them, so a multiplicative mix is enough.
pub(super) fn sid_hash(id: Sid) -> u64 {
    ((id as u64) ^ ((id >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// `Option<Timestamp>` in a record: `NO_TIME` is `None`.
pub(super) const NO_TIME: i64 = i64::MIN;

pub(super) fn pack_time(t: Option<Timestamp>) -> i64 {
    t.map_or(NO_TIME, Timestamp::millis)
}

pub(super) fn unpack_time(ms: i64) -> Option<Timestamp> {
    (ms != NO_TIME).then(|| Timestamp::from_millis(ms))
}

/// A session in the slab (80 bytes; see `mem`): live, or ending (its end decided, not yet on
/// disk: see `mem::ending`).
pub(super) struct Live {
    /// The session id, high and low 64 bits.
    id: [u64; 2],
    /// `device_id` followed by `instance_id` (one allocation).
    ids: Box<str>,
    /// Length of `device_id` in `ids`.
    device_len: u32,
    /// Index in `Mem::licenses`; `VACANT` for a free slot.
    pub(super) license: u32,
    /// Index in `Mem::names`.
    pub(super) user: u32,
    pub(super) kind: UserKind,
    pub(super) overdraft: bool,
    /// A borrowed seat: `hard_end` holds its `borrow_until` (a borrow has no lifetime of its
    /// own, see `SessionClock::borrow`).
    pub(super) borrowed: bool,
    /// Expired, its end decided by the reaper (or a heartbeat, a logout, a full license) but
    /// not yet on disk: the reason's code (`reason_code`), 0 while it is not. Its end time is
    /// then in `expires_at`. (An end decided for many sessions at once is not marked here but
    /// found by `seq`: see `mem::ending`.)
    expired: u8,
    opened_at: i64,
    /// When the session expires (its own timing: the license's end caps it when it is read,
    /// `Mem::clock`); once `expired`, when it ended.
    pub(super) expires_at: i64,
    hard_end: i64,
    /// The session's place in the order of opens (`sessions.seq`): an end decided for every
    /// session of a license or a user opened before a point covers exactly those below it.
    pub(super) seq: u64,
}

/// `Live::expired` of an end reason (never 0).
pub(super) fn reason_code(reason: EndReason) -> u8 {
    match reason {
        EndReason::Logout => 1,
        EndReason::Revoked => 2,
        EndReason::Inactivity => 3,
        EndReason::Lifetime => 4,
        EndReason::UserDeactivated => 5,
        EndReason::DeviceDeactivated => 6,
        EndReason::LicenseExpired => 7,
        EndReason::Unknown => 8,
        EndReason::Returned => 9,
        EndReason::Reclaimed => 10,
        EndReason::BorrowEnded => 11,
        EndReason::DelegationExpired => 12,
        EndReason::DelegationReturned => 13,
    }
}

/// The end reason of a `Live::expired` code (`None` for 0: not expired).
fn reason_of(code: u8) -> Option<EndReason> {
    Some(match code {
        0 => return None,
        1 => EndReason::Logout,
        2 => EndReason::Revoked,
        3 => EndReason::Inactivity,
        4 => EndReason::Lifetime,
        5 => EndReason::UserDeactivated,
        6 => EndReason::DeviceDeactivated,
        7 => EndReason::LicenseExpired,
        9 => EndReason::Returned,
        10 => EndReason::Reclaimed,
        11 => EndReason::BorrowEnded,
        12 => EndReason::DelegationExpired,
        13 => EndReason::DelegationReturned,
        _ => EndReason::Unknown,
    })
}

/// `Live::license` of a free slot.
pub(super) const VACANT: u32 = u32::MAX;

impl Live {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: Sid,
        license: u32,
        user: u32,
        kind: UserKind,
        device_id: &str,
        instance_id: &str,
        clock: &SessionClock,
        overdraft: bool,
        seq: u64,
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
            borrowed: clock.borrow_until.is_some(),
            expired: 0,
            opened_at: clock.opened_at.millis(),
            expires_at: clock.expires_at.millis(),
            hard_end: pack_time(clock.borrow_until.or(clock.hard_end)),
            seq,
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
            borrowed: false,
            expired: 0,
            opened_at: 0,
            expires_at: 0,
            hard_end: NO_TIME,
            seq: 0,
        }
    }

    pub(super) fn is_vacant(&self) -> bool {
        self.license == VACANT
    }

    pub(super) fn sid(&self) -> Sid {
        (Sid::from(self.id[0]) << 64) | Sid::from(self.id[1])
    }

    pub(super) fn device(&self) -> &str {
        self.ids.get(..self.device_len as usize).unwrap_or("")
    }

    pub(super) fn instance(&self) -> &str {
        self.ids.get(self.device_len as usize..).unwrap_or("")
    }

    /// What identifies the session's client instance: user, device, instance (the key of a
    /// license's `by_instance`).
    pub(super) fn instance_key(&self) -> (u32, &str, &str) {
        (self.user, self.device(), self.instance())
    }

    /// The session's own timing, before its license's end caps it (`Mem::clock` does).
    pub(super) fn own_clock(&self) -> SessionClock {
        let end = unpack_time(self.hard_end);
        SessionClock {
            opened_at: Timestamp::from_millis(self.opened_at),
            expires_at: Timestamp::from_millis(self.expires_at),
            hard_end: if self.borrowed { None } else { end },
            license_end: None,
            license_end_reason: EndReason::LicenseExpired,
            borrow_until: if self.borrowed { end } else { None },
        }
    }

    /// Stores a new timing; answers the previous `expires_at` (for the expiry index).
    pub(super) fn set_clock(&mut self, clock: &SessionClock) -> i64 {
        let before = self.expires_at;
        self.opened_at = clock.opened_at.millis();
        self.expires_at = clock.expires_at.millis();
        self.borrowed = clock.borrow_until.is_some();
        self.hard_end = pack_time(clock.borrow_until.or(clock.hard_end));
        before
    }

    /// Why and when it ended, once its end is decided by its expiry (see `expired`).
    pub(super) fn expired(&self) -> Option<(EndReason, Timestamp)> {
        reason_of(self.expired).map(|r| (r, Timestamp::from_millis(self.expires_at)))
    }

    /// Marks the session expired: it ended at `at` for `reason` (written by the drain).
    pub(super) fn set_expired(&mut self, reason: EndReason, at: Timestamp) {
        self.expired = reason_code(reason);
        self.expires_at = at.millis();
    }
}

/// The slab of live sessions: their records by slot, the vacant slots to reuse, and the slots
/// found by session id. The other indexes (per license, in `Mem`) hold slot numbers too.
///
/// Access is checked: a slot number from an index is always in the slab (slots are never
/// removed, only vacated), yet a wrong one answers `None` rather than taking the server down.
pub(super) struct Slab {
    slots: Vec<Live>,
    /// Vacant slots, reused before the slab grows.
    free: Vec<u32>,
    /// Slots of live sessions, found by id (4 bytes a bucket, hashed by `sid_hash`).
    by_id: HashTable<u32>,
}

impl Slab {
    pub(super) fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashTable::new(),
        }
    }

    /// The record in a slot (`Live::is_vacant` once its session ended).
    pub(super) fn get(&self, slot: u32) -> Option<&Live> {
        self.slots.get(slot as usize)
    }

    pub(super) fn get_mut(&mut self, slot: u32) -> Option<&mut Live> {
        self.slots.get_mut(slot as usize)
    }

    /// Slots in the slab (vacant ones included): the drain's walk goes round them.
    pub(super) fn len(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The slot of a live session.
    pub(super) fn find(&self, id: Sid) -> Option<u32> {
        let slots = &self.slots;
        self.by_id
            .find(sid_hash(id), |&s| {
                slots.get(s as usize).is_some_and(|r| r.sid() == id)
            })
            .copied()
    }

    /// Puts a live session in a vacant slot (or a new one) and indexes it by id; answers its
    /// slot.
    pub(super) fn insert(&mut self, live: Live) -> u32 {
        let id = live.sid();
        let slot = self.place(live);
        let slots = &self.slots;
        // Rehashing reads the slots already indexed, all of them in the slab.
        self.by_id.insert_unique(sid_hash(id), slot, |&s| {
            slots.get(s as usize).map_or(0, |r| sid_hash(r.sid()))
        });
        slot
    }

    fn place(&mut self, live: Live) -> u32 {
        if let Some(s) = self.free.pop() {
            // `free` lists only slots `take` vacated, so this finds one.
            if let Some(vacant) = self.slots.get_mut(s as usize) {
                *vacant = live;
                return s;
            }
        }
        self.slots.push(live);
        (self.slots.len() - 1) as u32
    }

    /// Takes a live session out of its slot and the id index; the slot becomes free.
    pub(super) fn take(&mut self, slot: u32) -> Option<Live> {
        let record = self
            .slots
            .get_mut(slot as usize)
            .filter(|r| !r.is_vacant())?;
        if let Ok(entry) = self
            .by_id
            .find_entry(sid_hash(record.sid()), |&s| s == slot)
        {
            entry.remove();
        }
        let live = std::mem::replace(record, Live::vacant());
        self.free.push(slot);
        Some(live)
    }
}

/// Usernames of live (and recently ended) sessions, one copy each, by index.
#[derive(Default)]
pub(super) struct Names {
    index: HashMap<Arc<str>, u32>,
    list: Vec<Arc<str>>,
}

impl Names {
    pub(super) fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    pub(super) fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.list.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.list.push(name.clone());
        self.index.insert(name, i);
        i
    }

    pub(super) fn name(&self, i: u32) -> &str {
        self.list.get(i as usize).map_or("", |n| n)
    }

    pub(super) fn shared(&self, i: u32) -> Arc<str> {
        self.list
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
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
            license_end: None,
            license_end_reason: EndReason::LicenseExpired,
            borrow_until: None,
        };
        let mut live = Live::new(7, 1, 2, UserKind::Service, "dev", "inst", &clock, true, 9);
        assert_eq!((live.device(), live.instance()), ("dev", "inst"));
        assert_eq!(live.own_clock(), clock);
        assert_eq!((live.sid(), live.seq, live.expired()), (7, 9, None));
        live.set_expired(EndReason::LicenseExpired, Timestamp::from_millis(5));
        assert_eq!(
            live.expired(),
            Some((EndReason::LicenseExpired, Timestamp::from_millis(5)))
        );
        // A borrowed seat keeps its `borrow_until` in the same 80 bytes.
        let borrowed = SessionClock {
            borrow_until: Some(Timestamp::from_millis(9_000)),
            ..clock
        };
        let live = Live::new(
            8,
            1,
            2,
            UserKind::Interactive,
            "d",
            "i",
            &borrowed,
            false,
            10,
        );
        assert!(live.borrowed);
        assert_eq!(live.own_clock(), borrowed);
    }

    #[test]
    fn every_end_reason_has_its_own_code() {
        use EndReason::*;
        for r in [
            Logout,
            Revoked,
            Inactivity,
            Lifetime,
            UserDeactivated,
            DeviceDeactivated,
            LicenseExpired,
            Unknown,
            Returned,
            Reclaimed,
            BorrowEnded,
        ] {
            assert_eq!(reason_of(reason_code(r)), Some(r));
        }
    }
}
