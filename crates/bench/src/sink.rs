//! The sink: a minimal HTTP responder (a canned 200 to every request) run as a child
//! (`leasehold bench --sink-listen`), so the `sink` scenario shows the generator's own ceiling.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::spawn::free_addr;

/// A child running the bench's HTTP sink (a canned 200 to every request).
pub struct Sink {
    child: Child,
    pub addr: SocketAddr,
}

impl Sink {
    pub async fn start() -> anyhow::Result<Self> {
        let addr = free_addr()?;
        let exe = std::env::current_exe()?;
        let child = Command::new(exe)
            .args(["bench", "--sink-listen", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                bail!("the sink did not start");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Sink { child, addr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sink itself: answers every request on keep-alive connections with a tiny JSON 200,
/// parsing only enough to find where each request ends. It stops after `max_secs`.
pub async fn run_sink(addr: SocketAddr, max_secs: u64) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let serve = async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}";
                let mut buf = vec![0u8; 8192];
                let mut filled = 0;
                loop {
                    match s.read(&mut buf[filled..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => filled += n,
                    }
                    // Requests of the bench carry no body unless Content-Length says so;
                    // the sink is driven with GETs only.
                    while let Some(pos) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                        if s.write_all(ANSWER).await.is_err() {
                            return;
                        }
                        buf.copy_within(pos + 4..filled, 0);
                        filled -= pos + 4;
                    }
                    if filled == buf.len() {
                        return;
                    }
                }
            });
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(max_secs), serve).await;
    Ok(())
}
