//! The server started as a child: `leasehold serve` (this executable) on a free loopback port
//! with a fresh data folder (`--spawn-server`), or one of several PostgreSQL nodes for `pg`.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::http::{Conn, Request};

/// A `leasehold serve` child with its own data folder, killed and cleaned up on drop.
pub struct SpawnedServer {
    child: Child,
    pub addr: SocketAddr,
    pub admin_token: String,
    data_dir: PathBuf,
    keep_data: bool,
    database_url: Option<String>,
}

/// A free port on the loopback interface.
pub(crate) fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `bytes` random bytes in hex (names of data folders, databases and root tokens).
pub fn random_hex(bytes: usize) -> String {
    // The bench is a tool; an unpredictable-enough token comes from the std hasher's keys.
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < bytes * 2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(out.len());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(bytes * 2);
    out
}

impl SpawnedServer {
    /// Starts `leasehold serve` (this executable) on a free loopback port and waits for /healthz.
    pub async fn start(data_root: Option<PathBuf>, keep_data: bool) -> anyhow::Result<Self> {
        let admin_token = format!("lh_root_bench_{}", random_hex(16));
        let mut server = SpawnedServer::spawn(data_root, keep_data, None, &admin_token)?;
        server.wait_healthy().await?;
        Ok(server)
    }

    /// Starts `leasehold serve` on a free loopback port without waiting for it (several
    /// PostgreSQL nodes start at once, as in a rollout): embedded SQLite in a fresh data folder,
    /// or the PostgreSQL of `database_url`. `admin_token` is the root token it installs.
    pub fn spawn(
        data_root: Option<PathBuf>,
        keep_data: bool,
        database_url: Option<&str>,
        admin_token: &str,
    ) -> anyhow::Result<Self> {
        let addr = free_addr()?;
        let root = data_root.unwrap_or_else(std::env::temp_dir);
        let data_dir = root.join(format!(
            "leasehold-bench-{}-{}",
            std::process::id(),
            random_hex(4)
        ));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let child = launch(&data_dir, addr, database_url, admin_token)?;
        Ok(SpawnedServer {
            child,
            addr,
            admin_token: admin_token.to_owned(),
            data_dir,
            keep_data,
            database_url: database_url.map(str::to_owned),
        })
    }

    /// Stops the server (its data folder stays).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same address, data folder and database, and waits for
    /// /healthz.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.child = launch(
            &self.data_dir,
            self.addr,
            self.database_url.as_deref(),
            &self.admin_token,
        )?;
        self.wait_healthy().await
    }

    /// The server's data folder.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    pub async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut conn = Conn::new(self.addr);
            let get = Request {
                method: "GET",
                path: "/healthz",
                token: None,
                body: None,
            };
            if let Ok((200, _)) = conn.call(get).await {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited early: {status}");
            }
            if Instant::now() > deadline {
                bail!("the server did not become healthy within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `leasehold serve` (this executable) on `addr` with `data_dir` (and the PostgreSQL of
/// `database_url`), installing `admin_token` as its root token.
fn launch(
    data_dir: &std::path::Path,
    addr: SocketAddr,
    database_url: Option<&str>,
    admin_token: &str,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("locating the leasehold binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--listen", &addr.to_string(), "--data-dir"])
        .arg(data_dir)
        .env("LEASEHOLD_ADMIN_TOKEN", admin_token)
        .env("LEASEHOLD_LOG", "warn")
        // The bench's own webhook receiver (`--webhook`) listens on 127.0.0.1.
        .env("LEASEHOLD_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true")
        .env_remove("LEASEHOLD_DATABASE_URL")
        .env_remove("LEASEHOLD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    cmd.spawn().context("starting leasehold serve")
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}
