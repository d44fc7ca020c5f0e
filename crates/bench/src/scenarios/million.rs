//! The million-session scenarios on a fresh server: open `--million` sessions (timed, with the
//! RSS they cost), `hold` them by heartbeats at their interval, then `expire` them all at once
//! by setting the license end while other sessions heartbeat, timing the clearing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::split;
use crate::args::Scenario;
use crate::load::{self, open_many, Shape};
use crate::measure::{Bench, Row};
use crate::proc::CpuMark;
use crate::setup::Admin;
use crate::summary::Summary;
use crate::target::Target;

#[allow(clippy::disallowed_methods)] // the bench sets a license end in real time
fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

pub(crate) fn rfc3339_in(secs: f64) -> anyhow::Result<String> {
    let at = unix_now() + Duration::from_secs_f64(secs);
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(at.as_nanos() as i128)?;
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

/// Opens the million sessions, then runs `hold` and `expire` as `--scenarios` asks.
pub(crate) async fn run(
    bench: &mut Bench,
    target: &Target,
    summary: &mut Summary,
) -> anyhow::Result<()> {
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
