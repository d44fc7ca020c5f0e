//! Heartbeats held in a node's memory on PostgreSQL (`store/src/postgres/hold.rs`), raced with
//! several real nodes: a session heartbeated on one node only is never reaped by the others'
//! reapers while its latest expiry waits in that node's memory; an end decided on another
//! node is answered by the holding node within the bound (2 s); and a node whose writes fail
//! stops answering from memory within that bound (503), then resumes by itself; a session is
//! held by the node that opened it from its first heartbeat.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::pg::*;

/// The bound `hold.rs` documents (`HOLD_TRUST_MS`), and slack for a loaded test machine.
const BOUND: Duration = Duration::from_millis(2_000);
const SLACK: Duration = Duration::from_millis(1_000);

fn open_body(license: &str, instance: &str) -> Value {
    json!({"license_id": license, "device_id": "pc", "instance_id": instance})
}

async fn open(http: &reqwest::Client, node: &str, token: &str, license: &str, k: usize) -> String {
    let (st, b) = call(
        http,
        Method::POST,
        format!("{node}/v1/sessions"),
        token,
        Some(open_body(license, &format!("app-{k}"))),
    )
    .await
    .unwrap();
    assert_eq!(st, StatusCode::CREATED, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

/// One node that reaches PostgreSQL through a proxy the test cuts, a license of 5 seats and
/// alice's token: the node, the proxy, the node's URL, the setup, the token.
async fn one_node_behind_proxy(
    db: &TestDb,
    dir: &std::path::Path,
) -> (Vec<Node>, Proxy, String, Setup, String) {
    let (via_proxy, target) = with_port(&db.url, 0);
    let proxy = Proxy::start(target).await;
    let (via_proxy, _) = with_port(&via_proxy, proxy.port);
    let nodes = cluster(&via_proxy, dir, 1).await;
    let url = nodes[0].url.clone();
    let http = http();
    let s = setup(
        &http,
        &url,
        json!({"product": "cad", "model": "concurrent_sessions", "seats": 5}),
    )
    .await;
    let token = s.user(&http, &url, "alice").await;
    (nodes, proxy, url, s, token)
}

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_heartbeated_on_one_node_are_never_reaped_by_the_others() {
    let Some(db) = TestDb::create("held heartbeats vs reapers").await else {
        return;
    };
    let _slot = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(&db.url, dir.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let http = http();
    // A one-second inactivity timeout: a stored expiry a flush behind is in the past already.
    let s = setup(
        &http,
        &urls[0],
        json!({"product": "cad", "model": "concurrent_sessions", "seats": 40,
               "inactivity_timeout_secs": 1}),
    )
    .await;
    let token = s.user(&http, &urls[0], "alice").await;
    let mut ids = Vec::new();
    for k in 0..20 {
        ids.push(open(&http, &urls[k % 3], &token, &s.license, k).await);
    }

    // Act: for 8 s (eight timeouts) the sessions are heartbeated on node 0 only, every 250 ms,
    // while the reapers of nodes 1 and 2 (and 0) run.
    let until = Instant::now() + Duration::from_secs(8);
    let mut beats = 0;
    while Instant::now() < until {
        for id in &ids {
            let (st, b) = beat(&http, &urls[0], &token, id).await;
            assert_eq!(st, StatusCode::OK, "heartbeat {beats} of {id}: {b}");
            beats += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Assert: none was reaped or counted free, on any node.
    for u in &urls {
        assert_eq!(s.in_use(&http, u).await, 20, "in use as seen by {u}");
    }
    let audit = s.audit(&http, &urls[1]).await;
    assert!(
        !audit.iter().any(|e| e["event"] == "ended"),
        "no session ended while heartbeated: {audit:?}"
    );

    // Act: the heartbeats stop. Assert: every session is reclaimed (exactly once), within the
    // timeout plus the lag the reapers allow (3 s) and a margin.
    let deadline = Instant::now() + Duration::from_secs(1 + 3 + 3);
    while s.in_use(&http, &urls[2]).await > 0 {
        assert!(Instant::now() < deadline, "sessions were not reclaimed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let audit = s.audit(&http, &urls[1]).await;
    let ended = audit.iter().filter(|e| e["event"] == "ended").count();
    assert_eq!(ended, ids.len(), "one end per session");
    // And an expired session never comes back, whichever node is asked.
    for (k, id) in ids.iter().take(3).enumerate() {
        let (st, b) = beat(&http, &urls[k], &token, id).await;
        assert_eq!(st, StatusCode::GONE, "{b}");
    }
    drop(nodes);
    db.assert_live_counts_exact().await;
    db.drop_db().await;
}

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_end_decided_on_another_node_is_answered_by_the_holding_node_within_the_bound() {
    let Some(db) = TestDb::create("held heartbeats vs ends").await else {
        return;
    };
    let _slot = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(&db.url, dir.path(), 2).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let http = http();
    let s = setup(
        &http,
        &urls[0],
        json!({"product": "cad", "model": "concurrent_sessions", "seats": 10}),
    )
    .await;
    let token = s.user(&http, &urls[0], "alice").await;
    let revoked = open(&http, &urls[0], &token, &s.license, 1).await;
    let mass = open(&http, &urls[0], &token, &s.license, 2).await;
    // Arrange: both held by node 0 (heartbeated there for two flushes).
    for _ in 0..10 {
        for id in [&revoked, &mass] {
            let (st, b) = beat(&http, &urls[0], &token, id).await;
            assert_eq!(st, StatusCode::OK, "{b}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Act: node 1 revokes one session. Assert: node 0 answers it ended within the bound.
    let (st, b) = call(
        &http,
        Method::DELETE,
        format!("{}/v1/sessions/{revoked}", urls[1]),
        &s.admin,
        None,
    )
    .await
    .unwrap();
    assert!(st.is_success(), "{b}");
    let (took, st, b) = until_refused(&http, &urls[0], &token, &revoked, BOUND + SLACK).await;
    assert_eq!(st, StatusCode::GONE, "{b}");
    eprintln!("revoke on another node answered after {took:?}");

    // Act: node 1 ends every session of the license (a mass end: a floor, no row update first).
    let (st, b) = call(
        &http,
        Method::DELETE,
        format!("{}/v1/licenses/{}/sessions", urls[1], s.license),
        &s.admin,
        None,
    )
    .await
    .unwrap();
    assert!(st.is_success(), "{b}");
    let (took, st, b) = until_refused(&http, &urls[0], &token, &mass, BOUND + SLACK).await;
    assert_eq!(st, StatusCode::GONE, "{b}");
    eprintln!("mass end on another node answered after {took:?}");
    // Never live again.
    for u in &urls {
        let (st, b) = beat(&http, u, &token, &mass).await;
        assert_eq!(st, StatusCode::GONE, "{b}");
    }
    drop(nodes);
    db.drop_db().await;
}

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_cannot_write_stops_answering_heartbeats_within_the_bound() {
    let Some(db) = TestDb::create("held heartbeats vs outage").await else {
        return;
    };
    let _slot = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let (nodes, proxy, url, s, token) = one_node_behind_proxy(&db, dir.path()).await;
    let http = http();
    let id = open(&http, &url, &token, &s.license, 1).await;
    for _ in 0..8 {
        let (st, b) = beat(&http, &url, &token, &id).await;
        assert_eq!(st, StatusCode::OK, "{b}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Act: the database goes away. Assert: heartbeats answered from memory stop within the
    // bound, then every heartbeat is 503 store_unavailable.
    proxy.cut();
    let (took, st, b) = until_refused(&http, &url, &token, &id, BOUND + SLACK).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(b["error"]["code"], "store_unavailable", "{b}");
    eprintln!("heartbeats refused {took:?} after the database went away");
    for _ in 0..5 {
        let (st, b) = beat(&http, &url, &token, &id).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Act: it comes back. Assert: heartbeats resume by themselves and the session is live.
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, b) = beat(&http, &url, &token, &id).await;
        if st == StatusCode::OK {
            break;
        }
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{b}");
        assert!(Instant::now() < deadline, "heartbeats did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s.in_use(&http, &url).await, 1);
    drop(nodes);
    drop(proxy);
    db.drop_db().await;
}

/// A session opened on a node is held there from its open: its first heartbeat on that node is
/// answered from memory (here while the database is unreachable), and the expiry answered is
/// written once the database is back.
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_heartbeat_on_the_opening_node_is_answered_from_memory() {
    use sqlx::Connection;
    let Some(db) = TestDb::create("held from the open").await else {
        return;
    };
    let _slot = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let (nodes, proxy, url, s, token) = one_node_behind_proxy(&db, dir.path()).await;
    let http = http();
    // The ends feed must have read once (memory answers only after its first read).
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let id = open(&http, &url, &token, &s.license, 1).await;

    // Act: the database goes away right after the open; the session's first heartbeat.
    proxy.cut();
    let (st, b) = beat(&http, &url, &token, &id).await;

    // Assert: answered from memory, slid.
    assert_eq!(st, StatusCode::OK, "{b}");
    let answered = b["expires_at"].as_str().unwrap().to_owned();

    // Act: the database comes back. Assert: the answered expiry is stored by a flush.
    proxy.restore();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let answered_ms =
        (time::OffsetDateTime::parse(&answered, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp_nanos()
            / 1_000_000) as i64;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT expires_at FROM sessions WHERE id = $1")
            .bind(&id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if stored >= answered_ms {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stored expiry {stored} never reached the answered {answered_ms}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s.in_use(&http, &url).await, 1);
    conn.close().await.ok();
    drop(nodes);
    drop(proxy);
    db.drop_db().await;
}

/// Migration 0012: no index of `sessions` covers `expires_at` (the reapers go by `reap_at`),
/// so a heartbeat flush's rewrite of it is a HOT update: no new index entries.
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test]
async fn a_flushed_expiry_is_a_hot_update_that_touches_no_index() {
    use sqlx::Connection;
    let Some(db) = TestDb::create("hot expiry").await else {
        return;
    };
    // Arrange: the schema as this binary migrates it, one live session.
    let out = tokio::process::Command::new(crate::support::BIN)
        .args(["migrate", "--database-url", &db.url])
        .env("LEASEHOLD_LOG", "off")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO accounts (id, name, created_at) VALUES ('a1', 'Acme', 0);
         INSERT INTO licenses (id, account_id, model, terms, created_at)
           VALUES ('l1', 'a1', 'concurrent_sessions', '{}', 0);
         INSERT INTO sessions (id, license_id, username, kind, device_id, instance_id,
                               opened_at, expires_at, reap_at)
           VALUES ('s1', 'l1', 'bob', 'interactive', 'pc', 'x', 0, 60000, 60000);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let covering: Vec<String> = sqlx::query_scalar(
        "SELECT i.indexrelid::regclass::text FROM pg_index i
         WHERE i.indrelid = 'sessions'::regclass
           AND (pg_get_indexdef(i.indexrelid) ~ 'expires_at'
                OR pg_get_expr(i.indpred, i.indrelid) ~ 'expires_at')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(covering.is_empty(), "indexes over expires_at: {covering:?}");

    // Act: a bulk expiry rewrite as the flush makes it (`flush.rs`), in a transaction that
    // reads its own counters.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(
        "UPDATE sessions s SET expires_at = GREATEST(s.expires_at, v.exp)
         FROM unnest($1::text[], $2::int8[]) AS v(id, exp) WHERE s.id = v.id",
    )
    .bind(vec!["s1".to_owned()])
    .bind(vec![120_000_i64])
    .execute(&mut *tx)
    .await
    .unwrap();
    let (updated, hot): (i64, i64) = sqlx::query_as(
        "SELECT pg_stat_get_xact_tuples_updated('sessions'::regclass),
                pg_stat_get_xact_tuples_hot_updated('sessions'::regclass)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Assert
    assert_eq!((updated, hot), (1, 1));
    conn.close().await.ok();
    db.drop_db().await;
}
