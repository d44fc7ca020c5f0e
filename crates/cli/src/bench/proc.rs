//! Processes around a bench run: the server started as a child (`--spawn-server`, fresh data
//! folder; or several PostgreSQL nodes for `pg`), the minimal HTTP sink that shows the
//! generator's own ceiling, and `/proc` readings (peak and current RSS, CPU time) of the
//! servers, of the generator itself and of the local PostgreSQL's processes.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::http::{Conn, Request};

/// A `leasehold serve` child with its own data folder, killed and cleaned up on drop.
pub struct SpawnedServer {
    child: Child,
    pub addr: SocketAddr,
    pub admin_token: String,
    data_dir: PathBuf,
    keep_data: bool,
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

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
        let exe = std::env::current_exe().context("locating the leasehold binary")?;
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(&data_dir)
            .env("LEASEHOLD_ADMIN_TOKEN", admin_token)
            .env("LEASEHOLD_LOG", "warn")
            .env_remove("LEASEHOLD_DATABASE_URL")
            .env_remove("LEASEHOLD_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(url) = database_url {
            cmd.args(["--database-url", url]);
        }
        let child = cmd.spawn().context("starting leasehold serve")?;
        Ok(SpawnedServer {
            child,
            addr,
            admin_token: admin_token.to_owned(),
            data_dir,
            keep_data,
        })
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

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

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

/// A `/proc/<pid>/status` field in kB (`VmHWM`, `VmRSS`).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// User + system CPU time of a process, in seconds (`/proc/<pid>/stat`).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on Linux for every architecture the bench runs on.
    100.0
}

/// CPU seconds over a window of the generator (this process) and of the server processes
/// (summed: several nodes count as one server).
#[derive(Clone, Copy)]
pub struct CpuMark {
    pub own: f64,
    pub server: Option<f64>,
}

impl CpuMark {
    pub fn now(server_pids: &[u32]) -> CpuMark {
        let server = if server_pids.is_empty() {
            None
        } else {
            server_pids.iter().map(|&p| cpu_secs(p)).sum()
        };
        CpuMark {
            own: cpu_secs(std::process::id()).unwrap_or(0.0),
            server,
        }
    }

    /// (generator, server) CPU seconds since `self`.
    pub fn since(&self, server_pids: &[u32]) -> (f64, Option<f64>) {
        let now = CpuMark::now(server_pids);
        (
            now.own - self.own,
            now.server.zip(self.server).map(|(b, a)| b - a),
        )
    }
}

/// CPU seconds of every `postgres` process on this machine (the local PostgreSQL server: the
/// postmaster, its backends and its background workers), by pid.
fn postgres_pids_cpu() -> HashMap<u32, f64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim_end() == "postgres" {
            if let Some(cpu) = cpu_secs(pid) {
                out.insert(pid, cpu);
            }
        }
    }
    out
}

/// The local PostgreSQL's CPU over a window, sampled (`sample`) while it runs so that backends
/// which exit before its end (pgbench's clients) are counted up to their last sample.
/// Approximate: a backend's last ~200 ms before it exits may be missed, and other databases'
/// work on the same server is counted too.
pub struct PostgresCpu {
    start: HashMap<u32, f64>,
    last: HashMap<u32, f64>,
}

impl PostgresCpu {
    pub fn now() -> PostgresCpu {
        let start = postgres_pids_cpu();
        PostgresCpu {
            last: start.clone(),
            start,
        }
    }

    pub fn sample(&mut self) {
        self.last.extend(postgres_pids_cpu());
    }

    /// CPU seconds since `now()`, or `None` when no `postgres` process is visible (a remote
    /// server, or another PID namespace).
    pub fn secs(&self) -> Option<f64> {
        if self.last.is_empty() {
            return None;
        }
        Some(
            self.last
                .iter()
                .map(|(pid, cpu)| cpu - self.start.get(pid).copied().unwrap_or(0.0))
                .sum(),
        )
    }
}

/// Awaits `f` while sampling the local PostgreSQL's CPU (every 200 ms): its output and the
/// PostgreSQL CPU seconds it took.
pub async fn with_postgres_cpu<F: std::future::Future>(f: F) -> (F::Output, Option<f64>) {
    let mut cpu = PostgresCpu::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tokio::pin!(f);
    loop {
        tokio::select! {
            out = &mut f => {
                cpu.sample();
                return (out, cpu.secs());
            }
            _ = tick.tick() => cpu.sample(),
        }
    }
}
