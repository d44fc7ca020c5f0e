//! `leasehold bench pg-hold`: a million live sessions over several `leasehold serve` nodes on
//! one PostgreSQL (issue 18), held by heartbeats at their interval, then expiring at once.
//!
//! 1. A fresh database (`lh_bench_<random>`, dropped at the end, as `pg` makes it) and `--nodes`
//!    nodes on it; `--million` sessions opened through the API over all nodes (durable opens,
//!    `--concurrency` in flight), for `--million-users` users.
//! 2. Held: every session heartbeats once per `--hold-interval` seconds, open loop (each
//!    session always through the node that opened it, as behind a load balancer with session
//!    affinity: that node holds it from the open), first one interval unmeasured, then
//!    `--hold-secs` measured: achieved rate, p50/p99/max, errors; the nodes' CPU and the local
//!    PostgreSQL's per heartbeat; each node's RSS; the size of `sessions` and of its indexes.
//! 3. The heartbeats stop and the license's end is set `--expire-lead` seconds ahead: at that
//!    instant the million expire at once. Timed from it: until the license shows no seat in use
//!    (`usage.in_use`), and until the database holds no live row of it (`ended_at IS NULL`).
//!
//! The summary judges the bars: heartbeat p99 < 50 ms with no errors at the target rate, and
//! the database cleared within 10 s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use sqlx::{Connection, Row};

use super::million::rfc3339_in;
use super::pg::{start_nodes, Scratch};
use crate::load::{open_many, Held, Job, Shape};
use crate::measure::{measure, Bench, Row as RunRow};
use crate::proc::{status_kb, CpuMark};
use crate::setup::Admin;
use crate::spawn::{random_hex, SpawnedServer};
use crate::summary::{PgHoldFigures, Summary};

pub(crate) async fn run(bench: &mut Bench, summary: &mut Summary) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let url = args
        .database_url
        .clone()
        .ok_or_else(|| anyhow!("the pg-hold scenario needs --database-url"))?;
    if args.nodes == 0 || args.million == 0 || args.hold_interval <= 0.0 {
        bail!("--nodes, --million and --hold-interval must be positive");
    }
    let scratch = Scratch::create(&url).await?;
    println!("pg-hold: database {} created", scratch.name);
    let result = hold(bench, summary, &scratch).await;
    let dropped = scratch.drop_all().await;
    result?;
    dropped
}

async fn hold(bench: &mut Bench, summary: &mut Summary, scratch: &Scratch) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let db_url = scratch.url(&scratch.name);
    let root = format!("lh_root_bench_{}", random_hex(16));
    let n = args.million;
    let nodes = start_nodes(&args, &db_url, &root).await?;
    let addrs: Vec<_> = nodes.iter().map(|s| s.addr).collect();
    let pids: Vec<u32> = nodes.iter().map(SpawnedServer::pid).collect();
    let admin = Admin::new(addrs[0], &root, "bench-pg-hold").await?;
    let tokens = admin
        .user_tokens("ph-user-", args.million_users.clamp(1, n), 8)
        .await?;
    // Inactivity long enough that the first sessions opened outlive the opening of the last
    // (a million took 20 minutes here): the hold's interval, not this, sets the heartbeat rate.
    let lic = admin.license(n as u64, 7200).await?;

    // 1. Open.
    println!(
        "pg-hold: opening {n} sessions over {} nodes ({} connections)...",
        addrs.len(),
        args.concurrency
    );
    let mark = CpuMark::now(&pids);
    let (held, st) = open_many(&addrs, &lic, &tokens, n, args.concurrency, "ph", true).await?;
    let (cpu_gen, cpu_server) = mark.since(&pids);
    let (rss_kb, hwm_kb) = rss(&pids);
    bench.record(RunRow {
        name: format!("pg open {n}"),
        stats: st,
        cpu_gen,
        cpu_server,
        rss_kb,
        hwm_kb,
        extra: json!({"nodes": addrs.len()}),
    })?;
    let in_use = admin.in_use(&lic).await?;
    if in_use != n as u64 {
        bail!("the license holds {in_use} live sessions, expected {n}");
    }

    // 2. Hold.
    let rate = n as f64 / args.hold_interval;
    let shape = Shape {
        warmup: Duration::from_secs_f64(args.hold_interval),
        duration: Duration::from_secs_f64(args.hold_secs),
        rate: Some(rate),
    };
    println!(
        "pg-hold: {rate:.0} heartbeats/s, {:.0} s unmeasured then {:.0} s measured",
        args.hold_interval, args.hold_secs
    );
    let jobs = by_opening_node(held, args.concurrency, addrs.len());
    let mut row = measure(&format!("pg hold {n}"), &addrs, &pids, shape, jobs, true).await?;
    let per_node_rss: Vec<Option<f64>> = pids
        .iter()
        .map(|&p| status_kb(p, "VmRSS").map(|k| k as f64 / 1024.0))
        .collect();
    let sizes = table_sizes(&db_url).await?;
    let ops = row.stats.ops.max(1) as f64;
    let nodes_us = row.cpu_server.map(|c| c * 1e6 / ops);
    let pg_us = row
        .extra
        .get("postgres_cpu_us_per_op")
        .and_then(Value::as_f64);
    let total_us = nodes_us.zip(pg_us).map(|(a, b)| a + b);
    if let Value::Object(extra) = &mut row.extra {
        extra.insert("nodes".into(), json!(addrs.len()));
        extra.insert("node_rss_mb".into(), json!(per_node_rss));
        extra.insert("nodes_cpu_us_per_op".into(), json!(nodes_us));
        extra.insert("total_cpu_us_per_op".into(), json!(total_us));
        extra.insert("sessions_table".into(), sizes.clone());
    }
    let figures = PgHoldFigures {
        sessions: n,
        target_rate: rate,
        rate: row.stats.ops_per_sec(),
        p99_ms: row.stats.all.quantile_ms(0.99),
        errors: row.stats.errors,
        total_cpu_us: total_us,
        node_rss_mb: per_node_rss.iter().flatten().copied().collect(),
        sessions_mb: sizes["total_mb"].as_f64(),
        cleared_secs: None,
        seats_freed_secs: None,
    };
    bench.record(row)?;

    // 3. Expire at once.
    let (seats_freed, cleared) = expire(&admin, &lic, &db_url, args.expire_lead).await?;
    summary.pg_hold = Some(PgHoldFigures {
        cleared_secs: cleared,
        seats_freed_secs: seats_freed,
        ..figures
    });
    drop(nodes);
    Ok(())
}

/// Splits sessions over `workers` heartbeat jobs so that each session heartbeats through the
/// node that opened it (job `i` runs on node `i % nodes`, see `measure`): as clients do behind a
/// load balancer with session affinity, and what lets that node answer from the first
/// heartbeat from memory.
fn by_opening_node(held: Vec<Held>, workers: usize, nodes: usize) -> Vec<Job> {
    let nodes = nodes.max(1);
    let mut of_node: Vec<Vec<Held>> = (0..nodes).map(|_| Vec::new()).collect();
    for h in held {
        of_node[h.node % nodes].push(h);
    }
    // The same number of workers on every node, none without sessions (`drive` wants each job
    // to hold some): worker `w * nodes + node` heartbeats its share of `node`'s sessions.
    let fewest = of_node.iter().map(Vec::len).min().unwrap_or(0);
    let per_node = (workers / nodes).clamp(1, fewest.max(1));
    let mut parts: Vec<Vec<Held>> = (0..per_node * nodes).map(|_| Vec::new()).collect();
    for (node, sessions) in of_node.into_iter().enumerate() {
        for (i, h) in sessions.into_iter().enumerate() {
            parts[(i % per_node) * nodes + node].push(h);
        }
    }
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| Job::Heartbeat(Arc::new(p)))
        .collect()
}

/// Sets the license's end `lead` seconds ahead and times, from that instant, until no seat is
/// in use and until no row of the license is live (each `None` past 120 s).
async fn expire(
    admin: &Admin,
    lic: &str,
    db_url: &str,
    lead: f64,
) -> anyhow::Result<(Option<f64>, Option<f64>)> {
    let lead = lead.max(1.0);
    let set = Instant::now();
    let end = rfc3339_in(lead)?;
    admin
        .patch_license(lic, json!({ "expires_at": end }))
        .await
        .context("setting the license end")?;
    let expiry = set + Duration::from_secs_f64(lead);
    println!(
        "pg-hold: license end set in {:.2} s; the sessions expire at once in {:.1} s",
        set.elapsed().as_secs_f64(),
        expiry
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
    );
    tokio::time::sleep_until(expiry.into()).await;
    let mut conn = sqlx::PgConnection::connect(db_url).await?;
    let deadline = expiry + Duration::from_secs(120);
    let (mut freed, mut cleared) = (None, None);
    while Instant::now() < deadline && cleared.is_none() {
        if freed.is_none() && admin.in_use(lic).await? == 0 {
            freed = Some(expiry.elapsed().as_secs_f64());
        }
        let live: i64 =
            sqlx::query("SELECT count(*) FROM sessions WHERE license_id = $1 AND ended_at IS NULL")
                .bind(lic)
                .fetch_one(&mut conn)
                .await?
                .try_get(0)?;
        if live == 0 {
            cleared = Some(expiry.elapsed().as_secs_f64());
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    conn.close().await.ok();
    println!(
        "pg-hold: seats free after {}, rows all ended after {} (from the expiry)",
        secs(freed),
        secs(cleared)
    );
    Ok((freed, cleared))
}

fn secs(v: Option<f64>) -> String {
    v.map_or("> 120 s".into(), |s| format!("{s:.2} s"))
}

/// Current and peak RSS of the nodes, summed (kB).
fn rss(pids: &[u32]) -> (Option<u64>, Option<u64>) {
    let sum = |field: &str| {
        pids.iter()
            .map(|&p| status_kb(p, field))
            .sum::<Option<u64>>()
    };
    (sum("VmRSS"), sum("VmHWM"))
}

/// `sessions` on disk: the table with its indexes and TOAST, the heap, each index, and how
/// many of its row updates were HOT.
async fn table_sizes(db_url: &str) -> anyhow::Result<Value> {
    let mut conn = sqlx::PgConnection::connect(db_url).await?;
    let mb = |b: i64| b as f64 / (1024.0 * 1024.0);
    let row = sqlx::query(
        "SELECT pg_total_relation_size('sessions'), pg_relation_size('sessions'),
                pg_indexes_size('sessions'),
                (SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'sessions'),
                (SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'sessions')",
    )
    .fetch_one(&mut conn)
    .await?;
    let indexes = sqlx::query(
        "SELECT indexrelname::text, pg_relation_size(indexrelid) FROM pg_stat_user_indexes
         WHERE relname = 'sessions' ORDER BY indexrelname",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut by_index = serde_json::Map::new();
    for r in &indexes {
        by_index.insert(r.try_get::<String, _>(0)?, json!(mb(r.try_get(1)?)));
    }
    conn.close().await.ok();
    let sizes = json!({
        "total_mb": mb(row.try_get(0)?),
        "heap_mb": mb(row.try_get(1)?),
        "indexes_mb": mb(row.try_get(2)?),
        "index_mb": by_index,
        "updates": row.try_get::<Option<i64>, _>(3)?,
        "hot_updates": row.try_get::<Option<i64>, _>(4)?,
    });
    println!("pg-hold: sessions on disk {sizes}");
    Ok(sizes)
}
