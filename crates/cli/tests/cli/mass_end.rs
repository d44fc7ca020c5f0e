//! A `kill -9` in the middle of a mass end (issue 20): the revoke of every session of a license
//! is durable when it answers, and the sessions' own ends are written in the background; the
//! server is killed while they are (some on disk, most not), and restarted. Every session of the license ends exactly
//! once (one `ended` event each, as revoked), and nothing of another license changes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::support::*;

const ROOT: &str = "root-token-for-the-mass-end-crash-test";
/// Sessions of the revoked license: enough that their ends take a while to write.
const SESSIONS: usize = 6000;

async fn call(
    http: &reqwest::Client,
    method: Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Each session row of `license` on disk: (id, end reason or `None` while live, `ended` events).
fn rows(db: &Path, license: &str) -> Vec<(String, Option<String>, i64)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut ends: HashMap<String, i64> = HashMap::new();
    let mut stmt = conn
        .prepare(
            "SELECT session_id, count(*) FROM audit_events
             WHERE license_id = ?1 AND event = 'ended' GROUP BY session_id",
        )
        .unwrap();
    for row in stmt
        .query_map([license], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
    {
        let (id, n) = row.unwrap();
        ends.insert(id, n);
    }
    let mut stmt = conn
        .prepare("SELECT id, end_reason FROM sessions WHERE license_id = ?1 ORDER BY id")
        .unwrap();
    let rows = stmt
        .query_map([license], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))
        .unwrap();
    rows.map(Result::unwrap)
        .map(|(id, reason)| {
            let n = ends.get(&id).copied().unwrap_or(0);
            (id, reason, n)
        })
        .collect()
}

/// How many sessions of `license` are ended on disk.
fn ended_on_disk(db: &Path, license: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT count(*) FROM sessions WHERE license_id = ?1 AND ended_at IS NOT NULL",
        [license],
        |r| r.get(0),
    )
    .unwrap()
}

/// The audit log of `license` on disk: (event, session, detail), in order.
fn audit(db: &Path, license: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT event, session_id, detail FROM audit_events WHERE license_id = ?1 ORDER BY seq",
        )
        .unwrap();
    let rows = stmt
        .query_map([license], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_in_the_middle_of_a_mass_end_loses_nothing_and_ends_nothing_twice() {
    // Arrange: license A with 6,000 sessions of 20 users; license B with 3 sessions of bea.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("leasehold.db");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let server = ServerProcess::start(dir.path(), &[("LEASEHOLD_ADMIN_TOKEN", ROOT)]);
    let url = server.url.clone();
    let (_, acc) = call(
        &http,
        Method::POST,
        format!("{url}/v1/accounts"),
        ROOT,
        Some(json!({"name": "Acme"})),
    )
    .await;
    let (account, admin) = (
        acc["id"].as_str().unwrap().to_owned(),
        acc["admin_token"].as_str().unwrap().to_owned(),
    );
    let mut licenses = Vec::new();
    for seats in [SESSIONS, 5] {
        let (s, lic) = call(
            &http,
            Method::POST,
            format!("{url}/v1/licenses"),
            &admin,
            Some(json!({"account_id": account, "product": "cad",
                        "model": "concurrent_sessions", "seats": seats})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{lic}");
        licenses.push(lic["id"].as_str().unwrap().to_owned());
    }
    let (a, b) = (licenses[0].clone(), licenses[1].clone());
    let mut tokens = Vec::new();
    for user in (0..20).map(|i| format!("u{i}")).chain(["bea".to_owned()]) {
        call(
            &http,
            Method::PUT,
            format!("{url}/v1/accounts/{account}/users/{user}"),
            &admin,
            Some(json!({"kind": "interactive"})),
        )
        .await;
        let (_, t) = call(
            &http,
            Method::POST,
            format!("{url}/v1/accounts/{account}/users/{user}/tokens"),
            &admin,
            None,
        )
        .await;
        tokens.push(t["token"].as_str().unwrap().to_owned());
    }
    let bea = tokens.pop().unwrap();
    let tokens = Arc::new(tokens);
    let mut opens = JoinSet::new();
    for worker in 0..32 {
        let (http, url, a, tokens) = (http.clone(), url.clone(), a.clone(), tokens.clone());
        opens.spawn(async move {
            for i in (worker..SESSIONS).step_by(32) {
                let (s, body) = call(
                    &http,
                    Method::POST,
                    format!("{url}/v1/sessions"),
                    &tokens[i % tokens.len()],
                    Some(
                        json!({"license_id": a, "device_id": "pc", "instance_id": format!("i{i}")}),
                    ),
                )
                .await;
                assert_eq!(s, StatusCode::CREATED, "{body}");
            }
        });
    }
    while let Some(done) = opens.join_next().await {
        done.unwrap();
    }
    let mut b_sessions = Vec::new();
    for i in 0..3 {
        let (s, body) = call(
            &http,
            Method::POST,
            format!("{url}/v1/sessions"),
            &bea,
            Some(json!({"license_id": b, "device_id": "pc", "instance_id": format!("b{i}")})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        b_sessions.push(body["id"].as_str().unwrap().to_owned());
    }
    let b_audit = audit(&db, &b);

    // Act: every session of A is revoked, and the server is killed once the first of their
    // ends are on disk.
    let (s, revoked) = call(
        &http,
        Method::DELETE,
        format!("{url}/v1/licenses/{a}/sessions"),
        &admin,
        None,
    )
    .await;
    for _ in 0..5000 {
        if ended_on_disk(&db, &a) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    server.kill9();
    let live_at_kill = rows(&db, &a).iter().filter(|(_, r, _)| r.is_none()).count();
    let server = ServerProcess::start(dir.path(), &[("LEASEHOLD_ADMIN_TOKEN", ROOT)]);
    let url = server.url.clone();

    // Assert: the kill came while the ends were being written (what this test is about)...
    assert_eq!(s, StatusCode::OK, "{revoked}");
    assert_eq!(revoked, json!({"revoked": SESSIONS}));
    assert!(
        live_at_kill > 0 && live_at_kill < SESSIONS,
        "{live_at_kill} of {SESSIONS} live at the kill: not in the middle of the writing"
    );
    // ...after the restart none of A's sessions is live, at once...
    let (_, lic) = call(
        &http,
        Method::GET,
        format!("{url}/v1/licenses/{a}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(lic["usage"]["in_use"], 0, "{lic}");
    let mut written = false;
    for _ in 0..600 {
        let (_, lic) = call(
            &http,
            Method::GET,
            format!("{url}/v1/licenses/{a}"),
            &admin,
            None,
        )
        .await;
        if lic["usage"]["ending"] == 0 {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(written, "the ends were not all written after the restart");
    // ...each of them ended exactly once, as revoked...
    let a_rows = rows(&db, &a);
    assert_eq!(a_rows.len(), SESSIONS);
    for (id, reason, ends) in &a_rows {
        assert_eq!((reason.as_deref(), *ends), (Some("revoked"), 1), "{id}");
    }
    let decisions = audit(&db, &a)
        .into_iter()
        .filter(|(e, _, _)| e == "sessions_revoked");
    assert_eq!(decisions.count(), 1);
    // ...and B is as it was: its sessions live, its audit log unchanged.
    for id in &b_sessions {
        let (s, body) = call(
            &http,
            Method::POST,
            format!("{url}/v1/sessions/{id}/heartbeat"),
            &bea,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    assert_eq!(audit(&db, &b), b_audit);
    assert!(rows(&db, &b).iter().all(|(_, r, n)| r.is_none() && *n == 0));
}
