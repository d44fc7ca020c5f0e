//! One measured run: drive the load, read the servers' CPU and RSS over the measured window
//! (after the warmup), then print the run's row and append it to `--json`. [`Bench`] is the
//! context every scenario records into.

use std::net::SocketAddr;

use anyhow::Context;
use serde_json::{json, Value};

use crate::args::BenchArgs;
use crate::load::{drive, Job, Shape, Stats};
use crate::proc::{self, status_kb, CpuMark};

/// One measured run, as printed and as written to `--json`.
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) stats: Stats,
    pub(crate) cpu_gen: f64,
    pub(crate) cpu_server: Option<f64>,
    pub(crate) rss_kb: Option<u64>,
    pub(crate) hwm_kb: Option<u64>,
    pub(crate) extra: Value,
}

impl Row {
    fn json(&self) -> Value {
        let s = &self.stats;
        let per_op = |cpu: f64| cpu * 1e6 / (s.ops.max(1) as f64);
        json!({
            "scenario": self.name,
            "ops_per_sec": s.ops_per_sec(),
            "requests_per_sec": s.requests_per_sec(),
            "ops": s.ops, "requests": s.requests, "errors": s.errors, "denials": s.denials,
            "behind_schedule": s.behind, "connections": s.connects, "secs": s.secs,
            "p50_ms": s.all.quantile_ms(0.5), "p99_ms": s.all.quantile_ms(0.99),
            "max_ms": s.all.max_ms(), "mean_ms": s.all.mean_ms(),
            "open_p99_ms": s.open.quantile_ms(0.99), "close_p99_ms": s.close.quantile_ms(0.99),
            "generator_cpu_us_per_op": per_op(self.cpu_gen),
            "server_cpu_us_per_op": self.cpu_server.map(per_op),
            "server_rss_mb": self.rss_kb.map(|k| k as f64 / 1024.0),
            "server_peak_rss_mb": self.hwm_kb.map(|k| k as f64 / 1024.0),
            "first_error": s.first_error,
            "extra": self.extra,
        })
    }

    fn print(&self) {
        let s = &self.stats;
        let mb = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.0}", k as f64 / 1024.0));
        let per_op = |cpu: f64| cpu * 1e6 / (s.ops.max(1) as f64);
        println!(
            "{:<22} {:>9.0} ops/s {:>9.0} req/s | p50 {:>6.3} p99 {:>6.3} max {:>7.2} ms | errors {} denials {} behind {} | CPU/op gen {:.0} µs server {} µs | RSS {} MB peak {} MB",
            self.name,
            s.ops_per_sec(),
            s.requests_per_sec(),
            s.all.quantile_ms(0.5),
            s.all.quantile_ms(0.99),
            s.all.max_ms(),
            s.errors,
            s.denials,
            s.behind,
            per_op(self.cpu_gen),
            self.cpu_server.map_or("-".into(), |c| format!("{:.0}", per_op(c))),
            mb(self.rss_kb),
            mb(self.hwm_kb),
        );
        if s.open.count > 0 && s.close.count > 0 {
            println!(
                "{:<22} open p50 {:.3} p99 {:.3} ms, close p50 {:.3} p99 {:.3} ms",
                "",
                s.open.quantile_ms(0.5),
                s.open.quantile_ms(0.99),
                s.close.quantile_ms(0.5),
                s.close.quantile_ms(0.99)
            );
        }
        if let Some(e) = &s.first_error {
            println!("{:<22} first error: {e}", "");
        }
        if !self.extra.is_null() {
            println!("{:<22} {}", "", self.extra);
        }
    }
}

/// The run as a whole: its flags and the rows recorded so far.
pub(crate) struct Bench {
    pub(crate) args: BenchArgs,
    pub(crate) rows: Vec<Row>,
}

impl Bench {
    /// Prints `row`, appends it to `--json` and keeps it.
    pub(crate) fn record(&mut self, row: Row) -> anyhow::Result<()> {
        row.print();
        if let Some(path) = &self.args.json {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            writeln!(f, "{}", row.json())?;
        }
        self.rows.push(row);
        Ok(())
    }

    /// Drives `jobs` (worker `i` on `addrs[i % n]`) and records the run.
    pub(crate) async fn run(
        &mut self,
        name: &str,
        addrs: &[SocketAddr],
        pids: &[u32],
        shape: Shape,
        jobs: Vec<Job>,
    ) -> anyhow::Result<Stats> {
        let row = measure(name, addrs, pids, shape, jobs, false).await?;
        let stats = row.stats.clone();
        self.record(row)?;
        Ok(stats)
    }
}

/// Drives `jobs` (worker `i` on `addrs[i % n]`) and measures the servers `pids` over the
/// measured window, after the warmup (CPU summed over them, RSS summed over them). With
/// `postgres`, the local PostgreSQL's CPU per operation goes into the row's `extra` too.
pub(crate) async fn measure(
    name: &str,
    addrs: &[SocketAddr],
    pids: &[u32],
    shape: Shape,
    jobs: Vec<Job>,
    postgres: bool,
) -> anyhow::Result<Row> {
    let targets = addrs.to_vec();
    let driving = tokio::spawn(async move { drive(&targets, shape, jobs).await });
    // CPU is counted from the end of the warmup, as the operations are.
    tokio::time::sleep(shape.warmup).await;
    let mark = CpuMark::now(pids);
    let (stats, pg_cpu) = if postgres {
        proc::with_postgres_cpu(driving).await
    } else {
        (driving.await, None)
    };
    let stats = stats.context("the bench driver panicked")??;
    let (cpu_gen, cpu_server) = mark.since(pids);
    let (rss_kb, hwm_kb) = rss_sum(pids);
    let mut extra = serde_json::Map::new();
    if let Some(r) = shape.rate {
        extra.insert("target_rate".into(), json!(r));
    }
    if postgres {
        let per_op = pg_cpu.map(|c| c * 1e6 / stats.ops.max(1) as f64);
        extra.insert("postgres_cpu_us_per_op".into(), json!(per_op));
    }
    Ok(Row {
        name: name.to_owned(),
        stats,
        cpu_gen,
        cpu_server,
        rss_kb,
        hwm_kb,
        extra: if extra.is_empty() {
            Value::Null
        } else {
            Value::Object(extra)
        },
    })
}

/// Current and peak RSS (kB) of the processes `pids`, summed; `None` without pids.
fn rss_sum(pids: &[u32]) -> (Option<u64>, Option<u64>) {
    if pids.is_empty() {
        return (None, None);
    }
    let sum = |field: &str| {
        pids.iter()
            .map(|&p| status_kb(p, field))
            .sum::<Option<u64>>()
    };
    (sum("VmRSS"), sum("VmHWM"))
}
