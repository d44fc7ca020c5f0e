//! Fixtures of the store's own tests: a tenant (account, license, users) on any `Store`, and
//! open requests with ids as the server makes them.

use leasehold_core::{LicenseTerms, PlanCatalog, Timestamp};
use leasehold_proto::{CreateLicense, UserKind};

use crate::records::*;
use crate::Store;

/// 2027-01-15T08:00:00Z: tests start here and pass times forward by hand.
pub const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

/// Account `acme` with license `lic` (`seats` seats, 60 s inactivity timeout) and the active
/// interactive users `users`.
pub async fn tenant(store: &dyn Store, seats: i64, users: &[&str]) {
    store
        .create_account(
            Account {
                id: "acme".into(),
                name: "Acme".into(),
                created_at: T0,
            },
            Credential {
                hash: [7; 32],
                principal: Principal::AccountAdmin {
                    account_id: "acme".into(),
                },
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let req = CreateLicense {
        account_id: "acme".into(),
        product: "cad".into(),
        seats: Some(seats),
        inactivity_timeout_secs: Some(60),
        ..Default::default()
    };
    let terms = LicenseTerms::from_create(&req, &PlanCatalog::default()).unwrap();
    store
        .create_license(License {
            id: "lic".into(),
            account_id: "acme".into(),
            model: terms.model,
            terms,
            created_at: T0,
        })
        .await
        .unwrap();
    for name in users {
        store.put_user(user(name, true), T0).await.unwrap();
    }
}

/// An interactive user of `acme`.
pub fn user(name: &str, active: bool) -> User {
    User {
        account_id: "acme".into(),
        username: name.into(),
        kind: UserKind::Interactive,
        active,
        client_id: None,
        client_secret_hash: None,
        created_at: T0,
    }
}

/// The `n`th session id (a lowercase hyphenated UUID, as the server writes them).
pub fn session_id(n: u32) -> String {
    format!("0190f5a2-3b4c-7d8e-9f00-{n:012x}")
}

/// An open of license `lic` by `username` from client instance `instance`, as session `n`.
pub fn open(n: u32, username: &str, instance: &str) -> OpenRequest {
    OpenRequest {
        new_id: session_id(n),
        license_id: "lic".into(),
        username: username.into(),
        kind: UserKind::Interactive,
        device_id: "pc".into(),
        instance_id: instance.into(),
        borrow_until: None,
        origin: Box::default(),
    }
}
