//! Slow and abusive clients: header-read, body-read and idle timeouts, the cap on open
//! connections, and the cap on the request target. Raw TCP where a well-behaved client library
//! could not misbehave enough.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Reads until the peer closes (or `within` passes): `true` when it closed (EOF or reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads one HTTP/1.1 answer (head and a `Content-Length` body): status and body.
async fn read_answer(stream: &mut TcpStream) -> (u16, String, String) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        let Some(head_end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = text[..head_end].to_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        if text.len() >= head_end + 4 + length {
            let status = head[9..12].parse().unwrap();
            return (
                status,
                head,
                text[head_end + 4..head_end + 4 + length].to_owned(),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_half_open_connections_do_not_keep_a_valid_client_waiting() {
    // Arrange: 2,000 connections that never finish a request head: half send nothing at all,
    // half a request line and one header, then stop. (4,000 descriptors in this process, both
    // ends; the server raises its open-file limit to the hard limit at start.)
    let app = spawn_app_with(|c| c.limits.header_read_timeout = Duration::from_secs(3)).await;
    let mut idle = Vec::with_capacity(2000);
    for i in 0..2000 {
        let mut s = TcpStream::connect(app.addr()).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    let opened = Instant::now();

    // Act: a valid client, on a new connection.
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();

    // Assert: served at once...
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        opened.elapsed() < Duration::from_secs(3),
        "the half-open connections were still within their header timeout"
    );
    // ...and every half-open connection is closed once the header timeout has passed.
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(10)).await,
            "connection {i} still open"
        );
    }
    let metrics = app.get_text("/metrics", ROOT_TOKEN).await;
    let closed: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("leasehold_connections_closed_total{reason=\"header_timeout\"} ")
        })
        .expect("header timeouts counted")
        .parse()
        .unwrap();
    assert!(closed >= 2000.0, "{closed}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    let app = spawn_app_with(|c| c.limits.idle_timeout = Duration::from_secs(1)).await;
    let request = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n";

    // A connection that asks every 400 ms for 2.4 s stays open (each answer restarts the wait).
    let mut busy = TcpStream::connect(app.addr()).await.unwrap();
    for _ in 0..6 {
        busy.write_all(request).await.unwrap();
        assert_eq!(read_answer(&mut busy).await.0, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    busy.write_all(request).await.unwrap();
    assert_eq!(read_answer(&mut busy).await.0, 200);

    // Then it goes quiet: closed within the idle timeout (plus a little).
    let quiet_since = Instant::now();
    assert!(closed_within(&mut busy, Duration::from_secs(5)).await);
    assert!(quiet_since.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_request_that_waits_longer_than_the_timeouts_is_not_cut() {
    // A handler that runs (here: waits for a seat) is never timed out by the connection.
    let app = spawn_app_with(|c| {
        c.limits.idle_timeout = Duration::from_secs(1);
        c.limits.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let f = app
        .fixture(1, &[], serde_json::json!({"on_full": "queue"}))
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    let held = app.open(&bob, &f.license_id, "pc", "1").await;
    assert_eq!(held.status, StatusCode::CREATED);
    let waiter = {
        let http = app.http.clone();
        let url = format!("{}/v1/sessions", app.url);
        let body = serde_json::json!({"license_id": f.license_id, "device_id": "pc", "instance_id": "2", "wait_secs": 10});
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(carol)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let closed = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/sessions/{}", held.id()),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(closed.status, StatusCode::NO_CONTENT);
    assert_eq!(waiter.await.unwrap(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_with_the_json_error() {
    let app = spawn_app_with(|c| c.limits.body_read_timeout = Duration::from_secs(1)).await;
    let mut s = TcpStream::connect(app.addr()).await.unwrap();
    let head = format!(
        "POST /v1/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ROOT_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\""
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (status, head, body) = read_answer(&mut s).await;
    assert_eq!(status, 408, "{head}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout");
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    // Counted for the operator.
    let metrics = app.get_text("/metrics", ROOT_TOKEN).await;
    assert!(
        metrics.contains("leasehold_body_timeouts_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_served_again_below_it() {
    let app = spawn_app_with(|c| c.limits.max_connections = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(app.addr()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The fifth is accepted and closed at once.
    let mut fifth = TcpStream::connect(app.addr()).await.unwrap();
    let _ = fifth
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(closed_within(&mut fifth, Duration::from_secs(2)).await);

    // Below the cap again, clients are served.
    held.truncate(2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut next = TcpStream::connect(app.addr()).await.unwrap();
    next.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut next).await.0, 200);
    let metrics = app.get_text("/metrics", ROOT_TOKEN).await;
    assert!(
        metrics.contains("leasehold_connections_refused_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_request_target_longer_than_the_cap_is_414_with_the_json_error() {
    let app = spawn_app_with(|c| c.limits.max_uri_bytes = 1024).await;
    let long = format!("/v1/licenses/{}", "x".repeat(2000));
    let r = app.get(&long, ROOT_TOKEN).await;
    assert_eq!(r.status, StatusCode::URI_TOO_LONG);
    assert_eq!(r.code(), "uri_too_long");
    let query = format!("/v1/licenses/x/usage?from={}", "1".repeat(2000));
    let r = app.get(&query, ROOT_TOKEN).await;
    assert_eq!(r.status, StatusCode::URI_TOO_LONG);
    // Just under the cap: routed as usual.
    let r = app
        .get(&format!("/v1/licenses/{}", "x".repeat(900)), ROOT_TOKEN)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
