//! Mass ends (issue 20): every session of a license ended by one admin call (a revoke of them
//! all, the license's end, deactivations). The call answers once the decision is durable; from
//! then on no session it covers is live anywhere (heartbeats get 410 with the reason, listings
//! and `in_use` leave them out), while their `ended` events land in the audit log in the
//! background (`usage.ending` counts those on their way).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::helpers::*;

/// The license's usage (`in_use`, `ending`).
async fn usage(app: &TestApp, admin: &str, license: &str) -> (u64, u64) {
    let a = app.get(&format!("/v1/licenses/{license}"), admin).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    (
        a.body["usage"]["in_use"].as_u64().unwrap(),
        a.body["usage"]["ending"].as_u64().unwrap(),
    )
}

/// Waits until every decided end of the license is written (`ending` 0).
async fn written(app: &TestApp, admin: &str, license: &str) {
    for _ in 0..400 {
        if usage(app, admin, license).await.1 == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the ends of {license} were not all written");
}

async fn audit(app: &TestApp, admin: &str, license: &str) -> Vec<Value> {
    let a = app
        .get(&format!("/v1/licenses/{license}/audit"), admin)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    a.body["events"].as_array().unwrap().clone()
}

async fn revoke_all(app: &TestApp, token: &str, license: &str) -> Answer {
    app.call(
        Method::DELETE,
        &format!("/v1/licenses/{license}/sessions"),
        Some(token),
        None,
    )
    .await
}

/// Opens `n` sessions on the fixture's license for `users` users; answers (token, id) pairs.
async fn open_many(app: &TestApp, f: &Fixture, users: usize, n: usize) -> Vec<(String, String)> {
    let mut tokens = Vec::new();
    for u in 0..users {
        tokens.push(
            app.user_token(&f.account_id, &f.admin, &format!("u{u}"))
                .await,
        );
    }
    let mut held = Vec::new();
    for i in 0..n {
        let token = &tokens[i % users];
        let a = app
            .open(token, &f.license_id, "pc", &format!("app-{i}"))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        held.push((token.clone(), a.id()));
    }
    held
}

#[tokio::test]
async fn revoking_every_session_of_a_license_ends_them_at_once_and_frees_the_seats() {
    // Arrange: 30 sessions on a 30-seat license, and another license with one session.
    let app = spawn_app().await;
    let f = app.fixture(30, &[], json!({})).await;
    let held = open_many(&app, &f, 3, 30).await;
    let other = app
        .create_license(
            &f.admin,
            json!({"account_id": f.account_id, "product": "cad",
                   "model": "concurrent_sessions", "seats": 2}),
        )
        .await;
    let (bystander_token, _) = &held[0];
    let bystander = app.open(bystander_token, &other, "pc", "other").await;
    assert_eq!(bystander.status, StatusCode::CREATED);

    // Act
    let a = revoke_all(&app, &f.admin, &f.license_id).await;

    // Assert: every session is ended from the answer on...
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body, json!({"revoked": 30}));
    assert_eq!(usage(&app, &f.admin, &f.license_id).await.0, 0);
    for (token, id) in &held {
        let h = app.heartbeat(token, id).await;
        assert_eq!(h.status, StatusCode::GONE, "{:?}", h.body);
        assert_eq!(h.code(), "session_ended");
        assert!(
            h.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("revoked"),
            "{:?}",
            h.body
        );
        let logout = app
            .call(
                Method::DELETE,
                &format!("/v1/sessions/{id}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(logout.status, StatusCode::GONE, "{:?}", logout.body);
    }
    let listed = app
        .get(&format!("/v1/licenses/{}/sessions", f.license_id), &f.admin)
        .await;
    assert_eq!(listed.body["sessions"], json!([]));
    // ...each lands in the audit log exactly once...
    written(&app, &f.admin, &f.license_id).await;
    let events = audit(&app, &f.admin, &f.license_id).await;
    let revoked = events.iter().filter(|e| e["event"] == "sessions_revoked");
    assert_eq!(
        revoked.map(|e| e["detail"].clone()).collect::<Vec<_>>(),
        [json!("30")]
    );
    for (_, id) in &held {
        let ends: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "ended" && e["session_id"] == json!(id))
            .collect();
        assert_eq!(ends.len(), 1, "{id}: {ends:?}");
        assert_eq!(ends[0]["detail"], "revoked");
    }
    // ...the seats are free again, and the other license was not touched.
    let again = app
        .open(bystander_token, &f.license_id, "pc", "app-0")
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert_ne!(again.id(), held[0].1, "a new session, not the revoked one");
    let beat = app.heartbeat(bystander_token, &bystander.id()).await;
    assert_eq!(beat.status, StatusCode::OK, "{:?}", beat.body);
    assert!(audit(&app, &f.admin, &other)
        .await
        .iter()
        .all(|e| e["event"] != "ended"));
}

#[tokio::test]
async fn only_an_admin_of_the_account_revokes_every_session() {
    // Arrange
    let app = spawn_app().await;
    let f = app.fixture(3, &[], json!({})).await;
    let held = open_many(&app, &f, 1, 2).await;
    let (_, stranger) = app.create_account("Other").await;

    // Act
    let by_stranger = revoke_all(&app, &stranger, &f.license_id).await;
    let by_holder = revoke_all(&app, &held[0].0, &f.license_id).await;
    let unknown = revoke_all(&app, &f.admin, "no-such-license").await;

    // Assert: refused with stable codes, nothing changed.
    assert_eq!(
        by_stranger.status,
        StatusCode::NOT_FOUND,
        "{:?}",
        by_stranger.body
    );
    assert_eq!(by_stranger.code(), "not_found");
    assert_eq!(
        by_holder.status,
        StatusCode::FORBIDDEN,
        "{:?}",
        by_holder.body
    );
    assert_eq!(by_holder.code(), "forbidden");
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(usage(&app, &f.admin, &f.license_id).await, (2, 0));
    let root = revoke_all(&app, ROOT_TOKEN, &f.license_id).await;
    assert_eq!(root.body, json!({"revoked": 2}));
}

#[tokio::test]
async fn a_license_end_set_to_now_ends_every_session_at_once() {
    // Arrange
    let app = spawn_app().await;
    let f = app.fixture(10, &[], json!({})).await;
    let held = open_many(&app, &f, 2, 10).await;

    // Act: the end is set to the present instant.
    let now = time::OffsetDateTime::from_unix_timestamp(TEST_START.secs())
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let patched = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}", f.license_id),
            Some(&f.admin),
            Some(json!({"expires_at": now})),
        )
        .await;

    // Assert: no session is live from the answer on, and their ends land.
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(usage(&app, &f.admin, &f.license_id).await.0, 0);
    for (token, id) in &held {
        let h = app.heartbeat(token, id).await;
        assert_eq!(h.status, StatusCode::GONE, "{:?}", h.body);
        assert!(h.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("license_expired"));
    }
    // Moving the end later again brings none of them back.
    let later = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}", f.license_id),
            Some(&f.admin),
            Some(json!({"expires_at": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(later.status, StatusCode::OK, "{:?}", later.body);
    app.advance(1).await;
    written(&app, &f.admin, &f.license_id).await;
    for (token, id) in &held {
        assert_eq!(app.heartbeat(token, id).await.status, StatusCode::GONE);
    }
    let ends = audit(&app, &f.admin, &f.license_id)
        .await
        .into_iter()
        .filter(|e| e["event"] == "ended" && e["detail"] == "license_expired")
        .count();
    assert_eq!(ends, 10);
}

#[tokio::test]
async fn a_deactivated_user_is_not_live_anywhere_and_a_reactivated_one_opens_afresh() {
    // Arrange: bob holds 5 sessions.
    let app = spawn_app().await;
    let f = app.fixture(10, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            app.open(&bob, &f.license_id, "pc", &format!("a{i}"))
                .await
                .id(),
        );
    }
    let path = format!("/v1/accounts/{}/users/bob", f.account_id);
    let put = |active: bool| {
        app.call(
            Method::PUT,
            &path,
            Some(&f.admin),
            Some(json!({"kind": "interactive", "active": active})),
        )
    };

    // Act: deactivated, then active again at once.
    assert_eq!(put(false).await.status, StatusCode::OK);
    assert_eq!(put(true).await.status, StatusCode::OK);
    let fresh = app.open(&bob, &f.license_id, "pc", "a0").await;

    // Assert: the old sessions stay ended, the new one is live.
    assert_eq!(fresh.status, StatusCode::CREATED, "{:?}", fresh.body);
    for id in &ids {
        let h = app.heartbeat(&bob, id).await;
        assert_eq!(h.status, StatusCode::GONE, "{:?}", h.body);
        assert!(h.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("user_deactivated"));
    }
    assert_eq!(
        app.heartbeat(&bob, &fresh.id()).await.status,
        StatusCode::OK
    );
    written(&app, &f.admin, &f.license_id).await;
    assert_eq!(usage(&app, &f.admin, &f.license_id).await, (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_session_is_answered_live_after_a_revoke_of_all_answered_however_requests_race() {
    // Arrange: 8 clients each open and heartbeat sessions in a loop.
    let app = Arc::new(spawn_app().await);
    let f = app.fixture(1000, &[], json!({})).await;
    let mut tokens = Vec::new();
    for u in 0..8 {
        tokens.push(
            app.user_token(&f.account_id, &f.admin, &format!("r{u}"))
                .await,
        );
    }
    let revoke_sent = Arc::new(AtomicBool::new(false));
    let revoked = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(AtomicUsize::new(0));
    let checked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = JoinSet::new();
    for (c, token) in tokens.into_iter().enumerate() {
        let (app, license) = (app.clone(), f.license_id.clone());
        let (revoke_sent, revoked) = (revoke_sent.clone(), revoked.clone());
        let (violations, checked, stop) = (violations.clone(), checked.clone(), stop.clone());
        clients.spawn(async move {
            // Sessions whose open was answered before the revoke was sent: it covers them.
            let mut before: Vec<String> = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let a = app.open(&token, &license, "pc", &format!("c{c}-{i}")).await;
                i += 1;
                if a.status == StatusCode::CREATED && !revoke_sent.load(Ordering::SeqCst) {
                    before.push(a.id());
                }
                for id in &before {
                    let sent_after = revoked.load(Ordering::SeqCst);
                    let h = app.heartbeat(&token, id).await;
                    if sent_after {
                        checked.fetch_add(1, Ordering::SeqCst);
                        if h.status != StatusCode::GONE {
                            violations.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
        });
    }

    // Act: the revoke races the clients.
    tokio::time::sleep(Duration::from_millis(300)).await;
    revoke_sent.store(true, Ordering::SeqCst);
    let a = revoke_all(&app, &f.admin, &f.license_id).await;
    revoked.store(true, Ordering::SeqCst);
    let listed = app
        .get(&format!("/v1/licenses/{}/sessions", f.license_id), &f.admin)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    while clients.join_next().await.is_some() {}

    // Assert
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert!(a.body["revoked"].as_u64().unwrap() > 0, "{:?}", a.body);
    assert_eq!(violations.load(Ordering::SeqCst), 0);
    assert!(
        checked.load(Ordering::SeqCst) > 0,
        "no heartbeat raced the revoke"
    );
    // Whatever is listed now is live, and counted.
    let (in_use, _) = usage(&app, &f.admin, &f.license_id).await;
    let now_listed = app
        .get(&format!("/v1/licenses/{}/sessions", f.license_id), &f.admin)
        .await;
    assert_eq!(
        now_listed.body["sessions"].as_array().unwrap().len() as u64,
        in_use
    );
    assert_eq!(listed.status, StatusCode::OK);
}
