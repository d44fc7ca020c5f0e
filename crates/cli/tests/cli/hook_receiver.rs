//! A webhook receiver for process tests: a bare HTTP/1.1 listener on 127.0.0.1 that records
//! each request's JSON body and answers 200 with `Connection: close`, or holds the first
//! requests unanswered (a receiver that hangs).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct HookReceiver {
    pub url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HookReceiver {
    /// Listens on `port` (0: any); the first `hang` requests are recorded and never answered.
    pub async fn start(port: u16, hang: usize) -> HookReceiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicUsize::new(0));
        let b = bodies.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (b, seen) = (b.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let body = loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break buf[end + 4..end + 4 + len].to_vec();
                        }
                    };
                    if let Ok(v) = serde_json::from_slice(&body) {
                        b.lock().unwrap().push(v);
                    }
                    if seen.fetch_add(1, Ordering::SeqCst) < hang {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        HookReceiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            bodies,
            task,
        }
    }

    /// Every body received so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the bodies received (at most `within`).
    pub async fn wait_for(&self, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let bodies = self.bodies();
            if done(&bodies) {
                return bodies;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "webhooks did not arrive: {bodies:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
