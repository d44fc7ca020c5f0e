//! Dark sites on PostgreSQL with several processes: delegations and opens racing for the seats
//! of one license over three `leasehold serve` nodes never over-allocate it.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::pg::*;

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delegations_and_opens_over_three_nodes_never_over_allocate() {
    let Some(db) = TestDb::create("delegation race").await else {
        return;
    };
    let _slot = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(&db.url, dir.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let http = http();
    let s = setup(
        &http,
        &urls[0],
        json!({"product": "cad", "model": "concurrent_sessions", "seats": 10}),
    )
    .await;
    // A local server (SQLite) asks for seats.
    let mut local = Node::spawn(None, &dir.path().join("local"), Some(ROOT));
    local.ready().await;
    let (status, request) = call(
        &http,
        Method::POST,
        format!("{}/v1/delegation-requests", local.url),
        ROOT,
        Some(json!({"site": "plant-7"})),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{request}");
    let mut tokens = Vec::new();
    for i in 0..30 {
        tokens.push(s.user(&http, &urls[i % 3], &format!("user{i}")).await);
    }

    // Act: 30 opens and 8 delegations of 2 seats, all at once, round-robin over the nodes.
    let mut set: JoinSet<(&'static str, StatusCode, Value)> = JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (http, node, license) = (http.clone(), urls[i % 3].clone(), s.license.clone());
        set.spawn(async move {
            let (status, body) = call(
                &http,
                Method::POST,
                format!("{node}/v1/sessions"),
                &token,
                Some(json!({"license_id": license, "device_id": "pc", "instance_id": "app"})),
            )
            .await
            .unwrap();
            ("open", status, body)
        });
    }
    #[allow(clippy::disallowed_methods)] // the test's own reading of the (shared) wall clock
    let expires_at = (time::OffsetDateTime::now_utc() + time::Duration::days(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for i in 0..8 {
        let (http, node) = (http.clone(), urls[i % 3].clone());
        let (admin, license) = (s.admin.clone(), s.license.clone());
        let body = json!({"request": request["request"], "seats": 2,
                          "expires_at": expires_at});
        set.spawn(async move {
            let (status, body) = call(
                &http,
                Method::POST,
                format!("{node}/v1/licenses/{license}/delegations"),
                &admin,
                Some(body),
            )
            .await
            .unwrap();
            ("delegation", status, body)
        });
    }
    let (mut opened, mut delegated) = (0u64, 0u64);
    while let Some(r) = set.join_next().await {
        let (what, status, body) = r.unwrap();
        match (what, status) {
            ("open", StatusCode::CREATED) => opened += 1,
            ("delegation", StatusCode::CREATED) => delegated += 2,
            ("open", StatusCode::CONFLICT) => {
                assert_eq!(body["error"]["code"], "no_seat_available", "{body}")
            }
            ("delegation", StatusCode::CONFLICT) => {
                assert_eq!(body["error"]["code"], "not_enough_free_seats", "{body}")
            }
            other => panic!("unexpected answer {other:?}: {body}"),
        }
    }

    // Assert: never more than the 10 seats between sessions and delegations, and every node
    // agrees with what was answered.
    assert!(
        opened + delegated <= 10,
        "{opened} opened + {delegated} delegated"
    );
    assert!(
        opened + delegated >= 9,
        "{opened} opened + {delegated} delegated"
    );
    for u in &urls {
        let (_, l) = call(
            &http,
            Method::GET,
            format!("{u}/v1/licenses/{}", s.license),
            &s.admin,
            None,
        )
        .await
        .unwrap();
        assert_eq!(l["usage"]["in_use"].as_u64(), Some(opened), "{l}");
        assert_eq!(l["usage"]["delegated"].as_u64(), Some(delegated), "{l}");
    }
    drop(nodes);
    drop(local);
    db.assert_live_counts_exact().await;
    db.drop_db().await;
}
