//! `leasehold usage`: a license's seats in use, high and low water marks and denials.

use clap::Args;
use leasehold_client::UsageQuery;
use time::OffsetDateTime;

use super::output::{key_values, print_json, time};
use super::{parse_time, Admin, CmdResult, Common};

#[derive(Args, Debug)]
pub struct UsageArgs {
    #[command(flatten)]
    pub(super) common: Common,
    /// License id.
    license: String,
    /// Start of the period (RFC 3339).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    from: Option<OffsetDateTime>,
    /// End of the period (RFC 3339).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    to: Option<OffsetDateTime>,
    /// Bucket of the series: hour, day or month.
    #[arg(long)]
    bucket: Option<String>,
}

impl Admin {
    pub(super) async fn usage(&self, args: UsageArgs) -> CmdResult {
        let query = UsageQuery {
            from: args.from,
            to: args.to,
            bucket: args.bucket,
        };
        let report = self.client()?.usage_with(&args.license, &query).await?;
        if self.json() {
            print_json(&report);
            return Ok(());
        }
        print!(
            "{}",
            key_values(&[
                ("license", report.license_id.clone()),
                ("seats", report.now.seats.to_string()),
                ("in_use", report.now.in_use.to_string()),
                ("available", report.now.available.to_string()),
                ("overdraft_in_use", report.now.overdraft_in_use.to_string()),
                ("high_water", report.high_water.to_string()),
                ("low_water", report.low_water.to_string()),
                ("denials", report.denials.to_string()),
                ("since", time(report.since)),
            ])
        );
        Ok(())
    }
}
