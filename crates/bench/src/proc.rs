//! `/proc` readings around a bench run: peak and current RSS and CPU time of the servers, of
//! the generator itself and of the local PostgreSQL's processes.

use std::collections::HashMap;
use std::time::Duration;

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
