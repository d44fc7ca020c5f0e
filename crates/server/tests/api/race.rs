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
