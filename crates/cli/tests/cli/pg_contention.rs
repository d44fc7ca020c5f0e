//! Admin writes that lose a race on PostgreSQL run again instead of failing: with every
//! transaction `SERIALIZABLE` (what CockroachDB and YugabyteDB give by default), two nodes
//! taking concurrent license patches and user activations on one license answer every one
//! (a loser of a round gets `40001`, is rolled back and runs again), and nothing is lost. The
//! nodes start at once, so their startup (migrations, `nodes` rows, the shared signing key)
//! races too, and must run again rather than exit.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::pg::{call, cluster, exclusive, http, setup, TestDb};

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test]
async fn admin_writes_that_lose_a_serialization_race_run_again_instead_of_failing() {
    let Some(db) = TestDb::create("contention").await else {
        return;
    };
    // Arrange: every transaction of the nodes SERIALIZABLE; two nodes; a registered-users
    // license with room for every user below.
    db.admin_sql(&format!(
        "ALTER DATABASE {} SET default_transaction_isolation = 'serializable'",
        db.name
    ))
    .await;
    let _slot = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(&db.url, dir.path(), 2).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let http = http();
    let s = setup(
        &http,
        &urls[0],
        json!({"product": "cad", "model": "registered_users", "seats": 50}),
    )
    .await;
    const WRITERS: usize = 12;
    for i in 0..WRITERS {
        s.user(&http, &urls[0], &format!("user{i}")).await;
    }

    // Act: patches of the license and activations on it, all at once, over both nodes (each
    // takes the license's row lock: every round has one winner, the others get 40001).
    let mut calls = Vec::new();
    for i in 0..WRITERS {
        let node = urls[i % 2].clone();
        let (client, admin, license) = (http.clone(), s.admin.clone(), s.license.clone());
        calls.push(tokio::spawn(async move {
            call(
                &client,
                Method::PATCH,
                format!("{node}/v1/licenses/{license}"),
                &admin,
                Some(json!({"inactivity_timeout_secs": 600 + i})),
            )
            .await
            .unwrap()
        }));
        let node = urls[(i + 1) % 2].clone();
        let (client, admin, license) = (http.clone(), s.admin.clone(), s.license.clone());
        calls.push(tokio::spawn(async move {
            call(
                &client,
                Method::PUT,
                format!("{node}/v1/licenses/{license}/users/user{i}"),
                &admin,
                Some(json!({"active": true})),
            )
            .await
            .unwrap()
        }));
    }
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }

    // Assert: every write answered and kept: WRITERS active users, one `license_updated` event per
    // patch, the license's timeout one of the patched values.
    for (status, body) in &answers {
        assert!(status.is_success(), "{status} {body}");
    }
    let (st, users) = call(
        &http,
        Method::GET,
        format!("{}/v1/licenses/{}/users", urls[1], s.license),
        &s.admin,
        None,
    )
    .await
    .unwrap();
    assert_eq!(st, StatusCode::OK, "{users}");
    let active = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["active"] == true)
        .count();
    assert_eq!(active, WRITERS, "{users}");
    let audit = s.audit(&http, &urls[0]).await;
    let updated = audit
        .iter()
        .filter(|e| e["event"] == "license_updated")
        .count();
    assert_eq!(updated, WRITERS, "{audit:?}");
    let (_, license) = call(
        &http,
        Method::GET,
        format!("{}/v1/licenses/{}", urls[0], s.license),
        &s.admin,
        None,
    )
    .await
    .unwrap();
    let timeout = license["inactivity_timeout_secs"].as_u64().unwrap();
    assert!((600..600 + WRITERS as u64).contains(&timeout), "{license}");

    for node in &mut nodes {
        node.kill9();
    }
    db.drop_db().await;
}
