//! The connections busy batch lanes keep: an open lane and the point-read lanes hold on to
//! their pooled connection from one batch to the next while requests keep coming (no pool ping
//! per batch). PostgreSQL dropping every connection in the middle of that (a restart, an
//! operator's `pg_terminate_backend`) costs at most the requests in flight at that instant:
//! the lanes give a dead connection back and take fresh ones, and every request after answers.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::pg::{call, cluster, exclusive, http, setup, TestDb};

/// Clients opening and closing sessions without pause.
const CLIENTS: usize = 8;

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn busy_lanes_recover_when_postgresql_drops_every_connection_under_load() {
    let Some(db) = TestDb::create("kept connections").await else {
        return;
    };
    let _slot = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(&db.url, dir.path(), 1).await;
    let url = nodes[0].url.clone();
    let http = http();
    let s = setup(
        &http,
        &url,
        json!({"product": "cad", "model": "concurrent_sessions", "seats": 100}),
    )
    .await;
    let mut tokens = Vec::new();
    for i in 0..CLIENTS {
        tokens.push(s.user(&http, &url, &format!("user{i}")).await);
    }

    // Act: every client opens and closes sessions for 3 s; after 1 s, every backend of the
    // database is terminated.
    let started = Instant::now();
    let terminate_at = started + Duration::from_secs(1);
    let stop_at = started + Duration::from_secs(3);
    let mut clients = tokio::task::JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (http, url, license) = (http.clone(), url.clone(), s.license.clone());
        clients.spawn(async move {
            // (when it was asked, status) of every request
            let mut answers = Vec::new();
            let mut n = 0;
            while Instant::now() < stop_at {
                n += 1;
                let asked = Instant::now();
                let body = json!({"license_id": license, "device_id": format!("pc{i}"),
                                  "instance_id": format!("run{n}")});
                let (st, b) = call(
                    &http,
                    Method::POST,
                    format!("{url}/v1/sessions"),
                    &token,
                    Some(body),
                )
                .await
                .unwrap();
                answers.push((asked, st));
                if st == StatusCode::CREATED {
                    let id = b["id"].as_str().unwrap().to_owned();
                    let asked = Instant::now();
                    let (st, _) = call(
                        &http,
                        Method::DELETE,
                        format!("{url}/v1/sessions/{id}"),
                        &token,
                        None,
                    )
                    .await
                    .unwrap();
                    answers.push((asked, st));
                }
            }
            answers
        });
    }
    tokio::time::sleep_until(terminate_at.into()).await;
    db.admin_sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = '{}' AND pid <> pg_backend_pid()",
        db.name
    ))
    .await;
    let mut answers = Vec::new();
    while let Some(done) = clients.join_next().await {
        answers.extend(done.unwrap());
    }

    // Assert: the requests in flight at the drop may have failed (503), at most one per
    // client; every one asked a second after it answered.
    let ok = |st: StatusCode| st == StatusCode::CREATED || st == StatusCode::NO_CONTENT;
    let after: Vec<_> = answers
        .iter()
        .filter(|(at, _)| *at > terminate_at + Duration::from_secs(1))
        .collect();
    assert!(!after.is_empty(), "no request a second after the drop");
    let failed_after: Vec<_> = after.iter().filter(|(_, st)| !ok(*st)).collect();
    assert!(
        failed_after.is_empty(),
        "failed after the drop: {failed_after:?}"
    );
    let failed: Vec<_> = answers.iter().filter(|(_, st)| !ok(*st)).collect();
    assert!(failed.len() <= CLIENTS, "failed: {failed:?}");
    for (_, st) in &failed {
        assert_eq!(*st, StatusCode::SERVICE_UNAVAILABLE);
    }
    // A session whose open or logout failed in flight may be live: no other one is.
    assert!(s.in_use(&http, &url).await <= failed.len() as u64);
    drop(nodes);
    db.assert_live_counts_exact().await;
    db.drop_db().await;
}
