//! Offline borrowing over real HTTP, on both stores: a borrow inside and beyond the license's
//! policy, a borrowed seat held without heartbeats until `borrow_until` and freed then, early
//! return, reclaim and the revoked-lease list, mass ends of borrowed seats, a step of the wall
//! clock, tenant isolation, and many borrows racing for the last borrowable seat.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use leasehold_core::Timestamp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::helpers::*;

const DAY: i64 = 86_400;

fn rfc3339(t: Timestamp) -> String {
    t.to_offset()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn secs_of(body: &Value, field: &str) -> i64 {
    time::OffsetDateTime::parse(
        body[field].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp()
}

/// How far the times on the wire move with a step of the node's wall clock (see `time`).
fn wire_step(secs: i64) -> i64 {
    if std::env::var("LEASEHOLD_TEST_STORE").as_deref() == Ok("postgres") {
        0
    } else {
        secs
    }
}

impl TestApp {
    /// Borrows a seat from client instance `instance` until `until`.
    async fn borrow(&self, token: &str, license: &str, instance: &str, until: Timestamp) -> Answer {
        self.post(
            "/v1/sessions",
            token,
            json!({"license_id": license, "device_id": "laptop", "instance_id": instance,
                   "borrow_until": rfc3339(until)}),
        )
        .await
    }

    async fn delete(&self, path: &str, token: &str) -> Answer {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    async fn revoked(&self, token: &str, license: &str) -> Answer {
        self.get(&format!("/v1/licenses/{license}/revoked-leases"), token)
            .await
    }

    async fn usage_now(&self, admin: &str, license: &str) -> Value {
        let a = self.get(&format!("/v1/licenses/{license}"), admin).await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        a.body["usage"].clone()
    }
}

/// 3 seats, borrows up to 3 days, one seat stays online (2 may be borrowed), 60 s inactivity.
async fn lending(app: &TestApp) -> Fixture {
    app.fixture(
        3,
        &[],
        json!({"inactivity_timeout_secs": 60, "max_borrow_days": 3, "borrow_lowwater": 1}),
    )
    .await
}

fn claims(lease: &str) -> Value {
    let payload = lease.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn a_borrow_inside_the_policy_holds_its_seat_without_heartbeats_and_one_beyond_is_refused() {
    // Arrange
    let app = spawn_app().await;
    let f = lending(&app).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let until = TEST_START.plus_secs(2 * DAY as u64);

    // Act: two borrows (the most the policy lends), then a third, and ones past the policy.
    let first = app.borrow(&bob, &f.license_id, "b1", until).await;
    let second = app.borrow(&bob, &f.license_id, "b2", until).await;
    let third = app.borrow(&bob, &f.license_id, "b3", until).await;
    let too_long = app
        .borrow(
            &bob,
            &f.license_id,
            "b4",
            TEST_START.plus_secs(3 * DAY as u64 + 1),
        )
        .await;
    let past = app.borrow(&bob, &f.license_id, "b5", TEST_START).await;
    let waiting = app
        .post(
            "/v1/sessions",
            &bob,
            json!({"license_id": f.license_id, "device_id": "laptop", "instance_id": "b6",
                   "borrow_until": rfc3339(until), "wait_secs": 5}),
        )
        .await;

    // Assert: the borrows carry their end and a borrow lease that expires then.
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(second.status, StatusCode::CREATED, "{:?}", second.body);
    assert_eq!(secs_of(&first.body, "borrow_until"), until.secs());
    assert_eq!(secs_of(&first.body, "expires_at"), until.secs());
    let lease = claims(first.body["lease"].as_str().unwrap());
    assert_eq!(lease["borrowed"], true);
    assert_eq!(lease["exp"], until.secs());
    assert_eq!(lease["device_id"], "laptop");
    assert_eq!(third.status, StatusCode::CONFLICT, "{:?}", third.body);
    assert_eq!(third.code(), "borrow_limit_reached");
    assert_eq!(too_long.status, StatusCode::CONFLICT);
    assert_eq!(too_long.code(), "borrow_too_long");
    assert_eq!(past.code(), "borrow_too_long");
    assert_eq!(
        waiting.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        waiting.body
    );
    // The seat that stays online is still there for an ordinary open.
    let online = app.open(&bob, &f.license_id, "pc", "app").await;
    assert_eq!(online.status, StatusCode::CREATED);
    // Usage and the listing show the borrows.
    let usage = app.usage_now(&f.admin, &f.license_id).await;
    assert_eq!(
        (usage["in_use"].as_u64(), usage["borrowed"].as_u64()),
        (Some(3), Some(2))
    );
    let listed = app
        .get(&format!("/v1/licenses/{}/sessions", f.license_id), &f.admin)
        .await;
    let borrowed: Vec<&Value> = listed.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.get("borrow_until").is_some())
        .collect();
    assert_eq!(borrowed.len(), 2);
    // A day on, with no heartbeat: the borrows still hold their seats, the idle online one
    // ended at its 60 s timeout.
    app.advance(DAY).await;
    let usage = app.usage_now(&f.admin, &f.license_id).await;
    assert_eq!(
        (usage["in_use"].as_u64(), usage["borrowed"].as_u64()),
        (Some(2), Some(2))
    );
    // A heartbeat of a borrow (the owner online again) does not move its end.
    let beat = app.heartbeat(&bob, &first.id()).await;
    assert_eq!(beat.status, StatusCode::OK);
    assert_eq!(secs_of(&beat.body, "expires_at"), until.secs());
}

#[tokio::test]
async fn a_license_without_a_borrow_policy_lends_nothing_and_an_instance_does_not_switch_modes() {
    // Arrange
    let app = spawn_app().await;
    let f = app.fixture(3, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let until = TEST_START.plus_secs(3600);

    // Act
    let off = app.borrow(&bob, &f.license_id, "b1", until).await;
    let patched = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}", f.license_id),
            Some(&f.admin),
            Some(json!({"max_borrow_days": 1})),
        )
        .await;
    let on = app.borrow(&bob, &f.license_id, "b1", until).await;
    // The instance that borrowed cannot open an online session, nor the other way round.
    let online_again = app.open(&bob, &f.license_id, "laptop", "b1").await;
    app.open(&bob, &f.license_id, "laptop", "online").await;
    let borrow_online = app.borrow(&bob, &f.license_id, "online", until).await;
    let bad = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}", f.license_id),
            Some(&f.admin),
            Some(json!({"max_borrow_days": 400})),
        )
        .await;

    // Assert
    assert_eq!(off.status, StatusCode::CONFLICT, "{:?}", off.body);
    assert_eq!(off.code(), "borrow_not_allowed");
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(patched.body["max_borrow_days"], 1);
    assert_eq!(on.status, StatusCode::CREATED, "{:?}", on.body);
    assert_eq!(online_again.code(), "borrow_not_allowed");
    assert_eq!(borrow_online.code(), "borrow_not_allowed");
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_borrow_that_reaches_borrow_until_frees_its_seat_and_leaves_nothing_behind() {
    // Arrange: the borrowable seats are both away.
    let app = spawn_app().await;
    let f = lending(&app).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let until = TEST_START.plus_secs(DAY as u64);
    let b1 = app.borrow(&bob, &f.license_id, "b1", until).await.id();
    app.borrow(&bob, &f.license_id, "b2", until).await;

    // Act: time reaches `borrow_until`.
    app.advance(DAY - 1).await;
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 2);
    app.advance(1).await;

    // Assert: the seats are free by themselves, the end says why, no lease is listed.
    let usage = app.usage_now(&f.admin, &f.license_id).await;
    assert_eq!(
        (usage["in_use"].as_u64(), usage["borrowed"].as_u64()),
        (Some(0), Some(0))
    );
    let gone = app.heartbeat(&bob, &b1).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert_eq!(gone.body["error"]["reason"], "borrow_ended");
    let revoked = app.revoked(&f.admin, &f.license_id).await;
    assert_eq!(revoked.body["leases"], json!([]));
    let again = app
        .borrow(&bob, &f.license_id, "b3", until.plus_secs(DAY as u64))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    app.audit_when(&f.admin, &f.license_id, |events| {
        events
            .iter()
            .filter(|e| e["event"] == "ended" && e["detail"] == "borrow_ended")
            .count()
            == 2
    })
    .await;
}

#[tokio::test]
async fn an_early_return_frees_the_seat_at_once_and_lists_the_lease_until_it_expires() {
    // Arrange
    let app = spawn_app().await;
    let f = lending(&app).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let until = TEST_START.plus_secs(2 * DAY as u64);
    let b = app.borrow(&bob, &f.license_id, "b1", until).await.id();

    // Act: bob returns it an hour later.
    app.advance(3600).await;
    let returned = app.delete(&format!("/v1/sessions/{b}"), &bob).await;

    // Assert
    assert_eq!(
        returned.status,
        StatusCode::NO_CONTENT,
        "{:?}",
        returned.body
    );
    let usage = app.usage_now(&f.admin, &f.license_id).await;
    assert_eq!(
        (usage["in_use"].as_u64(), usage["borrowed"].as_u64()),
        (Some(0), Some(0))
    );
    let gone = app.heartbeat(&bob, &b).await;
    assert_eq!(gone.body["error"]["reason"], "returned");
    // The user (as the SDK does) and the admin both see it listed.
    let listed = app.revoked(&bob, &f.license_id).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let leases = listed.body["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0]["session_id"], b.as_str());
    assert_eq!(leases[0]["reason"], "returned");
    assert_eq!(leases[0]["device_id"], "laptop");
    assert_eq!(secs_of(&leases[0], "lease_expires_at"), until.secs());
    app.audit_when(&f.admin, &f.license_id, |events| {
        events
            .iter()
            .any(|e| e["event"] == "ended" && e["detail"] == "returned")
    })
    .await;
    // Until the lease's `exp`, then no more.
    app.advance(2 * DAY - 3600).await;
    let listed = app.revoked(&f.admin, &f.license_id).await;
    assert_eq!(listed.body["leases"], json!([]));
}

#[tokio::test]
async fn an_admin_reclaims_a_lost_devices_borrow_audited_as_reclaimed_and_listed_across_a_restart()
{
    // Arrange
    let mut app = spawn_app().await;
    let f = lending(&app).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let until = TEST_START.plus_secs(3 * DAY as u64);
    let b = app.borrow(&bob, &f.license_id, "b1", until).await;

    // Act: the admin reclaims it (a DELETE by the admin of a borrowed seat).
    let reclaimed = app
        .delete(&format!("/v1/sessions/{}", b.id()), &f.admin)
        .await;

    // Assert: the seat is back in the pool, the end is audited as reclaimed, the lease listed.
    assert_eq!(reclaimed.status, StatusCode::NO_CONTENT);
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 0);
    app.audit_when(&f.admin, &f.license_id, |events| {
        events
            .iter()
            .any(|e| e["event"] == "ended" && e["detail"] == "reclaimed")
    })
    .await;
    let listed = app.revoked(&f.admin, &f.license_id).await;
    assert_eq!(listed.body["leases"][0]["reason"], "reclaimed");
    // A restart keeps the list.
    app.stop().await;
    let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    let app = spawn_app_in(dir).await;
    let listed = app.revoked(&f.admin, &f.license_id).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    assert_eq!(listed.body["leases"][0]["session_id"], b.id().as_str());
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 0);
}

#[tokio::test]
async fn mass_ends_of_borrowed_seats_are_listed_as_revoked_leases() {
    // Arrange: three licenses, each with a borrow: one for a revoke of all, one for a
    // deactivation, one whose end is moved before the borrow's.
    let app = spawn_app().await;
    let f = lending(&app).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    let until = TEST_START.plus_secs(2 * DAY as u64);
    let by_bob = app.borrow(&bob, &f.license_id, "b1", until).await.id();
    let by_carol = app.borrow(&carol, &f.license_id, "c1", until).await.id();
    let second = app
        .create_license(
            &f.admin,
            json!({"account_id": f.account_id, "product": "cam", "model": "concurrent_sessions",
                   "seats": 2, "max_borrow_days": 3}),
        )
        .await;
    let by_bob_2 = app.borrow(&bob, &second, "b2", until).await.id();

    // Act: a revoke of all on the first license... (carol's borrow goes with it)
    let all = app
        .delete(&format!("/v1/licenses/{}/sessions", f.license_id), &f.admin)
        .await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    // ...and the second license's end moved to an hour from now.
    let end = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{second}"),
            Some(&f.admin),
            Some(json!({"expires_at": rfc3339(TEST_START.plus_secs(3600))})),
        )
        .await;
    assert_eq!(end.status, StatusCode::OK, "{:?}", end.body);
    app.advance(3600).await;

    // Assert: every borrow that ended early is listed, with why.
    let first = app.revoked(&f.admin, &f.license_id).await;
    let mut ids: Vec<&str> = first.body["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["reason"], "revoked");
            l["session_id"].as_str().unwrap()
        })
        .collect();
    ids.sort();
    let mut expected = vec![by_bob.as_str(), by_carol.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    let second_list = app.revoked(&f.admin, &second).await;
    assert_eq!(
        second_list.body["leases"][0]["session_id"],
        by_bob_2.as_str()
    );
    assert_eq!(second_list.body["leases"][0]["reason"], "license_expired");
    assert_eq!(app.usage_now(&f.admin, &second).await["borrowed"], 0);
}

#[tokio::test]
async fn a_deactivated_users_borrow_is_listed_as_revoked() {
    // Arrange
    let app = spawn_app().await;
    let f = lending(&app).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let until = TEST_START.plus_secs(DAY as u64);
    let b = app.borrow(&bob, &f.license_id, "b1", until).await.id();

    // Act
    let off = app
        .call(
            Method::PUT,
            &format!("/v1/accounts/{}/users/bob", f.account_id),
            Some(&f.admin),
            Some(json!({"kind": "interactive", "active": false})),
        )
        .await;
    assert!(off.status.is_success(), "{:?}", off.body);

    // Assert
    let listed = app.revoked(&f.admin, &f.license_id).await;
    assert_eq!(listed.body["leases"][0]["session_id"], b.as_str());
    assert_eq!(listed.body["leases"][0]["reason"], "user_deactivated");
    assert_eq!(app.usage_now(&f.admin, &f.license_id).await["borrowed"], 0);
}

#[tokio::test]
async fn a_step_of_the_wall_clock_neither_extends_nor_shortens_a_borrow_past_borrow_until() {
    // Arrange: a borrow for a day, 60 s inactivity timeout.
    let app = spawn_app().await;
    let f = lending(&app).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let until = TEST_START.plus_secs(DAY as u64);
    let b = app.borrow(&bob, &f.license_id, "b1", until).await.id();

    // Act: the wall clock jumps 2 h ahead.
    app.clock.step_wall_secs(7200);
    app.advance(0).await;

    // Assert: its end on the wire has not moved (it is the lease's `exp`), and it ends when
    // the server's wall clock reaches it: 2 h of elapsed time sooner where the node's wall
    // clock is the server's time (SQLite); on PostgreSQL the database's clock did not step.
    let beat = app.heartbeat(&bob, &b).await;
    assert_eq!(secs_of(&beat.body, "expires_at"), until.secs());
    app.advance(DAY - wire_step(7200) - 1).await;
    assert_eq!(app.heartbeat(&bob, &b).await.status, StatusCode::OK);
    app.advance(1).await;
    let gone = app.heartbeat(&bob, &b).await;
    assert_eq!(gone.status, StatusCode::GONE, "{:?}", gone.body);
    assert_eq!(gone.body["error"]["reason"], "borrow_ended");
}

#[tokio::test]
async fn revoked_leases_of_another_tenant_do_not_exist() {
    // Arrange
    let app = spawn_app().await;
    let a = lending(&app).await;
    let b = lending(&app).await;
    let bob_a = app.user_token(&a.account_id, &a.admin, "bob").await;
    let bob_b = app.user_token(&b.account_id, &b.admin, "bob").await;
    let borrowed = app
        .borrow(&bob_a, &a.license_id, "b1", TEST_START.plus_secs(3600))
        .await
        .id();

    // Act: tenant B tries to read A's list and to reclaim A's borrow.
    let admin_b = app.revoked(&b.admin, &a.license_id).await;
    let user_b = app.revoked(&bob_b, &a.license_id).await;
    let reclaim = app
        .delete(&format!("/v1/sessions/{borrowed}"), &b.admin)
        .await;
    let none = app.revoked(&a.admin, "no-such-license").await;
    let anonymous = app
        .call(
            Method::GET,
            &format!("/v1/licenses/{}/revoked-leases", a.license_id),
            None,
            None,
        )
        .await;

    // Assert
    assert_eq!(admin_b.status, StatusCode::NOT_FOUND);
    assert_eq!(user_b.status, StatusCode::NOT_FOUND);
    assert_eq!(reclaim.status, StatusCode::NOT_FOUND);
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.in_use(&a.admin, &a.license_id).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_borrows_racing_for_the_last_borrowable_seat_get_exactly_one() {
    // Arrange: 10 seats, one may be borrowed; 30 users.
    let app = Arc::new(spawn_app().await);
    let f = app
        .fixture(
            10,
            &[],
            json!({"max_borrow_days": 3, "max_borrowed_seats": 1}),
        )
        .await;
    let mut tokens = Vec::new();
    for i in 0..30 {
        tokens.push(
            app.user_token(&f.account_id, &f.admin, &format!("u{i}"))
                .await,
        );
    }

    // Act: all of them borrow at once.
    let mut set = JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (app, license) = (app.clone(), f.license_id.clone());
        set.spawn(async move {
            app.borrow(
                &token,
                &license,
                &format!("b{i}"),
                TEST_START.plus_secs(3600),
            )
            .await
        });
    }
    let mut granted = 0;
    while let Some(a) = set.join_next().await {
        let a = a.unwrap();
        match a.status {
            StatusCode::CREATED => granted += 1,
            StatusCode::CONFLICT => assert_eq!(a.code(), "borrow_limit_reached"),
            other => panic!("{other}: {:?}", a.body),
        }
    }

    // Assert
    assert_eq!(granted, 1);
    let usage = app.usage_now(&f.admin, &f.license_id).await;
    assert_eq!(
        (usage["in_use"].as_u64(), usage["borrowed"].as_u64()),
        (Some(1), Some(1))
    );
}
