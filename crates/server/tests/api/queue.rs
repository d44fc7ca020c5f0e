//! Waiting for a seat: `on_full: "queue"` licenses grant freed seats to their longest waiter.
//! The same tests run on both stores (`LEASEHOLD_TEST_STORE=postgres`: one queue in the database).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::task::JoinSet;

use crate::helpers::*;

fn queueing(extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({"on_full": "queue", "max_queue_wait_secs": 600});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

async fn wait_open(
    app: &TestApp,
    token: &str,
    license: &str,
    instance: &str,
    wait_secs: u64,
) -> Answer {
    app.post(
        "/v1/sessions",
        token,
        json!({"license_id": license, "device_id": "pc", "instance_id": instance, "wait_secs": wait_secs}),
    )
    .await
}

async fn queue_length(app: &TestApp, admin: &str, license: &str) -> u64 {
    let q = app
        .get(&format!("/v1/licenses/{license}/queue"), admin)
        .await;
    assert_eq!(q.status, StatusCode::OK, "{:?}", q.body);
    q.body["length"].as_u64().unwrap()
}

/// Polls until the queue has `n` waiters (requests are in flight in other tasks).
async fn until_queue_length(app: &TestApp, admin: &str, license: &str, n: u64) {
    for _ in 0..500 {
        if queue_length(app, admin, license).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the queue never reached {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_waiters_are_granted_freed_seats_in_arrival_order() {
    // Arrange: 3 seats held; 30 users queue one after another.
    let app = Arc::new(spawn_app().await);
    let f = app.fixture(3, &[], queueing(json!({}))).await;
    let holder = app.user_token(&f.account_id, &f.admin, "holder").await;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push((
            holder.clone(),
            app.open(&holder, &f.license_id, "pc", &format!("h{i}"))
                .await
                .id(),
        ));
    }
    let (tx, mut granted) = tokio::sync::mpsc::unbounded_channel();
    let mut set = JoinSet::new();
    for i in 0..30 {
        let token = app
            .user_token(&f.account_id, &f.admin, &format!("w{i:02}"))
            .await;
        let (app2, lic, tx) = (app.clone(), f.license_id.clone(), tx.clone());
        set.spawn(async move {
            let a = wait_open(&app2, &token, &lic, "app", 120).await;
            assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
            tx.send((i, token, a.id())).unwrap();
        });
        until_queue_length(&app, &f.admin, &f.license_id, i + 1).await;
    }
    // A user sees only its own place in the queue.
    let mine = app
        .get(&format!("/v1/licenses/{}/queue", f.license_id), &held[0].0)
        .await;
    assert_eq!(mine.body["length"], 30);
    assert_eq!(mine.body["waiting"], json!([]));
    let all = app
        .get(&format!("/v1/licenses/{}/queue", f.license_id), &f.admin)
        .await;
    assert_eq!(all.body["waiting"][0]["username"], "w00");
    assert_eq!(all.body["waiting"][29]["position"], 30);

    // Act: free seats one by one; each goes to the longest waiter.
    let mut order = Vec::new();
    for _ in 0..30 {
        let (token, id) = held.remove(0);
        let r = app
            .call(
                Method::DELETE,
                &format!("/v1/sessions/{id}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let (i, token, id) = tokio::time::timeout(Duration::from_secs(10), granted.recv())
            .await
            .unwrap()
            .unwrap();
        order.push(i);
        held.push((token, id));
        assert!(app.in_use(&f.admin, &f.license_id).await <= 3);
    }
    while set.join_next().await.is_some() {}

    // Assert: strict first come, first served.
    assert_eq!(order, (0..30).collect::<Vec<_>>());
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 3);
    assert_eq!(queue_length(&app, &f.admin, &f.license_id).await, 0);
}

#[tokio::test]
async fn a_wait_that_runs_out_is_refused_with_queue_timeout() {
    let app = spawn_app().await;
    let f = app
        .fixture(1, &[], queueing(json!({"max_queue_wait_secs": 1})))
        .await;
    let ann = app.user_token(&f.account_id, &f.admin, "ann").await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    app.open(&ann, &f.license_id, "pc", "a").await;
    // Asks for 30 s, capped at the license's 1 s.
    let started = std::time::Instant::now();
    let r = wait_open(&app, &bob, &f.license_id, "b", 30).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "no_seat_available")
    );
    assert_eq!(r.body["error"]["queue_timeout"], true);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(queue_length(&app, &f.admin, &f.license_id).await, 0);
    // Without wait_secs the answer is immediate and has no queue_timeout.
    let r = app.open(&bob, &f.license_id, "pc", "b").await;
    assert_eq!(r.code(), "no_seat_available");
    assert!(r.body["error"].get("queue_timeout").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_disconnects_leaves_the_queue_and_gets_no_ghost_seat() {
    let app = Arc::new(spawn_app().await);
    let f = app.fixture(1, &[], queueing(json!({}))).await;
    let ann = app.user_token(&f.account_id, &f.admin, "ann").await;
    let quitter = app.user_token(&f.account_id, &f.admin, "quitter").await;
    let patient = app.user_token(&f.account_id, &f.admin, "patient").await;
    let held = app.open(&ann, &f.license_id, "pc", "a").await.id();

    // The quitter's client gives up after 300 ms: its connection closes while it waits.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = impatient
        .post(format!("{}/v1/sessions", app.url))
        .bearer_auth(&quitter)
        .json(&json!({"license_id": f.license_id, "device_id": "pc", "instance_id": "q", "wait_secs": 60}))
        .send()
        .await;
    assert!(r.is_err(), "the client timed out");
    until_queue_length(&app, &f.admin, &f.license_id, 0).await;

    // The patient waiter, who came later, gets the freed seat.
    let waiter = {
        let (app, lic) = (app.clone(), f.license_id.clone());
        tokio::spawn(async move { wait_open(&app, &patient, &lic, "p", 60).await })
    };
    until_queue_length(&app, &f.admin, &f.license_id, 1).await;
    app.call(
        Method::DELETE,
        &format!("/v1/sessions/{held}"),
        Some(&ann),
        None,
    )
    .await;
    let got = waiter.await.unwrap();
    assert_eq!(got.status, StatusCode::CREATED);
    assert_eq!(got.body["username"], "patient");
    let list = app
        .get(&format!("/v1/licenses/{}/sessions", f.license_id), &f.admin)
        .await;
    let users: Vec<&str> = list.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["username"].as_str().unwrap())
        .collect();
    assert_eq!(
        users,
        vec!["patient"],
        "no seat is held by the client that left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserved_users_never_wait_behind_others() {
    let app = Arc::new(spawn_app().await);
    let f = app.fixture(2, &["boss"], queueing(json!({}))).await;
    let ann = app.user_token(&f.account_id, &f.admin, "ann").await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let boss = app.user_token(&f.account_id, &f.admin, "boss").await;
    app.open(&ann, &f.license_id, "pc", "a").await;
    let waiter = {
        let (app, lic) = (app.clone(), f.license_id.clone());
        tokio::spawn(async move { wait_open(&app, &bob, &lic, "b", 2).await })
    };
    until_queue_length(&app, &f.admin, &f.license_id, 1).await;
    // The shared pool is full and bob waits, yet the boss gets in at once.
    let r = wait_open(&app, &boss, &f.license_id, "boss", 60).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(waiter.await.unwrap().body["error"]["queue_timeout"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_racing_new_arrivals_never_over_allocate() {
    let app = Arc::new(spawn_app().await);
    let f = app
        .fixture(3, &[], queueing(json!({"inactivity_timeout_secs": 600})))
        .await;
    let mut tokens = Vec::new();
    for i in 0..12 {
        tokens.push(
            app.user_token(&f.account_id, &f.admin, &format!("u{i}"))
                .await,
        );
    }
    let max_seen = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    // Holders churn: open (waiting if needed), hold briefly, log out; others poke without waiting.
    for (i, token) in tokens.iter().enumerate() {
        let (app, lic, token, admin, max_seen) = (
            app.clone(),
            f.license_id.clone(),
            token.clone(),
            f.admin.clone(),
            max_seen.clone(),
        );
        set.spawn(async move {
            let mut granted = 0;
            for round in 0..4 {
                let a = if i % 3 == 0 {
                    app.open(&token, &lic, "pc", &format!("r{round}")).await
                } else {
                    wait_open(&app, &token, &lic, &format!("r{round}"), 20).await
                };
                max_seen.fetch_max(app.in_use(&admin, &lic).await, Ordering::SeqCst);
                if a.status == StatusCode::CREATED {
                    granted += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let r = app
                        .call(
                            Method::DELETE,
                            &format!("/v1/sessions/{}", a.id()),
                            Some(&token),
                            None,
                        )
                        .await;
                    assert_eq!(r.status, StatusCode::NO_CONTENT);
                } else {
                    assert_eq!(a.code(), "no_seat_available", "{:?}", a.body);
                }
            }
            granted
        });
    }
    let mut total = 0;
    while let Some(g) = set.join_next().await {
        total += g.unwrap();
    }
    assert!(max_seen.load(Ordering::SeqCst) <= 3);
    assert!(total >= 32, "every waiter eventually got a seat: {total}");
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_deactivated_while_waiting_is_refused_not_granted() {
    // Arrange: alice holds the only seat; bob waits in the queue.
    let app = Arc::new(spawn_app().await);
    let f = app.fixture(1, &[], queueing(json!({}))).await;
    let alice = app.user_token(&f.account_id, &f.admin, "alice").await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let held = app.open(&alice, &f.license_id, "pc", "app").await.id();
    let waiting = {
        let (app, bob, license) = (app.clone(), bob.clone(), f.license_id.clone());
        tokio::spawn(async move { wait_open(&app, &bob, &license, "app", 60).await })
    };
    until_queue_length(&app, &f.admin, &f.license_id, 1).await;

    // Act: bob is deactivated (acknowledged), then the seat frees.
    let deactivated = app
        .call(
            Method::PUT,
            &format!("/v1/accounts/{}/users/bob", f.account_id),
            Some(&f.admin),
            Some(json!({"kind": "interactive", "active": false})),
        )
        .await;
    assert_eq!(deactivated.status, StatusCode::OK);
    let freed = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{held}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(freed.status, StatusCode::NO_CONTENT);

    // Assert: the wait ends refused, and bob holds nothing.
    let answer = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{:?}", answer.body);
    assert_eq!(answer.code(), "user_inactive");
    let sessions = app
        .get(
            &format!("/v1/accounts/{}/users/bob/sessions", f.account_id),
            &f.admin,
        )
        .await;
    assert_eq!(sessions.body["sessions"], json!([]));
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 0);
}
