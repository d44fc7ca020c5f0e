//! Warnings ahead of a delegation's end on a local server: when under `WARN_AHEAD` remains, a
//! warning in the log (once a day per license) and, at every scrape, the seconds left per
//! delegated license (`leasehold_delegation_seconds_left`) and how many end within
//! `WARN_AHEAD` (`leasehold_delegations_expiring_soon`). The license itself shows
//! `delegation_expires_at`.

use std::collections::HashMap;
use std::time::Duration;

use leasehold_core::Timestamp;
use leasehold_store::License;

use crate::state::AppState;

/// How far ahead of its end a delegation is warned about: 7 days.
pub const WARN_AHEAD_SECS: i64 = 7 * 24 * 3600;
/// How often the log is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);
/// One warning a day per license.
const WARN_EVERY_MS: i64 = 24 * 3600 * 1000;

/// A delegated license's end and the seconds left at `now` (none once returned).
pub fn seconds_left(license: &License, now: Timestamp) -> Option<i64> {
    let from = license.terms.delegated_from.as_ref()?;
    if from.returned_at.is_some() {
        return None;
    }
    let end = license.terms.expires_at?;
    Some(((end.millis() - now.millis()) / 1000).max(0))
}

/// Logs a warning for each delegated license within `WARN_AHEAD_SECS` of its end, at most
/// once a day each; runs until the server stops.
pub async fn run(state: AppState) {
    let mut warned: HashMap<String, Timestamp> = HashMap::new();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let licenses = match state.store.delegated_licenses().await {
            Ok(licenses) => licenses,
            Err(e) => {
                tracing::warn!(error = %e, "reading the delegated licenses failed");
                continue;
            }
        };
        let now = state.clock.now();
        for license in &licenses {
            let Some(left) = seconds_left(license, now) else {
                continue;
            };
            if left >= WARN_AHEAD_SECS {
                continue;
            }
            let due = warned
                .get(&license.id)
                .is_none_or(|at| now.millis() - at.millis() >= WARN_EVERY_MS);
            if due {
                warned.insert(license.id.clone(), now);
                tracing::warn!(
                    license_id = %license.id,
                    seconds_left = left,
                    "the delegation ends in under 7 days: import a renewed delegation file, \
                     or sessions end with delegation_expired at its end"
                );
            }
        }
    }
}

/// The metric families of delegated licenses, in the text format.
pub fn render(licenses: &[License], now: Timestamp) -> String {
    let name = "leasehold_delegation_seconds_left";
    let mut out = format!(
        "# HELP {name} Seconds until the delegation of each delegated license ends (local server).\n\
         # TYPE {name} gauge\n"
    );
    let mut soon = 0;
    for license in licenses {
        if let Some(left) = seconds_left(license, now) {
            let id = crate::metrics::label_value(&license.id);
            out.push_str(&format!("{name}{{license=\"{id}\"}} {left}\n"));
            if left < WARN_AHEAD_SECS {
                soon += 1;
            }
        }
    }
    let name = "leasehold_delegations_expiring_soon";
    out.push_str(&format!(
        "# HELP {name} Delegated licenses whose delegation ends within 7 days.\n\
         # TYPE {name} gauge\n{name} {soon}\n"
    ));
    out
}
