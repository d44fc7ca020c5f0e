//! A real HTTP receiver for webhook tests: an axum server on 127.0.0.1 that records every
//! request (headers and body) and answers as its script says (a status, or hang), and a
//! signature check written apart from the server's (the `hmac` crate directly, and Python's
//! standard library).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::mpsc;

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// Never answers (the sender's timeout must cut it).
    Hang,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

pub struct Receiver {
    pub url: String,
    rx: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts a receiver; requests beyond the script are answered 200.
    pub async fn start(script: &[Answer]) -> Receiver {
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let (tx, rx) = mpsc::unbounded_channel();
        let s = script.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            let tx = tx.clone();
            async move {
                let _ = tx.send(Received { headers, body });
                let answer = s.lock().unwrap().pop_front().unwrap_or(Answer::Status(200));
                match answer {
                    Answer::Status(code) => {
                        (StatusCode::from_u16(code).unwrap(), "ok from receiver")
                    }
                    Answer::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        (StatusCode::OK, "late")
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, rx, task }
    }

    /// The next request, within 10 s.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("no webhook arrived within 10 s")
            .unwrap()
    }

    /// The next request whose event type is `event_type` (others are skipped).
    pub async fn next_of(&mut self, event_type: &str) -> Received {
        loop {
            let r = self.next().await;
            if r.json()["type"] == event_type {
                return r;
            }
        }
    }

    /// Nothing arrives within `wait`.
    pub async fn quiet(&mut self, wait: Duration) {
        if let Ok(Some(r)) = tokio::time::timeout(wait, self.rx.recv()).await {
            panic!("unexpected webhook: {}", String::from_utf8_lossy(&r.body));
        }
    }
}

/// Checks `Leasehold-Signature` as a receiver would, with the `hmac` crate directly: the HMAC
/// of `t.body` under `secret`, and `t` within five minutes of `now_secs`.
pub fn verify(r: &Received, secret: &str, now_secs: i64) {
    let header = r.header("leasehold-signature");
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.to_owned()),
            Some(("v1", v)) => v1 = Some(v.to_owned()),
            _ => {}
        }
    }
    let (t, v1) = (
        t.expect("t in the signature"),
        v1.expect("v1 in the signature"),
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    mac.verify_slice(&hex::decode(&v1).unwrap())
        .expect("the signature verifies");
    let t: i64 = t.parse().unwrap();
    assert!(
        (now_secs - t).abs() <= 300,
        "t={t} is outside the replay window"
    );
}

/// The same check in Python's standard library (the README's snippet), run by `python3`.
pub fn verify_with_python(r: &Received, secret: &str, now_secs: i64) {
    let script = r#"
import hmac, hashlib, sys
secret, header, now, body = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.stdin.buffer.read()
parts = dict(p.split("=", 1) for p in header.split(","))
expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
assert hmac.compare_digest(expected, parts["v1"]), "bad signature"
assert abs(now - int(parts["t"])) <= 300, "outside the replay window"
print("ok")
"#;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            secret,
            &r.header("leasehold-signature"),
            &now_secs.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (the CI installs it)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&r.body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python rejected the signature");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
