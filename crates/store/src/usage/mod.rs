//! Usage analytics: exact series of seats in use per license and per account, folded from the
//! audit log's session events into bucket rows kept up to date as events happen (`fold`), and
//! the series a query answers from those rows (`series`). Pure: no I/O, time passed in; each
//! backend reads and writes the rows (`sqlite/usage.rs`, `postgres/usage.rs`).
//!
//! The rows are per *subject* (a license, `license:<id>`, or an account, `account:<id>`: the
//! sum of its licenses, so that an account's high water is the high water of the sum) and per
//! *grain* (minute, hour, day). A month is a run of days.

pub mod fold;
pub mod readahead;
pub mod series;
pub mod sql;
pub mod tail;

pub use fold::{in_time_order, settled, Acc, Folder, SubjectState, UsageEvent, Writes, SETTLE_MS};
pub use readahead::ReadAhead;
pub use series::{
    build_series, Bucket, FullStats, HeatCell, HistBin, SeriesInput, UsageBucket, UsageSeries,
};
pub use sql::SeriesQuery;
pub use tail::SeriesRows;

/// Most buckets one query answers (`bucket` × the period; e.g. 6.9 days of minutes, 416 days of
/// hours).
pub const MAX_BUCKETS: i64 = 10_000;

/// Longest period one query covers (5 years), whatever the bucket: the weekday × hour heatmap
/// walks every hour of it.
pub const MAX_PERIOD_MS: i64 = 1_830 * DAY_MS;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// The granularity of stored rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grain {
    Minute,
    Hour,
    Day,
}

impl Grain {
    pub const ALL: [Grain; 3] = [Grain::Minute, Grain::Hour, Grain::Day];

    /// The grain's code in the `grain` column.
    pub fn code(self) -> i64 {
        match self {
            Grain::Minute => 0,
            Grain::Hour => 1,
            Grain::Day => 2,
        }
    }

    pub fn from_code(code: i64) -> Option<Grain> {
        Grain::ALL.into_iter().find(|g| g.code() == code)
    }

    pub fn len_ms(self) -> i64 {
        match self {
            Grain::Minute => MINUTE_MS,
            Grain::Hour => HOUR_MS,
            Grain::Day => DAY_MS,
        }
    }

    /// The start of the bucket holding `t` (UTC; the epoch is aligned to every grain).
    pub fn start_of(self, t: i64) -> i64 {
        t.div_euclid(self.len_ms()) * self.len_ms()
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Grain::Minute => 0,
            Grain::Hour => 1,
            Grain::Day => 2,
        }
    }
}

/// Most events folded in one transaction.
pub const CHUNK: usize = 20_000;

/// A wait begun this long before the fold's time and never granted (the client gave up) is
/// forgotten.
pub const PENDING_FOR_MS: i64 = DAY_MS;

/// The subject key of a license's rows.
pub fn license_subject(license_id: &str) -> String {
    format!("license:{license_id}")
}

/// The subject key of an account's rows (all its licenses summed).
pub fn account_subject(account_id: &str) -> String {
    format!("account:{account_id}")
}

/// The detail of `license_created` and `license_updated` events: the license's seats, which
/// the fold follows as the capacity over time.
pub fn seats_detail(seats: u32) -> String {
    format!("seats={seats}")
}

/// The seats a `seats_detail` names.
pub fn parse_seats_detail(detail: Option<&str>) -> Option<i64> {
    detail?
        .split(' ')
        .find_map(|w| w.strip_prefix("seats="))?
        .parse()
        .ok()
}
