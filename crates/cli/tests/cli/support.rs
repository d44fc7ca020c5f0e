//! Running the real `leasehold` binary in tests.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_leasehold");

/// A free loopback port (bound then released; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    /// Lines the server printed on stdout.
    pub stdout: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Starts `leasehold serve` on a free port and waits until /healthz answers.
    pub fn start(data_dir: &Path, envs: &[(&str, &str)]) -> ServerProcess {
        Self::start_with(data_dir, envs, &[], None)
    }

    /// `start` with more `serve` flags; `ca_file`: the server speaks HTTPS with a certificate
    /// of that CA.
    pub fn start_with(
        data_dir: &Path,
        envs: &[(&str, &str)],
        args: &[&str],
        ca_file: Option<&Path>,
    ) -> ServerProcess {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir)
        .args(args)
        .env_remove("LEASEHOLD_ADMIN_TOKEN")
        .env("LEASEHOLD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let scheme = if ca_file.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut check = Command::new(BIN);
            check.args(["healthcheck", "--url", &url]);
            if let Some(ca) = ca_file {
                check.arg("--ca-file").arg(ca);
            }
            let ok = check
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("server exited early: {status}");
            }
            assert!(Instant::now() < deadline, "server did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        ServerProcess {
            child,
            url,
            stdout: rx,
        }
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn printed_lines(&self) -> Vec<String> {
        self.stdout.try_iter().collect()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
