//! A webhook receiver run by the bench (`--webhook hang|ok`), registered for every event of the
//! bench account, to measure the seat path while the server delivers webhooks: `hang` accepts
//! each delivery and never answers (the server's response timeout cuts it), `ok` answers 200
//! at once. The server must allow a target on 127.0.0.1 (a spawned server does).

use std::net::SocketAddr;

use clap::ValueEnum;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the bench's receiver answers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum HookMode {
    /// Accepts each delivery and never answers.
    Hang,
    /// Answers 200 at once.
    Ok,
}

/// The receiver task; stopped when dropped.
pub struct HookReceiver {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HookReceiver {
    pub async fn start(mode: HookMode) -> anyhow::Result<HookReceiver> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}/bench-hook", listener.local_addr()?);
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, mode));
            }
        });
        Ok(HookReceiver { url, task })
    }
}

/// One connection: each request read whole (head and `content-length` body), then answered
/// (`ok`) or held (`hang`).
async fn serve(mut sock: tokio::net::TcpStream, mode: HookMode) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
            continue;
        };
        let head = String::from_utf8_lossy(buf.get(..end).unwrap_or_default()).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        }
        buf.drain(..end + 4 + len);
        match mode {
            HookMode::Hang => std::future::pending::<()>().await,
            HookMode::Ok => {
                if sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}
