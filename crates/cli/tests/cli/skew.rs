//! Clock skew between PostgreSQL nodes: session times are judged by the database's clock, so a
//! node whose wall clock is 2 h ahead (libfaketime) neither ends the sessions it heartbeats nor
//! gives the sessions it opens 2 h of extra life.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::pg::*;

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test]
async fn a_node_two_hours_ahead_neither_ends_nor_extends_sessions() {
    let _one = exclusive().await;
    let Some(db) = TestDb::create("a_node_two_hours_ahead_neither_ends_nor_extends_sessions").await
    else {
        return;
    };
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "needs Debian's faketime package (apt-get install faketime)"
    );
    // Arrange: node A on time, node B two hours ahead; 4 s inactivity timeout.
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::spawn(Some(&db.url), &dir.path().join("a"), Some(ROOT));
    let mut b = Node::spawn_with_env(
        Some(&db.url),
        &dir.path().join("b"),
        Some(ROOT),
        &[
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME", "+2h"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    a.ready().await;
    b.ready().await;
    let http = http();
    let s = setup(
        &http,
        &a.url,
        json!({"product": "cad", "model": "concurrent_sessions", "seats": 5, "inactivity_timeout_secs": 4}),
    )
    .await;
    let bob = s.user(&http, &a.url, "bob").await;
    let open = |node: String, instance: &'static str| {
        let (http, bob, license) = (http.clone(), bob.clone(), s.license.clone());
        async move {
            let (st, body) = call(
                &http,
                Method::POST,
                format!("{node}/v1/sessions"),
                &bob,
                Some(json!({"license_id": license, "device_id": "pc", "instance_id": instance})),
            )
            .await
            .unwrap();
            assert_eq!(st, StatusCode::CREATED, "{body}");
            body
        }
    };

    // Act 1: a session opened on A, heartbeated through B for 6 s.
    let busy = open(a.url.clone(), "busy").await;
    let busy_id = busy["id"].as_str().unwrap().to_owned();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (st, body) = call(
            &http,
            Method::POST,
            format!("{}/v1/sessions/{busy_id}/heartbeat", b.url),
            &bob,
            None,
        )
        .await
        .unwrap();
        // Assert: B's clock does not end it.
        assert_eq!(
            st,
            StatusCode::OK,
            "heartbeat through the skewed node: {body}"
        );
    }

    // Act 2: an idle session opened on B.
    let idle = open(b.url.clone(), "idle").await;
    let opened = time::OffsetDateTime::parse(
        idle["opened_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    // Assert: stamped with the database's time, not B's (2 h ahead)...
    #[allow(clippy::disallowed_methods)] // the test's own reading of the (shared) wall clock
    let skew = (opened - time::OffsetDateTime::now_utc())
        .whole_seconds()
        .abs();
    assert!(skew < 60, "opened_at is {skew} s off the database's clock");
    // ...and reclaimed after its 4 s, not 2 h later.
    let idle_id = idle["id"].as_str().unwrap().to_owned();
    let live = |node: String| {
        let (http, admin, license) = (http.clone(), s.admin.clone(), s.license.clone());
        async move {
            let (st, body) = call(
                &http,
                Method::GET,
                format!("{node}/v1/licenses/{license}/sessions"),
                &admin,
                None,
            )
            .await
            .unwrap();
            assert_eq!(st, StatusCode::OK);
            body["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert!(live(a.url.clone()).await.contains(&idle_id));
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        !live(a.url.clone()).await.contains(&idle_id),
        "the idle session opened on the skewed node outlived its timeout"
    );
    drop((a, b));
    db.drop_db().await;
}
