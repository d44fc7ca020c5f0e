//! PostgreSQL's live counters (migration 0007) stay exact: opens, overdraft opens, logouts from
//! other nodes, a revoke of every session, a node killed with transactions in flight, and the
//! fold of a dead node's counter rows; at every step the sums equal a count of the sessions.
//! The migration counts the sessions of a database an earlier version left.

use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;

use crate::pg::*;
use crate::support::BIN;

/// The schema as version 5 left it.
const BEFORE: [&str; 5] = [
    include_str!("../../../store/migrations/postgres/0001_init.sql"),
    include_str!("../../../store/migrations/postgres/0002_models.sql"),
    include_str!("../../../store/migrations/postgres/0003_queue.sql"),
    include_str!("../../../store/migrations/postgres/0004_usernames.sql"),
    include_str!("../../../store/migrations/postgres/0005_mass_ends.sql"),
];

fn open_body(license: &str, device: &str, instance: &str) -> Value {
    json!({"license_id": license, "device_id": device, "instance_id": instance})
}

/// Opens `n` instances for `token`, round-robin over `urls`; answers the sessions granted
/// (id, node index) and how many were refused.
async fn open_many(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    license: &str,
    prefix: &str,
    n: usize,
) -> (Vec<(String, usize)>, usize) {
    let mut granted = Vec::new();
    let mut refused = 0;
    for i in 0..n {
        let node = i % urls.len();
        let (s, b) = call(
            http,
            Method::POST,
            format!("{}/v1/sessions", urls[node]),
            token,
            Some(open_body(license, &format!("{prefix}-d{i}"), "app")),
        )
        .await
        .unwrap();
        match s {
            StatusCode::CREATED => granted.push((b["id"].as_str().unwrap().to_owned(), node)),
            StatusCode::CONFLICT => refused += 1,
            other => panic!("open answered {other}: {b}"),
        }
    }
    (granted, refused)
}

/// Live rows under their license's floor (revoked or expired in bulk, not ended yet).
const UNDER_FLOOR: &str = "SELECT count(*) FROM sessions s JOIN licenses l ON l.id = s.license_id
     WHERE s.ended_at IS NULL AND s.seq < l.end_below";

/// The counter rows of connections that are gone (what a fold still has to take).
const UNFOLDED_ROWS: &str = "SELECT count(*) FROM license_live c
     WHERE shard <> 0 AND NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(c.shard))";

/// Asks `count` (a `SELECT count(*)`) until it answers 0, for at most 30 s (`what` did not
/// happen otherwise).
async fn until_none(db_url: &str, count: &str, what: &str) {
    let mut conn = sqlx::PgConnection::connect(db_url).await.unwrap();
    let started = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(count)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    conn.close().await.ok();
}

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_counts_stay_exact_across_nodes_a_revoke_a_kill_and_a_fold() {
    let Some(db) = TestDb::create("live counts").await else {
        return;
    };
    let _slot = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(&db.url, dir.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let http = http();
    // Arrange: 10 seats and 2 of overdraft.
    let s = setup(
        &http,
        &urls[0],
        json!({"product": "cad", "model": "concurrent_sessions", "seats": 10,
               "overdraft_seats": 2}),
    )
    .await;
    let alice = s.user(&http, &urls[0], "alice").await;

    // Act 1: 15 opens over the three nodes: 10 seats, 2 overdraft, 3 refused.
    let (granted, refused) = open_many(&http, &urls, &alice, &s.license, "a", 15).await;
    assert_eq!((granted.len(), refused), (12, 3));
    db.assert_live_counts_exact().await;
    assert_eq!(s.in_use(&http, &urls[2]).await, 12);

    // Act 2: 5 logouts, each on another node than the one that opened the session.
    for (id, node) in granted.iter().take(5) {
        let (st, b) = call(
            &http,
            Method::DELETE,
            format!("{}/v1/sessions/{id}", urls[(node + 1) % 3]),
            &alice,
            None,
        )
        .await
        .unwrap();
        assert!(st.is_success(), "{b}");
    }
    db.assert_live_counts_exact().await;
    assert_eq!(s.in_use(&http, &urls[0]).await, 7);

    // Act 3: every session revoked at once (a floor), then 4 new ones above it.
    let (st, b) = call(
        &http,
        Method::DELETE,
        format!("{}/v1/licenses/{}/sessions", urls[1], s.license),
        &s.admin,
        None,
    )
    .await
    .unwrap();
    assert_eq!((st, b), (StatusCode::OK, json!({"revoked": 7})));
    assert_eq!(s.in_use(&http, &urls[0]).await, 0);
    // The reapers end the revoked rows in bulk, counting them in the same statement (migration
    // 0013): once none is left live under the floor, the counters are still exact.
    until_none(&db.url, UNDER_FLOOR, "the revoked sessions were not ended").await;
    db.assert_live_counts_exact().await;
    let (after, _) = open_many(&http, &urls, &alice, &s.license, "b", 4).await;
    assert_eq!(after.len(), 4);
    assert_eq!(s.in_use(&http, &urls[2]).await, 4);
    db.assert_live_counts_exact().await;

    // Act 4: node 0 dies; its connections (and their counter rows' shards) are gone. The
    // others open and close meanwhile.
    nodes[0].kill9();
    let alive = &urls[1..];
    let (more, _) = open_many(&http, alive, &alice, &s.license, "c", 3).await;
    assert_eq!(more.len(), 3);
    db.assert_live_counts_exact().await;

    // Assert: within a fold round or two, no counter row of a gone connection is left, and the
    // sums are still exact (and what the API answers).
    until_none(
        &db.url,
        UNFOLDED_ROWS,
        "the rows of the killed node's connections were not folded",
    )
    .await;
    db.assert_live_counts_exact().await;
    assert_eq!(s.in_use(&http, &urls[1]).await, 7);
    drop(nodes);
    db.drop_db().await;
}

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test]
async fn migrating_counts_the_live_sessions_an_earlier_version_left() {
    let Some(db) = TestDb::create("live counts migration").await else {
        return;
    };
    // Arrange: schema version 5 with a license under a revoke's floor (seq 10) still being
    // drained: two sessions under it, three above (one overdraft), two ended.
    let mut conn = db.at_version(&BEFORE).await;
    sqlx::raw_sql(
        "INSERT INTO accounts VALUES ('a1', 'Acme', 0);
         INSERT INTO licenses (id, account_id, model, terms, created_at, end_below, end_pending)
           VALUES ('l1', 'a1', 'concurrent_sessions', '{}', 0, 10, true),
                  ('l2', 'a1', 'concurrent_sessions', '{}', 0, 0, false);
         INSERT INTO sessions (id, license_id, username, kind, device_id, instance_id,
                               opened_at, expires_at, ended_at, overdraft, seq) VALUES
           ('s1', 'l1', 'u', 'interactive', 'd1', 'x', 0, 100, NULL, false, 3),
           ('s2', 'l1', 'u', 'interactive', 'd2', 'x', 0, 100, NULL, true, 4),
           ('s3', 'l1', 'u', 'interactive', 'd3', 'x', 0, 100, NULL, false, 11),
           ('s4', 'l1', 'u', 'interactive', 'd4', 'x', 0, 100, NULL, true, 12),
           ('s5', 'l1', 'u', 'interactive', 'd5', 'x', 0, 100, NULL, false, 13),
           ('s6', 'l1', 'u', 'interactive', 'd6', 'x', 0, 100, 50, false, 14),
           ('s7', 'l2', 'u', 'interactive', 'd7', 'x', 0, 100, 50, false, 15);",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    // Act
    let out = tokio::process::Command::new(BIN)
        .args(["migrate", "--database-url", &db.url])
        .env("LEASEHOLD_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // Assert: l1 has 3 in use (1 overdraft) and 5 live; l2 none.
    let sums: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT l.id,
                (SELECT COALESCE(sum(live), 0)::int8 FROM license_live c
                 WHERE c.license_id = l.id AND c.epoch = l.end_below),
                (SELECT COALESCE(sum(overdraft), 0)::int8 FROM license_live c
                 WHERE c.license_id = l.id AND c.epoch = l.end_below),
                (SELECT COALESCE(sum(live), 0)::int8 FROM license_live c WHERE c.license_id = l.id)
         FROM licenses l ORDER BY l.id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        sums,
        [("l1".to_owned(), 3, 1, 5), ("l2".to_owned(), 0, 0, 0)]
    );
    conn.close().await.ok();
    db.assert_live_counts_exact().await;
    db.drop_db().await;
}
