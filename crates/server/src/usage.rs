//! The application layer of usage series: `GET /v1/licenses/{id}/usage` and
//! `GET /v1/accounts/{id}/usage`. Reads the period and the bucket (defaults: the 24 hours up to
//! now, by hour), refuses absurd ones with a stable code, checks the caller, and asks the store
//! for the series of the license or the account (exact up to now: the store folds what is
//! pending first; see `leasehold_store::usage`).

use leasehold_core::Timestamp;
use leasehold_store::usage::{
    account_subject, license_subject, Bucket, SeriesQuery, UsageSeries, MAX_BUCKETS, MAX_PERIOD_MS,
};
use leasehold_store::{License, UsageStats};

use leasehold_proto as proto;

use crate::access;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How often the background fold reads the audit events written meanwhile (a query folds what
/// is pending itself, so this only bounds how much a query has to fold).
pub const FOLD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The background fold: every `FOLD_INTERVAL`, the audit events written meanwhile go into the
/// usage rows (on PostgreSQL, by one node at a time). A failure is logged once until it
/// changes or ends.
pub async fn run_fold(state: AppState) {
    let mut tick = tokio::time::interval(FOLD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing: Option<String> = None;
    loop {
        tick.tick().await;
        match state.store.usage_rollup().await {
            Ok(n) => {
                if failing.take().is_some() {
                    tracing::info!("the usage fold works again");
                }
                if n > 0 {
                    tracing::trace!(events = n, "folded audit events into the usage rows");
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if failing.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %msg, "the usage fold failed; it retries every second");
                    failing = Some(msg);
                }
            }
        }
    }
}

/// The default period: the 24 hours up to `to`.
const DEFAULT_PERIOD_MS: i64 = 24 * 3_600_000;

/// The period and bucket a usage series was asked for, as given (RFC 3339 times; `minute`,
/// `hour`, `day` or `month`).
#[derive(Debug, Default, Clone)]
pub struct UsageQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub bucket: Option<String>,
}

/// The period of a query, aligned to its bucket: `from` down, `to` up (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub bucket: Bucket,
    pub from: i64,
    pub to: i64,
}

/// Reads and checks a query at `now`: 400 `unknown_bucket`, 400 `invalid_usage_range`.
pub fn period(query: &UsageQuery, now: Timestamp) -> ApiResult<Period> {
    let bucket = match query.bucket.as_deref() {
        None => Bucket::Hour,
        Some(b) => Bucket::parse(b).ok_or_else(|| ApiError::UnknownBucket(b.to_owned()))?,
    };
    let to = match &query.to {
        Some(v) => parse_time("to", v)?,
        None => now.millis(),
    };
    let from = match &query.from {
        Some(v) => parse_time("from", v)?,
        None => to - DEFAULT_PERIOD_MS,
    };
    if from >= to {
        return Err(ApiError::InvalidUsageRange("from must be before to".into()));
    }
    // A given `to` ends the period (exclusive); the default, now, includes its bucket.
    let to = match query.to {
        Some(_) => bucket.ceil(to),
        None => bucket.next(bucket.floor(to)),
    };
    let from = bucket.floor(from);
    if to - from > MAX_PERIOD_MS {
        return Err(ApiError::InvalidUsageRange(
            "the period is longer than 5 years (1830 days)".into(),
        ));
    }
    if bucket.count(from, to, MAX_BUCKETS) > MAX_BUCKETS {
        return Err(ApiError::InvalidUsageRange(format!(
            "the period holds more than {MAX_BUCKETS} buckets of a {}; give a larger bucket or a shorter period",
            bucket.as_str()
        )));
    }
    Ok(Period { bucket, from, to })
}

fn parse_time(name: &str, value: &str) -> ApiResult<i64> {
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ApiError::InvalidUsageRange(format!("{name} must be an RFC 3339 time")))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .ok()
        .filter(|ms| (0..=253_402_300_799_000).contains(ms))
        .ok_or_else(|| ApiError::InvalidUsageRange(format!("{name} is out of range")))
}

/// A license's series, its usage now, and the latest usage reports of its dark sites (their
/// use is not in the series: it is counted by the local servers).
#[tracing::instrument(skip(state, auth))]
pub async fn license(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
    query: &UsageQuery,
) -> ApiResult<(UsageStats, UsageSeries, Vec<proto::SiteUsage>)> {
    let now = state.clock.now();
    let period = period(query, now)?;
    let license = access::admin_license(state, auth, license_id).await?;
    let sites = license
        .terms
        .delegations
        .iter()
        .map(|d| crate::delegation::report::site_usage(d, now))
        .collect();
    let usage = state.store.usage(license_id, now).await?;
    let series = series(state, license_subject(license_id), period, &[license], now).await?;
    Ok((usage, series, sites))
}

/// An account's series (its licenses summed) and its licenses' usage now, summed.
#[tracing::instrument(skip(state, auth))]
pub async fn account(
    state: &AppState,
    auth: &Auth,
    account_id: &str,
    query: &UsageQuery,
) -> ApiResult<(UsageStats, UsageSeries)> {
    let now = state.clock.now();
    let period = period(query, now)?;
    access::admin_account(state, auth, account_id).await?;
    let licenses = state.store.list_licenses(account_id).await?;
    let mut total = UsageStats {
        seats: 0,
        in_use: 0,
        ending: 0,
        high_water: 0,
        low_water: 0,
        denials: 0,
        since: now,
        overdraft_in_use: 0,
        borrowed: 0,
        delegated: 0,
        activations: None,
    };
    for l in &licenses {
        let u = state.store.usage(&l.id, now).await?;
        total.seats += u.seats;
        total.in_use += u.in_use;
        total.ending += u.ending;
        total.overdraft_in_use += u.overdraft_in_use;
        total.borrowed += u.borrowed;
        total.delegated += u.delegated;
    }
    let series = series(state, account_subject(account_id), period, &licenses, now).await?;
    Ok((total, series))
}

async fn series(
    state: &AppState,
    subject: String,
    period: Period,
    licenses: &[License],
    now: Timestamp,
) -> ApiResult<UsageSeries> {
    let query = SeriesQuery {
        subject,
        bucket: period.bucket,
        from: period.from,
        to: period.to,
        now: now.millis(),
        seats_now: licenses.iter().map(|l| i64::from(l.terms.seats)).sum(),
    };
    Ok(state.store.usage_series(&query).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn q(from: Option<&str>, to: Option<&str>, bucket: Option<&str>) -> UsageQuery {
        UsageQuery {
            from: from.map(Into::into),
            to: to.map(Into::into),
            bucket: bucket.map(Into::into),
        }
    }

    #[test]
    fn the_default_is_the_last_24_hours_by_hour_aligned() {
        let p = period(&UsageQuery::default(), NOW).unwrap();
        assert_eq!(p.bucket, Bucket::Hour);
        assert_eq!(p.to, Bucket::Hour.floor(NOW.millis()) + 3_600_000);
        assert_eq!(p.from, Bucket::Hour.floor(NOW.millis() - DEFAULT_PERIOD_MS));
    }

    #[test]
    fn absurd_queries_are_refused_with_stable_codes() {
        let cases = [
            (q(None, None, Some("week")), "UnknownBucket"),
            (q(Some("yesterday"), None, None), "InvalidUsageRange"),
            (
                q(
                    Some("2030-01-02T00:00:00Z"),
                    Some("2030-01-01T00:00:00Z"),
                    None,
                ),
                "InvalidUsageRange",
            ),
            (
                q(
                    Some("2030-01-01T00:00:00Z"),
                    Some("2030-01-01T00:00:00Z"),
                    None,
                ),
                "InvalidUsageRange",
            ),
            (
                q(
                    Some("2030-01-01T00:00:00Z"),
                    Some("2030-01-10T00:00:00Z"),
                    Some("minute"),
                ),
                "InvalidUsageRange",
            ),
            (
                q(
                    Some("2020-01-01T00:00:00Z"),
                    Some("2030-01-01T00:00:00Z"),
                    Some("month"),
                ),
                "InvalidUsageRange",
            ),
        ];
        for (query, code) in cases {
            let err = period(&query, NOW).unwrap_err();
            assert!(format!("{err:?}").starts_with(code), "{query:?}: {err:?}");
        }
        // A year by hour (8,760 buckets) is fine.
        let p = period(
            &q(
                Some("2029-01-01T00:00:00Z"),
                Some("2030-01-01T00:00:00Z"),
                None,
            ),
            NOW,
        );
        assert!(p.is_ok());
    }
}
