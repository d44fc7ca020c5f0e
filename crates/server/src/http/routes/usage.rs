//! Routes of usage series: `GET /v1/licenses/{id}/usage` and `GET /v1/accounts/{id}/usage`
//! (JSON, or CSV with `?format=csv` or `Accept: text/csv`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use leasehold_proto as proto;
use leasehold_proto::ErrorBody;
use serde::Deserialize;

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::http::extract::{ApiPath, ApiQuery};
use crate::http::usage_formats::{self, UsageFormat};
use crate::state::AppState;
use crate::usage::{self, UsageQuery};

/// The query of the usage routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// Start of the period (RFC 3339; default: 24 hours before `to`), aligned down to the
    /// bucket (UTC).
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// End of the period (RFC 3339; default: now), aligned up to the bucket.
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
    /// `minute`, `hour` (the default), `day` or `month`. At most 10,000 buckets and 5 years.
    #[param(inline)]
    pub bucket: Option<BucketParam>,
    /// `json` (the default) or `csv` (one row per bucket); without it, `Accept: text/csv`
    /// chooses CSV.
    #[param(inline)]
    pub format: Option<UsageFormatParam>,
}

/// The bucket of a usage series (documentation; read as text, so that an unknown one is 400
/// `unknown_bucket`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, example = "hour")]
pub struct BucketParam(String);

/// The format of a usage answer (read as text: anything else is 422).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, example = "csv")]
pub struct UsageFormatParam(String);

fn split(params: UsageParams) -> (UsageQuery, Option<String>) {
    (
        UsageQuery {
            from: params.from,
            to: params.to,
            bucket: params.bucket.map(|b| b.0),
        },
        params.format.map(|f| f.0),
    )
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/usage", tag = "licenses",
    params(("id" = String, Path, description = "License id"), UsageParams),
    responses(
        (status = 200, description = "The license's usage series over the period (JSON), or its buckets as CSV (`text/csv`, one row per bucket after a header row of the bucket's field names)", content(
            (proto::UsageReport = "application/json"),
            (String = "text/csv", example = json!("start,end,high_water,low_water,average_in_use,seats,seats_max,opens,denials,queued,queue_wait_median_secs,queue_wait_max_secs,distinct_users,overdraft_high_water\r\n"))
        )),
        (status = 400, description = "`unknown_bucket`, or `invalid_usage_range` (from/to not RFC 3339, from not before to, more than 10,000 buckets or 5 years)", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "unknown parameter or format", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn license_usage(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> ApiResult<Response> {
    let (query, format) = split(params);
    let format = UsageFormat::choose(format.as_deref(), &headers)?;
    let (now, series, sites) = usage::license(&state, &auth, &id, &query).await?;
    let report = usage_formats::license_report(id, &now, &series, sites);
    let buckets = report.buckets.clone();
    usage_formats::respond(report, &buckets, format)
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/usage", tag = "accounts",
    params(("id" = String, Path, description = "Account id"), UsageParams),
    responses(
        (status = 200, description = "The account's usage series (all its licenses summed: the high water of the sum) over the period (JSON), or its buckets as CSV", content(
            (proto::AccountUsageReport = "application/json"),
            (String = "text/csv", example = json!("start,end,high_water,low_water,average_in_use,seats,seats_max,opens,denials,queued,queue_wait_median_secs,queue_wait_max_secs,distinct_users,overdraft_high_water\r\n"))
        )),
        (status = 400, description = "`unknown_bucket`, or `invalid_usage_range`", body = ErrorBody),
        (status = 403, description = "another account's admin", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "unknown parameter or format", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn account_usage(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> ApiResult<Response> {
    let (query, format) = split(params);
    let format = UsageFormat::choose(format.as_deref(), &headers)?;
    let (now, series) = usage::account(&state, &auth, &id, &query).await?;
    let report = usage_formats::account_report(id, &now, &series);
    let buckets = report.buckets.clone();
    usage_formats::respond(report, &buckets, format)
}
