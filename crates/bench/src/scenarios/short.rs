//! The short scenarios, in `--repeat` rounds on one server: `sink` (the generator's own
//! ceiling, once), then per round `healthz`, `heartbeat`, `checkout` (each followed by the peer
//! reference) and `contended`; then, with `--half-load`, heartbeat and checkout again at half
//! the peak rate.

use std::sync::Arc;

use serde_json::Value;

use super::split;
use crate::args::Scenario;
use crate::load::{self, open_many, Job};
use crate::measure::Bench;
use crate::setup::Admin;
use crate::sink::Sink;
use crate::summary::{cores, median, Summary};
use crate::target::Target;

/// Runs the short scenarios that `--scenarios` asks for on `target`.
pub(crate) async fn run(
    bench: &mut Bench,
    target: &Target,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let c = args.concurrency;
    let (addr, pid) = (target.addr, target.pid);
    let admin = Admin::new(addr, &target.root, "bench").await?;
    // Kept until the end of the runs: the receiver of `--webhook`.
    let _hook = match args.webhook {
        Some(mode) => {
            let hook = crate::hook::HookReceiver::start(mode).await?;
            admin.webhook(&hook.url).await?;
            println!("bench: webhook for every event at {} ({mode:?})", hook.url);
            Some(hook)
        }
        None => None,
    };
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
