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
//!   of the same PostgreSQL server with as many clients (see `scenarios/pg.rs`);
//! - `mass-end`: a license's million sessions ended at once (its end, a revoke of them all, a
//!   deactivation of their users) while another license opens, logs out and heartbeats; with
//!   `--database-url`, on several nodes (see `scenarios/mass.rs`). Only when asked for by name;
//! - `pg-hold`: a million live sessions over `--nodes` nodes on one PostgreSQL, held by
//!   heartbeats at their interval for `--hold-secs`, then expiring at once (see
//!   `scenarios/pg_hold.rs`). Only when asked for by name;
//! - `usage-query`: a license's usage series over a year of `--usage-events` session events
//!   (written straight into the database), queried by hour through HTTP (see
//!   `scenarios/usage.rs`). Only when asked for by name;
//! - `all`: all of them but `mass-end`, `pg-hold` and `usage-query` (`pg` only when `--database-url` is given), with the half-load runs
//!   and, given `--redis-semaphore`, the peer reference (Redis + redis-semaphore on Node)
//!   interleaved with the same concurrency.
//!
//! `--spawn-server` starts `leasehold serve` as a child with a fresh data folder (and a fresh one
//! again for the million-session runs), so one command measures everything. `pg` always starts
//! its own nodes.
//!
//! This crate is the whole tool, apart from the product: it talks to the server over HTTP only
//! (its own minimal client, `http`) and depends on no other Leasehold crate. The `leasehold`
//! binary keeps the `bench` subcommand by parsing [`BenchArgs`] and calling [`run`]; spawned
//! servers and the sink are that same executable started again (`leasehold serve`, `leasehold
//! bench --sink-listen`).
//!
//! Layout: `args` the command line; `scenarios` what each scenario does; `load` the workers
//! that drive a run; `setup` the admin calls that prepare one; `measure` one measured run and
//! its row; `summary` the figures the bars are judged on; `peer` the redis-semaphore reference;
//! `target`, `spawn`, `sink` and `proc` the processes around a run.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod args;
mod hist;
mod hook;
mod http;
mod load;
mod measure;
mod peer;
mod proc;
mod scenarios;
mod setup;
mod sink;
mod spawn;
mod summary;
mod target;

use std::process::ExitCode;

use anyhow::bail;

pub use args::{BenchArgs, MassEndKind, Scenario};
use measure::Bench;
use summary::Summary;
use target::Target;

/// Runs `leasehold bench` (or, with the hidden `--sink-listen`, the sink child).
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(addr) = args.sink_listen {
        sink::run_sink(addr, 3600).await?;
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
    if (args.wants(Scenario::Pg) || args.wants(Scenario::PgHold)) && args.database_url.is_none() {
        bail!("the pg scenario needs --database-url postgres://USER:PASSWORD@HOST:PORT/DB");
    }
    let mut summary = Summary::default();
    if short {
        let target = Target::new(&args).await?;
        scenarios::short::run(&mut bench, &target, &mut summary).await?;
    }
    if args.wants(Scenario::Pg) {
        scenarios::pg::run(&mut bench, &mut summary).await?;
    }
    if args.wants(Scenario::PgHold) {
        scenarios::pg_hold::run(&mut bench, &mut summary).await?;
    }
    if args.wants(Scenario::Hold) || args.wants(Scenario::Expire) {
        // A fresh server, so its peak RSS is the million sessions' own.
        let target = Target::new(&args).await?;
        scenarios::million::run(&mut bench, &target, &mut summary).await?;
    }
    if args.wants(Scenario::MassEnd) {
        if !args.spawn_server && args.database_url.is_none() {
            bail!("the mass-end scenario starts its own servers: pass --spawn-server (or --database-url)");
        }
        scenarios::mass::run(&mut bench, &mut summary).await?;
    }
    if args.wants(Scenario::UsageQuery) {
        scenarios::usage::run(&mut bench).await?;
    }
    summary.print(&args);
    Ok(ExitCode::SUCCESS)
}
