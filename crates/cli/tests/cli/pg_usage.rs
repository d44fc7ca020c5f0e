//! Usage series across three real nodes on one PostgreSQL: opens and closes racing over the
//! nodes, then every node answers the same series, whose high water is the true maximum (the
//! seats, reached, never passed), whose last minute holds exactly the sessions left in use,
//! and which agrees with a replay of the audit log.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::pg::*;

async fn get(http: &reqwest::Client, url: String, token: &str) -> Value {
    let (s, v) = call(http, Method::GET, url, token, None).await.unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn open(
    http: &reqwest::Client,
    node: &str,
    token: &str,
    license: &str,
    inst: &str,
) -> (StatusCode, Value) {
    call(
        http,
        Method::POST,
        format!("{node}/v1/sessions"),
        token,
        Some(json!({"license_id": license, "device_id": "pc", "instance_id": inst})),
    )
    .await
    .unwrap()
}

async fn close(http: &reqwest::Client, node: &str, token: &str, id: &str) {
    let (s, v) = call(
        http,
        Method::DELETE,
        format!("{node}/v1/sessions/{id}"),
        token,
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
}

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opens_and_closes_racing_on_three_nodes_give_the_true_high_water_and_final_count() {
    let Some(db) = TestDb::create("usage race").await else {
        return;
    };
    let _slot = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    // Arrange: three nodes, 6 seats, 30 users spread over the nodes.
    let nodes = cluster(&db.url, dir.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let http = http();
    let s = setup(
        &http,
        &urls[0],
        json!({"product": "cad", "model": "concurrent_sessions", "seats": 6}),
    )
    .await;
    let mut tokens = Vec::new();
    for i in 0..30 {
        tokens.push(s.user(&http, &urls[i % 3], &format!("u{i}")).await);
    }
    let usage = |node: &str, query: &str| {
        format!(
            "{node}/v1/licenses/{}/usage?bucket=minute{query}",
            s.license
        )
    };
    let before = get(&http, usage(&urls[0], ""), &s.admin).await;
    let from = before["buckets"].as_array().unwrap().last().unwrap()["start"]
        .as_str()
        .unwrap()
        .to_owned();

    // Act: all 30 open at once over the nodes (6 win and hold until every answer is in);
    // then each user runs 4 rounds of open and close on rotating nodes; the last round of
    // the first 4 users stays open.
    let mut set = JoinSet::new();
    for (i, t) in tokens.iter().enumerate() {
        let (http, node, t, lid) = (
            http.clone(),
            urls[i % 3].clone(),
            t.clone(),
            s.license.clone(),
        );
        set.spawn(async move { (i, open(&http, &node, &t, &lid, "first").await) });
    }
    let mut winners = Vec::new();
    while let Some(r) = set.join_next().await {
        let (i, (status, body)) = r.unwrap();
        if status == StatusCode::CREATED {
            winners.push((i, body["id"].as_str().unwrap().to_owned()));
        } else {
            assert_eq!(body["error"]["code"], "no_seat_available", "{body}");
        }
    }
    assert_eq!(winners.len(), 6);
    // The fold counts an end at its own time when that is earlier than the log's order (see
    // `usage::fold`), and each node stamps with its own clock, which follows the database's
    // within milliseconds: closing at once, on another node, could stamp an end before the
    // last open and count 5 at most (a CI run under load did). Closes come well after.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, id) in &winners {
        close(&http, &urls[(i + 1) % 3], &tokens[*i], id).await;
    }
    let mut set = JoinSet::new();
    for (i, t) in tokens.iter().enumerate() {
        let (http, urls, t, lid) = (http.clone(), urls.clone(), t.clone(), s.license.clone());
        set.spawn(async move {
            let mut held = 0;
            for round in 0..4 {
                let (status, body) = open(
                    &http,
                    &urls[(i + round) % 3],
                    &t,
                    &lid,
                    &format!("r{round}"),
                )
                .await;
                if status == StatusCode::CREATED {
                    if i < 4 && round == 3 {
                        held += 1;
                    } else {
                        tokio::time::sleep(Duration::from_millis(2 + (i as u64 % 5))).await;
                        let id = body["id"].as_str().unwrap();
                        close(&http, &urls[(i + round + 1) % 3], &t, id).await;
                    }
                }
            }
            held
        });
    }
    let mut held = 0u64;
    while let Some(r) = set.join_next().await {
        held += r.unwrap();
    }
    // Wait for a new minute: the series' last bucket then holds the state after the race.
    let race_end = get(&http, usage(&urls[0], ""), &s.admin).await;
    let race_minute = race_end["buckets"].as_array().unwrap().last().unwrap()["start"].clone();
    let mut series = Vec::new();
    for _ in 0..75 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        series.clear();
        for u in &urls {
            series.push(get(&http, usage(u, &format!("&from={from}")), &s.admin).await);
        }
        let last = series[0]["buckets"].as_array().unwrap().last().unwrap()["start"].clone();
        if last != race_minute {
            break;
        }
    }

    // Assert: every node answers the same buckets; 6 reached, never more; the last minute
    // holds exactly the sessions left; the store agrees.
    for other in &series[1..] {
        assert_eq!(other["buckets"], series[0]["buckets"]);
    }
    let buckets = series[0]["buckets"].as_array().unwrap();
    let last = buckets.last().unwrap();
    assert_ne!(last["start"], race_minute, "no new minute began");
    assert_eq!(series[0]["high_water"], json!(6));
    assert_eq!(last["high_water"], json!(held));
    assert_eq!(last["low_water"], json!(held));
    for u in &urls {
        assert_eq!(s.in_use(&http, u).await, held);
    }
    // A replay of the audit log in its order gives the same maximum, opens and denials.
    let audit = s.audit(&http, &urls[2]).await;
    let (mut in_use, mut max, mut opens, mut denials) = (0i64, 0i64, 0u64, 0u64);
    for e in &audit {
        match e["event"].as_str().unwrap() {
            "opened" => {
                in_use += 1;
                opens += 1;
            }
            "ended" => in_use -= 1,
            "denied" => denials += 1,
            _ => {}
        }
        max = max.max(in_use);
    }
    assert_eq!((max, in_use), (6, held as i64));
    let sum = |f: &str| buckets.iter().map(|b| b[f].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("opens"), opens);
    assert_eq!(sum("denials"), denials);
    // The account (one license) has the same series.
    let account = get(
        &http,
        format!(
            "{}/v1/accounts/{}/usage?bucket=minute&from={from}",
            urls[1], s.account
        ),
        &s.admin,
    )
    .await;
    assert_eq!(account["buckets"], series[0]["buckets"]);
    drop(nodes);
    db.assert_live_counts_exact().await;
    db.drop_db().await;
}
