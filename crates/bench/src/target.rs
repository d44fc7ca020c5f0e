//! The server under test: a spawned `leasehold serve` (`--spawn-server`) or the one at `--url`
//! on this machine, with its root admin token and, when known, its pid for RSS and CPU.

use std::net::SocketAddr;

use anyhow::{anyhow, bail};

use crate::args::BenchArgs;
use crate::proc::status_kb;
use crate::spawn::SpawnedServer;

/// The server under test.
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) root: String,
    pub(crate) pid: Option<u32>,
    _spawned: Option<SpawnedServer>,
}

impl Target {
    /// Spawns the server, or resolves `--url` (loopback only) and takes `--admin-token`.
    pub(crate) async fn new(args: &BenchArgs) -> anyhow::Result<Target> {
        if args.spawn_server {
            let server = SpawnedServer::start(args.data_root.clone(), args.keep_data).await?;
            println!(
                "spawned leasehold serve (pid {}) on {}",
                server.pid(),
                server.addr
            );
            return Ok(Target {
                addr: server.addr,
                root: server.admin_token.clone(),
                pid: Some(server.pid()),
                _spawned: Some(server),
            });
        }
        let hostport = args
            .url
            .trim_end_matches('/')
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--url must be http://HOST:PORT"))?;
        let addr: SocketAddr = tokio::net::lookup_host(hostport)
            .await?
            .next()
            .ok_or_else(|| anyhow!("cannot resolve {hostport}"))?;
        if !addr.ip().is_loopback() {
            bail!("the bench only loads servers on this machine (127.0.0.1), not {addr}");
        }
        let root = args.admin_token.clone().ok_or_else(|| {
            anyhow!("--admin-token (or LEASEHOLD_ADMIN_TOKEN) is needed, or use --spawn-server")
        })?;
        Ok(Target {
            addr,
            root,
            pid: args.server_pid,
            _spawned: None,
        })
    }

    /// The server's current and peak RSS in kB (`None` without its pid).
    pub(crate) fn rss(&self) -> (Option<u64>, Option<u64>) {
        match self.pid {
            Some(pid) => (status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM")),
            None => (None, None),
        }
    }
}
