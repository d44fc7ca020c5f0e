//! Borrowing on PostgreSQL with real `leasehold serve` nodes: borrows spread over three nodes
//! racing for the last borrowable seats (the limit holds across nodes, and a reclaim on one
//! node is listed and frees the limit on the others), and `copy-to-postgres` carrying live
//! borrows and revoked leases over. Each test runs in its own fresh database.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::pg::*;

/// A borrow until `secs` from now (by the test's wall clock).
fn borrow_body(license: &str, instance: &str, secs: i64) -> Value {
    #[allow(clippy::disallowed_methods)] // the test's own reading of the (shared) wall clock
    let now = time::OffsetDateTime::now_utc();
    let until = (now + time::Duration::seconds(secs))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    json!({"license_id": license, "device_id": "laptop", "instance_id": instance,
           "borrow_until": until})
}

async fn usage(http: &reqwest::Client, node: &str, s: &Setup) -> Value {
    let (st, l) = call(
        http,
        Method::GET,
        format!("{node}/v1/licenses/{}", s.license),
        &s.admin,
        None,
    )
    .await
    .unwrap();
    assert_eq!(st, StatusCode::OK, "{l}");
    l["usage"].clone()
}

async fn revoked(http: &reqwest::Client, node: &str, s: &Setup) -> Vec<Value> {
    let (st, l) = call(
        http,
        Method::GET,
        format!("{node}/v1/licenses/{}/revoked-leases", s.license),
        &s.admin,
        None,
    )
    .await
    .unwrap();
    assert_eq!(st, StatusCode::OK, "{l}");
    l["leases"].as_array().unwrap().clone()
}

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn borrows_over_three_nodes_racing_for_the_last_borrowable_seats_never_exceed_the_limit() {
    let Some(db) = TestDb::create("borrow race").await else {
        return;
    };
    let _slot = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    // Arrange: 10 seats, 2 may be borrowed; 60 users.
    let nodes = cluster(&db.url, dir.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let http = http();
    let s = setup(
        &http,
        &urls[0],
        json!({"product": "cad", "model": "concurrent_sessions", "seats": 10,
               "max_borrow_days": 3, "max_borrowed_seats": 2}),
    )
    .await;
    let mut tokens = Vec::new();
    for i in 0..60 {
        tokens.push(s.user(&http, &urls[i % 3], &format!("u{i}")).await);
    }

    // Act: they all borrow at once, spread over the nodes.
    let mut set = JoinSet::new();
    for (i, token) in tokens.iter().cloned().enumerate() {
        let (http, node, license) = (http.clone(), urls[i % 3].clone(), s.license.clone());
        set.spawn(async move {
            call(
                &http,
                Method::POST,
                format!("{node}/v1/sessions"),
                &token,
                Some(borrow_body(&license, &format!("b{i}"), 3600)),
            )
            .await
            .unwrap()
        });
    }
    let mut granted = Vec::new();
    while let Some(done) = set.join_next().await {
        let (status, body) = done.unwrap();
        match status {
            StatusCode::CREATED => granted.push(body),
            StatusCode::CONFLICT => {
                assert_eq!(body["error"]["code"], "borrow_limit_reached", "{body}")
            }
            other => panic!("{other}: {body}"),
        }
    }

    // Assert: exactly the limit, seen alike from every node.
    assert_eq!(granted.len(), 2);
    for node in &urls {
        let u = usage(&http, node, &s).await;
        assert_eq!(
            (u["in_use"].as_u64(), u["borrowed"].as_u64()),
            (Some(2), Some(2)),
            "{u}"
        );
    }
    // A reclaim on one node frees the limit on another and is listed on the third.
    let id = granted[0]["id"].as_str().unwrap();
    let (st, _) = call(
        &http,
        Method::DELETE,
        format!("{}/v1/sessions/{id}", urls[0]),
        &s.admin,
        None,
    )
    .await
    .unwrap();
    assert_eq!(st, StatusCode::NO_CONTENT);
    let listed = revoked(&http, &urls[2], &s).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["session_id"], id);
    assert_eq!(listed[0]["reason"], "reclaimed");
    let (st, b) = call(
        &http,
        Method::POST,
        format!("{}/v1/sessions", urls[1]),
        &tokens[59],
        Some(borrow_body(&s.license, "again", 3600)),
    )
    .await
    .unwrap();
    assert_eq!(st, StatusCode::CREATED, "{b}");
    drop(nodes);
    db.drop_db().await;
}

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copy_to_postgres_carries_live_borrows_and_revoked_leases() {
    let Some(db) = TestDb::create("borrow copy").await else {
        return;
    };
    let _slot = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite_dir = dir.path().join("sqlite");
    let http = http();

    // Arrange: on SQLite, two borrows; the admin reclaims one.
    let mut old = Node::spawn(None, &sqlite_dir, Some(ROOT));
    old.ready().await;
    let s = setup(
        &http,
        &old.url,
        json!({"product": "cad", "model": "concurrent_sessions", "seats": 3,
               "max_borrow_days": 3}),
    )
    .await;
    let dora = s.user(&http, &old.url, "dora").await;
    let mut ids = Vec::new();
    for instance in ["kept", "lost"] {
        let (st, b) = call(
            &http,
            Method::POST,
            format!("{}/v1/sessions", old.url),
            &dora,
            Some(borrow_body(&s.license, instance, 86_400)),
        )
        .await
        .unwrap();
        assert_eq!(st, StatusCode::CREATED, "{b}");
        ids.push(b["id"].as_str().unwrap().to_owned());
    }
    let (st, _) = call(
        &http,
        Method::DELETE,
        format!("{}/v1/sessions/{}", old.url, ids[1]),
        &s.admin,
        None,
    )
    .await
    .unwrap();
    assert_eq!(st, StatusCode::NO_CONTENT);
    old.kill9();

    // Act
    let out = std::process::Command::new(crate::support::BIN)
        .args(["copy-to-postgres", "--data-dir"])
        .arg(&sqlite_dir)
        .args(["--database-url", &db.url])
        .env("LEASEHOLD_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut new = Node::spawn(Some(&db.url), &dir.path().join("pg-node"), None);
    new.ready().await;

    // Assert: the kept borrow holds its seat, the reclaimed one is listed.
    let u = usage(&http, &new.url, &s).await;
    assert_eq!(
        (u["in_use"].as_u64(), u["borrowed"].as_u64()),
        (Some(1), Some(1)),
        "{u}"
    );
    let listed = revoked(&http, &new.url, &s).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["session_id"], ids[1].as_str());
    assert_eq!(listed[0]["reason"], "reclaimed");
    drop(new);
    db.drop_db().await;
}
