//! Crash safety of the embedded store: acknowledged sessions survive `kill -9` and a restart.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let r = http
        .request(method, url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn acknowledged_sessions_survive_kill_9_and_count_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    // First start: a root token is generated and printed once.
    let server = ServerProcess::start(dir.path(), &[]);
    let root = {
        let mut token = None;
        for _ in 0..50 {
            if let Some(line) = server
                .printed_lines()
                .iter()
                .find(|l| l.trim().starts_with("lh_root_"))
            {
                token = Some(line.trim().to_owned());
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        token.expect("the generated root token is printed at first start")
    };
    let url = server.url.clone();
    let (s, acc) = call(
        &http,
        reqwest::Method::POST,
        format!("{url}/v1/accounts"),
        &root,
        json!({"name": "Acme"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (account, admin) = (
        acc["id"].as_str().unwrap().to_owned(),
        acc["admin_token"].as_str().unwrap().to_owned(),
    );
    let (_, lic) = call(&http, reqwest::Method::POST, format!("{url}/v1/licenses"), &admin,
        json!({"account_id": account, "product": "cad", "model": "concurrent_sessions", "seats": 3})).await;
    let license = lic["id"].as_str().unwrap().to_owned();
    call(
        &http,
        reqwest::Method::PUT,
        format!("{url}/v1/accounts/{account}/users/bob"),
        &admin,
        json!({"kind": "interactive"}),
    )
    .await;
    let (_, tok) = call(
        &http,
        reqwest::Method::POST,
        format!("{url}/v1/accounts/{account}/users/bob/tokens"),
        &admin,
        json!({}),
    )
    .await;
    let bob = tok["token"].as_str().unwrap().to_owned();
    let mut sessions = Vec::new();
    for i in 0..2 {
        let (s, body) = call(
            &http,
            reqwest::Method::POST,
            format!("{url}/v1/sessions"),
            &bob,
            json!({"license_id": license, "device_id": "pc", "instance_id": format!("app-{i}")}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        sessions.push(body["id"].as_str().unwrap().to_owned());
    }

    // Crash right after the acknowledgements.
    server.kill9();

    // Restart on the same folder: no new root token, the old one still works.
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.clone();
    let (s, lic) = call(
        &http,
        reqwest::Method::GET,
        format!("{url}/v1/licenses/{license}"),
        &root,
        json!(null),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{lic}");
    assert_eq!(
        lic["usage"]["in_use"], 2,
        "both acknowledged sessions survived"
    );
    for id in &sessions {
        let (s, body) = call(
            &http,
            reqwest::Method::POST,
            format!("{url}/v1/sessions/{id}/heartbeat"),
            &bob,
            json!({}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    // They still count against the seats: one more fits, the next is refused.
    let (s, _) = call(
        &http,
        reqwest::Method::POST,
        format!("{url}/v1/sessions"),
        &bob,
        json!({"license_id": license, "device_id": "pc", "instance_id": "app-2"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, body) = call(
        &http,
        reqwest::Method::POST,
        format!("{url}/v1/sessions"),
        &bob,
        json!({"license_id": license, "device_id": "pc", "instance_id": "app-3"}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "no_seat_available");
    assert!(
        !server
            .printed_lines()
            .iter()
            .any(|l| l.contains("lh_root_")),
        "the root token is printed only at first start"
    );
    // The signing key persisted too: the JWKS is the same key as before the crash.
    assert!(dir.path().join("lease-signing-key.pem").exists());
}

/// A license of three seats and a user token for bob, made through the API.
async fn tenant(http: &reqwest::Client, url: &str, root: &str) -> (String, String) {
    let post = |path: &str, token: &str, body: Value| {
        let (url, token) = (format!("{url}{path}"), token.to_owned());
        async move { call(http, reqwest::Method::POST, url, &token, body).await }
    };
    let (_, acc) = post("/v1/accounts", root, json!({"name": "Acme"})).await;
    let (account, admin) = (
        acc["id"].as_str().unwrap().to_owned(),
        acc["admin_token"].as_str().unwrap().to_owned(),
    );
    let (_, lic) = post(
        "/v1/licenses",
        &admin,
        json!({"account_id": account, "product": "cad", "model": "concurrent_sessions", "seats": 3}),
    )
    .await;
    call(
        http,
        reqwest::Method::PUT,
        format!("{url}/v1/accounts/{account}/users/bob"),
        &admin,
        json!({"kind": "interactive"}),
    )
    .await;
    let (_, tok) = post(
        &format!("/v1/accounts/{account}/users/bob/tokens"),
        &admin,
        json!({}),
    )
    .await;
    (
        lic["id"].as_str().unwrap().to_owned(),
        tok["token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn another_process_reading_the_database_never_hides_acknowledged_writes() {
    // Arrange: a server with one acknowledged session.
    const ROOT: &str = "lh_root_reader_test_token_0123456789";
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("leasehold.db");
    let http = reqwest::Client::new();
    let server = ServerProcess::start(dir.path(), &[("LEASEHOLD_ADMIN_TOKEN", ROOT)]);
    let url = server.url.clone();
    let (license, bob) = tenant(&http, &url, ROOT).await;
    let open = |instance: &'static str| {
        call(
            &http,
            reqwest::Method::POST,
            format!("{url}/v1/sessions"),
            &bob,
            json!({"license_id": license, "device_id": "pc", "instance_id": instance}),
        )
    };
    assert_eq!(open("first").await.0, StatusCode::CREATED);

    // Act: another process (a reader, `sqlite3`, a backup) opens and closes the database;
    // then a session is acknowledged and the server is killed.
    let count = || -> i64 {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(), 1);
    assert_eq!(open("second").await.0, StatusCode::CREATED);
    let seen_by_a_reader = count();
    server.kill9();

    // Assert: the reader saw the second session, and so does the restarted server (the
    // server's WAL was never deleted under it: its locks were kept).
    assert_eq!(seen_by_a_reader, 2);
    let server = ServerProcess::start(dir.path(), &[("LEASEHOLD_ADMIN_TOKEN", ROOT)]);
    let (s, lic) = call(
        &http,
        reqwest::Method::GET,
        format!("{}/v1/licenses/{license}", server.url),
        ROOT,
        json!(null),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{lic}");
    assert_eq!(lic["usage"]["in_use"], 2, "{lic}");
}
