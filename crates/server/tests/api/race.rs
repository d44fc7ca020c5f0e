//! Concurrency: many openers racing for few seats over real HTTP.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_hundred_racing_opens_never_exceed_ten_seats() {
    // Arrange: 10 seats, 2 reserved (r0, r1); 100 users with a token each.
    let app = Arc::new(spawn_app().await);
    let f = app.fixture(10, &["r0", "r1"], json!({})).await;
    let mut users = Vec::new();
    for i in 0..100 {
        let name = if i < 2 {
            format!("r{i}")
        } else {
            format!("user{i}")
        };
        let token = app.user_token(&f.account_id, &f.admin, &name).await;
        users.push((name, token));
    }

    // A sampler watches in_use while the race runs.
    let racing = Arc::new(AtomicBool::new(true));
    let max_seen = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (app, admin, license) = (app.clone(), f.admin.clone(), f.license_id.clone());
        let (racing, max_seen) = (racing.clone(), max_seen.clone());
        tokio::spawn(async move {
            let mut samples = 0;
            while racing.load(Ordering::SeqCst) || samples < 3 {
                let n = app.in_use(&admin, &license).await;
                max_seen.fetch_max(n, Ordering::SeqCst);
                samples += 1;
            }
            samples
        })
    };

    // Act: 400 opens (4 instances per user), all at once.
    let mut set = JoinSet::new();
    for round in 0..4 {
        for (name, token) in &users {
            let (app, token, name, license) = (
                app.clone(),
                token.clone(),
                name.clone(),
                f.license_id.clone(),
            );
            set.spawn(async move {
                let a = app
                    .open(
                        &token,
                        &license,
                        &format!("{name}-pc"),
                        &format!("app-{round}"),
                    )
                    .await;
                (name, a.status, a.code().to_owned())
            });
        }
    }
    let mut winners = Vec::new();
    let mut refused = 0;
    while let Some(r) = set.join_next().await {
        let (name, status, code) = r.unwrap();
        match status {
            StatusCode::CREATED => winners.push(name),
            StatusCode::CONFLICT => {
                assert_eq!(code, "no_seat_available");
                refused += 1
            }
            other => panic!("unexpected answer {other} {code}"),
        }
    }
    racing.store(false, Ordering::SeqCst);
    let samples = sampler.await.unwrap();

    // Assert: 10 winners: each reserved user holds its reserved seat, and exactly 8 sessions
    // sit in the shared pool (a reserved user's extra sessions count there too).
    assert_eq!(winners.len(), 10, "winners: {winners:?}");
    assert_eq!(refused, 390);
    for r in ["r0", "r1"] {
        assert!(
            winners.iter().any(|w| w == r),
            "{r} did not get its reserved seat"
        );
    }
    let reserved_seats = 2;
    assert_eq!(winners.len() - reserved_seats, 8);
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 10);
    assert!(max_seen.load(Ordering::SeqCst) <= 10);
    assert!(samples >= 3);
    let list = app
        .get(&format!("/v1/licenses/{}/sessions", f.license_id), &f.admin)
        .await;
    assert_eq!(list.body["sessions"].as_array().unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_reopens_of_one_instance_take_one_seat() {
    let app = Arc::new(spawn_app().await);
    let f = app.fixture(5, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let mut set = JoinSet::new();
    for _ in 0..50 {
        let (app, bob, license) = (app.clone(), bob.clone(), f.license_id.clone());
        set.spawn(async move { app.open(&bob, &license, "laptop", "cad").await });
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut created = 0;
    while let Some(r) = set.join_next().await {
        let a = r.unwrap();
        assert!(a.status.is_success(), "{:?}", a.body);
        if a.status == StatusCode::CREATED {
            created += 1;
        }
        ids.insert(a.id());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_session_of_a_deactivated_user_outlives_the_acknowledged_deactivation() {
    // Arrange: plenty of seats; bob opens from 200 client instances at once...
    let app = Arc::new(spawn_app().await);
    let f = app.fixture(1000, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let mut opens = JoinSet::new();
    for i in 0..200 {
        let (app, bob, license) = (app.clone(), bob.clone(), f.license_id.clone());
        opens.spawn(async move { app.open(&bob, &license, "pc", &format!("i{i}")).await });
    }

    // Act: ...while his admin deactivates him.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let deactivated = app
        .call(
            reqwest::Method::PUT,
            &format!("/v1/accounts/{}/users/bob", f.account_id),
            Some(&f.admin),
            Some(json!({"kind": "interactive", "active": false})),
        )
        .await;
    let held_at_ack = app
        .get(
            &format!("/v1/accounts/{}/users/bob/sessions", f.account_id),
            &f.admin,
        )
        .await;
    let mut granted = 0;
    while let Some(open) = opens.join_next().await {
        let open = open.unwrap();
        match open.status {
            StatusCode::CREATED => granted += 1,
            StatusCode::FORBIDDEN => assert_eq!(open.code(), "user_inactive", "{:?}", open.body),
            other => panic!("unexpected {other}: {:?}", open.body),
        }
    }

    // Assert: from the acknowledgement on, bob holds no session, whatever the opens answered.
    assert_eq!(deactivated.status, StatusCode::OK, "{:?}", deactivated.body);
    assert_eq!(
        held_at_ack.body["sessions"],
        json!([]),
        "at the acknowledgement"
    );
    let held = app
        .get(
            &format!("/v1/accounts/{}/users/bob/sessions", f.account_id),
            &f.admin,
        )
        .await;
    assert_eq!(
        held.body["sessions"],
        json!([]),
        "after every open answered"
    );
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 0);
    eprintln!("{granted} opens were granted before the deactivation, and ended by it");
}
