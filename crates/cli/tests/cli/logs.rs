//! The server's log as an operator reads it: one access-log line per request (method, route,
//! status, latency, request id), plain text when not on a terminal, never a secret.

use std::time::{Duration, Instant};

use crate::support::ServerProcess;

const ROOT: &str = "root-token-that-must-never-be-logged-0123";

#[tokio::test]
async fn each_request_leaves_one_plain_access_line_without_secrets() {
    // Arrange: a server logging at info, its stdout a pipe (not a terminal).
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        data.path(),
        &[("LEASEHOLD_ADMIN_TOKEN", ROOT), ("LEASEHOLD_LOG", "info")],
    );
    let http = reqwest::Client::new();

    // Act: a failing authenticated call with a request id of ours.
    let answer = http
        .get(format!("{}/v1/licenses/no-such-license", server.url))
        .bearer_auth(ROOT)
        .header("x-request-id", "op-check-1")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);

    // Assert
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    let line = loop {
        lines.extend(server.printed_lines());
        if let Some(line) = lines.iter().find(|l| l.contains("op-check-1")) {
            break line.clone();
        }
        assert!(Instant::now() < deadline, "no access line in {lines:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(line.contains("leasehold::access"), "{line}");
    assert!(line.contains("method=GET"), "{line}");
    assert!(line.contains("route=/v1/licenses/{id}"), "{line}");
    assert!(line.contains("status=404"), "{line}");
    assert!(line.contains("latency_us="), "{line}");
    let access_lines = lines.iter().filter(|l| l.contains("op-check-1")).count();
    assert_eq!(access_lines, 1, "{lines:#?}");
    for l in &lines {
        assert!(!l.contains('\u{1b}'), "ANSI escape in a piped log: {l:?}");
        assert!(!l.contains(ROOT), "the token was logged: {l}");
    }
}

#[tokio::test]
async fn slow_clients_and_failures_over_budget_are_logged_once_in_a_while_and_counted() {
    use tokio::io::AsyncReadExt;

    // Arrange: a 1 s header timeout, a budget of 2 failed authentications a minute.
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        data.path(),
        &[
            ("LEASEHOLD_ADMIN_TOKEN", ROOT),
            ("LEASEHOLD_LOG", "info"),
            ("LEASEHOLD_HEADER_READ_TIMEOUT_SECS", "1"),
            ("LEASEHOLD_AUTH_FAILURES_PER_MINUTE_PER_ADDRESS", "2"),
        ],
    );
    let addr = server.url.trim_start_matches("http://").to_owned();

    // Act: three connections that never send a head; four wrong tokens.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = http
            .get(format!("{}/v1/plans", server.url))
            .bearer_auth(format!("wrong-token-{i}"))
            .header("x-request-id", format!("bad-auth-{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    for s in &mut silent {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("closed by the header timeout")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }

    // Assert: 401, 401, then 429; one access line per request, with the client's address; one
    // warn line for the timeouts and one for the failures over budget (not one per event).
    assert_eq!(statuses, [401, 401, 429, 429]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    loop {
        lines.extend(server.printed_lines());
        let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
        if has("no complete request head in time") && has("over budget") && has("bad-auth-3") {
            break;
        }
        assert!(Instant::now() < deadline, "{lines:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..4 {
        let access: Vec<_> = lines
            .iter()
            .filter(|l| {
                l.contains("leasehold::access") && l.contains(&format!("request_id=bad-auth-{i}"))
            })
            .collect();
        assert_eq!(access.len(), 1, "{lines:#?}");
        assert!(access[0].contains("peer=127.0.0.1"), "{}", access[0]);
        assert!(!access[0].contains("wrong-token"), "{}", access[0]);
    }
    let over_budget = lines.iter().filter(|l| l.contains("over budget")).count();
    assert_eq!(over_budget, 1, "{lines:#?}");
    let timeouts = lines
        .iter()
        .filter(|l| l.contains("no complete request head in time"))
        .count();
    assert_eq!(timeouts, 1, "{lines:#?}");
}
