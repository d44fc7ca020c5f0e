//! The licensing models over HTTP: registered users, node-locked devices, plans and downgrades,
//! per-user limits, overdraft, validity windows, suspension, compliance listings.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::task::JoinSet;

use crate::helpers::*;

async fn put(app: &TestApp, path: &str, token: &str, body: serde_json::Value) -> Answer {
    app.call(Method::PUT, path, Some(token), Some(body)).await
}

#[tokio::test]
async fn registered_users_hold_sessions_only_while_active() {
    // Arrange: a registered_users license for 2 active users; three users exist.
    let app = spawn_app().await;
    let f = app
        .fixture(2, &[], json!({"model": "registered_users"}))
        .await;
    let lic = &f.license_id;
    let ann = app.user_token(&f.account_id, &f.admin, "ann").await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let cid = app.user_token(&f.account_id, &f.admin, "cid").await;

    // Not active on the license yet: refused.
    let r = app.open(&ann, lic, "laptop", "erp").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "user_inactive"),
        "{:?}",
        r.body
    );

    // Two may be active; the third is refused with its own code.
    for u in ["ann", "bob"] {
        let r = put(
            &app,
            &format!("/v1/licenses/{lic}/users/{u}"),
            &f.admin,
            json!({"active": true}),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let r = put(
        &app,
        &format!("/v1/licenses/{lic}/users/cid"),
        &f.admin,
        json!({"active": true}),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "active_users_exhausted")
    );
    // Activating an active user again is fine; an unknown user is 404.
    let r = put(
        &app,
        &format!("/v1/licenses/{lic}/users/ann"),
        &f.admin,
        json!({"active": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = put(
        &app,
        &format!("/v1/licenses/{lic}/users/nobody"),
        &f.admin,
        json!({"active": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Ann may hold two sessions (laptop and browser) since two users are active...
    let s1 = app.open(&ann, lic, "laptop", "erp").await;
    assert_eq!(s1.status, StatusCode::CREATED);
    let s2 = app.open(&ann, lic, "browser", "erp-web").await;
    assert_eq!(s2.status, StatusCode::CREATED);
    // ...but sessions never outnumber the active users.
    let r = app.open(&bob, lic, "desk", "erp").await;
    assert_eq!(r.code(), "no_seat_available");

    // Deactivating ann ends her sessions and frees an active slot.
    let r = put(
        &app,
        &format!("/v1/licenses/{lic}/users/ann"),
        &f.admin,
        json!({"active": false}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["active"], false);
    let hb = app.heartbeat(&ann, &s1.id()).await;
    assert_eq!(hb.status, StatusCode::GONE);
    assert_eq!(hb.body["error"]["reason"], "user_deactivated");
    let r = put(
        &app,
        &format!("/v1/licenses/{lic}/users/cid"),
        &f.admin,
        json!({"active": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        app.open(&bob, lic, "desk", "erp").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.open(&cid, lic, "desk", "erp").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.open(&ann, lic, "laptop", "erp").await.code(),
        "user_inactive"
    );

    let users = app
        .get(&format!("/v1/licenses/{lic}/users"), &f.admin)
        .await;
    assert_eq!(users.body["active"], 2);
    assert_eq!(users.body["max_active"], 2);
    assert_eq!(users.body["users"].as_array().unwrap().len(), 3);
    let l = app.get(&format!("/v1/licenses/{lic}"), &f.admin).await;
    assert_eq!(l.body["model"], "registered_users");
    assert_eq!(l.body["usage"]["activations"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_activations_never_exceed_the_active_user_limit() {
    let app = Arc::new(spawn_app().await);
    let f = app
        .fixture(5, &[], json!({"model": "registered_users"}))
        .await;
    for i in 0..20 {
        app.user_token(&f.account_id, &f.admin, &format!("u{i}"))
            .await;
    }
    let mut set = JoinSet::new();
    for i in 0..20 {
        let (app, admin, lic) = (app.clone(), f.admin.clone(), f.license_id.clone());
        set.spawn(async move {
            put(
                &app,
                &format!("/v1/licenses/{lic}/users/u{i}"),
                &admin,
                json!({"active": true}),
            )
            .await
        });
    }
    let (mut won, mut refused) = (0, 0);
    while let Some(r) = set.join_next().await {
        let r = r.unwrap();
        match r.status {
            StatusCode::CREATED => won += 1,
            StatusCode::CONFLICT => {
                assert_eq!(r.code(), "active_users_exhausted");
                refused += 1
            }
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    assert_eq!((won, refused), (5, 15));
    let users = app
        .get(&format!("/v1/licenses/{}/users", f.license_id), &f.admin)
        .await;
    assert_eq!(users.body["active"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_sessions_of_registered_users_never_exceed_the_active_count() {
    let app = Arc::new(spawn_app().await);
    let f = app
        .fixture(10, &[], json!({"model": "registered_users"}))
        .await;
    let mut tokens = Vec::new();
    for i in 0..8 {
        let name = format!("u{i}");
        tokens.push(app.user_token(&f.account_id, &f.admin, &name).await);
        // Only 4 of the 8 users are active.
        if i < 4 {
            let r = put(
                &app,
                &format!("/v1/licenses/{}/users/{name}", f.license_id),
                &f.admin,
                json!({"active": true}),
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED);
        }
    }
    let mut set = JoinSet::new();
    for (i, token) in tokens.iter().enumerate() {
        for j in 0..10 {
            let (app, token, lic) = (app.clone(), token.clone(), f.license_id.clone());
            set.spawn(async move { (i, app.open(&token, &lic, &format!("dev{j}"), "app").await) });
        }
    }
    let mut created = 0;
    while let Some(r) = set.join_next().await {
        let (i, a) = r.unwrap();
        match a.status {
            StatusCode::CREATED => {
                assert!(i < 4, "an inactive user got a session");
                created += 1;
            }
            StatusCode::CONFLICT => assert_eq!(a.code(), "no_seat_available"),
            StatusCode::FORBIDDEN => assert!(i >= 4 && a.code() == "user_inactive"),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 4);
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 4);
}

#[tokio::test]
async fn node_locked_licenses_serve_only_activated_devices() {
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({"model": "node_locked"})).await;
    let lic = &f.license_id;
    let ann = app.user_token(&f.account_id, &f.admin, "ann").await;

    let r = app.open(&ann, lic, "fp-1", "cad").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "device_not_activated")
    );
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("fp-1"));

    let path = format!("/v1/licenses/{lic}/devices");
    for fp in ["fp-1", "fp-2"] {
        let r = app
            .post(
                &path,
                &f.admin,
                json!({"fingerprint": fp, "name": format!("workstation {fp}")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let r = app
        .post(&path, &f.admin, json!({"fingerprint": "fp-3"}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "activations_exhausted")
    );
    let r = app
        .post(&path, &f.admin, json!({"fingerprint": "fp-1"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "re-activation is idempotent");

    // No concurrency count on an activated device.
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = app.open(&ann, lic, "fp-1", &format!("cad-{i}")).await;
        assert_eq!(r.status, StatusCode::CREATED);
        ids.push(r.id());
    }
    // Deactivating the device ends its sessions and frees the activation.
    let r = app
        .call(
            Method::DELETE,
            &format!("{path}/fp-1"),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let hb = app.heartbeat(&ann, &ids[0]).await;
    assert_eq!(hb.body["error"]["reason"], "device_deactivated");
    assert_eq!(app.in_use(&f.admin, lic).await, 0);
    let r = app
        .post(&path, &f.admin, json!({"fingerprint": "fp-3"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let list = app.get(&path, &f.admin).await;
    let fps: Vec<&str> = list.body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["fingerprint"].as_str().unwrap())
        .collect();
    assert_eq!(fps, vec!["fp-2", "fp-3"]);
    let r = app
        .call(
            Method::DELETE,
            &format!("{path}/fp-9"),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // The same vendor can sell the product floating to another customer.
    let g = app.fixture(1, &[], json!({})).await;
    let bob = app.user_token(&g.account_id, &g.admin, "bob").await;
    assert_eq!(
        app.open(&bob, &g.license_id, "any-device", "cad")
            .await
            .status,
        StatusCode::CREATED
    );
    // Model-specific calls on the wrong model are refused clearly.
    let r = app
        .post(
            &format!("/v1/licenses/{}/devices", g.license_id),
            &g.admin,
            json!({"fingerprint": "x"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );
    let r = put(
        &app,
        &format!("/v1/licenses/{}/users/bob", g.license_id),
        &g.admin,
        json!({"active": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_plan_downgrade_lets_live_sessions_run_and_refuses_new_ones_until_under() {
    let app = spawn_app().await;
    let (account, admin) = app.create_account("Acme").await;
    let lic = app
        .create_license(&admin, json!({"account_id": account, "product": "erp", "model": "concurrent_sessions", "plan": "small-business-advanced"}))
        .await;
    let bob = app.user_token(&account, &admin, "bob").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.open(&bob, &lic, "pc", &format!("i{i}")).await.id());
    }
    let plans = app.get("/v1/plans", &admin).await;
    assert!(plans
        .body
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "small-business-basic"
            && p["base_seats"] == 3
            && p["max_seats"] == 35));

    let r = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{lic}"),
            Some(&admin),
            Some(json!({"plan": "small-business-basic"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["seats"], 3);
    // Live sessions run on; new ones wait until the license is under its new size.
    assert_eq!(app.in_use(&admin, &lic).await, 5);
    for id in &ids {
        assert_eq!(app.heartbeat(&bob, id).await.status, StatusCode::OK);
    }
    assert_eq!(
        app.open(&bob, &lic, "pc", "new").await.code(),
        "no_seat_available"
    );
    for id in &ids[..3] {
        app.call(
            Method::DELETE,
            &format!("/v1/sessions/{id}"),
            Some(&bob),
            None,
        )
        .await;
    }
    assert_eq!(
        app.open(&bob, &lic, "pc", "new").await.status,
        StatusCode::CREATED
    );
    // An upgrade takes effect at once.
    let r = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{lic}"),
            Some(&admin),
            Some(json!({"extra_seats": 2})),
        )
        .await;
    assert_eq!(r.body["seats"], 5);
    assert_eq!(
        app.open(&bob, &lic, "pc", "new2").await.status,
        StatusCode::CREATED
    );
    // Unknown plan: a clear error, nothing changes.
    let r = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{lic}"),
            Some(&admin),
            Some(json!({"plan": "platinum"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("platinum"));
}

#[tokio::test]
async fn per_user_limits_and_overdraft_are_enforced_and_reported() {
    let app = spawn_app().await;
    let f = app
        .fixture(
            2,
            &[],
            json!({"max_sessions_per_user": 2, "overdraft_seats": 1}),
        )
        .await;
    let lic = &f.license_id;
    let ann = app.user_token(&f.account_id, &f.admin, "ann").await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    assert_eq!(
        app.open(&ann, lic, "pc", "1").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.open(&ann, lic, "pc", "2").await.status,
        StatusCode::CREATED
    );
    let r = app.open(&ann, lic, "pc", "3").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "user_session_limit")
    );
    // Both purchased seats are taken: bob gets the overdraft seat, marked as such.
    let over = app.open(&bob, lic, "pc", "1").await;
    assert_eq!(over.status, StatusCode::CREATED);
    assert_eq!(over.body["overdraft"], true);
    let r = app.open(&bob, lic, "pc", "2").await;
    assert_eq!(r.code(), "no_seat_available");
    let l = app.get(&format!("/v1/licenses/{lic}"), &f.admin).await;
    assert_eq!(l.body["overdraft"], 1);
    assert_eq!(l.body["usage"]["in_use"], 3);
    assert_eq!(l.body["usage"]["overdraft_in_use"], 1);
    let audit = app
        .get(&format!("/v1/licenses/{lic}/audit"), &f.admin)
        .await;
    let events = audit.body["events"].as_array().unwrap();
    assert!(events
        .iter()
        .any(|e| e["event"] == "opened" && e["detail"] == "interactive overdraft"));
    assert!(events
        .iter()
        .any(|e| e["event"] == "denied" && e["detail"] == "user_session_limit"));
    // A percentage overdraft, and removing the limit.
    let r = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{lic}"),
            Some(&f.admin),
            Some(json!({"overdraft_percent": 50, "max_sessions_per_user": 0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["overdraft"], 1);
    assert!(r.body.get("max_sessions_per_user").is_none());
    assert_eq!(
        app.open(&ann, lic, "pc", "3").await.code(),
        "no_seat_available"
    );
}

#[tokio::test]
async fn a_license_created_without_a_model_counts_concurrent_sessions() {
    // Arrange
    let app = spawn_app().await;
    let (account, admin) = app.create_account("Acme").await;

    // Act: no `model` in the body.
    let a = app
        .post(
            "/v1/licenses",
            &admin,
            json!({"account_id": account, "product": "cad", "seats": 1}),
        )
        .await;

    // Assert: the default model, and it counts: a second session is refused.
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert_eq!(a.body["model"], json!("concurrent_sessions"));
    let license = a.body["id"].as_str().unwrap().to_owned();
    let bob = app.user_token(&account, &admin, "bob").await;
    let first = app.open(&bob, &license, "pc", "one").await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let second = app.open(&bob, &license, "pc", "two").await;
    assert_eq!(second.code(), "no_seat_available");
}

#[tokio::test]
async fn the_validity_window_and_suspension_govern_new_sessions() {
    let app = spawn_app().await;
    let start = TEST_START.plus_secs(3600).to_offset();
    let end = TEST_START.plus_secs(7200).to_offset();
    let rfc = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let f = app
        .fixture(3, &[], json!({"starts_at": rfc(start), "expires_at": rfc(end), "inactivity_timeout_secs": 5000}))
        .await;
    let lic = &f.license_id;
    let ann = app.user_token(&f.account_id, &f.admin, "ann").await;
    let r = app.open(&ann, lic, "pc", "1").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "license_not_active")
    );
    app.clock.advance_secs(3600);
    let s = app.open(&ann, lic, "pc", "1").await;
    assert_eq!(s.status, StatusCode::CREATED);
    // The session's expiry is capped at the license's end.
    assert_eq!(s.body["expires_at"], rfc(end).replace("+00:00", "Z"));
    app.clock.advance_secs(2000);
    assert_eq!(app.heartbeat(&ann, &s.id()).await.status, StatusCode::OK);
    app.advance(1600).await;
    let hb = app.heartbeat(&ann, &s.id()).await;
    assert_eq!(hb.body["error"]["reason"], "license_expired");
    assert_eq!(
        app.open(&ann, lic, "pc", "2").await.code(),
        "license_not_active"
    );

    // Suspension: live sessions run on, new ones are refused; lifting it restores service.
    let g = app.fixture(3, &[], json!({})).await;
    let bob = app.user_token(&g.account_id, &g.admin, "bob").await;
    let live = app.open(&bob, &g.license_id, "pc", "1").await.id();
    let r = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}", g.license_id),
            Some(&g.admin),
            Some(json!({"suspended": true})),
        )
        .await;
    assert_eq!(r.body["suspended"], true);
    let r = app.open(&bob, &g.license_id, "pc", "2").await;
    assert_eq!(r.code(), "license_not_active");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("suspended"));
    assert_eq!(app.heartbeat(&bob, &live).await.status, StatusCode::OK);
    app.call(
        Method::PATCH,
        &format!("/v1/licenses/{}", g.license_id),
        Some(&g.admin),
        Some(json!({"suspended": false})),
    )
    .await;
    assert_eq!(
        app.open(&bob, &g.license_id, "pc", "2").await.status,
        StatusCode::CREATED
    );

    // Moving the end earlier ends live sessions at the new end.
    let past_soon = TEST_START.plus_secs(3600 + 2000 + 1600 + 60).to_offset();
    let r = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}", g.license_id),
            Some(&g.admin),
            Some(json!({"expires_at": rfc(past_soon)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    app.advance(61).await;
    let hb = app.heartbeat(&bob, &live).await;
    assert_eq!(hb.body["error"]["reason"], "license_expired");
    assert_eq!(app.in_use(&g.admin, &g.license_id).await, 0);
}

#[tokio::test]
async fn compliance_listings_show_each_device_and_instance_as_its_own_session() {
    let app = spawn_app().await;
    let f = app.fixture(5, &[], json!({})).await;
    let second = app
        .create_license(&f.admin, json!({"account_id": f.account_id, "product": "viewer", "model": "concurrent_sessions", "seats": 2}))
        .await;
    let ann = app.user_token(&f.account_id, &f.admin, "ann").await;
    app.open(&ann, &f.license_id, "laptop", "cad").await;
    app.open(&ann, &f.license_id, "desktop", "cad").await;
    app.open(&ann, &second, "desktop", "viewer").await;

    let mine = app
        .get(
            &format!("/v1/accounts/{}/users/ann/sessions", f.account_id),
            &f.admin,
        )
        .await;
    let sessions = mine.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    let mut seen: Vec<(String, String, String)> = sessions
        .iter()
        .map(|s| {
            (
                s["license_id"].as_str().unwrap().to_owned(),
                s["device_id"].as_str().unwrap().to_owned(),
                s["instance_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert!(sessions
        .iter()
        .all(|s| s["kind"] == "interactive" && s["opened_at"].is_string()));
    assert_eq!(
        seen.iter().filter(|(l, _, _)| l == &f.license_id).count(),
        2
    );
    let per_license = app
        .get(&format!("/v1/licenses/{}/sessions", f.license_id), &f.admin)
        .await;
    assert_eq!(per_license.body["sessions"].as_array().unwrap().len(), 2);

    // Deactivating the account user ends all of their sessions.
    let r = put(
        &app,
        &format!("/v1/accounts/{}/users/ann", f.account_id),
        &f.admin,
        json!({"kind": "interactive", "active": false}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let mine = app
        .get(
            &format!("/v1/accounts/{}/users/ann/sessions", f.account_id),
            &f.admin,
        )
        .await;
    assert_eq!(mine.body["sessions"], json!([]));
    assert_eq!(app.in_use(&f.admin, &second).await, 0);
    // The sessions' own `ended` events are written in the background (a deactivation may end
    // a million sessions): they land shortly after.
    app.audit_when(&f.admin, &second, |events| {
        events.iter().any(|e| e["detail"] == "user_deactivated")
    })
    .await;
}
