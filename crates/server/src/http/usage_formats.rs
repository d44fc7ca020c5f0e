//! The answers of the usage routes: the store's series as the wire's `UsageReport` /
//! `AccountUsageReport` (JSON), or its buckets as CSV (one row per bucket, a header row of the
//! bucket's field names).

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use leasehold_core::Timestamp;
use leasehold_proto as proto;
use leasehold_store::usage::{UsageBucket, UsageSeries};
use leasehold_store::UsageStats;

use crate::clock::to_offset;
use crate::error::{ApiError, ApiResult};
use crate::http::audit_formats::csv_field;
use crate::http::views;

/// JSON or CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageFormat {
    Json,
    Csv,
}

impl UsageFormat {
    /// The `format` parameter (`json` or `csv`; anything else is 422), else CSV when `Accept`
    /// names `text/csv` before `application/json`, else JSON.
    pub fn choose(param: Option<&str>, headers: &HeaderMap) -> ApiResult<UsageFormat> {
        match param {
            Some("json") => return Ok(UsageFormat::Json),
            Some("csv") => return Ok(UsageFormat::Csv),
            Some(_) => return Err(ApiError::Unprocessable("format must be json or csv".into())),
            None => {}
        }
        let accept = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        for media in accept {
            match media.as_str() {
                "text/csv" => return Ok(UsageFormat::Csv),
                "application/json" => return Ok(UsageFormat::Json),
                _ => {}
            }
        }
        Ok(UsageFormat::Json)
    }
}

/// The names of a bucket's fields, the CSV header.
pub const CSV_HEADER: &str = "start,end,high_water,low_water,average_in_use,seats,seats_max,opens,denials,queued,queue_wait_median_secs,queue_wait_max_secs,distinct_users,overdraft_high_water";

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn at(ms: i64) -> time::OffsetDateTime {
    to_offset(Timestamp::from_millis(ms))
}

fn bucket(b: &UsageBucket) -> proto::UsageBucket {
    proto::UsageBucket {
        start: at(b.start),
        end: at(b.end),
        high_water: count(b.high_water),
        low_water: count(b.low_water),
        average_in_use: b.average_in_use,
        seats: count(b.seats),
        seats_max: count(b.seats_max),
        opens: count(b.opens),
        denials: count(b.denials),
        queued: count(b.queued),
        queue_wait_median_secs: b.queue_wait_median_secs,
        queue_wait_max_secs: b.queue_wait_max_secs,
        distinct_users: count(b.distinct_users),
        overdraft_high_water: count(b.overdraft_high_water),
    }
}

fn utilization(s: &UsageSeries) -> proto::Utilization {
    proto::Utilization {
        histogram: s
            .histogram
            .iter()
            .map(|h| proto::HistogramBin {
                in_use: count(h.in_use),
                seconds: h.seconds,
            })
            .collect(),
        full: proto::FullStats {
            times: count(s.full.times),
            seconds: s.full.seconds,
        },
        heatmap: s
            .heatmap
            .iter()
            .map(|c| proto::HeatmapCell {
                weekday: u8::try_from(c.weekday).unwrap_or(0),
                hour: u8::try_from(c.hour).unwrap_or(0),
                high_water: count(c.high_water),
            })
            .collect(),
    }
}

/// The license's answer.
pub fn license_report(
    license_id: String,
    now: &UsageStats,
    s: &UsageSeries,
    sites: Vec<proto::SiteUsage>,
) -> proto::UsageReport {
    proto::UsageReport {
        license_id,
        now: views::usage(now),
        high_water: u32::try_from(s.high_water).unwrap_or(u32::MAX),
        low_water: u32::try_from(s.low_water).unwrap_or(0),
        denials: count(s.denials),
        since: at(s.from),
        from: at(s.from),
        to: at(s.to),
        bucket: s.bucket.as_str().to_owned(),
        buckets: s.buckets.iter().map(bucket).collect(),
        utilization: utilization(s),
        sites,
    }
}

/// The account's answer.
pub fn account_report(
    account_id: String,
    now: &UsageStats,
    s: &UsageSeries,
) -> proto::AccountUsageReport {
    proto::AccountUsageReport {
        account_id,
        now: views::usage(now),
        high_water: count(s.high_water),
        low_water: count(s.low_water),
        denials: count(s.denials),
        since: at(s.from),
        from: at(s.from),
        to: at(s.to),
        bucket: s.bucket.as_str().to_owned(),
        buckets: s.buckets.iter().map(bucket).collect(),
        utilization: utilization(s),
    }
}

/// `report` as JSON, or its buckets as CSV.
pub fn respond<T: serde::Serialize>(
    report: T,
    buckets: &[proto::UsageBucket],
    format: UsageFormat,
) -> ApiResult<Response> {
    match format {
        UsageFormat::Json => Ok(Json(report).into_response()),
        UsageFormat::Csv => {
            let mut body = String::with_capacity(64 + buckets.len() * 96);
            body.push_str(CSV_HEADER);
            body.push_str("\r\n");
            for b in buckets {
                csv_row(&mut body, b)?;
            }
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
        }
    }
}

fn csv_row(out: &mut String, b: &proto::UsageBucket) -> ApiResult<()> {
    let time = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| ApiError::Internal(e.to_string()))
    };
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let fields = [
        time(b.start)?,
        time(b.end)?,
        b.high_water.to_string(),
        b.low_water.to_string(),
        b.average_in_use.to_string(),
        b.seats.to_string(),
        b.seats_max.to_string(),
        b.opens.to_string(),
        b.denials.to_string(),
        b.queued.to_string(),
        opt(b.queue_wait_median_secs),
        opt(b.queue_wait_max_secs),
        b.distinct_users.to_string(),
        b.overdraft_high_water.to_string(),
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push_str("\r\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_format_parameter_wins_over_accept_and_accept_picks_csv() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/csv"));
        assert_eq!(
            UsageFormat::choose(None, &headers).unwrap(),
            UsageFormat::Csv
        );
        assert_eq!(
            UsageFormat::choose(Some("json"), &headers).unwrap(),
            UsageFormat::Json
        );
        assert!(UsageFormat::choose(Some("xml"), &headers).is_err());
        assert_eq!(
            UsageFormat::choose(None, &HeaderMap::new()).unwrap(),
            UsageFormat::Json
        );
    }
}
