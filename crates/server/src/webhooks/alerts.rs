//! Alerts as webhook events: `license.threshold` (the seats in use crossed the license's
//! `alerts.threshold_percent`, up or down), `license.full` (every seat taken), `license.denials`
//! (`alerts.denials_per_hour` denials within the last hour) and `license.expiring` (the
//! license's `expires_at` is within `webhooks.expiring_days`).
//!
//! The dispatcher compares each license's level now with the level last raised (stored in
//! `webhook_alert_state`, committed with the deliveries of the same fan-out) and raises only
//! crossings, so each is raised once however many nodes run. Levels are read from the seat
//! counts when the dispatcher looks (every second): a crossing that lasts less than that may
//! not be raised, and one is raised at most a second late. `license.denials` is raised again
//! at most once an hour while the rate stays above; `license.expiring` once per `expires_at`.

use std::collections::HashMap;

use leasehold_core::{Alerts, Timestamp};
use serde_json::json;

use super::events::WebhookEvent;

/// What the dispatcher knows of one license when it looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseLevel {
    pub license_id: String,
    pub account_id: String,
    pub seats: u32,
    pub in_use: u32,
    pub alerts: Alerts,
    pub expires_at: Option<Timestamp>,
    pub denials_last_hour: u64,
}

/// The alert state store kinds.
pub const THRESHOLD: &str = "threshold";
pub const FULL: &str = "full";
pub const DENIALS: &str = "denials";
pub const EXPIRING: &str = "expiring";

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// The events to raise and the states to store, from the levels now and the states stored.
/// `id_prefix` makes the events' ids unique (the fan-out's version).
pub fn plan(
    levels: &[LicenseLevel],
    states: &HashMap<(String, String), String>,
    now: Timestamp,
    expiring_days: u32,
    id_prefix: &str,
) -> (Vec<WebhookEvent>, Vec<(String, String, String)>) {
    let mut events = Vec::new();
    let mut stored = Vec::new();
    let state = |l: &LicenseLevel, kind: &str| states.get(&(l.license_id.clone(), kind.into()));
    let mut raise = |l: &LicenseLevel, event_type: &'static str, data: serde_json::Value| {
        events.push(WebhookEvent {
            id: format!("evt_{id_prefix}_{}", events.len()),
            event_type,
            account_id: l.account_id.clone(),
            license_id: Some(l.license_id.clone()),
            at: now,
            data,
        });
    };
    for l in levels {
        let counts = json!({"seats": l.seats, "in_use": l.in_use});
        if let Some(above) = l.alerts.above_threshold(l.in_use, l.seats) {
            let level = if above { "above" } else { "below" };
            let last = state(l, THRESHOLD).map_or("below", String::as_str);
            if last != level {
                let mut data = counts.clone();
                data["threshold_percent"] = json!(l.alerts.threshold_percent);
                data["direction"] = json!(if above { "up" } else { "down" });
                raise(l, "license.threshold", data);
                stored.push((l.license_id.clone(), THRESHOLD.into(), level.into()));
            }
        }
        let full = l.seats > 0 && l.in_use >= l.seats;
        let level = if full { "full" } else { "not_full" };
        if state(l, FULL).map_or("not_full", String::as_str) != level {
            if full {
                raise(l, "license.full", counts.clone());
            }
            stored.push((l.license_id.clone(), FULL.into(), level.into()));
        }
        if l.alerts.denials_reached(l.denials_last_hour) == Some(true) {
            let last: Option<i64> = state(l, DENIALS).and_then(|v| v.parse().ok());
            if last.is_none_or(|at| now.millis() - at >= HOUR_MS) {
                raise(
                    l,
                    "license.denials",
                    json!({
                        "denials_last_hour": l.denials_last_hour,
                        "denials_per_hour": l.alerts.denials_per_hour,
                    }),
                );
                stored.push((
                    l.license_id.clone(),
                    DENIALS.into(),
                    now.millis().to_string(),
                ));
            }
        }
        if let Some(end) = l.expires_at {
            let window = i64::from(expiring_days) * DAY_MS;
            let notified = state(l, EXPIRING).map(String::as_str);
            let key = end.millis().to_string();
            if now < end && end.millis() - now.millis() <= window && notified != Some(&key) {
                let end_text = end
                    .to_offset()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                raise(
                    l,
                    "license.expiring",
                    json!({
                        "expires_at": end_text,
                        "days_left": (end.millis() - now.millis()) / DAY_MS,
                    }),
                );
                stored.push((l.license_id.clone(), EXPIRING.into(), key));
            }
        }
    }
    (events, stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(in_use: u32) -> LicenseLevel {
        LicenseLevel {
            license_id: "l".into(),
            account_id: "a".into(),
            seats: 10,
            in_use,
            alerts: Alerts {
                threshold_percent: Some(80),
                denials_per_hour: Some(3),
            },
            expires_at: None,
            denials_last_hour: 0,
        }
    }

    fn apply(
        states: &mut HashMap<(String, String), String>,
        stored: Vec<(String, String, String)>,
    ) {
        for (l, k, v) in stored {
            states.insert((l, k), v);
        }
    }

    #[test]
    fn a_threshold_crossing_is_raised_once_each_way_and_full_once() {
        let now = Timestamp::from_secs(1_800_000_000);
        let mut states = HashMap::new();
        let (ev, st) = plan(&[level(5)], &states, now, 7, "1");
        assert!(ev.is_empty());
        apply(&mut states, st);
        let (ev, st) = plan(&[level(8)], &states, now, 7, "2");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event_type, "license.threshold");
        assert_eq!(ev[0].data["direction"], "up");
        apply(&mut states, st);
        assert!(plan(&[level(9)], &states, now, 7, "3").0.is_empty());
        let (ev, st) = plan(&[level(10)], &states, now, 7, "4");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event_type, "license.full");
        apply(&mut states, st);
        let (ev, _) = plan(&[level(2)], &states, now, 7, "5");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data["direction"], "down");
        assert_eq!(ev[0].id, "evt_5_0");
    }

    #[test]
    fn denials_alert_at_most_hourly_and_expiry_once_per_end() {
        let now = Timestamp::from_secs(1_800_000_000);
        let mut states = HashMap::new();
        let mut l = level(0);
        l.denials_last_hour = 3;
        l.expires_at = Some(now.plus_secs(3 * 86_400));
        let (ev, st) = plan(std::slice::from_ref(&l), &states, now, 7, "1");
        let kinds: Vec<_> = ev.iter().map(|e| e.event_type).collect();
        assert_eq!(kinds, ["license.denials", "license.expiring"]);
        assert_eq!(ev[1].data["days_left"], 3);
        apply(&mut states, st);
        assert!(
            plan(std::slice::from_ref(&l), &states, now.plus_secs(60), 7, "2")
                .0
                .is_empty()
        );
        let later = now.plus_secs(3600);
        let (ev, _) = plan(std::slice::from_ref(&l), &states, later, 7, "3");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event_type, "license.denials");
        // A new end is a new notice; an end further than the window is none.
        l.expires_at = Some(now.plus_secs(30 * 86_400));
        l.denials_last_hour = 0;
        assert!(plan(std::slice::from_ref(&l), &states, now, 7, "4")
            .0
            .is_empty());
    }
}
