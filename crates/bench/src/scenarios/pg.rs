//! `leasehold bench pg`: several `leasehold serve` nodes on one PostgreSQL, against what the
//! same PostgreSQL server does with one hot row (issue 6: "3 nodes together >= 7x the pgbench
//! single-hot-row UPDATE rate measured on the same machine with 64 clients").
//!
//! A run creates two fresh databases on the server of `--database-url`: `lh_bench_<random>`
//! for the nodes and `lh_bench_<random>_hot` with a table `hot(id int primary key, v bigint)`
//! of one row for `pgbench`; both are dropped at the end (`WITH (FORCE)`), also when the run
//! fails (an interrupted run leaves them: the prefix says whose they are). Each round:
//!
//! 1. `pgbench -n -f hot.sql -T <duration> -c <concurrency> -j 2` runs `UPDATE hot SET v = v + 1
//!    WHERE id = 1;` alone on the machine: no node is running, so the nodes' idle pooled
//!    connections neither compete nor count against PostgreSQL's `max_connections` (3 nodes
//!    hold up to 33, pgbench 64, out of 100 by default). Its `tps = … (without initial
//!    connection time)` is the reference.
//! 2. `--nodes` nodes start on the bench database (all at once, as in a rollout) and the
//!    generator spreads its `--concurrency` keep-alive connections round-robin over them:
//!    checkout cycles (open + close, both durable, on one license with free seats: the license
//!    row is the nodes' hot row) and heartbeats of `--sessions` live sessions (opened once,
//!    spread over the nodes; they outlive the nodes' restarts, PostgreSQL holds them).
//!    The nodes' CPU is summed, as is the local PostgreSQL's (sampled from `/proc`).
//! 3. The nodes stop.
//!
//! The summary prints the two ratios to the pgbench rate against the bar (>= 7x).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use sqlx::Connection;

use super::split;
use crate::args::BenchArgs;
use crate::load::{open_body, open_many, Job};
use crate::measure::{measure, Bench};
use crate::proc::with_postgres_cpu;
use crate::setup::Admin;
use crate::spawn::{random_hex, SpawnedServer};
use crate::summary::Summary;

/// The UPDATE pgbench runs: one hot row.
const HOT_SCRIPT: &str = "UPDATE hot SET v = v + 1 WHERE id = 1;\n";

pub(crate) async fn run(bench: &mut Bench, summary: &mut Summary) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let url = args
        .database_url
        .clone()
        .ok_or_else(|| anyhow!("the pg scenario needs --database-url"))?;
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let scratch = Scratch::create(&url).await?;
    println!(
        "pg: databases {} (nodes) and {} (pgbench hot row) created",
        scratch.name, scratch.hot
    );
    let result = rounds(bench, summary, &scratch).await;
    let dropped = scratch.drop_all().await;
    result?;
    dropped
}

async fn rounds(bench: &mut Bench, summary: &mut Summary, scratch: &Scratch) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let root = format!("lh_root_bench_{}", random_hex(16));
    let n = args.nodes;
    let c = args.concurrency;
    let mut jobs: Option<(Vec<Job>, Vec<Job>)> = None;
    for round in 1..=args.repeat {
        if args.repeat > 1 {
            println!("-- pg round {round}/{} --", args.repeat);
        }
        let tps = pgbench(bench, &scratch.url(&scratch.hot)).await?;

        let nodes = start_nodes(&args, &scratch.url(&scratch.name), &root).await?;
        let addrs: Vec<SocketAddr> = nodes.iter().map(|s| s.addr).collect();
        let pids: Vec<u32> = nodes.iter().map(SpawnedServer::pid).collect();
        println!(
            "pg: {n} nodes (pids {pids:?}), {c} connections spread over them, {} s measured after {} s warmup",
            args.duration, args.warmup
        );
        let (checkout_jobs, hb_jobs) = match &jobs {
            Some(j) => j.clone(),
            None => {
                let made = jobs.insert(setup(&args, &addrs, &root).await?).clone();
                scratch.analyze().await?;
                made
            }
        };
        let (checkout, _) = run_one(
            bench,
            &format!("pg checkout ({n} nodes)"),
            &addrs,
            &pids,
            checkout_jobs,
        )
        .await?;
        let (heartbeat, hb_cpu) = run_one(
            bench,
            &format!("pg heartbeat ({n} nodes)"),
            &addrs,
            &pids,
            hb_jobs,
        )
        .await?;
        drop(nodes);
        summary.pg_heartbeat_cpu_us.extend(hb_cpu);
        summary
            .pg_rounds
            .push([Some(tps), Some(checkout), Some(heartbeat)]);
    }
    Ok(())
}

/// One measured run over the nodes; its operations per second, and its CPU per operation of
/// the nodes and PostgreSQL together (µs).
async fn run_one(
    bench: &mut Bench,
    name: &str,
    addrs: &[SocketAddr],
    pids: &[u32],
    jobs: Vec<Job>,
) -> anyhow::Result<(f64, Option<f64>)> {
    let shape = bench.args.shape(bench.args.rate);
    let mut row = measure(name, addrs, pids, shape, jobs, true).await?;
    let per_op = row.stats.ops.max(1) as f64;
    let nodes_us = row.cpu_server.map(|c| c * 1e6 / per_op);
    let pg_us = row
        .extra
        .get("postgres_cpu_us_per_op")
        .and_then(Value::as_f64);
    let total_us = nodes_us.zip(pg_us).map(|(a, b)| a + b);
    if let Value::Object(extra) = &mut row.extra {
        extra.insert("nodes".into(), json!(addrs.len()));
        extra.insert("total_cpu_us_per_op".into(), json!(total_us));
    }
    let ops = row.stats.ops_per_sec();
    bench.record(row)?;
    Ok((ops, total_us))
}

/// The scenario's account, users, licenses and heartbeat sessions (made once, through the
/// first node; sessions opened over all of them): the checkout and heartbeat jobs.
async fn setup(
    args: &BenchArgs,
    addrs: &[SocketAddr],
    root: &str,
) -> anyhow::Result<(Vec<Job>, Vec<Job>)> {
    let c = args.concurrency;
    let admin = Admin::new(addrs[0], root, "bench-pg").await?;
    let tokens = admin.user_tokens("pg-user-", c, 8).await?;
    let free = admin.license((c as u64) * 4, 1200).await?;
    let checkout = (0..c)
        .map(|w| Job::Checkout {
            token: tokens[w].clone(),
            body: Arc::new(open_body(&free, &format!("pg-d{w}"), &format!("pg-i{w}"))),
        })
        .collect();
    let lic = admin.license(args.sessions as u64, 1200).await?;
    let (held, st) = open_many(addrs, &lic, &tokens, args.sessions, c, "pghb", false).await?;
    println!(
        "pg: {} heartbeat sessions opened over the nodes ({:.0}/s)",
        held.len(),
        st.ops_per_sec()
    );
    Ok((checkout, split(held, c)))
}

/// Starts the nodes at once and waits until each serves.
pub(crate) async fn start_nodes(
    args: &BenchArgs,
    database_url: &str,
    root: &str,
) -> anyhow::Result<Vec<SpawnedServer>> {
    let mut nodes = (0..args.nodes)
        .map(|_| {
            SpawnedServer::spawn(
                args.data_root.clone(),
                args.keep_data,
                Some(database_url),
                root,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for node in &mut nodes {
        node.wait_healthy().await?;
    }
    Ok(nodes)
}

/// Runs pgbench's hot-row UPDATE against `hot_url` for the run's duration with the run's
/// concurrency, prints and records it; its tps.
async fn pgbench(bench: &mut Bench, hot_url: &str) -> anyhow::Result<f64> {
    let args = bench.args.clone();
    let clients = args.concurrency;
    let threads = clients.min(2);
    // pgbench takes whole seconds.
    let secs = args.duration.ceil().max(1.0) as u64;
    let dir = args.data_root.clone().unwrap_or_else(std::env::temp_dir);
    let script = dir.join(format!(
        "leasehold-bench-hot-{}-{}.sql",
        std::process::id(),
        random_hex(4)
    ));
    std::fs::write(&script, HOT_SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let (out, pg_cpu) = with_postgres_cpu(
        tokio::process::Command::new(&args.pgbench)
            .arg("-n")
            .arg("-f")
            .arg(&script)
            .args(["-T", &secs.to_string()])
            .args(["-c", &clients.to_string()])
            .args(["-j", &threads.to_string()])
            .arg(hot_url)
            .env_remove("PGOPTIONS")
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await;
    let _ = std::fs::remove_file(&script);
    let out = out.with_context(|| format!("running {}", args.pgbench.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed ({}):\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report = PgbenchReport::parse(&text)?;
    let per_tx = pg_cpu.map(|c| c * 1e6 / report.transactions.max(1) as f64);
    println!(
        "{:<22} {:>9.0} tx/s | latency avg {:.3} ms | failed {} | postgres CPU/tx {} µs | {clients} clients, {threads} threads, {secs} s",
        "pgbench hot row",
        report.tps,
        report.latency_ms.unwrap_or(f64::NAN),
        report.failed,
        per_tx.map_or("-".into(), |c| format!("{c:.0}")),
    );
    if let Some(path) = &args.json {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(
            f,
            "{}",
            json!({
                "scenario": "pgbench hot row",
                "ops_per_sec": report.tps,
                "ops": report.transactions,
                "errors": report.failed,
                "mean_ms": report.latency_ms,
                "secs": secs,
                "clients": clients,
                "threads": threads,
                "postgres_cpu_us_per_op": per_tx,
                "script": HOT_SCRIPT.trim_end(),
            })
        )?;
    }
    Ok(report.tps)
}

/// What pgbench printed.
#[derive(Debug, PartialEq)]
struct PgbenchReport {
    /// `tps = … (without initial connection time)`.
    tps: f64,
    transactions: u64,
    failed: u64,
    latency_ms: Option<f64>,
}

impl PgbenchReport {
    fn parse(text: &str) -> anyhow::Result<PgbenchReport> {
        let after = |prefix: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
        };
        let tps = text
            .lines()
            .filter(|l| l.contains("without initial connection time"))
            .find_map(|l| l.trim().strip_prefix("tps = "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no `tps = … (without initial connection time)` in:\n{text}"))?;
        let transactions = after("number of transactions actually processed:")
            .and_then(|v| v.split('/').next()?.parse().ok())
            .unwrap_or(0);
        let failed = after("number of failed transactions:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let latency_ms = after("latency average =").and_then(|v| v.parse().ok());
        Ok(PgbenchReport {
            tps,
            transactions,
            failed,
            latency_ms,
        })
    }
}

/// The run's two databases on the server of the admin URL.
pub(crate) struct Scratch {
    admin_url: String,
    pub(crate) name: String,
    hot: String,
}

impl Scratch {
    pub(crate) async fn create(admin_url: &str) -> anyhow::Result<Scratch> {
        let name = format!("lh_bench_{}", random_hex(8));
        let scratch = Scratch {
            admin_url: admin_url.to_owned(),
            hot: format!("{name}_hot"),
            name,
        };
        if let Err(e) = scratch.init().await {
            let _ = scratch.drop_all().await;
            return Err(e);
        }
        Ok(scratch)
    }

    async fn init(&self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .context("connecting to --database-url")?;
        for db in [&self.name, &self.hot] {
            sqlx::raw_sql(&format!("CREATE DATABASE {db}"))
                .execute(&mut conn)
                .await
                .with_context(|| {
                    format!("creating database {db} (may the role create databases?)")
                })?;
        }
        conn.close().await.ok();
        let mut hot = sqlx::PgConnection::connect(&self.url(&self.hot)).await?;
        sqlx::raw_sql(
            "CREATE TABLE hot (id int PRIMARY KEY, v bigint NOT NULL); INSERT INTO hot VALUES (1, 0)",
        )
        .execute(&mut hot)
        .await
        .context("creating the hot row")?;
        hot.close().await.ok();
        Ok(())
    }

    /// Gathers the planner's statistics of the nodes' database, as autovacuum does in a
    /// running deployment (and `pgbench -i` for its own tables): on tables never analyzed,
    /// PostgreSQL guesses them tiny and plans sequential scans and hash joins that a
    /// deployment past its first minute never runs.
    async fn analyze(&self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.url(&self.name)).await?;
        sqlx::raw_sql("ANALYZE")
            .execute(&mut conn)
            .await
            .context("analyzing the nodes' database")?;
        conn.close().await.ok();
        println!("pg: the nodes' database analyzed after the setup");
        Ok(())
    }

    pub(crate) fn url(&self, db: &str) -> String {
        with_database(&self.admin_url, db)
    }

    /// The nodes' database, dropped and created again, empty.
    pub(crate) async fn recreate(&self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .with_context(|| format!("dropping database {}", self.name))?;
        sqlx::raw_sql(&format!("CREATE DATABASE {}", self.name))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {}", self.name))?;
        conn.close().await.ok();
        Ok(())
    }

    pub(crate) async fn drop_all(&self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        for db in [&self.name, &self.hot] {
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .with_context(|| format!("dropping database {db}"))?;
        }
        conn.close().await.ok();
        Ok(())
    }
}

/// `url` with its database name replaced by `name` (the query string kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let start = base.find("://").map_or(0, |i| i + 3);
    let end = base[start..].find('/').map_or(base.len(), |i| start + i);
    let mut out = format!("{}/{name}", &base[..end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_report_is_parsed() {
        let text = "transaction type: hot.sql\nscaling factor: 1\nquery mode: simple\n\
            number of clients: 64\nnumber of threads: 2\nmaximum number of tries: 1\n\
            duration: 3 s\nnumber of transactions actually processed: 4476\n\
            number of failed transactions: 0 (0.000%)\nlatency average = 39.599 ms\n\
            initial connection time = 380.397 ms\n\
            tps = 1616.206551 (without initial connection time)\n";
        assert_eq!(
            PgbenchReport::parse(text).unwrap(),
            PgbenchReport {
                tps: 1616.206551,
                transactions: 4476,
                failed: 0,
                latency_ms: Some(39.599),
            }
        );
        assert!(PgbenchReport::parse("nothing").is_err());
    }

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/postgres", "lh_bench_x"),
            "postgres://u:p@127.0.0.1:5432/lh_bench_x"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "y"),
            "postgres://u@h/y?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "z"),
            "postgres://h:5432/z"
        );
    }
}
