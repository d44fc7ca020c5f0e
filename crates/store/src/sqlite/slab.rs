//! The compact record of a live session: its id as the 128 bits of its UUID (`Sid`, parsed and
//! written by `parse_sid` and `SidText`), its times packed as milliseconds, its username interned
//! (`Names`), its device and instance ids in one allocation (`Live`). See `mem` for why.

use std::collections::HashMap;
use std::sync::Arc;

use leasehold_core::session::SessionClock;
use leasehold_core::Timestamp;
use leasehold_proto::UserKind;

/// A session id in memory: the 128 bits of its UUID.
pub(crate) type Sid = u128;

/// The id of a session of this store: a UUID written as the server writes it (36 characters,
/// lowercase hexadecimal, hyphenated). Any other spelling is no id of a session in memory.
pub(crate) fn parse_sid(s: &str) -> Option<Sid> {
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
pub(crate) fn format_sid(id: Sid) -> String {
    SidText::new(id).as_str().to_owned()
}

/// The text of a session id without an allocation (for the writer's statements).
pub(crate) struct SidText([u8; 36]);

impl SidText {
    pub(crate) fn new(id: Sid) -> Self {
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

    pub(crate) fn as_str(&self) -> &str {
        // Hexadecimal digits and hyphens: always ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Hash of a session id for `Mem::by_id`. The server draws the ids (74 random bits), clients do
/// not choose them, so a multiplicative mix is enough.
pub(crate) fn sid_hash(id: Sid) -> u64 {
    ((id as u64) ^ ((id >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// `Option<Timestamp>` in a record: `NO_TIME` is `None`.
pub(crate) const NO_TIME: i64 = i64::MIN;

pub(crate) fn pack_time(t: Option<Timestamp>) -> i64 {
    t.map_or(NO_TIME, Timestamp::millis)
}

pub(crate) fn unpack_time(ms: i64) -> Option<Timestamp> {
    (ms != NO_TIME).then(|| Timestamp::from_millis(ms))
}

/// A live session in memory (80 bytes; see the module doc).
pub(crate) struct Live {
    /// The session id, high and low 64 bits.
    pub(crate) id: [u64; 2],
    /// `device_id` followed by `instance_id` (one allocation).
    pub(crate) ids: Box<str>,
    /// Length of `device_id` in `ids`.
    pub(crate) device_len: u32,
    /// Index in `Mem::licenses`; `VACANT` for a free slot.
    pub(crate) license: u32,
    /// Index in `Mem::names`.
    pub(crate) user: u32,
    pub(crate) kind: UserKind,
    pub(crate) overdraft: bool,
    pub(crate) opened_at: i64,
    pub(crate) expires_at: i64,
    pub(crate) hard_end: i64,
    pub(crate) license_end: i64,
}

/// `Live::license` of a free slot.
pub(crate) const VACANT: u32 = u32::MAX;

impl Live {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
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

    pub(crate) fn vacant() -> Self {
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

    pub(crate) fn is_vacant(&self) -> bool {
        self.license == VACANT
    }

    pub(crate) fn sid(&self) -> Sid {
        (Sid::from(self.id[0]) << 64) | Sid::from(self.id[1])
    }

    pub(crate) fn device(&self) -> &str {
        self.ids.get(..self.device_len as usize).unwrap_or("")
    }

    pub(crate) fn instance(&self) -> &str {
        self.ids.get(self.device_len as usize..).unwrap_or("")
    }

    pub(crate) fn clock(&self) -> SessionClock {
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
pub(crate) struct Names {
    pub(crate) index: HashMap<Arc<str>, u32>,
    pub(crate) list: Vec<Arc<str>>,
}

impl Names {
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    pub(crate) fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.list.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.list.push(name.clone());
        self.index.insert(name, i);
        i
    }

    pub(crate) fn name(&self, i: u32) -> &str {
        self.list.get(i as usize).map_or("", |n| n)
    }

    pub(crate) fn shared(&self, i: u32) -> Arc<str> {
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
            license_end: Some(Timestamp::from_millis(3)),
        };
        let live = Live::new(7, 1, 2, UserKind::Service, "dev", "inst", &clock, true);
        assert_eq!((live.device(), live.instance()), ("dev", "inst"));
        assert_eq!(live.clock(), clock);
        assert_eq!(live.sid(), 7);
    }
}
