//! The protocol walk-through: accounts, licenses, users, tokens, sessions, expiry, revoke.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn sessions_take_seats_and_tokens_do_not() {
    // Arrange: 2 seats, alice reserved.
    let app = spawn_app().await;
    let f = app.fixture(2, &["alice"], json!({})).await;
    let alice = app.user_token(&f.account_id, &f.admin, "alice").await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    // Many tokens for one user consume no seat.
    for _ in 0..5 {
        app.user_token(&f.account_id, &f.admin, "bob").await;
    }
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 0);

    // Act + assert: bob takes the only shared seat; carol is refused; alice has her reserved one.
    let b = app.open(&bob, &f.license_id, "laptop", "cad-1").await;
    assert_eq!(b.status, StatusCode::CREATED, "{:?}", b.body);
    let session = TestApp::session(&b.body);
    assert_eq!(session.username, "bob");
    assert_eq!(session.kind, leasehold_proto::UserKind::Interactive);
    assert!(session.lease.is_some());
    assert_eq!(
        session.heartbeat_interval_secs, 60,
        "a third of the timeout, at most a minute"
    );
    assert_eq!(
        (session.expires_at - session.opened_at).whole_seconds(),
        1200,
        "default inactivity timeout is 20 minutes"
    );

    let c = app.open(&carol, &f.license_id, "desktop", "cad-1").await;
    assert_eq!(c.status, StatusCode::CONFLICT);
    assert_eq!(c.code(), "no_seat_available");
    assert!(c.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2 seats"));

    let a = app.open(&alice, &f.license_id, "tablet", "cad-1").await;
    assert_eq!(a.status, StatusCode::CREATED);
    let lic = app
        .get(&format!("/v1/licenses/{}", f.license_id), &f.admin)
        .await;
    assert_eq!(
        lic.body["usage"],
        json!({"seats": 2, "in_use": 2, "available": 0, "ending": 0, "overdraft_in_use": 0,
               "borrowed": 0, "delegated": 0})
    );

    // Logout frees bob's seat for carol.
    let out = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", b.id()),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let c = app.open(&carol, &f.license_id, "desktop", "cad-1").await;
    assert_eq!(c.status, StatusCode::CREATED);

    // The logged-out session is gone for good.
    let hb = app.heartbeat(&bob, &b.id()).await;
    assert_eq!(hb.status, StatusCode::GONE);
    assert_eq!(hb.code(), "session_ended");
    assert_eq!(hb.body["error"]["reason"], "logout");
}

#[tokio::test]
async fn reopening_from_the_same_instance_returns_the_same_session() {
    let app = spawn_app().await;
    let f = app.fixture(1, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let first = app.open(&bob, &f.license_id, "laptop", "cad-1").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = app.open(&bob, &f.license_id, "laptop", "cad-1").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.id(), first.id());
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 1);
    // Another instance on the same device is another session: it needs a second seat.
    let other = app.open(&bob, &f.license_id, "laptop", "cad-2").await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    // So does the same instance id on another device.
    let other = app.open(&bob, &f.license_id, "desktop", "cad-1").await;
    assert_eq!(other.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn idle_sessions_expire_and_heartbeats_keep_sessions_alive() {
    let app = spawn_app().await;
    let f = app
        .fixture(2, &[], json!({"inactivity_timeout_secs": 60}))
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let idle = app.open(&bob, &f.license_id, "laptop", "idle").await.id();
    let busy = app.open(&bob, &f.license_id, "laptop", "busy").await.id();
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 2);

    // Walk 3 minutes forward, heartbeating `busy` every 40 s.
    for _ in 0..4 {
        app.clock.advance_secs(40);
        let hb = app.heartbeat(&bob, &busy).await;
        if hb.status != StatusCode::OK {
            break;
        }
    }
    app.advance(0).await;
    let hb = app.heartbeat(&bob, &busy).await;
    assert_eq!(hb.status, StatusCode::OK, "{:?}", hb.body);
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 1);

    let hb = app.heartbeat(&bob, &idle).await;
    assert_eq!(hb.status, StatusCode::GONE);
    assert_eq!(hb.body["error"]["reason"], "inactivity");
    // The reaper wrote the audit trail.
    let audit = app
        .audit_when(&f.admin, &f.license_id, |events| {
            events.iter().any(|e| e["event"] == "ended")
        })
        .await;
    let events: Vec<_> = audit
        .iter()
        .filter(|e| e["session_id"] == idle.as_str())
        .map(|e| (e["event"].as_str().unwrap().to_owned(), e["detail"].clone()))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1], ("ended".to_owned(), json!("inactivity")));
}

#[tokio::test]
async fn a_heartbeat_after_expiry_fails_and_does_not_resurrect() {
    let app = spawn_app().await;
    let f = app
        .fixture(1, &[], json!({"inactivity_timeout_secs": 10}))
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let s = app.open(&bob, &f.license_id, "laptop", "cad").await.id();
    // Past expiry but before the reaper ran: the heartbeat itself must refuse.
    app.clock.advance_secs(11);
    let hb = app.heartbeat(&bob, &s).await;
    assert_eq!(hb.status, StatusCode::GONE);
    assert_eq!(hb.body["error"]["reason"], "inactivity");
    let hb = app.heartbeat(&bob, &s).await;
    assert_eq!(hb.status, StatusCode::GONE);
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 0);
    let list = app
        .get(&format!("/v1/licenses/{}/sessions", f.license_id), &f.admin)
        .await;
    assert_eq!(list.body["sessions"], json!([]));
}

#[tokio::test]
async fn a_full_license_reclaims_its_expired_sessions_before_refusing() {
    let app = spawn_app().await;
    let f = app
        .fixture(1, &[], json!({"inactivity_timeout_secs": 5}))
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    app.open(&bob, &f.license_id, "laptop", "cad").await;
    // The clock passes bob's expiry; the next open must not wait for the reaper.
    app.clock.advance_secs(6);
    let c = app.open(&carol, &f.license_id, "desktop", "cad").await;
    assert_eq!(c.status, StatusCode::CREATED, "{:?}", c.body);
}

#[tokio::test]
async fn a_session_heartbeated_in_time_keeps_its_seat_against_a_reclaiming_open() {
    // Arrange: one seat; bob's second heartbeat comes 15 s after his first, so the expiry
    // stored by the first (on PostgreSQL the node answers the second from memory and writes
    // it within a second) is past once the clock moves 10 s more.
    let app = spawn_app().await;
    let f = app
        .fixture(1, &[], json!({"inactivity_timeout_secs": 20}))
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    let b = app.open(&bob, &f.license_id, "laptop", "cad").await;
    assert_eq!(app.heartbeat(&bob, &b.id()).await.status, StatusCode::OK);
    app.clock.advance_secs(15);
    assert_eq!(app.heartbeat(&bob, &b.id()).await.status, StatusCode::OK);
    app.clock.advance_secs(10);
    // Act: an open that reclaims expired sessions before refusing.
    let c = app.open(&carol, &f.license_id, "desktop", "cad").await;
    // Assert: bob's session is live (answered 20 s from his last heartbeat): no seat for carol.
    assert_eq!(c.status, StatusCode::CONFLICT, "{:?}", c.body);
    assert_eq!(c.body["error"]["code"], "no_seat_available");
    assert_eq!(app.heartbeat(&bob, &b.id()).await.status, StatusCode::OK);
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 1);
}

#[tokio::test]
async fn expired_sessions_an_open_reclaims_are_counted_out_of_its_seats() {
    // Arrange: 4 seats, two of bob's sessions expire (the open that follows may end them
    // itself, before the reaper: on PostgreSQL its counts were read before those ends).
    let app = spawn_app().await;
    let f = app
        .fixture(4, &[], json!({"inactivity_timeout_secs": 5}))
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    app.open(&bob, &f.license_id, "laptop", "cad").await;
    app.open(&bob, &f.license_id, "desktop", "cad").await;
    app.clock.advance_secs(6);
    // Act
    let c = app.open(&carol, &f.license_id, "desktop", "cad").await;
    // Assert: one seat in use once the expired ones are ended (SQLite leaves that to its
    // reaper when the license has room: within a tick).
    assert_eq!(c.status, StatusCode::CREATED, "{:?}", c.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while app.in_use(&f.admin, &f.license_id).await != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "expired sessions still in use"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if crate::pg::database_url_for(app.dir.path()).await.is_some() {
        // The open ended them itself: its high water is the two of before, not three.
        let u = app
            .get(&format!("/v1/licenses/{}/usage", f.license_id), &f.admin)
            .await;
        assert_eq!(u.body["high_water"], 2, "{:?}", u.body);
    }
}

#[tokio::test]
async fn an_expired_session_being_ended_elsewhere_frees_its_seat_for_an_open() {
    // On PostgreSQL another node's reaper may hold the expired session's row while it ends it;
    // the open must wait for that end, not count the seat as taken (CI saw a 409 here).
    let app = spawn_app().await;
    let f = app
        .fixture(1, &[], json!({"inactivity_timeout_secs": 5}))
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    let s = app.open(&bob, &f.license_id, "laptop", "cad").await.id();
    app.clock.advance_secs(6);
    let Some(url) = crate::pg::database_url_for(app.dir.path()).await else {
        // SQLite decides under one lock: no other writer can be half-way through an end.
        let c = app.open(&carol, &f.license_id, "desktop", "cad").await;
        assert_eq!(c.status, StatusCode::CREATED, "{:?}", c.body);
        return;
    };
    use sqlx::Connection;
    let mut reaper = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = reaper.begin().await.unwrap();
    sqlx::query("SELECT id FROM sessions WHERE id = $1 FOR UPDATE")
        .bind(&s)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let open = {
        let (http, url, token, license) = (
            app.http.clone(),
            app.url.clone(),
            carol.clone(),
            f.license_id.clone(),
        );
        tokio::spawn(async move {
            http.post(format!("{url}/v1/sessions"))
                .bearer_auth(token)
                .json(&json!({"license_id": license, "device_id": "desktop", "instance_id": "cad"}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sqlx::query(
        "UPDATE sessions SET ended_at = expires_at, end_reason = 'inactivity' WHERE id = $1",
    )
    .bind(&s)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(open.await.unwrap(), StatusCode::CREATED);
}

#[tokio::test]
async fn an_admin_revoke_ends_the_session_and_tells_its_owner() {
    let app = spawn_app().await;
    let f = app.fixture(1, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let s = app.open(&bob, &f.license_id, "laptop", "cad").await.id();
    let list = app
        .get(&format!("/v1/licenses/{}/sessions", f.license_id), &f.admin)
        .await;
    assert_eq!(list.body["sessions"][0]["id"], s.as_str());
    assert!(list.body["sessions"][0].get("lease").is_none());

    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{s}"),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let hb = app.heartbeat(&bob, &s).await;
    assert_eq!(hb.status, StatusCode::GONE);
    assert_eq!(hb.body["error"]["reason"], "revoked");
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 0);
    // Revoking again: already ended.
    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{s}"),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::GONE);
}

#[tokio::test]
async fn service_users_get_sessions_with_an_absolute_lifetime() {
    let app = spawn_app().await;
    let f = app
        .fixture(
            1,
            &[],
            json!({"inactivity_timeout_secs": 600, "service_session_lifetime_secs": 3600}),
        )
        .await;
    let created = app
        .call(
            Method::PUT,
            &format!("/v1/accounts/{}/users/erp-backend", f.account_id),
            Some(&f.admin),
            Some(json!({"kind": "service"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let client_id = created.body["client_id"].as_str().unwrap().to_owned();
    let secret = created.body["client_secret"].as_str().unwrap().to_owned();
    // The secret is shown once: a second PUT does not repeat it.
    let again = app
        .call(
            Method::PUT,
            &format!("/v1/accounts/{}/users/erp-backend", f.account_id),
            Some(&f.admin),
            Some(json!({"kind": "service"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.body.get("client_secret").is_none());

    // Client secret in the form body.
    let resp = app
        .http
        .post(format!("{}/v1/oauth/token", app.url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("client_secret", &secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let tok: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 3600);
    // And by HTTP Basic.
    let resp = app
        .http
        .post(format!("{}/v1/oauth/token", app.url))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // A wrong secret is refused.
    let resp = app
        .http
        .post(format!("{}/v1/oauth/token", app.url))
        .basic_auth(&client_id, Some("nope"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let access = tok["access_token"].as_str().unwrap();
    let s = app
        .open(access, &f.license_id, "erp-host", "worker-1")
        .await;
    assert_eq!(s.status, StatusCode::CREATED, "{:?}", s.body);
    assert_eq!(s.body["kind"], "service");
    let id = s.id();
    // Heartbeats every 500 s keep it alive, but not past its 1 h lifetime.
    let mut last = None;
    for _ in 0..7 {
        app.clock.advance_secs(500);
        let hb = app.heartbeat(access, &id).await;
        assert_eq!(hb.status, StatusCode::OK, "{:?}", hb.body);
        last = Some(hb.body["expires_at"].clone());
    }
    let opened: time::OffsetDateTime = time::OffsetDateTime::parse(
        s.body["opened_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let capped = time::OffsetDateTime::parse(
        last.unwrap().as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!((capped - opened).whole_seconds(), 3600);
    // The access token itself expires after an hour too; a fresh one sees the session ended.
    app.advance(200).await;
    let resp = app
        .http
        .post(format!("{}/v1/oauth/token", app.url))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let tok: serde_json::Value = resp.json().await.unwrap();
    let hb = app
        .heartbeat(tok["access_token"].as_str().unwrap(), &id)
        .await;
    assert_eq!(hb.status, StatusCode::GONE);
    assert_eq!(hb.body["error"]["reason"], "lifetime");
    let old = app.heartbeat(access, &id).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED, "expired access token");
}

#[tokio::test]
async fn plans_give_seats_and_refuse_extra_seats_above_the_cap() {
    let app = spawn_app().await;
    let (account, admin) = app.create_account("Acme").await;
    let base = json!({"account_id": account, "product": "erp", "model": "concurrent_sessions"});
    let mut body = base.clone();
    body["plan"] = json!("small-business-basic");
    body["extra_seats"] = json!(2);
    let a = app.post("/v1/licenses", &admin, body).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body["seats"], 5);
    assert_eq!(a.body["plan"], "small-business-basic");
    let mut body = base.clone();
    body["plan"] = json!("small-business-advanced");
    body["extra_seats"] = json!(31);
    let r = app.post("/v1/licenses", &admin, body).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "plan_cap_exceeded");
    // Upgrading extra seats at run time, up to the cap.
    let id = a.id();
    let p = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{id}"),
            Some(&admin),
            Some(json!({"extra_seats": 32})),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(p.body["seats"], 35);
    let p = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{id}"),
            Some(&admin),
            Some(json!({"extra_seats": 33})),
        )
        .await;
    assert_eq!(p.code(), "plan_cap_exceeded");
    let l = app.get(&format!("/v1/licenses/{id}"), &admin).await;
    assert_eq!(l.body["seats"], 35, "a refused patch changes nothing");
}

#[tokio::test]
async fn inactive_users_cannot_open_sessions() {
    let app = spawn_app().await;
    let f = app.fixture(3, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let r = app
        .call(
            Method::PUT,
            &format!("/v1/accounts/{}/users/bob", f.account_id),
            Some(&f.admin),
            Some(json!({"kind": "interactive", "active": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["active"], false);
    let o = app.open(&bob, &f.license_id, "laptop", "cad").await;
    assert_eq!(o.status, StatusCode::FORBIDDEN);
    assert_eq!(o.code(), "user_inactive");
}

#[tokio::test]
async fn usage_reports_current_figures_and_water_marks() {
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let s1 = app.open(&bob, &f.license_id, "d", "1").await.id();
    app.open(&bob, &f.license_id, "d", "2").await;
    let denied = app.open(&bob, &f.license_id, "d", "3").await;
    assert_eq!(denied.code(), "no_seat_available");
    // Both seats are held for a second (water marks count states that held for some time).
    app.clock.advance_secs(1);
    app.call(
        Method::DELETE,
        &format!("/v1/sessions/{s1}"),
        Some(&bob),
        None,
    )
    .await;
    let u = app
        .get(
            &format!("/v1/licenses/{}/usage?bucket=hour", f.license_id),
            &f.admin,
        )
        .await;
    assert_eq!(u.status, StatusCode::OK, "{:?}", u.body);
    assert_eq!(
        u.body["now"],
        json!({"seats": 2, "in_use": 1, "available": 1, "ending": 0, "overdraft_in_use": 0,
               "borrowed": 0, "delegated": 0})
    );
    // Low: the 1 in use now (the license had none in use for no time: it was created with
    // the two opens of the same instant).
    assert_eq!(u.body["high_water"], 2);
    assert_eq!(u.body["low_water"], 1);
    assert_eq!(u.body["denials"], 1);
}

#[tokio::test]
async fn an_acknowledged_session_survives_a_restart_on_the_same_data_folder() {
    let mut app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let s = app.open(&bob, &f.license_id, "laptop", "cad").await.id();
    app.stop().await;
    let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    let app = spawn_app_in(dir).await;
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 1);
    let hb = app.heartbeat(&bob, &s).await;
    assert_eq!(hb.status, StatusCode::OK, "{:?}", hb.body);
}

#[tokio::test]
async fn admins_can_read_and_list_users_and_licenses() {
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    app.user_token(&f.account_id, &f.admin, "bob").await;
    app.call(
        Method::PUT,
        &format!("/v1/accounts/{}/users/svc", f.account_id),
        Some(&f.admin),
        Some(json!({"kind": "service"})),
    )
    .await;
    let u = app
        .get(
            &format!("/v1/accounts/{}/users/svc", f.account_id),
            &f.admin,
        )
        .await;
    assert_eq!(u.status, StatusCode::OK);
    assert_eq!(u.body["kind"], "service");
    assert!(u.body["client_id"].is_string());
    assert!(
        u.body.get("client_secret").is_none(),
        "secrets are shown once"
    );
    let list = app
        .get(&format!("/v1/accounts/{}/users", f.account_id), &f.admin)
        .await;
    let names: Vec<&str> = list.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["bob", "svc"]);
    let lics = app
        .get(&format!("/v1/accounts/{}/licenses", f.account_id), &f.admin)
        .await;
    assert_eq!(lics.body["licenses"][0]["id"], f.license_id.as_str());
    let r = app
        .get(
            &format!("/v1/accounts/{}/users/ghost", f.account_id),
            &f.admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Another account's admin is refused.
    let (_, other) = app.create_account("Other").await;
    let r = app
        .get(&format!("/v1/accounts/{}/users", f.account_id), &other)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_echoes_a_plain_one() {
    // Arrange
    let app = spawn_app().await;
    let get = |path: &'static str, id: Option<&'static str>| {
        let mut req = app.http.get(format!("{}{path}", app.url));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };

    // Act
    let ok = get("/healthz", None).await.unwrap();
    let missing = get("/v1/nowhere", None).await.unwrap();
    let given = get("/healthz", Some("trace-42")).await.unwrap();
    let odd = get("/healthz", Some("not a plain id")).await.unwrap();

    // Assert: made here when absent or unusable (24 hex digits), echoed when plain.
    let id = |r: &reqwest::Response| {
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    for made in [id(&ok), id(&missing), id(&odd)] {
        assert_eq!(made.len(), 24, "{made:?}");
        assert!(made.chars().all(|c| c.is_ascii_hexdigit()), "{made:?}");
    }
    assert_ne!(id(&ok), id(&missing));
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(id(&given), "trace-42");
}

#[tokio::test]
async fn the_heartbeat_cadence_is_set_per_license_apart_from_the_timeout() {
    // Arrange + act: a license whose clients heartbeat every 5 s under the default timeout.
    let app = spawn_app().await;
    let f = app
        .fixture(2, &[], json!({"heartbeat_interval_secs": 5}))
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let lic = app
        .get(&format!("/v1/licenses/{}", f.license_id), &f.admin)
        .await;
    let opened = app.open(&bob, &f.license_id, "laptop", "cad-1").await;

    // Assert: the license and its sessions say so; the timeout is unchanged.
    assert_eq!(lic.body["heartbeat_interval_secs"], 5);
    assert_eq!(lic.body["inactivity_timeout_secs"], 1200);
    let session = TestApp::session(&opened.body);
    assert_eq!(session.heartbeat_interval_secs, 5);
    assert_eq!(
        (session.expires_at - session.opened_at).whole_seconds(),
        1200
    );

    // A cadence not shorter than the timeout is refused, and changes nothing.
    let path = format!("/v1/licenses/{}", f.license_id);
    for body in [
        json!({"heartbeat_interval_secs": 1200}),
        json!({"inactivity_timeout_secs": 5}),
        json!({"heartbeat_interval_secs": -1}),
    ] {
        let refused = app
            .call(Method::PATCH, &path, Some(&f.admin), Some(body.clone()))
            .await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            refused.body
        );
        assert_eq!(refused.code(), "invalid_request");
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("heartbeat_interval_secs"),
            "{:?}",
            refused.body
        );
    }
    let created = app
        .post(
            "/v1/licenses",
            &f.admin,
            json!({"account_id": f.account_id, "product": "cad", "model": "concurrent_sessions",
                   "seats": 1, "inactivity_timeout_secs": 30, "heartbeat_interval_secs": 30}),
        )
        .await;
    assert_eq!(
        created.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        created.body
    );

    // 0 goes back to the default: a third of the timeout, at most 60 s.
    let reset = app
        .call(
            Method::PATCH,
            &path,
            Some(&f.admin),
            Some(json!({"heartbeat_interval_secs": 0, "inactivity_timeout_secs": 90})),
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{:?}", reset.body);
    assert_eq!(reset.body["heartbeat_interval_secs"], 30);
    let beat = app
        .post(
            &format!("/v1/sessions/{}/heartbeat?lease=true", session.id),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(beat.status, StatusCode::OK);
    let again = app.open(&bob, &f.license_id, "laptop", "cad-1").await;
    assert_eq!(TestApp::session(&again.body).heartbeat_interval_secs, 30);
}
