//! The command line of `leasehold bench`: the scenarios to run and how hard, where the server
//! is (or whether to spawn one), the peers to compare with, and where results go.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::load::Shape;

/// A scenario of the performance bar (see the crate docs).
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
    /// One license's mass end while another license works (not in `all`: see the crate docs).
    MassEnd,
    /// A million live sessions over `--nodes` nodes on one PostgreSQL, held by heartbeats,
    /// then expiring at once (not in `all`).
    PgHold,
    /// A year of a license's usage series (`--usage-events` events) queried by hour (not in
    /// `all`).
    UsageQuery,
    All,
}

/// How the `mass-end` scenario ends every session of a license.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum MassEndKind {
    /// `PATCH /v1/licenses/{id}` with `expires_at` now.
    LicenseEnd,
    /// `DELETE /v1/licenses/{id}/sessions`.
    RevokeAll,
    /// `PUT /v1/accounts/{id}/users/{username}` with `active: false`, for every user holding
    /// the license's sessions.
    Deactivate,
}

impl MassEndKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            MassEndKind::LicenseEnd => "license-end",
            MassEndKind::RevokeAll => "revoke-all",
            MassEndKind::Deactivate => "deactivate",
        }
    }
}

// The flags of `leasehold bench` (no doc comment: clap would show it as the about text).
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Scenarios to run, comma-separated.
    #[arg(value_enum, value_delimiter = ',', default_value = "all")]
    pub(crate) scenarios: Vec<Scenario>,
    /// Server to drive (ignored with --spawn-server).
    #[arg(long, env = "LEASEHOLD_URL", default_value = "http://127.0.0.1:8470")]
    pub(crate) url: String,
    /// Root admin token of that server (the bench creates its own account).
    #[arg(long, env = "LEASEHOLD_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) admin_token: Option<String>,
    /// Start `leasehold serve` as a child process with a fresh data folder.
    #[arg(long)]
    pub(crate) spawn_server: bool,
    /// Pid of the server, for its RSS and CPU time (known with --spawn-server).
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// Where spawned servers put their data folders [default: the temp folder].
    #[arg(long)]
    pub(crate) data_root: Option<PathBuf>,
    /// Keep the spawned servers' data folders.
    #[arg(long)]
    pub(crate) keep_data: bool,
    /// Concurrent connections (workers); the peer gets the same number of holders.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Unmeasured seconds before each run.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup: f64,
    /// Open loop at this many operations per second (default: closed loop, as fast as possible).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// After the peak runs of heartbeat and checkout, run them again at 50% of the peak rate.
    #[arg(long)]
    pub(crate) half_load: bool,
    /// Rounds of the short scenarios (ratios are taken within a round).
    #[arg(long, default_value_t = 1)]
    pub(crate) repeat: usize,
    /// Live sessions of the heartbeat scenario.
    #[arg(long, default_value_t = 1000)]
    pub(crate) sessions: usize,
    /// Seats of the contended license.
    #[arg(long, default_value_t = 4)]
    pub(crate) seats: u64,
    /// Sessions of the hold and expire scenarios.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) million: usize,
    /// Users holding those sessions.
    #[arg(long, default_value_t = 1000)]
    pub(crate) million_users: usize,
    /// How long `hold` heartbeats the sessions.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) hold_secs: f64,
    /// Each held session heartbeats once per this many seconds (1M / 60 s = 16.7k/s).
    #[arg(long, default_value_t = 60.0)]
    pub(crate) hold_interval: f64,
    /// Sessions heartbeating (on another license) while the million expire.
    #[arg(long, default_value_t = 1000)]
    pub(crate) expire_heartbeaters: usize,
    /// Their total heartbeat rate, per second.
    #[arg(long, default_value_t = 5000.0)]
    pub(crate) expire_heartbeat_rate: f64,
    /// The million expire this many seconds after the license end is set.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) expire_lead: f64,
    /// How `mass-end` ends the `--million` sessions of its license (each on fresh servers).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "license-end,revoke-all,deactivate"
    )]
    pub(crate) mass_end_kinds: Vec<MassEndKind>,
    /// Checkout cycles (durable open + logout) per second on the other license during
    /// `mass-end` (its heartbeats: `--expire-heartbeaters` at `--expire-heartbeat-rate`).
    #[arg(long, default_value_t = 500.0)]
    pub(crate) mass_end_checkout_rate: f64,
    /// `mass-end` heartbeats sessions of a third license instead of the one it opens on.
    #[arg(long)]
    pub(crate) mass_end_heartbeats_elsewhere: bool,
    /// Seconds `mass-end` measures the other license's load alone, before the event.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) mass_end_before: f64,
    /// Seconds `mass-end` keeps measuring after the license's sessions are all ended on disk.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) mass_end_settle: f64,
    /// The peer reference's script (bench/redis-semaphore/bench.js); needs Redis running.
    #[arg(long)]
    pub(crate) redis_semaphore: Option<PathBuf>,
    #[arg(long, default_value = "redis://127.0.0.1:6390")]
    pub(crate) redis_url: String,
    /// Node processes of the peer (its holders are split among them).
    #[arg(long, default_value_t = 1)]
    pub(crate) redis_procs: usize,
    /// PostgreSQL for the `pg` scenario (a role that may create databases): the bench creates
    /// two fresh databases there (`lh_bench_<random>` for the nodes, `..._hot` for pgbench) and
    /// drops them afterwards. Given, `all` includes `pg`.
    #[arg(long)]
    pub(crate) database_url: Option<String>,
    /// `leasehold serve` nodes of the `pg` scenario; the connections are spread over them.
    #[arg(long, default_value_t = 3)]
    pub(crate) nodes: usize,
    /// The pgbench executable of the `pg` scenario's reference.
    #[arg(long, default_value = "pgbench")]
    pub(crate) pgbench: PathBuf,
    /// Session events the `usage-query` scenario writes over a year.
    #[arg(long, default_value_t = 10_000_000)]
    pub(crate) usage_events: u64,
    /// Append every result as a JSON line to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Internal: run the canned-answer HTTP sink on this address (the `sink` scenario).
    #[arg(long, hide = true)]
    pub(crate) sink_listen: Option<SocketAddr>,
    /// Register a webhook for every event of the bench account at a receiver the bench runs:
    /// `hang` never answers, `ok` answers 200 at once (the seat path must not notice).
    #[arg(long, value_enum)]
    pub(crate) webhook: Option<crate::hook::HookMode>,
}

impl BenchArgs {
    /// The shape of a run at `rate` (`None`: closed loop).
    pub(crate) fn shape(&self, rate: Option<f64>) -> Shape {
        Shape {
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(self.duration),
            rate,
        }
    }

    /// Whether scenario `s` runs (`all` includes `pg` only with `--database-url`, and never
    /// `mass-end`, which opens its million sessions once per kind of mass end, nor
    /// `usage-query`, which writes a year of events, nor `pg-hold`, a million sessions on
    /// PostgreSQL).
    pub(crate) fn wants(&self, s: Scenario) -> bool {
        let all = self.scenarios.contains(&Scenario::All)
            && (s != Scenario::Pg || self.database_url.is_some())
            && s != Scenario::MassEnd
            && s != Scenario::UsageQuery
            && s != Scenario::PgHold;
        self.scenarios.contains(&s) || all
    }
}
