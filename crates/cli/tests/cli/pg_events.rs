//! Session events across real `leasehold serve` nodes on one PostgreSQL: a revoke (one session,
//! or every session of a license at once) decided on one node reaches the SDK whose stream is
//! held by another within 2 s, and a node whose LISTEN connection was cut still ends its
//! streams once it listens again.

use std::time::{Duration, Instant};

use leasehold_client::{Client, EndReason, LeaseGuard, LeaseStatus, LostReason};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection;

use crate::pg::*;

/// Waits until the guard's status is final (at most 5 s); answers it and how long it took.
async fn final_status(guard: &LeaseGuard) -> (LeaseStatus, Duration) {
    let started = Instant::now();
    let mut status = guard.subscribe();
    let status = tokio::time::timeout(Duration::from_secs(5), status.wait_for(|s| !s.is_active()))
        .await
        .expect("the seat was not reported lost in time")
        .unwrap()
        .clone();
    (status, started.elapsed())
}

fn revoked() -> LeaseStatus {
    LeaseStatus::Lost {
        reason: LostReason::Ended(EndReason::Revoked),
    }
}

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoke_on_one_node_reaches_the_sdk_streaming_from_another_within_two_seconds() {
    let Some(db) = TestDb::create("events across nodes").await else {
        return;
    };
    let _slot = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    // Arrange: two nodes; bob's guards stream from node 0 (default timeout: heartbeats every
    // 60 s), the admin acts on node 1.
    let nodes = cluster(&db.url, dir.path(), 2).await;
    let http = http();
    let s = setup(
        &http,
        &nodes[0].url,
        json!({"product": "cad", "model": "concurrent_sessions", "seats": 3}),
    )
    .await;
    let bob = Client::with_token(&nodes[0].url, s.user(&http, &nodes[0].url, "bob").await).unwrap();
    let one = bob.checkout(&s.license, "laptop", "cad-1").await.unwrap();
    let two = bob.checkout(&s.license, "laptop", "cad-2").await.unwrap();
    let three = bob.checkout(&s.license, "laptop", "cad-3").await.unwrap();
    assert_eq!(one.session().heartbeat_interval_secs, 60);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Act 1: one session revoked on node 1.
    let (status, body) = call(
        &http,
        Method::DELETE,
        format!("{}/v1/sessions/{}", nodes[1].url, one.session_id()),
        &s.admin,
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Assert 1: only that guard is lost, within 2 s.
    let (lost, took) = final_status(&one).await;
    assert_eq!(lost, revoked());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(two.is_active() && three.is_active());

    // Act 2: every session of the license revoked at once on node 1 (one event for all).
    let (status, body) = call(
        &http,
        Method::DELETE,
        format!("{}/v1/licenses/{}/sessions", nodes[1].url, s.license),
        &s.admin,
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked"], 2);

    // Assert 2
    for guard in [&two, &three] {
        let (lost, took) = final_status(guard).await;
        assert_eq!(lost, revoked());
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }
    db.drop_db().await;
}

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_listen_connection_was_cut_still_ends_its_streams() {
    let Some(db) = TestDb::create("events after a lost LISTEN").await else {
        return;
    };
    let _slot = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(&db.url, dir.path(), 2).await;
    let http = http();
    let s = setup(
        &http,
        &nodes[0].url,
        json!({"product": "cad", "model": "concurrent_sessions", "seats": 1}),
    )
    .await;
    let bob = Client::with_token(&nodes[0].url, s.user(&http, &nodes[0].url, "bob").await).unwrap();
    let guard = bob.checkout(&s.license, "laptop", "cad-1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Act: every node's LISTEN backend is terminated, and the session is revoked on node 1
    // at once (its NOTIFY may reach no listener).
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("SELECT pg_terminate_backend(pid) FROM nodes WHERE pid IS NOT NULL")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    let (status, body) = call(
        &http,
        Method::DELETE,
        format!("{}/v1/sessions/{}", nodes[1].url, guard.session_id()),
        &s.admin,
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Assert: node 0 listens again, wakes its streams, and the guard hears of the revoke
    // (long before its next heartbeat, a minute away).
    let (lost, took) = final_status(&guard).await;
    assert_eq!(lost, revoked());
    assert!(took < Duration::from_secs(4), "took {took:?}");
    db.drop_db().await;
}
