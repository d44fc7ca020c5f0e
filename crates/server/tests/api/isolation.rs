//! Tenant isolation: one account's admin never sees or touches another account's things.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;

use crate::helpers::*;

#[tokio::test]
async fn another_accounts_admin_gets_403_or_404_on_every_route() {
    // Arrange: account A with a license, a user, a session; account B's admin is the intruder.
    let app = spawn_app().await;
    let a = app.fixture(3, &[], json!({})).await;
    let bob = app.user_token(&a.account_id, &a.admin, "bob").await;
    let session = app.open(&bob, &a.license_id, "laptop", "cad").await.id();
    let (b_account, b_admin) = app.create_account("Intruder Inc").await;
    let b_user = app.user_token(&b_account, &b_admin, "mallory").await;

    let (acc, lic) = (&a.account_id, &a.license_id);
    let calls: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (
            Method::POST,
            "/v1/licenses".into(),
            Some(
                json!({"account_id": acc, "product": "x", "model": "concurrent_sessions", "seats": 5}),
            ),
        ),
        (Method::GET, format!("/v1/licenses/{lic}"), None),
        (
            Method::PATCH,
            format!("/v1/licenses/{lic}"),
            Some(json!({"seats": 50})),
        ),
        (
            Method::PUT,
            format!("/v1/accounts/{acc}/users/bob"),
            Some(json!({"kind": "interactive", "active": false})),
        ),
        (
            Method::PUT,
            format!("/v1/accounts/{acc}/users/eve"),
            Some(json!({"kind": "interactive"})),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{acc}/users/bob/tokens"),
            Some(json!({})),
        ),
        (Method::GET, format!("/v1/licenses/{lic}/sessions"), None),
        (Method::GET, format!("/v1/licenses/{lic}/usage"), None),
        (Method::GET, format!("/v1/licenses/{lic}/audit"), None),
        (Method::DELETE, format!("/v1/sessions/{session}"), None),
        (Method::GET, format!("/v1/sessions/{session}/events"), None),
        (Method::GET, format!("/v1/accounts/{acc}/users"), None),
        (Method::GET, format!("/v1/accounts/{acc}/users/bob"), None),
        (
            Method::GET,
            format!("/v1/accounts/{acc}/users/bob/sessions"),
            None,
        ),
        (Method::GET, format!("/v1/accounts/{acc}/licenses"), None),
        (Method::GET, format!("/v1/licenses/{lic}/users"), None),
        (
            Method::PUT,
            format!("/v1/licenses/{lic}/users/bob"),
            Some(json!({"active": true})),
        ),
        (Method::GET, format!("/v1/licenses/{lic}/devices"), None),
        (
            Method::POST,
            format!("/v1/licenses/{lic}/devices"),
            Some(json!({"fingerprint": "x"})),
        ),
        (
            Method::DELETE,
            format!("/v1/licenses/{lic}/devices/x"),
            None,
        ),
    ];
    for token in [&b_admin, &b_user] {
        for (method, path, body) in &calls {
            let r = app
                .call(method.clone(), path, Some(token), body.clone())
                .await;
            assert!(
                r.status == StatusCode::FORBIDDEN || r.status == StatusCode::NOT_FOUND,
                "{method} {path} answered {} {:?}",
                r.status,
                r.body
            );
            assert!(
                matches!(r.code(), "forbidden" | "not_found"),
                "{:?}",
                r.body
            );
        }
    }
    // B's user cannot open on, heartbeat or end A's things either.
    let o = app.open(&b_user, lic, "pc", "x").await;
    assert_eq!(o.status, StatusCode::NOT_FOUND);
    let hb = app.heartbeat(&b_user, &session).await;
    assert_eq!(hb.status, StatusCode::NOT_FOUND);

    // Nothing changed for A.
    let l = app.get(&format!("/v1/licenses/{lic}"), &a.admin).await;
    assert_eq!(l.body["seats"], 3);
    assert_eq!(l.body["usage"]["in_use"], 1);
    let hb = app.heartbeat(&bob, &session).await;
    assert_eq!(hb.status, StatusCode::OK);
    let again = app.open(&bob, lic, "laptop", "cad2").await;
    assert_eq!(again.status, StatusCode::CREATED, "bob is still active");
}

#[tokio::test]
async fn another_user_of_the_same_account_cannot_touch_my_session() {
    let app = spawn_app().await;
    let f = app.fixture(3, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    let s = app.open(&bob, &f.license_id, "laptop", "cad").await.id();
    let first = app.heartbeat(&bob, &s).await;
    assert_eq!(first.status, StatusCode::OK);
    app.advance(60).await;
    let hb = app.heartbeat(&carol, &s).await;
    assert_eq!(hb.status, StatusCode::FORBIDDEN);
    // Carol's heartbeat did not slide Bob's session: his next one moves it by the 60 s.
    let next = app.heartbeat(&bob, &s).await;
    let at = |b: &Value| time::OffsetDateTime::parse(b["expires_at"].as_str().unwrap(), &Rfc3339);
    let moved = at(&next.body).unwrap() - at(&first.body).unwrap();
    assert_eq!(
        moved.whole_seconds(),
        60,
        "{:?} {:?}",
        first.body,
        next.body
    );
    let d = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{s}"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(d.status, StatusCode::FORBIDDEN);
    let events = app.get(&format!("/v1/sessions/{s}/events"), &carol).await;
    assert_eq!(events.status, StatusCode::FORBIDDEN);
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 1);
}
