//! The events webhooks carry, and how each comes from the audit log (the outbox): the types of
//! an audit event (one or two: a borrow is `session.opened` and `session.borrowed`), and the
//! JSON body every delivery of an event sends.
//!
//! | audit event | webhook events |
//! |---|---|
//! | `opened` | `session.opened`; plus `session.granted` for a waiter served from the queue, `session.borrowed` for a borrow |
//! | `ended` | `session.closed` (logout, return, deactivations), `session.revoked` (admin revoke, reclaim of a borrow), `session.expired` (inactivity, lifetime, license end, borrow end); plus `session.returned` for a borrowed seat given back |
//! | `denied` | `session.denied` |
//! | `queued` | `session.queued` |
//! | `delegation_created`, `_renewed`, `_returned`, `_reported` | `delegation.created`, `.renewed`, `.returned`, `.reported` (`data`: `id`, `delegated`, `until` in unix ms, or `report`) |
//! | `license_created`, `license_updated`, `sessions_revoked`, `device_activated`, `device_deactivated` | `license.changed` (`data.change` names which) |
//!
//! `license.threshold`, `license.full`, `license.denials` and `license.expiring` are raised by
//! the dispatcher from the seat counts (`super::alerts`). A delegation reaching its end is not
//! an event (time decides it, like a license's end: `license.expiring` warns ahead).
//!
//! The body: `{"id", "type", "created_at", "account_id", "license_id", "data"}`; `id` is the
//! same on every delivery of the event (retries, redeliveries): receivers deduplicate on it.

use leasehold_core::Timestamp;
use leasehold_proto::{EndReason, WEBHOOK_EVENT_TYPES};
use leasehold_store::audit::AuditEntry;
use serde_json::{json, Value};

/// One event to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    pub id: String,
    pub event_type: &'static str,
    pub account_id: String,
    /// Events of one license reach an endpoint in order, one at a time.
    pub license_id: Option<String>,
    pub at: Timestamp,
    pub data: Value,
}

impl WebhookEvent {
    /// The JSON body sent.
    pub fn body(&self) -> String {
        let created_at = self
            .at
            .to_offset()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        json!({
            "id": self.id,
            "type": self.event_type,
            "created_at": created_at,
            "account_id": self.account_id,
            "license_id": self.license_id,
            "data": self.data,
        })
        .to_string()
    }

    /// The key deliveries of this event are ordered by per endpoint.
    pub fn order_key(&self) -> String {
        self.license_id
            .clone()
            .unwrap_or_else(|| format!("event:{}", self.id))
    }
}

/// Whether `t` is an event type (or `*`, every type).
pub fn is_known_type(t: &str) -> bool {
    t == "*" || WEBHOOK_EVENT_TYPES.contains(&t)
}

/// The static name of a known type.
pub fn static_type(t: &str) -> Option<&'static str> {
    WEBHOOK_EVENT_TYPES.iter().copied().find(|k| *k == t)
}

fn end_type(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Revoked | EndReason::Reclaimed | EndReason::DelegationReturned => {
            "session.revoked"
        }
        EndReason::Inactivity
        | EndReason::Lifetime
        | EndReason::LicenseExpired
        | EndReason::BorrowEnded
        | EndReason::DelegationExpired => "session.expired",
        EndReason::Logout
        | EndReason::Returned
        | EndReason::UserDeactivated
        | EndReason::DeviceDeactivated
        | EndReason::Unknown => "session.closed",
    }
}

fn parse_reason(s: &str) -> EndReason {
    serde_json::from_value(Value::String(s.to_owned())).unwrap_or(EndReason::Unknown)
}

/// The webhook events of one audit entry, in order (none for kinds webhooks do not carry).
pub fn from_audit(entry: &AuditEntry) -> Vec<WebhookEvent> {
    let e = &entry.event;
    let detail = e.detail.clone().unwrap_or_default();
    let words: Vec<&str> = detail.split_whitespace().collect();
    let session = json!({
        "session_id": e.session_id,
        "username": e.username,
    });
    let mut types: Vec<(&'static str, Value)> = Vec::new();
    match e.event.as_str() {
        "opened" => {
            let data = json!({
                "session_id": e.session_id,
                "username": e.username,
                "kind": words.first(),
                "overdraft": words.contains(&"overdraft"),
                "from_queue": words.contains(&"queued"),
                "borrowed": words.contains(&"borrowed"),
            });
            types.push(("session.opened", data.clone()));
            if words.contains(&"queued") {
                types.push(("session.granted", data.clone()));
            }
            if words.contains(&"borrowed") {
                types.push(("session.borrowed", data));
            }
        }
        "ended" => {
            let reason = parse_reason(&detail);
            let mut data = session;
            data["reason"] = json!(detail);
            types.push((end_type(reason), data.clone()));
            if reason == EndReason::Returned {
                types.push(("session.returned", data));
            }
        }
        "denied" => {
            let mut data = session;
            data["code"] = json!(detail);
            types.push(("session.denied", data));
        }
        "queued" => types.push(("session.queued", session)),
        "delegation_created"
        | "delegation_renewed"
        | "delegation_returned"
        | "delegation_reported" => {
            let mut data = json!({});
            for (key, value) in words.iter().filter_map(|w| w.split_once('=')) {
                data[key] = match value.parse::<i64>() {
                    Ok(n) if key != "id" => json!(n),
                    _ => json!(value),
                };
            }
            let kind = match e.event.as_str() {
                "delegation_created" => "delegation.created",
                "delegation_renewed" => "delegation.renewed",
                "delegation_returned" => "delegation.returned",
                _ => "delegation.reported",
            };
            types.push((kind, data));
        }
        "license_created" | "license_updated" | "sessions_revoked" | "device_activated"
        | "device_deactivated" => {
            types.push((
                "license.changed",
                json!({"change": e.event, "detail": e.detail}),
            ));
        }
        _ => {}
    }
    types
        .into_iter()
        .enumerate()
        .map(|(i, (event_type, data))| WebhookEvent {
            // The first type of an entry is `evt_<seq>`, a second `evt_<seq>_<n>`: stable.
            id: match i {
                0 => format!("evt_{}", entry.seq),
                n => format!("evt_{}_{n}", entry.seq),
            },
            event_type,
            account_id: e.account_id.clone(),
            license_id: Some(e.license_id.clone()),
            at: e.at,
            data,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_store::{AuditEvent, Origin};

    fn entry(event: &str, detail: &str) -> AuditEntry {
        AuditEntry {
            seq: 7,
            event: AuditEvent {
                at: Timestamp::from_secs(1_800_000_000),
                account_id: "a".into(),
                license_id: "l".into(),
                session_id: Some("s".into()),
                username: Some("ann".into()),
                event: event.into(),
                detail: Some(detail.into()),
                origin: Origin::default(),
            },
        }
    }

    fn types(e: &AuditEntry) -> Vec<&'static str> {
        from_audit(e).iter().map(|w| w.event_type).collect()
    }

    #[test]
    fn audit_events_map_to_webhook_types_with_stable_ids() {
        assert_eq!(types(&entry("opened", "interactive")), ["session.opened"]);
        assert_eq!(
            types(&entry("opened", "interactive queued")),
            ["session.opened", "session.granted"]
        );
        let borrowed = from_audit(&entry("opened", "interactive borrowed"));
        assert_eq!(borrowed[1].event_type, "session.borrowed");
        assert_eq!(borrowed[0].id, "evt_7");
        assert_eq!(borrowed[1].id, "evt_7_1");
        assert_eq!(types(&entry("ended", "logout")), ["session.closed"]);
        assert_eq!(types(&entry("ended", "revoked")), ["session.revoked"]);
        assert_eq!(types(&entry("ended", "reclaimed")), ["session.revoked"]);
        assert_eq!(types(&entry("ended", "inactivity")), ["session.expired"]);
        assert_eq!(types(&entry("ended", "borrow_ended")), ["session.expired"]);
        assert_eq!(
            types(&entry("ended", "returned")),
            ["session.closed", "session.returned"]
        );
        assert_eq!(
            types(&entry("denied", "no_seat_available")),
            ["session.denied"]
        );
        assert_eq!(types(&entry("queued", "")), ["session.queued"]);
        assert_eq!(types(&entry("license_updated", "")), ["license.changed"]);
        assert_eq!(
            types(&entry("ended", "delegation_expired")),
            ["session.expired"]
        );
        assert_eq!(
            types(&entry("ended", "delegation_returned")),
            ["session.revoked"]
        );
        let created = &from_audit(&entry(
            "delegation_created",
            "id=dlg_1 delegated=5 until=1800000000000",
        ))[0];
        assert_eq!(created.event_type, "delegation.created");
        assert_eq!(
            created.data,
            json!({"id": "dlg_1", "delegated": 5, "until": 1_800_000_000_000_i64})
        );
        assert_eq!(
            types(&entry(
                "delegation_returned",
                "id=dlg_1 delegated=5 until=1"
            )),
            ["delegation.returned"]
        );
        assert_eq!(
            types(&entry("delegation_reported", "id=dlg_1 report=3")),
            ["delegation.reported"]
        );
        assert!(types(&entry("something_else", "")).is_empty());
    }

    #[test]
    fn the_body_names_the_event_and_its_license() {
        let e = &from_audit(&entry("ended", "logout"))[0];
        let body: Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(body["id"], "evt_7");
        assert_eq!(body["type"], "session.closed");
        assert_eq!(body["license_id"], "l");
        assert_eq!(body["data"]["reason"], "logout");
        assert_eq!(body["created_at"], "2027-01-15T08:00:00Z");
        assert_eq!(e.order_key(), "l");
    }
}
