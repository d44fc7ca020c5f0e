//! `leasehold bench mass-end`: one tenant's mass event must not stall another tenant (issue
//! 20). For each kind of mass end (`--mass-end-kinds`: the license's end set to now, a revoke
//! of every session of the license, a deactivation of every user holding them), on a fresh
//! server (a fresh database and nodes with `--database-url`):
//!
//! 1. license A gets `--million` sessions (held by `--million-users` users);
//! 2. license B, of other users, gets checkout cycles (a durable open and a durable logout) at
//!    `--mass-end-checkout-rate` per second, and `--expire-heartbeaters` sessions heartbeating
//!    at `--expire-heartbeat-rate` per second (on B, or with `--mass-end-heartbeats-elsewhere`
//!    on a third license: on PostgreSQL a license's heartbeats bloat its live-session index
//!    between vacuums, which slows its own open batches whatever else happens, see
//!    BENCHMARKS.md); the load is measured alone for
//!    `--mass-end-before` seconds (the reference), then from one second before the event
//!    until `--mass-end-settle` seconds after A is fully ended;
//! 3. the admin call(s) that end every session of A are timed; right after the call answers,
//!    a sample of A's sessions heartbeats (every answer must be 410: none is live after its
//!    end was decided);
//! 4. A's usage is polled: when `in_use` reaches 0 (every end decided and counted out), and
//!    when `ending` does too (every end written, on disk and in the audit log);
//! 5. the server's peak RSS over the whole event.
//!
//! The summary judges the bars: B's opens and logouts p99 < 50 ms (< 100 ms on
//! PostgreSQL) and max < 200 ms, B's heartbeats p99 < 10 ms, the admin call <= 500 ms, peak RSS
//! <= 300 MB (embedded store), no session of A answered live after the call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::pg::{start_nodes, Scratch};
use super::split;
use crate::args::MassEndKind;
use crate::http::{Conn, Request};
use crate::load::{self, open_body, open_many, Held, Job, Shape};
use crate::measure::{Bench, Row};
use crate::proc::{status_kb, CpuMark};
use crate::setup::Admin;
use crate::spawn::{random_hex, SpawnedServer};
use crate::summary::{MassFigures, Summary};

/// Connections heartbeating B's sessions, and running B's checkout cycles.
const HB_WORKERS: usize = 16;
const CHECKOUT_WORKERS: usize = 16;
/// A's sessions heartbeated right after the call, to see that none is live any more.
const SAMPLE: usize = 200;

/// The servers of one event: one spawned embedded server, or nodes on a fresh database.
struct Servers {
    addrs: Vec<SocketAddr>,
    pids: Vec<u32>,
    root: String,
    _nodes: Vec<SpawnedServer>,
}

impl Servers {
    fn peak_rss_mb(&self) -> Option<f64> {
        let kb: Option<u64> = self.pids.iter().map(|&p| status_kb(p, "VmHWM")).sum();
        kb.map(|k| k as f64 / 1024.0)
    }

    fn rss(&self) -> (Option<u64>, Option<u64>) {
        let sum = |f: &str| self.pids.iter().map(|&p| status_kb(p, f)).sum();
        (sum("VmRSS"), sum("VmHWM"))
    }
}

/// Runs every kind of mass end asked for, each on fresh servers.
pub(crate) async fn run(bench: &mut Bench, summary: &mut Summary) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let scratch = match &args.database_url {
        Some(url) => Some(Scratch::create(url).await?),
        None => None,
    };
    let mut result = Ok(());
    for &kind in &args.mass_end_kinds {
        let servers = match &scratch {
            Some(scratch) => {
                // A fresh database per event: the nodes start on it empty.
                scratch.recreate().await?;
                let root = format!("lh_root_bench_{}", random_hex(16));
                let nodes = start_nodes(&args, &scratch.url(&scratch.name), &root).await?;
                Servers {
                    addrs: nodes.iter().map(|n| n.addr).collect(),
                    pids: nodes.iter().map(SpawnedServer::pid).collect(),
                    root,
                    _nodes: nodes,
                }
            }
            None => {
                let server = SpawnedServer::start(args.data_root.clone(), args.keep_data).await?;
                Servers {
                    addrs: vec![server.addr],
                    pids: vec![server.pid()],
                    root: server.admin_token.clone(),
                    _nodes: vec![server],
                }
            }
        };
        println!(
            "mass-end {}: {} server process(es) {:?}",
            kind.name(),
            servers.pids.len(),
            servers.pids
        );
        result = event(bench, summary, &servers, kind).await;
        if result.is_err() {
            break;
        }
    }
    if let Some(scratch) = scratch {
        scratch.drop_all().await?;
    }
    result
}

/// One mass end of `kind` on `servers`.
async fn event(
    bench: &mut Bench,
    summary: &mut Summary,
    servers: &Servers,
    kind: MassEndKind,
) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let n = args.million;
    let addrs = servers.addrs.clone();
    let admin = Admin::new(addrs[0], &servers.root, "bench-mass").await?;
    let a_users = args.million_users.clamp(1, n.max(1));
    let a_tokens = admin.user_tokens("ma-user-", a_users, 8).await?;
    let b_tokens = admin.user_tokens("mb-user-", CHECKOUT_WORKERS, 8).await?;
    let a = admin.license(n as u64, 1200).await?;
    let hb_n = args.expire_heartbeaters;
    let b = admin
        .license((hb_n + CHECKOUT_WORKERS + 1) as u64, 1200)
        .await?;
    // Heartbeats on B, or on a license C of their own (`--mass-end-heartbeats-elsewhere`).
    let c = if args.mass_end_heartbeats_elsewhere {
        admin.license(hb_n as u64, 1200).await?
    } else {
        b.clone()
    };
    println!(
        "opening {n} sessions on A ({a_users} users, {} connections)...",
        args.concurrency
    );
    let (held, st) = open_many(&addrs, &a, &a_tokens, n, args.concurrency, "m", true).await?;
    let (rss_kb, hwm_kb) = servers.rss();
    bench.record(Row {
        name: format!("mass-end {}: open {n} on A", kind.name()),
        stats: st,
        cpu_gen: 0.0,
        cpu_server: None,
        rss_kb,
        hwm_kb,
        extra: Value::Null,
    })?;
    let (b_held, _) = open_many(&addrs, &c, &b_tokens, hb_n, 16, "mb", false).await?;

    // B's load: first alone (the reference), then through the event until it has settled.
    let hb_jobs = split(b_held, HB_WORKERS);
    let checkout_jobs: Vec<Job> = (0..CHECKOUT_WORKERS)
        .map(|w| Job::Checkout {
            token: b_tokens[w % b_tokens.len()].clone(),
            body: Arc::new(open_body(&b, &format!("mbc-d{w}"), &format!("mbc-i{w}"))),
        })
        .collect();
    let (hb_rate, co_rate) = (args.expire_heartbeat_rate, args.mass_end_checkout_rate);
    let before = |rate: f64| Shape {
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs_f64(args.mass_end_before),
        rate: Some(rate),
    };
    let (hb_before, co_before) = tokio::join!(
        load::drive(&addrs, before(hb_rate), hb_jobs.clone()),
        load::drive(&addrs, before(co_rate), checkout_jobs.clone()),
    );
    let (hb_before, co_before) = (hb_before?, co_before?);
    let record = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let control = load::Control {
        record: Some(record.clone()),
        stop: Some(stop.clone()),
    };
    let shape = |rate: f64| Shape {
        warmup: Duration::ZERO,
        duration: Duration::from_secs(3600),
        rate: Some(rate),
    };
    let mark = CpuMark::now(&servers.pids);
    let (hb_addrs, co_addrs) = (addrs.clone(), addrs.clone());
    let (hb_control, co_control) = (control.clone(), control);
    let heartbeats = tokio::spawn(async move {
        load::drive_controlled(&hb_addrs, shape(hb_rate), hb_jobs, hb_control).await
    });
    let checkouts = tokio::spawn(async move {
        load::drive_controlled(&co_addrs, shape(co_rate), checkout_jobs, co_control).await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The event.
    let started = Instant::now();
    let calls = trigger(&admin, &a, &a_tokens, kind).await?;
    let answered = started.elapsed();
    let step = (held.len() / SAMPLE).max(1);
    let sample: Vec<Held> = held.iter().step_by(step).take(SAMPLE).cloned().collect();
    drop(held);
    let sampling = tokio::spawn(still_live(addrs[0], sample));
    let (in_use_zero, ending_zero) = watch(&admin, &a, started).await;
    let live_after = sampling.await?;
    tokio::time::sleep(Duration::from_secs_f64(args.mass_end_settle)).await;
    record.store(false, Ordering::Relaxed);
    let window = started.elapsed().as_secs_f64() + 1.0;
    stop.store(true, Ordering::Relaxed);
    let mut hb = heartbeats.await??;
    let mut co = checkouts.await??;
    hb.secs = window;
    co.secs = window;
    let (cpu_gen, cpu_server) = mark.since(&servers.pids);
    let (rss_kb, hwm_kb) = servers.rss();
    let figures = MassFigures {
        kind: kind.name(),
        sessions: n,
        nodes: servers.pids.len(),
        call_secs: calls.slowest,
        calls: calls.count,
        live_after,
        in_use_zero,
        ending_zero,
        open_p99_ms: co.open.quantile_ms(0.99),
        open_max_ms: co.open.max_ms(),
        close_p99_ms: co.close.quantile_ms(0.99),
        close_max_ms: co.close.max_ms(),
        hb_p99_ms: hb.all.quantile_ms(0.99),
        hb_max_ms: hb.all.max_ms(),
        before: [
            co_before.open.quantile_ms(0.99),
            co_before.close.quantile_ms(0.99),
            hb_before.all.quantile_ms(0.99),
        ],
        errors: hb.errors + co.errors,
        peak_rss_mb: servers.peak_rss_mb(),
    };
    let extra = figures.json(answered.as_secs_f64());
    bench.record(Row {
        name: format!("mass-end {}: B heartbeats", kind.name()),
        stats: hb,
        cpu_gen,
        cpu_server,
        rss_kb,
        hwm_kb,
        extra: extra.clone(),
    })?;
    bench.record(Row {
        name: format!("mass-end {}: B checkouts", kind.name()),
        stats: co,
        cpu_gen,
        cpu_server,
        rss_kb,
        hwm_kb,
        extra,
    })?;
    if ending_zero.is_none() {
        bail!(
            "mass-end {}: A was not fully ended within the wait",
            kind.name()
        );
    }
    summary.mass.push(figures);
    Ok(())
}

/// The admin calls of one event: how many, and the slowest one's answer time.
struct Calls {
    count: usize,
    slowest: f64,
}

/// Ends every session of license `a` by `kind`; times the call(s).
async fn trigger(
    admin: &Admin,
    a: &str,
    a_tokens: &[Arc<str>],
    kind: MassEndKind,
) -> anyhow::Result<Calls> {
    match kind {
        MassEndKind::LicenseEnd => {
            let t = Instant::now();
            let now = super::million::rfc3339_in(0.0)?;
            admin
                .patch_license(a, json!({ "expires_at": now }))
                .await
                .context("setting the license's end to now")?;
            Ok(Calls {
                count: 1,
                slowest: t.elapsed().as_secs_f64(),
            })
        }
        MassEndKind::RevokeAll => {
            let t = Instant::now();
            let answer = admin.revoke_all(a).await?;
            println!("revoke-all answered {answer}");
            Ok(Calls {
                count: 1,
                slowest: t.elapsed().as_secs_f64(),
            })
        }
        MassEndKind::Deactivate => {
            // Every user holding A's sessions, 8 calls at a time.
            let n = a_tokens.len();
            let next = Arc::new(AtomicUsize::new(0));
            let mut handles = Vec::new();
            for _ in 0..8 {
                let (next, admin) = (next.clone(), admin.clone_handle());
                handles.push(tokio::spawn(async move {
                    let mut slowest = 0f64;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return anyhow::Ok(slowest);
                        }
                        let t = Instant::now();
                        admin
                            .set_user_active(&format!("ma-user-{i}"), false)
                            .await?;
                        slowest = slowest.max(t.elapsed().as_secs_f64());
                    }
                }));
            }
            let mut slowest = 0f64;
            for h in handles {
                slowest = slowest.max(h.await??);
            }
            Ok(Calls { count: n, slowest })
        }
    }
}

/// Heartbeats a sample of A's sessions: how many answer 200 (live) after their end was decided.
async fn still_live(addr: SocketAddr, sample: Vec<Held>) -> usize {
    let mut conn = Conn::new(addr);
    let mut live = 0;
    for h in &sample {
        let path = format!("/v1/sessions/{}/heartbeat", h.id);
        let answer = conn
            .call(Request {
                method: "POST",
                path: &path,
                token: Some(&h.token),
                body: None,
            })
            .await;
        if matches!(answer, Ok((200, _))) {
            live += 1;
        }
    }
    live
}

/// Polls A's usage: seconds from `started` until `in_use` is 0, and until `ending` is 0 too
/// (each as of the request that first saw it: its answer is at least that fresh). Every 50 ms
/// until `in_use` is 0, then every 500 ms, as a dashboard would (a usage read once counted the
/// license's live sessions on PostgreSQL, ~0.3 s of the database's CPU at 100,000; it sums
/// counter rows now).
async fn watch(admin: &Admin, a: &str, started: Instant) -> (Option<f64>, Option<f64>) {
    let deadline = started + Duration::from_secs(600);
    let mut in_use_zero = None;
    while Instant::now() < deadline {
        let asked = started.elapsed().as_secs_f64();
        match admin.usage(a).await {
            Ok((in_use, ending)) => {
                if in_use == 0 && in_use_zero.is_none() {
                    in_use_zero = Some(asked);
                }
                if in_use == 0 && ending == 0 {
                    return (in_use_zero, Some(asked));
                }
            }
            Err(e) => eprintln!("usage poll failed: {e:#}"),
        }
        let pause = if in_use_zero.is_some() { 500 } else { 50 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    (in_use_zero, None)
}
