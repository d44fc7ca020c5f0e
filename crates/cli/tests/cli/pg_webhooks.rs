//! Webhooks with several nodes on one PostgreSQL: every node runs a dispatcher, yet each event
//! is planned once (the fan-out's compare-and-set on the cursor) and sent by one node (claims
//! with `SKIP LOCKED` and a lease): the receiver gets each event exactly once, in the order of
//! the license's events, whichever nodes served the opens.

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::hook_receiver::HookReceiver;
use crate::kit::SOON;
use crate::pg::*;

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_deliver_each_event_exactly_once_and_in_license_order() {
    let Some(db) = TestDb::create("pg webhooks").await else {
        return;
    };
    let _slot = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("leasehold.toml");
    std::fs::write(
        &conf,
        "[webhooks]\nallow_private_targets = true\nretry_base_ms = 100\npoll_interval_ms = 20\n",
    )
    .unwrap();
    let env = [("LEASEHOLD_CONFIG", conf.to_str().unwrap())];
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            Node::spawn_with_env(
                Some(&db.url),
                &dir.path().join(format!("node{i}")),
                Some(ROOT),
                &env,
            )
        })
        .collect();
    for n in &mut nodes {
        n.ready().await;
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let http = http();
    let receiver = HookReceiver::start(0, 0).await;
    let s = setup(
        &http,
        &urls[0],
        json!({"product": "cad", "model": "concurrent_sessions", "seats": 500}),
    )
    .await;
    let (status, hook) = call(
        &http,
        Method::POST,
        format!("{}/v1/accounts/{}/webhooks", urls[1], s.account),
        &s.admin,
        Some(json!({"url": receiver.url, "events": ["session.opened", "session.closed"]})),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{hook}");

    // Act: 40 users each open and close a session, spread over the nodes, all at once.
    let mut set = JoinSet::new();
    for i in 0..40 {
        let token = s.user(&http, &urls[i % 3], &format!("user{i}")).await;
        let (http, urls, license) = (http.clone(), urls.clone(), s.license.clone());
        set.spawn(async move {
            let node = &urls[i % 3];
            let (st, body) = call(
                &http,
                Method::POST,
                format!("{node}/v1/sessions"),
                &token,
                Some(json!({"license_id": license, "device_id": "d", "instance_id": "i"})),
            )
            .await
            .unwrap();
            assert_eq!(st, StatusCode::CREATED, "{body}");
            let id = body["id"].as_str().unwrap().to_owned();
            let other = &urls[(i + 1) % 3];
            let (st, _) = call(
                &http,
                Method::DELETE,
                format!("{other}/v1/sessions/{id}"),
                &token,
                None,
            )
            .await
            .unwrap();
            assert_eq!(st, StatusCode::NO_CONTENT);
            id
        });
    }
    let mut sessions = Vec::new();
    while let Some(id) = set.join_next().await {
        sessions.push(id.unwrap());
    }

    // Assert: 80 events, each exactly once; a session's open before its close.
    receiver.wait_for(SOON, |b| b.len() >= 80).await;
    // A duplicate would come within a poll or two.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let bodies: Vec<Value> = receiver.bodies();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for b in &bodies {
        *seen
            .entry(b["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(bodies.len(), 80, "no duplicates: {seen:?}");
    assert!(seen.values().all(|&n| n == 1));
    for id in &sessions {
        let at = |t: &str| {
            bodies
                .iter()
                .position(|b| b["type"] == t && b["data"]["session_id"] == id.as_str())
                .unwrap_or_else(|| panic!("{t} of {id} missing"))
        };
        assert!(at("session.opened") < at("session.closed"), "order of {id}");
    }
    // Every node answers the same delivery log: 80 delivered, each in one attempt.
    let (_, log) = call(
        &http,
        Method::GET,
        format!(
            "{}/v1/accounts/{}/webhooks/{}/deliveries?limit=200",
            urls[2],
            s.account,
            hook["id"].as_str().unwrap()
        ),
        &s.admin,
        None,
    )
    .await
    .unwrap();
    let log = log["deliveries"].as_array().unwrap();
    assert_eq!(log.len(), 80);
    assert!(log
        .iter()
        .all(|d| d["status"] == "delivered" && d["attempts"] == 1));
}
