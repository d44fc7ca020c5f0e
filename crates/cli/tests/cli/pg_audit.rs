//! The audit log's horizon on PostgreSQL (`store/src/postgres/audit.rs`) waits only for this
//! database's writers: a transaction left open in another database of the same server (a
//! neighbour's long report, a stuck migration) does not hold up a node's audit pages.

use sqlx::Connection;

use reqwest::{Method, StatusCode};

use crate::pg::{base_url, call, http, setup, Node, TestDb, ROOT};

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test]
async fn a_transaction_open_in_another_database_does_not_hold_up_the_audit_log() {
    let Some(db) = TestDb::create("audit horizon").await else {
        return;
    };
    let other = base_url("audit horizon").unwrap();
    // Arrange: another database of the server with a writing transaction left open (it has
    // a transaction id, so it is in every snapshot of the cluster), then a fresh node.
    let mut neighbour = sqlx::PgConnection::connect(&other).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT pg_current_xact_id();")
        .execute(&mut neighbour)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::spawn(Some(&db.url), dir.path(), Some(ROOT));
    node.ready().await;
    let http = http();
    let s = setup(
        &http,
        &node.url,
        serde_json::json!({"product": "cad", "model": "concurrent_sessions", "seats": 2}),
    )
    .await;

    // Act: the node's first audit page. Every horizon this node looked for so far had the
    // neighbour in its snapshot, so there is no earlier one to fall back on.
    let (status, page) = call(
        &http,
        Method::GET,
        format!("{}/v1/audit", node.url),
        &s.admin,
        None,
    )
    .await
    .unwrap();

    // Assert: answered (it used to wait 2 s for the neighbour, then answer 503), up to the
    // newest event: the license's creation is in it.
    assert_eq!(status, StatusCode::OK, "{page}");
    let events = page["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["event"] == "license_created"),
        "{events:?}"
    );

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut neighbour)
        .await
        .unwrap();
    neighbour.close().await.ok();
    node.kill9();
    db.drop_db().await;
}
