//! Instants as milliseconds since the Unix epoch. The wall clock is read only at the edge (the
//! server's handlers and reaper) and passed down, so rules can be tested by walking time forward.

use serde::{Deserialize, Serialize};

/// An instant, in milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn from_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Whole seconds, rounded down.
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub const fn plus_secs(self, secs: u64) -> Self {
        let secs = if secs > i64::MAX as u64 / 1000 {
            i64::MAX / 1000
        } else {
            secs as i64
        };
        Timestamp(self.0.saturating_add(secs * 1000))
    }

    /// From the wire type (sub-millisecond precision is dropped).
    pub fn from_offset(at: time::OffsetDateTime) -> Self {
        Timestamp((at.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// To the wire type.
    pub fn to_offset(self) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    pub const fn plus_millis(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }
}
