//! The per-license alert gauges of `/metrics` (issue 17, "alerts without a receiver"): for each
//! license with `alerts.threshold_percent`, the threshold and whether the seats in use are at
//! or above it; for each with `alerts.denials_per_hour`, the denials of the last hour and
//! whether they reach it. Read at scrape time from the same store call as the other gauges,
//! plus one grouped count of the last hour's denials (a partial index of denials).

use std::fmt::Write;

use leasehold_store::LicenseGauges;

use super::label_value;
use crate::error::ApiResult;
use crate::state::AppState;

/// Appends the alert families to `out`.
pub(super) async fn render(
    state: &AppState,
    gauges: &[LicenseGauges],
    out: &mut String,
) -> ApiResult<()> {
    let thresholds: Vec<(&LicenseGauges, u32)> = gauges
        .iter()
        .filter_map(|g| g.alerts.threshold_percent.map(|t| (g, t)))
        .collect();
    let rates: Vec<(&LicenseGauges, u32)> = gauges
        .iter()
        .filter_map(|g| g.alerts.denials_per_hour.map(|t| (g, t)))
        .collect();
    let denials: std::collections::HashMap<String, u64> = if rates.is_empty() {
        Default::default()
    } else {
        let since = state.clock.now().plus_millis(-3_600_000);
        state
            .store
            .denials_since(since)
            .await?
            .into_iter()
            .collect()
    };
    family(
        out,
        "leasehold_license_alert_threshold_percent",
        "The license's alert threshold (alerts.threshold_percent of its seats in use).",
        thresholds.iter().map(|(g, t)| (*g, u64::from(*t))),
    );
    family(
        out,
        "leasehold_license_alert_threshold_reached",
        "1 while the license's seats in use are at or above its alert threshold.",
        thresholds.iter().map(|(g, _)| {
            let above = g.alerts.above_threshold(g.in_use, g.seats) == Some(true);
            (*g, u64::from(above))
        }),
    );
    family(
        out,
        "leasehold_license_alert_denials_per_hour",
        "The license's denial alert (alerts.denials_per_hour).",
        rates.iter().map(|(g, t)| (*g, u64::from(*t))),
    );
    family(
        out,
        "leasehold_license_denials_last_hour",
        "Opens denied on the license within the last hour (licenses with a denial alert).",
        rates
            .iter()
            .map(|(g, _)| (*g, denials.get(&g.license_id).copied().unwrap_or(0))),
    );
    family(
        out,
        "leasehold_license_alert_denials_reached",
        "1 while the license's denials of the last hour reach its denial alert.",
        rates.iter().map(|(g, _)| {
            let n = denials.get(&g.license_id).copied().unwrap_or(0);
            (*g, u64::from(g.alerts.denials_reached(n) == Some(true)))
        }),
    );
    Ok(())
}

fn family<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (&'a LicenseGauges, u64)>,
) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
    for (g, v) in values {
        let _ = writeln!(
            out,
            "{name}{{license=\"{}\"}} {v}",
            label_value(&g.license_id)
        );
    }
}
