//! How records are written into and read back from database columns, the same on SQLite and
//! PostgreSQL (both schemas store the same text and numbers): user kinds, token hashes, license
//! models and terms, credential principals, end reasons, session times, and the refusal a
//! queue entry keeps.

use leasehold_core::session::SessionClock;
use leasehold_core::{LicenseTerms, RuleError, Timestamp};
use leasehold_proto::{EndReason, LicenseModel, UserKind};

use crate::records::{Principal, TokenHash};
use crate::{StoreError, StoreResult};

/// A user kind column (written as `UserKind::as_str`); anything but `service` reads as
/// interactive.
pub fn parse_kind(text: &str) -> UserKind {
    if text == "service" {
        UserKind::Service
    } else {
        UserKind::Interactive
    }
}

/// A token hash column; `None` when the bytes are not a SHA-256 (never written by the store).
pub fn hash_from(bytes: Vec<u8>) -> Option<TokenHash> {
    bytes.try_into().ok()
}

/// A license's `model` column (written as `LicenseModel::as_str`).
pub fn parse_model(license_id: &str, text: &str) -> StoreResult<LicenseModel> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|e| StoreError::Unavailable(format!("license {license_id}: bad model: {e}")))
}

/// A license's `terms` column, as written by `terms_json`.
pub fn parse_terms(license_id: &str, json: &str) -> StoreResult<LicenseTerms> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Unavailable(format!("license {license_id}: bad terms: {e}")))
}

/// The `terms` column of a license.
pub fn terms_json(terms: &LicenseTerms) -> StoreResult<String> {
    serde_json::to_string(terms)
        .map_err(|e| StoreError::Unavailable(format!("encoding terms: {e}")))
}

/// The `account_id` and `username` columns of a credential (its `kind` is
/// `Principal::kind_str`).
pub fn principal_columns(principal: &Principal) -> (Option<&str>, Option<&str>) {
    match principal {
        Principal::Root => (None, None),
        Principal::AccountAdmin { account_id } => (Some(account_id), None),
        Principal::User {
            account_id,
            username,
        }
        | Principal::ServiceAccess {
            account_id,
            username,
        } => (Some(account_id), Some(username)),
    }
}

/// A credential's principal from its `kind`, `account_id` and `username` columns; `None` for a
/// row that names no principal (such a credential authenticates nobody).
pub fn principal_from(
    kind: &str,
    account_id: Option<String>,
    username: Option<String>,
) -> Option<Principal> {
    Some(match (kind, account_id, username) {
        ("root", _, _) => Principal::Root,
        ("account_admin", Some(account_id), _) => Principal::AccountAdmin { account_id },
        ("user", Some(account_id), Some(username)) => Principal::User {
            account_id,
            username,
        },
        ("service_access", Some(account_id), Some(username)) => Principal::ServiceAccess {
            account_id,
            username,
        },
        _ => return None,
    })
}

/// A session's `end_reason` column; a reason this binary does not know reads as `Unknown`.
pub fn parse_end_reason(text: &str) -> EndReason {
    EndReason::parse(text).unwrap_or(EndReason::Unknown)
}

/// A session's timing from its columns (milliseconds since the epoch).
pub fn session_clock(
    opened_at: i64,
    expires_at: i64,
    hard_end: Option<i64>,
    license_end: Option<i64>,
    borrow_until: Option<i64>,
) -> SessionClock {
    SessionClock {
        opened_at: Timestamp::from_millis(opened_at),
        expires_at: Timestamp::from_millis(expires_at),
        hard_end: hard_end.map(Timestamp::from_millis),
        license_end: license_end.map(Timestamp::from_millis),
        license_end_reason: EndReason::LicenseExpired,
        borrow_until: borrow_until.map(Timestamp::from_millis),
    }
}

/// A refusal as a queue entry keeps it (`queue_entries.refusal`), for its waiter on whichever
/// node. Only the refusals a queue head can get are spelled out; any other keeps its message.
pub fn refusal_json(refusal: &RuleError) -> String {
    let v = match refusal {
        RuleError::NoSeatAvailable { seats } => {
            serde_json::json!({"code": "no_seat_available", "seats": seats})
        }
        RuleError::UserSessionLimit { user, max } => {
            serde_json::json!({"code": "user_session_limit", "user": user, "max": max})
        }
        RuleError::LicenseNotActive(m) => {
            serde_json::json!({"code": "license_not_active", "message": m})
        }
        RuleError::UserNotActive(m) => serde_json::json!({"code": "user_inactive", "message": m}),
        RuleError::DeviceNotActivated(d) => {
            serde_json::json!({"code": "device_not_activated", "device": d})
        }
        other => serde_json::json!({"code": "invalid_request", "message": other.to_string()}),
    };
    v.to_string()
}

/// The refusal `refusal_json` wrote; unreadable text is an `Invalid` refusal.
pub fn refusal_from(text: &str) -> RuleError {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let field = |k: &str| v.get(k).cloned().unwrap_or_default();
    let s = |k: &str| field(k).as_str().unwrap_or_default().to_owned();
    let n = |k: &str| u32::try_from(field(k).as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
    match field("code").as_str().unwrap_or_default() {
        "no_seat_available" => RuleError::NoSeatAvailable { seats: n("seats") },
        "user_session_limit" => RuleError::UserSessionLimit {
            user: s("user"),
            max: n("max"),
        },
        "license_not_active" => RuleError::LicenseNotActive(s("message")),
        "user_inactive" => RuleError::UserNotActive(s("message")),
        "device_not_activated" => RuleError::DeviceNotActivated(s("device")),
        _ => RuleError::Invalid(s("message")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_core::PlanCatalog;
    use leasehold_proto::CreateLicense;

    #[test]
    fn user_kinds_round_trip_and_unknown_text_is_interactive() {
        for kind in [UserKind::Interactive, UserKind::Service] {
            assert_eq!(parse_kind(kind.as_str()), kind);
        }
        assert_eq!(parse_kind("Service"), UserKind::Interactive);
        assert_eq!(parse_kind(""), UserKind::Interactive);
    }

    #[test]
    fn only_32_bytes_are_a_token_hash() {
        assert_eq!(hash_from(vec![7; 32]), Some([7; 32]));
        assert_eq!(hash_from(vec![7; 31]), None);
        assert_eq!(hash_from(Vec::new()), None);
    }

    #[test]
    fn models_round_trip_and_bad_ones_name_their_license() {
        for model in [
            LicenseModel::ConcurrentSessions,
            LicenseModel::RegisteredUsers,
            LicenseModel::NodeLocked,
        ] {
            assert_eq!(parse_model("lic", model.as_str()).unwrap(), model);
        }
        let err = parse_model("lic-9", "floating").unwrap_err().to_string();
        assert!(err.contains("license lic-9: bad model"), "{err}");
    }

    #[test]
    fn terms_round_trip_through_their_json() {
        let req = CreateLicense {
            account_id: "a".into(),
            product: "cad".into(),
            seats: Some(5),
            reserved: vec!["boss".into()],
            ..Default::default()
        };
        let terms = LicenseTerms::from_create(&req, &PlanCatalog::default()).unwrap();
        let json = terms_json(&terms).unwrap();
        assert_eq!(parse_terms("lic", &json).unwrap(), terms);
        let err = parse_terms("lic-9", "{").unwrap_err().to_string();
        assert!(err.contains("license lic-9: bad terms"), "{err}");
    }

    #[test]
    fn principals_round_trip_through_their_columns() {
        let principals = [
            Principal::Root,
            Principal::AccountAdmin {
                account_id: "acme".into(),
            },
            Principal::User {
                account_id: "acme".into(),
                username: "ann".into(),
            },
            Principal::ServiceAccess {
                account_id: "acme".into(),
                username: "ci".into(),
            },
        ];
        for principal in principals {
            let (account_id, username) = principal_columns(&principal);
            let back = principal_from(
                principal.kind_str(),
                account_id.map(str::to_owned),
                username.map(str::to_owned),
            );
            assert_eq!(back, Some(principal));
        }
        // A user credential without its user, or an unknown kind, is nobody.
        assert_eq!(principal_from("user", Some("acme".into()), None), None);
        assert_eq!(principal_from("wizard", None, None), None);
    }

    #[test]
    fn end_reasons_round_trip_and_unknown_text_is_unknown() {
        for reason in [
            EndReason::Logout,
            EndReason::Inactivity,
            EndReason::Lifetime,
        ] {
            assert_eq!(parse_end_reason(reason.as_str()), reason);
        }
        assert_eq!(parse_end_reason("meteor"), EndReason::Unknown);
    }

    #[test]
    fn session_times_read_back_from_milliseconds() {
        let clock = session_clock(1_000, 61_000, None, Some(30_000), None);
        assert_eq!(clock.opened_at, Timestamp::from_millis(1_000));
        assert_eq!(clock.expires_at, Timestamp::from_millis(61_000));
        assert_eq!(clock.hard_end, None);
        assert_eq!(clock.license_end, Some(Timestamp::from_millis(30_000)));
    }

    #[test]
    fn refusals_survive_the_queue_table() {
        let refusals = [
            RuleError::NoSeatAvailable { seats: 3 },
            RuleError::UserSessionLimit {
                user: "ann".into(),
                max: 2,
            },
            RuleError::LicenseNotActive("the license is suspended".into()),
            RuleError::UserNotActive("eve is not an active user of this license".into()),
            RuleError::DeviceNotActivated("pc-7".into()),
            RuleError::Invalid("bad username".into()),
        ];
        for refusal in refusals {
            assert_eq!(refusal_from(&refusal_json(&refusal)), refusal);
        }
        assert_eq!(refusal_from("not json"), RuleError::Invalid(String::new()));
    }
}
