//! Usage series: `GET /v1/licenses/{id}/usage` and `GET /v1/accounts/{id}/usage`, as JSON
//! reports or as the CSV of their buckets.

use leasehold_proto::{AccountUsageReport, UsageReport};
use reqwest::Method;

use super::transport::Request;
use super::{Client, UsageQuery};
use crate::error::{ClientError, Result};

impl Client {
    /// `GET /v1/licenses/{id}/usage` (account admin) over the server's default period (the
    /// last 24 hours, by hour).
    pub async fn usage(&self, license_id: &str) -> Result<UsageReport> {
        self.usage_with(license_id, &UsageQuery::default()).await
    }

    /// `GET /v1/licenses/{id}/usage?from&to&bucket` (account admin): the exact series of
    /// seats in use (high and low water, average, capacity, opens, denials, queue waits,
    /// distinct users, overdraft) and the utilization over the period.
    pub async fn usage_with(&self, license_id: &str, query: &UsageQuery) -> Result<UsageReport> {
        let request = self.usage_request(&["v1", "licenses", license_id, "usage"], query, false)?;
        self.call(request).await
    }

    /// The same series as CSV: a header row, then one row per bucket.
    pub async fn usage_csv(&self, license_id: &str, query: &UsageQuery) -> Result<String> {
        let request = self.usage_request(&["v1", "licenses", license_id, "usage"], query, true)?;
        self.text(request).await
    }

    /// `GET /v1/accounts/{id}/usage` (account admin): the series of all the account's licenses
    /// summed.
    pub async fn account_usage_with(
        &self,
        account_id: &str,
        query: &UsageQuery,
    ) -> Result<AccountUsageReport> {
        let request = self.usage_request(&["v1", "accounts", account_id, "usage"], query, false)?;
        self.call(request).await
    }

    /// The account's series as CSV.
    pub async fn account_usage_csv(&self, account_id: &str, query: &UsageQuery) -> Result<String> {
        let request = self.usage_request(&["v1", "accounts", account_id, "usage"], query, true)?;
        self.text(request).await
    }

    fn usage_request(&self, segments: &[&str], query: &UsageQuery, csv: bool) -> Result<Request> {
        let mut request = self.request(Method::GET, segments)?;
        let mut pairs = query.pairs()?;
        if csv {
            pairs.push(("format", "csv".to_owned()));
        }
        if !pairs.is_empty() {
            request.url.query_pairs_mut().extend_pairs(pairs);
        }
        Ok(request)
    }

    async fn text(&self, request: Request) -> Result<String> {
        let answer = self.execute(request).await?;
        String::from_utf8(answer.body)
            .map_err(|e| ClientError::Config(format!("the answer is not UTF-8: {e}")))
    }
}
