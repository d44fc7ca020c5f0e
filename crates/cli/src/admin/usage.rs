//! `leasehold license usage` (and its short form `leasehold usage`): a license's exact usage
//! series — seats in use now, high and low water marks, averages, denials, queue waits per
//! bucket, and the utilization — as text, JSON (`-o json`) or the server's CSV (`--csv`).

use clap::Args;
use leasehold_client::proto::UsageReport;
use leasehold_client::UsageQuery;
use time::OffsetDateTime;

use super::output::{key_values, print_json, time, Table};
use super::{parse_time, Admin, CmdResult, Common};

#[derive(Args, Debug)]
pub struct UsageArgs {
    #[command(flatten)]
    pub(super) common: Common,
    #[command(flatten)]
    pub(super) series: SeriesArgs,
}

/// The series flags (shared by `leasehold usage` and `leasehold license usage`).
#[derive(Args, Debug)]
pub struct SeriesArgs {
    /// License id.
    license: String,
    /// Start of the period (RFC 3339; default: 24 hours before --to), aligned down to the
    /// bucket.
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    from: Option<OffsetDateTime>,
    /// End of the period (RFC 3339; default: now), aligned up to the bucket.
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    to: Option<OffsetDateTime>,
    /// Bucket of the series: minute, hour (the default), day or month.
    #[arg(long)]
    bucket: Option<String>,
    /// Print the buckets as CSV (one row per bucket, a header row first).
    #[arg(long)]
    csv: bool,
}

impl Admin {
    pub(super) async fn usage(&self, args: SeriesArgs) -> CmdResult {
        let query = UsageQuery {
            from: args.from,
            to: args.to,
            bucket: args.bucket,
        };
        let client = self.client()?;
        if args.csv {
            print!("{}", client.usage_csv(&args.license, &query).await?);
            return Ok(());
        }
        let report = client.usage_with(&args.license, &query).await?;
        if self.json() {
            print_json(&report);
            return Ok(());
        }
        print!("{}", text(&report));
        Ok(())
    }
}

fn text(report: &UsageReport) -> String {
    let full = &report.utilization.full;
    let mut out = key_values(&[
        ("license", report.license_id.clone()),
        ("seats", report.now.seats.to_string()),
        ("in_use", report.now.in_use.to_string()),
        ("available", report.now.available.to_string()),
        ("overdraft_in_use", report.now.overdraft_in_use.to_string()),
        ("from", time(report.from)),
        ("to", time(report.to)),
        ("bucket", report.bucket.clone()),
        ("high_water", report.high_water.to_string()),
        ("low_water", report.low_water.to_string()),
        ("denials", report.denials.to_string()),
        ("full", format!("{} times, {} s", full.times, full.seconds)),
        ("since", time(report.since)),
    ]);
    let mut table = Table::new(&[
        "START",
        "HIGH",
        "LOW",
        "AVERAGE",
        "SEATS",
        "OPENS",
        "DENIALS",
        "QUEUED",
        "WAIT MEDIAN",
        "USERS",
    ]);
    for b in &report.buckets {
        table.row(vec![
            time(b.start),
            b.high_water.to_string(),
            b.low_water.to_string(),
            format!("{:.2}", b.average_in_use),
            b.seats.to_string(),
            b.opens.to_string(),
            b.denials.to_string(),
            b.queued.to_string(),
            b.queue_wait_median_secs
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s")),
            b.distinct_users.to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&table.render());
    out
}
