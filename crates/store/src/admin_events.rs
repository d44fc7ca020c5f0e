//! The audit events of admin changes outside licenses' terms: users (created, changed: kind and
//! active flag), tokens issued (a user's personal token, a service user's access token; never
//! the token itself), and users registered on a `registered_users` license. Account-wide
//! events name no license (`license_id` is empty). Pure; the backends write them with the
//! change they record, in the same transaction, like `crate::admission`'s.

use leasehold_core::Timestamp;

use crate::origin;
use crate::records::{AuditEvent, Credential, Principal, User};

/// `user_created` or `user_updated`; the detail is the user's kind and `active`/`inactive`.
pub fn user_put(user: &User, created: bool, at: Timestamp) -> AuditEvent {
    let state = if user.active { "active" } else { "inactive" };
    AuditEvent {
        at,
        account_id: user.account_id.clone(),
        license_id: String::new(),
        session_id: None,
        username: Some(user.username.clone()),
        event: if created {
            "user_created"
        } else {
            "user_updated"
        }
        .into(),
        detail: Some(format!("{} {state}", user.kind.as_str())),
        origin: origin::current(),
    }
}

/// `token_issued` for a user's personal token (detail `user`) or a service user's access token
/// (detail `service_access`, and its expiry in ms); `None` for the root token (configuration,
/// not an admin change) and account admin tokens (issued with their account).
pub fn token_issued(credential: &Credential, at: Timestamp) -> Option<AuditEvent> {
    let (account_id, username, detail) = match &credential.principal {
        Principal::User {
            account_id,
            username,
        } => (account_id, username, "user".to_owned()),
        Principal::ServiceAccess {
            account_id,
            username,
        } => (
            account_id,
            username,
            match credential.expires_at {
                Some(exp) => format!("service_access expires={}", exp.millis()),
                None => "service_access".to_owned(),
            },
        ),
        Principal::Root | Principal::AccountAdmin { .. } => return None,
    };
    Some(AuditEvent {
        at,
        account_id: account_id.clone(),
        license_id: String::new(),
        session_id: None,
        username: Some(username.clone()),
        event: "token_issued".into(),
        detail: Some(detail),
        origin: origin::current(),
    })
}

/// `license_user_activated` or `license_user_deactivated`: a user's registration on a
/// `registered_users` license (`PUT /v1/licenses/{id}/users/{username}`).
pub fn license_user(
    account_id: &str,
    license_id: &str,
    username: &str,
    active: bool,
    at: Timestamp,
) -> AuditEvent {
    AuditEvent {
        at,
        account_id: account_id.to_owned(),
        license_id: license_id.to_owned(),
        session_id: None,
        username: Some(username.to_owned()),
        event: if active {
            "license_user_activated"
        } else {
            "license_user_deactivated"
        }
        .into(),
        detail: None,
        origin: origin::current(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_proto::UserKind;

    #[test]
    fn a_token_event_never_holds_the_token_and_root_tokens_have_none() {
        let user = Credential {
            hash: [7; 32],
            principal: Principal::User {
                account_id: "acme".into(),
                username: "bob".into(),
            },
            expires_at: None,
        };
        let e = token_issued(&user, Timestamp::from_millis(5)).unwrap();
        assert_eq!(
            (e.event.as_str(), e.detail.as_deref(), e.username.as_deref()),
            ("token_issued", Some("user"), Some("bob"))
        );
        assert_eq!(e.license_id, "");
        let root = Credential {
            principal: Principal::Root,
            ..user
        };
        assert!(token_issued(&root, Timestamp::from_millis(5)).is_none());
    }

    #[test]
    fn a_user_event_says_created_or_updated_with_kind_and_state() {
        let u = User {
            account_id: "acme".into(),
            username: "svc".into(),
            kind: UserKind::Service,
            active: false,
            client_id: None,
            client_secret_hash: None,
            created_at: Timestamp::from_millis(1),
        };
        let e = user_put(&u, false, Timestamp::from_millis(2));
        assert_eq!(e.event, "user_updated");
        assert_eq!(e.detail.as_deref(), Some("service inactive"));
    }
}
