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
