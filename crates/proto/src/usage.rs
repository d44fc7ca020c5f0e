//! Usage series: the buckets and the utilization of `GET /v1/licenses/{id}/usage` and
//! `GET /v1/accounts/{id}/usage` (exact, from the session events).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::Usage;

/// One bucket of a usage series. Its figures cover `[start, end)`, up to now for the bucket
/// in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UsageBucket {
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub end: OffsetDateTime,
    /// Most seats in use at any instant of the bucket (a session of 2 s counts).
    pub high_water: u64,
    /// Fewest seats in use at any instant of the bucket.
    pub low_water: u64,
    /// Time-weighted average of the seats in use (over the part of the bucket that has passed).
    pub average_in_use: f64,
    /// Seats (capacity) at the bucket's end.
    pub seats: u64,
    /// Highest capacity within the bucket.
    pub seats_max: u64,
    /// Sessions opened.
    pub opens: u64,
    /// Opens refused because every seat was in use.
    pub denials: u64,
    /// Waits begun in the queue.
    pub queued: u64,
    /// Median of the queue waits that ended with a seat in the bucket, in seconds.
    pub queue_wait_median_secs: Option<f64>,
    /// Longest of them, in seconds.
    pub queue_wait_max_secs: Option<f64>,
    /// Users who opened a session in the bucket.
    pub distinct_users: u64,
    /// Most sessions in use beyond the seats (the overdraft) at any instant.
    pub overdraft_high_water: u64,
}

/// Time spent at one number of seats in use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HistogramBin {
    pub in_use: u64,
    pub seconds: f64,
}

/// How often and how long every seat was in use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FullStats {
    /// Times every seat came into use (full already at the period's start counts once).
    pub times: u64,
    pub seconds: f64,
}

/// The high water of one weekday × hour of the day over the period (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HeatmapCell {
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u8,
    /// 0 … 23.
    pub hour: u8,
    pub high_water: u64,
}

/// Utilization over the whole period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Utilization {
    /// Seconds spent at each number of seats in use, by number.
    pub histogram: Vec<HistogramBin>,
    pub full: FullStats,
    /// All 168 weekday × hour cells, Monday 00h first.
    pub heatmap: Vec<HeatmapCell>,
}

/// 200 answer of `GET /v1/accounts/{id}/usage`: the account's licenses summed (the high water
/// of the sum, not a sum of high waters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AccountUsageReport {
    pub account_id: String,
    /// Every license of the account summed, now.
    pub now: Usage,
    /// Most seats in use at once over the period.
    pub high_water: u64,
    /// Fewest seats in use at once over the period.
    pub low_water: u64,
    /// Opens refused because the license was full, over the period.
    pub denials: u64,
    /// The period's start (= `from`).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub to: OffsetDateTime,
    /// `minute`, `hour`, `day` or `month`.
    pub bucket: String,
    pub buckets: Vec<UsageBucket>,
    pub utilization: Utilization,
}
