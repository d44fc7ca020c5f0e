//! `leasehold bench`: drives a running server over real HTTP (keep-alive connections, a
//! separate process) and prints throughput, latency, errors and the server's memory, for the
//! scenarios of the performance bar (see BENCHMARKS.md):
//!
//! - `healthz`: `GET /healthz`, the HTTP ceiling of the same server under the same generator;
//! - `heartbeat`: live sessions heartbeating as fast as the server answers;
//! - `checkout`: open + close cycles against a license with free seats;
//! - `contended`: many clients racing for few seats (denials are answers, not errors);
//! - `hold`: a million live sessions opened, then held by heartbeats at their interval;
//! - `expire`: a million sessions expiring at once while others heartbeat;
//! - `sink`: the generator against a canned-answer HTTP responder: the generator's own ceiling;
//! - `pg`: checkout cycles and heartbeats over several `leasehold serve` nodes sharing one
//!   PostgreSQL (`--database-url`, a fresh database), against `pgbench` updating one hot row
//!   of the same PostgreSQL server with as many clients (see `bench/pg.rs`);
//! - `all`: all of them (`pg` only when `--database-url` is given), with the half-load runs
//!   and, given `--redis-semaphore`, the peer reference (Redis + redis-semaphore on Node)
//!   interleaved with the same concurrency.
//!
//! `--spawn-server` starts `leasehold serve` as a child with a fresh data folder (and a fresh one
//! again for the million-session runs), so one command measures everything. `pg` always starts
//! its own nodes.

mod hist;
mod http;
mod load;
mod pg;
mod proc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use load::{drive, open_many, Admin, Held, Job, Shape, Stats};
use proc::{status_kb, CpuMark, Sink, SpawnedServer};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Healthz,
    Heartbeat,
    Checkout,
    Contended,
    Hold,
    Expire,
    Sink,
    Pg,
    All,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Scenarios to run, comma-separated.
    #[arg(value_enum, value_delimiter = ',', default_value = "all")]
    scenarios: Vec<Scenario>,
    /// Server to drive (ignored with --spawn-server).
    #[arg(long, env = "LEASEHOLD_URL", default_value = "http://127.0.0.1:8470")]
    url: String,
    /// Root admin token of that server (the bench creates its own account).
    #[arg(long, env = "LEASEHOLD_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Start `leasehold serve` as a child process with a fresh data folder.
    #[arg(long)]
    spawn_server: bool,
    /// Pid of the server, for its RSS and CPU time (known with --spawn-server).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Where spawned servers put their data folders [default: the temp folder].
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Keep the spawned servers' data folders.
    #[arg(long)]
    keep_data: bool,
    /// Concurrent connections (workers); the peer gets the same number of holders.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds before each run.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Open loop at this many operations per second (default: closed loop, as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// After the peak runs of heartbeat and checkout, run them again at 50% of the peak rate.
    #[arg(long)]
    half_load: bool,
    /// Rounds of the short scenarios (ratios are taken within a round).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Live sessions of the heartbeat scenario.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Seats of the contended license.
    #[arg(long, default_value_t = 4)]
    seats: u64,
    /// Sessions of the hold and expire scenarios.
    #[arg(long, default_value_t = 1_000_000)]
    million: usize,
    /// Users holding those sessions.
    #[arg(long, default_value_t = 1000)]
    million_users: usize,
    /// How long `hold` heartbeats the sessions.
    #[arg(long, default_value_t = 60.0)]
    hold_secs: f64,
    /// Each held session heartbeats once per this many seconds (1M / 60 s = 16.7k/s).
    #[arg(long, default_value_t = 60.0)]
    hold_interval: f64,
    /// Sessions heartbeating (on another license) while the million expire.
    #[arg(long, default_value_t = 1000)]
    expire_heartbeaters: usize,
    /// Their total heartbeat rate, per second.
    #[arg(long, default_value_t = 5000.0)]
    expire_heartbeat_rate: f64,
    /// The million expire this many seconds after the license end is set.
    #[arg(long, default_value_t = 30.0)]
    expire_lead: f64,
    /// The peer reference's script (bench/redis-semaphore/bench.js); needs Redis running.
    #[arg(long)]
    redis_semaphore: Option<PathBuf>,
    #[arg(long, default_value = "redis://127.0.0.1:6390")]
    redis_url: String,
    /// Node processes of the peer (its holders are split among them).
    #[arg(long, default_value_t = 1)]
    redis_procs: usize,
    /// PostgreSQL for the `pg` scenario (a role that may create databases): the bench creates
    /// two fresh databases there (`lh_bench_<random>` for the nodes, `..._hot` for pgbench) and
    /// drops them afterwards. Given, `all` includes `pg`.
    #[arg(long)]
    database_url: Option<String>,
    /// `leasehold serve` nodes of the `pg` scenario; the connections are spread over them.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The pgbench executable of the `pg` scenario's reference.
    #[arg(long, default_value = "pgbench")]
    pgbench: PathBuf,
    /// Append every result as a JSON line to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Internal: run the canned-answer HTTP sink on this address (the `sink` scenario).
    #[arg(long, hide = true)]
    sink_listen: Option<SocketAddr>,
}

impl BenchArgs {
    fn shape(&self, rate: Option<f64>) -> Shape {
        Shape {
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(self.duration),
            rate,
        }
    }

    fn wants(&self, s: Scenario) -> bool {
        let all = self.scenarios.contains(&Scenario::All)
            && (s != Scenario::Pg || self.database_url.is_some());
        self.scenarios.contains(&s) || all
    }
}

/// One measured run, as printed and as written to `--json`.
struct Row {
    name: String,
    stats: Stats,
    cpu_gen: f64,
    cpu_server: Option<f64>,
    rss_kb: Option<u64>,
    hwm_kb: Option<u64>,
    extra: Value,
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

/// The server under test.
struct Target {
    addr: SocketAddr,
    root: String,
    pid: Option<u32>,
    _spawned: Option<SpawnedServer>,
}

impl Target {
    async fn new(args: &BenchArgs) -> anyhow::Result<Target> {
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

    fn rss(&self) -> (Option<u64>, Option<u64>) {
        match self.pid {
            Some(pid) => (status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM")),
            None => (None, None),
        }
    }
}

struct Bench {
    args: BenchArgs,
    rows: Vec<Row>,
}

impl Bench {
    fn record(&mut self, row: Row) -> anyhow::Result<()> {
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
    async fn run(
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

    /// Runs the peer reference's script and records its answer.
    async fn peer(&mut self, scenario: &str, rate: Option<f64>) -> anyhow::Result<Option<Value>> {
        let Some(script) = self.args.redis_semaphore.clone() else {
            return Ok(None);
        };
        let a = &self.args;
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(&script)
            .args(["--scenario", scenario])
            .args(["--concurrency", &a.concurrency.to_string()])
            .args(["--duration", &a.duration.to_string()])
            .args(["--warmup", &a.warmup.to_string()])
            .args(["--seats", &a.seats.to_string()])
            .args(["--redis-url", &a.redis_url])
            .args(["--procs", &a.redis_procs.to_string()])
            .stderr(std::process::Stdio::inherit());
        if let Some(r) = rate {
            cmd.args(["--rate", &r.to_string()]);
        }
        let out = cmd
            .output()
            .await
            .context("running node (is it installed?)")?;
        if !out.status.success() {
            bail!("the redis-semaphore script failed: {}", out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .ok_or_else(|| anyhow!("the redis-semaphore script printed no result"))?;
        let v: Value = serde_json::from_str(line)?;
        let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        println!(
            "{:<22} {:>9.0} ops/s {:>9.0} req/s | p50 {:>6.3} p99 {:>6.3} max {:>7.2} ms | errors {} denials {} | node CPU/op {:.0} µs",
            format!("redis-semaphore {scenario}"),
            f("ops_per_sec"),
            f("requests_per_sec"),
            f("p50_ms"),
            f("p99_ms"),
            f("max_ms"),
            f("errors"),
            f("denials"),
            f("cpu_us_per_op"),
        );
        if let Some(path) = &self.args.json {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(
                file,
                "{}",
                json!({"scenario": format!("redis-semaphore-{scenario}"), "peer": v})
            )?;
        }
        Ok(Some(v))
    }
}

/// Drives `jobs` (worker `i` on `addrs[i % n]`) and measures the servers `pids` over the
/// measured window, after the warmup (CPU summed over them, RSS summed over them). With
/// `postgres`, the local PostgreSQL's CPU per operation goes into the row's `extra` too.
async fn measure(
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

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(addr) = args.sink_listen {
        proc::run_sink(addr, 3600).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.concurrency == 0 || args.duration <= 0.0 {
        bail!("--concurrency and --duration must be positive");
    }
    let mut bench = Bench {
        args: args.clone(),
        rows: Vec::new(),
    };
    let short = [
        Scenario::Healthz,
        Scenario::Heartbeat,
        Scenario::Checkout,
        Scenario::Contended,
        Scenario::Sink,
    ]
    .iter()
    .any(|s| args.wants(*s));
    if args.wants(Scenario::Pg) && args.database_url.is_none() {
        bail!("the pg scenario needs --database-url postgres://USER:PASSWORD@HOST:PORT/DB");
    }
    let mut summary = Summary::default();
    if short {
        let target = Target::new(&args).await?;
        short_scenarios(&mut bench, &target, &mut summary).await?;
    }
    if args.wants(Scenario::Pg) {
        pg::run(&mut bench, &mut summary).await?;
    }
    if args.wants(Scenario::Hold) || args.wants(Scenario::Expire) {
        // A fresh server, so its peak RSS is the million sessions' own.
        let target = Target::new(&args).await?;
        million(&mut bench, &target, &mut summary).await?;
    }
    summary.print(&args);
    Ok(ExitCode::SUCCESS)
}

/// Figures the bars are judged on.
#[derive(Default)]
struct Summary {
    /// Per round: (healthz req/s, heartbeat req/s, checkout cycles/s, peer cycles/s).
    rounds: Vec<[Option<f64>; 4]>,
    sink: Option<f64>,
    half_heartbeat_p99: Option<f64>,
    half_checkout_p99: Option<f64>,
    million_rss_mb: Option<f64>,
    clear_secs: Option<f64>,
    expire_heartbeat_p99: Option<f64>,
    /// Per `pg` round: (pgbench hot-row tps, checkout cycles/s, heartbeats/s) of the nodes.
    pg_rounds: Vec<[Option<f64>; 3]>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    })
}

impl Summary {
    fn ratio(&self, num: usize, den: usize) -> (Vec<f64>, Option<f64>) {
        let each: Vec<f64> = self
            .rounds
            .iter()
            .filter_map(|r| Some(r[num]? / r[den]?))
            .collect();
        let m = median(each.clone());
        (each, m)
    }

    fn pg_ratio(&self, num: usize) -> (Vec<f64>, Option<f64>) {
        let each: Vec<f64> = self
            .pg_rounds
            .iter()
            .filter_map(|r| Some(r[num]? / r[0]?))
            .collect();
        let m = median(each.clone());
        (each, m)
    }

    fn print(&self, args: &BenchArgs) {
        println!("\n== summary (machine: {} cores) ==", cores());
        let bar = |ok: bool| if ok { "HOLDS" } else { "FAILS" };
        let show = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (each, m) = self.ratio(2, 3);
        if let Some(m) = m {
            println!(
                "checkout cycles/s / redis-semaphore cycles/s: {m:.2}x (rounds: {}) — bar >= 1.0x: {}",
                show(&each),
                bar(m >= 1.0)
            );
            // What no checkout can beat: a cycle is two requests, so half the healthz rate is
            // the cycle rate of a server that did nothing at all per request.
            let ceiling: Vec<f64> = self
                .rounds
                .iter()
                .filter_map(|r| Some(r[0]? / 2.0 / r[3]?))
                .collect();
            if let Some(c) = median(ceiling.clone()) {
                println!(
                    "  ceiling: (healthz req/s / 2) / redis-semaphore cycles/s: {c:.2}x (rounds: {})",
                    show(&ceiling)
                );
            }
        }
        let (each, m) = self.ratio(1, 0);
        if let Some(m) = m {
            println!(
                "heartbeats/s / healthz req/s:                 {m:.2}x (rounds: {}) — bar >= 0.85x: {}",
                show(&each),
                bar(m >= 0.85)
            );
        }
        if let (Some(sink), Some(h)) = (
            self.sink,
            median(self.rounds.iter().filter_map(|r| r[0]).collect()),
        ) {
            println!(
                "generator headroom: sink {sink:.0} req/s = {:.2}x the server's healthz rate",
                sink / h
            );
        }
        if let Some(p) = self.half_checkout_p99 {
            println!(
                "checkout p99 at half load: {p:.3} ms — bar < 3 ms: {}",
                bar(p < 3.0)
            );
        }
        if let Some(p) = self.half_heartbeat_p99 {
            println!(
                "heartbeat p99 at half load: {p:.3} ms — bar < 1 ms: {}",
                bar(p < 1.0)
            );
        }
        if let Some(mb) = self.million_rss_mb {
            println!(
                "{} live sessions: server peak RSS {mb:.0} MB — bar <= 300 MB: {}",
                args.million,
                bar(mb <= 300.0)
            );
        }
        if let Some(s) = self.clear_secs {
            let p = self.expire_heartbeat_p99.unwrap_or(f64::INFINITY);
            println!(
                "{} simultaneous expiries cleared in {s:.2} s, heartbeat p99 meanwhile {p:.3} ms — bar <= 10 s and < 10 ms: {}",
                args.million,
                bar(s <= 10.0 && p < 10.0)
            );
        }
        for (i, what) in [(1, "checkout cycles/s"), (2, "heartbeats/s     ")] {
            let (each, m) = self.pg_ratio(i);
            if let Some(m) = m {
                println!(
                    "PostgreSQL {} nodes {what} / pgbench hot-row tps: {m:.2}x (rounds: {}) — bar >= 7x: {}",
                    args.nodes,
                    show(&each),
                    bar(m >= 7.0)
                );
            }
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

async fn short_scenarios(
    bench: &mut Bench,
    target: &Target,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let c = args.concurrency;
    let (addr, pid) = (target.addr, target.pid);
    let admin = Admin::new(addr, &target.root, "bench").await?;
    let tokens = admin.user_tokens("bench-user-", c, 8).await?;
    println!(
        "bench: {c} connections, {} s measured after {} s warmup, generator on {} threads",
        args.duration,
        args.warmup,
        cores()
    );

    if args.wants(Scenario::Sink) {
        let sink = Sink::start().await?;
        let jobs = vec![Job::Healthz; c];
        let st = bench
            .run(
                "sink (generator)",
                &[sink.addr],
                &[sink.pid()],
                args.shape(None),
                jobs,
            )
            .await?;
        summary.sink = Some(st.requests_per_sec());
    }

    // The heartbeat scenario's sessions, spread over the workers.
    let mut hb_jobs = Vec::new();
    if args.wants(Scenario::Heartbeat) {
        let lic = admin.license(args.sessions as u64, 1200).await?;
        let (held, _) = open_many(&[addr], &lic, &tokens, args.sessions, c, "hb", false).await?;
        hb_jobs = split(held, c);
    }
    let free = admin.license((c as u64) * 4, 1200).await?;
    let checkout_jobs: Vec<Job> = (0..c)
        .map(|w| Job::Checkout {
            token: tokens[w].clone(),
            body: Arc::new(load::open_body(
                &free,
                &format!("co-d{w}"),
                &format!("co-i{w}"),
            )),
        })
        .collect();
    let contended = admin.license(args.seats, 1200).await?;
    let contended_jobs: Vec<Job> = (0..c)
        .map(|w| Job::Contended {
            token: tokens[w].clone(),
            body: Arc::new(load::open_body(
                &contended,
                &format!("ct-d{w}"),
                &format!("ct-i{w}"),
            )),
        })
        .collect();

    for round in 1..=args.repeat {
        if args.repeat > 1 {
            println!("-- round {round}/{} --", args.repeat);
        }
        let mut r = [None; 4];
        if args.wants(Scenario::Healthz) {
            let st = bench
                .run(
                    "healthz",
                    &[addr],
                    pid.as_slice(),
                    args.shape(args.rate),
                    vec![Job::Healthz; c],
                )
                .await?;
            r[0] = Some(st.requests_per_sec());
        }
        if args.wants(Scenario::Heartbeat) {
            let st = bench
                .run(
                    "heartbeat",
                    &[addr],
                    pid.as_slice(),
                    args.shape(args.rate),
                    hb_jobs.clone(),
                )
                .await?;
            r[1] = Some(st.requests_per_sec());
        }
        if args.wants(Scenario::Checkout) {
            let st = bench
                .run(
                    "checkout",
                    &[addr],
                    pid.as_slice(),
                    args.shape(args.rate),
                    checkout_jobs.clone(),
                )
                .await?;
            r[2] = Some(st.ops_per_sec());
            if let Some(v) = bench.peer("checkout", args.rate).await? {
                r[3] = v.get("ops_per_sec").and_then(Value::as_f64);
            }
            bench.peer("refresh", None).await?;
        }
        if args.wants(Scenario::Contended) {
            bench
                .run(
                    "contended",
                    &[addr],
                    pid.as_slice(),
                    args.shape(args.rate),
                    contended_jobs.clone(),
                )
                .await?;
            bench.peer("contended", None).await?;
            let left = admin.in_use(&contended).await?;
            if left > 0 {
                println!("contended: {left} sessions still live after the run (expected 0)");
            }
        }
        summary.rounds.push(r);
    }

    if args.half_load && args.rate.is_none() {
        let med = |i: usize| median(summary.rounds.iter().filter_map(|r| r[i]).collect());
        if let Some(peak) = med(1).filter(|_| args.wants(Scenario::Heartbeat)) {
            let st = bench
                .run(
                    "heartbeat @50%",
                    &[addr],
                    pid.as_slice(),
                    args.shape(Some(peak / 2.0)),
                    hb_jobs.clone(),
                )
                .await?;
            summary.half_heartbeat_p99 = Some(st.all.quantile_ms(0.99));
        }
        if let Some(peak) = med(2).filter(|_| args.wants(Scenario::Checkout)) {
            let st = bench
                .run(
                    "checkout @50%",
                    &[addr],
                    pid.as_slice(),
                    args.shape(Some(peak / 2.0)),
                    checkout_jobs.clone(),
                )
                .await?;
            summary.half_checkout_p99 = Some(st.all.quantile_ms(0.99));
        }
    }
    Ok(())
}

/// Splits sessions over `workers` heartbeat jobs (each heartbeats its share round-robin).
fn split(held: Vec<Held>, workers: usize) -> Vec<Job> {
    let mut parts: Vec<Vec<Held>> = (0..workers.max(1)).map(|_| Vec::new()).collect();
    let n = parts.len();
    for (i, h) in held.into_iter().enumerate() {
        parts[i % n].push(h);
    }
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| Job::Heartbeat(Arc::new(p)))
        .collect()
}

#[allow(clippy::disallowed_methods)] // the bench sets a license end in real time
fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

fn rfc3339_in(secs: f64) -> anyhow::Result<String> {
    let at = unix_now() + Duration::from_secs_f64(secs);
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(at.as_nanos() as i128)?;
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

async fn million(bench: &mut Bench, target: &Target, summary: &mut Summary) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let (addr, pid) = (target.addr, target.pid);
    let n = args.million;
    let admin = Admin::new(addr, &target.root, "bench-million").await?;
    let tokens = admin
        .user_tokens("m-user-", args.million_users.clamp(1, n.max(1)), 8)
        .await?;
    let lic = admin.license(n as u64, 1200).await?;
    let (rss0, _) = target.rss();
    println!(
        "opening {n} sessions ({} users, {} connections)...",
        tokens.len(),
        args.concurrency
    );
    let mark = CpuMark::now(pid.as_slice());
    let (held, st) = open_many(&[addr], &lic, &tokens, n, args.concurrency, "m", true).await?;
    let (cpu_gen, cpu_server) = mark.since(pid.as_slice());
    let (rss_kb, hwm_kb) = target.rss();
    let per_session = match (rss_kb, rss0) {
        (Some(a), Some(b)) => {
            json!({"rss_bytes_per_session": (a.saturating_sub(b) * 1024) as f64 / n.max(1) as f64})
        }
        _ => Value::Null,
    };
    bench.record(Row {
        name: format!("open {n}"),
        stats: st,
        cpu_gen,
        cpu_server,
        rss_kb,
        hwm_kb,
        extra: per_session,
    })?;
    let in_use = admin.in_use(&lic).await?;
    if in_use != n as u64 {
        bail!("the license holds {in_use} live sessions, expected {n}");
    }

    if args.wants(Scenario::Hold) && args.hold_secs > 0.0 {
        let rate = n as f64 / args.hold_interval;
        let shape = Shape {
            warmup: Duration::ZERO,
            duration: Duration::from_secs_f64(args.hold_secs),
            rate: Some(rate),
        };
        let jobs = split(held.clone(), args.concurrency);
        bench
            .run(&format!("hold {n}"), &[addr], pid.as_slice(), shape, jobs)
            .await?;
    }
    let (_, hwm) = target.rss();
    summary.million_rss_mb = hwm.map(|k| k as f64 / 1024.0);

    if args.wants(Scenario::Expire) {
        drop(held);
        expire(bench, target, &admin, &lic, &tokens, summary).await?;
    }
    Ok(())
}

async fn expire(
    bench: &mut Bench,
    target: &Target,
    admin: &Admin,
    lic: &str,
    tokens: &[Arc<str>],
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let (addr, pid) = (target.addr, target.pid);
    let n = args.million;
    // One seat more than the heartbeaters hold, for the durable probe after the clearing.
    let other = admin
        .license(args.expire_heartbeaters as u64 + 1, 1200)
        .await?;
    let (hb, _) = open_many(
        &[addr],
        &other,
        tokens,
        args.expire_heartbeaters,
        args.concurrency,
        "e",
        false,
    )
    .await?;
    let jobs = split(hb, args.concurrency);
    let record = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let shape = Shape {
        warmup: Duration::ZERO,
        duration: Duration::from_secs(600),
        rate: Some(args.expire_heartbeat_rate),
    };
    let control = load::Control {
        record: Some(record.clone()),
        stop: Some(stop.clone()),
    };
    let mark = CpuMark::now(pid.as_slice());
    let background =
        tokio::spawn(async move { load::drive_controlled(&[addr], shape, jobs, control).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let patch_started = Instant::now();
    let end = rfc3339_in(args.expire_lead)?;
    let expiry = patch_started + Duration::from_secs_f64(args.expire_lead);
    // The call runs on its own: the clearing is timed from the expiry even if it is slower.
    let patch = {
        let admin = Admin {
            addr: admin.addr,
            account_id: admin.account_id.clone(),
            admin_token: admin.admin_token.clone(),
        };
        let lic = lic.to_owned();
        tokio::spawn(async move {
            admin
                .patch_license(&lic, json!({ "expires_at": end }))
                .await
                .map(|_| patch_started.elapsed().as_secs_f64())
        })
    };
    tokio::time::sleep_until(expiry.into()).await;
    record.store(true, Ordering::Relaxed);
    let deadline = expiry + Duration::from_secs(120);
    let mut cleared = None;
    while Instant::now() < deadline {
        match admin.in_use(lic).await {
            Ok(0) => {
                cleared = Some(expiry.elapsed());
                break;
            }
            Ok(_) => {}
            Err(e) => eprintln!("usage poll failed: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Keep measuring a moment after the clearing (the writer may still be persisting it), and
    // time a durable open + close on the other license: how long the backlog holds up writes.
    let probe = Instant::now();
    let durable = open_many(&[addr], &other, &tokens[..1], 1, 1, "probe", false)
        .await
        .ok()
        .map(|_| probe.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(probe.elapsed())).await;
    record.store(false, Ordering::Relaxed);
    let window = expiry.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut stats = background.await??;
    let patch_secs = patch.await?.context("setting the license end")?;
    stats.secs = window.as_secs_f64();
    let (cpu_gen, cpu_server) = mark.since(pid.as_slice());
    let (rss_kb, hwm_kb) = target.rss();
    summary.clear_secs = cleared.map(|d| d.as_secs_f64());
    summary.expire_heartbeat_p99 = Some(stats.all.quantile_ms(0.99));
    bench.record(Row {
        name: format!("expire {n} (heartbeats)"),
        stats,
        cpu_gen,
        cpu_server,
        rss_kb,
        hwm_kb,
        extra: json!({
            "cleared_secs": summary.clear_secs,
            "set_license_end_secs": patch_secs,
            "durable_open_after_clear_secs": durable,
            "heartbeat_rate": args.expire_heartbeat_rate,
        }),
    })?;
    if cleared.is_none() {
        println!("expire: the sessions were not cleared within 120 s");
    }
    Ok(())
}
