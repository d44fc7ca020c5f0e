//! Server configuration. Layers, later ones winning: built-in defaults, the TOML file
//! (`--config`, `file.rs`), `LEASEHOLD_*` environment variables (`env.rs`), command-line
//! flags (applied by the CLI). `Config::check` refuses settings that cannot work together.

mod env;
mod file;
mod webhooks;

pub use file::FileConfig;
pub use webhooks::{WebhookConfig, WebhooksFile};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use leasehold_core::Plan;

/// The documented default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";
/// The documented default data folder.
pub const DEFAULT_DATA_DIR: &str = "./leasehold-data";

/// The internal configuration the server runs with.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `postgres://…` URL: several nodes share that database (`LEASEHOLD_DATABASE_URL`);
    /// none: embedded SQLite in `data_dir`. Never logged (it may hold a password).
    pub database_url: Option<String>,
    /// Most PostgreSQL connections of this node (mind the server's `max_connections` when
    /// running many nodes).
    pub database_pool_size: u32,
    /// Root admin token to install (from `LEASEHOLD_ADMIN_TOKEN`); never logged.
    pub admin_token: Option<String>,
    pub plans: BTreeMap<String, Plan>,
    /// How often the reaper looks for expired sessions.
    pub reaper_interval_ms: u64,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Lifetime of OAuth2 access tokens of service users.
    pub access_token_ttl_secs: u64,
    /// Print the generated root token to stdout at first start.
    pub print_root_token: bool,
    /// HTTPS: the certificate chain and private key (PEM). Reloaded on SIGHUP and when the
    /// files change, without dropping connections.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How often the TLS files are checked for a change.
    pub tls_watch_interval: Duration,
    /// Timeouts and caps of connections and requests.
    pub limits: Limits,
    /// Failed authentications allowed per minute, per client address and per credential,
    /// before they are answered 429 (valid credentials are never refused; see
    /// `http::ratelimit`).
    pub auth_failures_per_minute_per_address: u32,
    pub auth_failures_per_minute_per_credential: u32,
    /// Origins allowed to call the API from a browser (CORS); empty: CORS off.
    pub cors_allowed_origins: Vec<String>,
    /// A token that may read every series of `/metrics` (besides the root token); never
    /// logged.
    pub metrics_token: Option<String>,
    /// The vendor's public keys (a saved `/.well-known/jwks.json` of the cloud server) that
    /// delegation files must be signed with (dark sites); none: imports are refused.
    pub vendor_jwks: Option<PathBuf>,
    /// Dark sites, online mode: the cloud server's URL; the local server then fetches renewals
    /// of its delegations and pushes usage reports by itself every `upstream_interval`.
    pub upstream: Option<String>,
    /// The credential for `upstream`: an admin token of the cloud account whose licenses are
    /// delegated here. Never logged.
    pub upstream_token: Option<String>,
    pub upstream_interval: Duration,
    /// PostgreSQL: judge session times by the database's clock (the default; nodes' clocks may
    /// then disagree). Off only in tests that move a manual clock by hand.
    pub database_clock: bool,
    /// How often a session's event stream (`GET /v1/sessions/{id}/events`) sends a keep-alive
    /// comment, so that proxies and load balancers do not cut it as idle; also how often a
    /// stream compares its session's expiry with the server's time.
    pub event_keepalive: Duration,
    /// Audit events older than this many days are deleted by the reaper, in bounded batches
    /// (`audit_retention_days`); none: kept forever. Usage statistics are not events: they stay.
    pub audit_retention_days: Option<u32>,
    /// Webhook delivery (`[webhooks]`).
    pub webhooks: WebhookConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("plans", &self.plans)
            .field("reaper_interval_ms", &self.reaper_interval_ms)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("limits", &self.limits)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("event_keepalive", &self.event_keepalive)
            .field("audit_retention_days", &self.audit_retention_days)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8470))),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database_url: None,
            database_pool_size: 10,
            admin_token: None,
            plans: BTreeMap::new(),
            reaper_interval_ms: 200,
            max_body_bytes: 64 * 1024,
            access_token_ttl_secs: 3600,
            print_root_token: true,
            database_clock: true,
            tls_cert: None,
            tls_key: None,
            tls_watch_interval: Duration::from_secs(5),
            limits: Limits::default(),
            auth_failures_per_minute_per_address: 30,
            auth_failures_per_minute_per_credential: 10,
            cors_allowed_origins: Vec::new(),
            metrics_token: None,
            vendor_jwks: None,
            upstream: None,
            upstream_token: None,
            upstream_interval: Duration::from_secs(300),
            event_keepalive: Duration::from_secs(15),
            audit_retention_days: None,
            webhooks: WebhookConfig::default(),
        }
    }
}

/// Timeouts and caps of the connections and requests the server takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request's head (request line and headers; on a new connection, the TLS handshake
    /// too) must arrive within this.
    pub header_read_timeout: Duration,
    /// A request's body must arrive within this (counted from the first wait for it).
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Most connections open at once; more are closed as soon as they are accepted (also
    /// kept below the process's file descriptor limit).
    pub max_connections: usize,
    /// Longest request target (path and query), in bytes: 414 beyond.
    pub max_uri_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 8192,
            max_uri_bytes: 8192,
        }
    }
}

impl Config {
    /// Defaults, then the file (if any), then the environment; then checked.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut config = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let parsed: FileConfig = toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            config.apply_file(parsed);
        }
        config.apply_env()?;
        Ok(config)
    }

    /// Refuses settings that cannot work together (the CLI calls it after applying its flags;
    /// `Application::build` calls it too).
    pub fn check(&self) -> anyhow::Result<()> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                anyhow::bail!("tls_cert is set but tls_key is not: HTTPS needs both")
            }
            (None, Some(_)) => {
                anyhow::bail!("tls_key is set but tls_cert is not: HTTPS needs both")
            }
            _ => {}
        }
        for (name, value) in [
            ("header_read_timeout", self.limits.header_read_timeout),
            ("body_read_timeout", self.limits.body_read_timeout),
            ("idle_timeout", self.limits.idle_timeout),
        ] {
            anyhow::ensure!(!value.is_zero(), "{name} must be at least 1 second");
        }
        anyhow::ensure!(
            self.limits.max_connections > 0,
            "max_connections must be at least 1"
        );
        anyhow::ensure!(
            !self.event_keepalive.is_zero(),
            "event_keepalive_secs must be at least 1 second"
        );
        anyhow::ensure!(
            self.audit_retention_days != Some(0),
            "audit_retention_days must be at least 1 (leave it unset to keep every audit event)"
        );
        crate::http::headers::check_origins(&self.cors_allowed_origins)?;
        self.webhooks.check()?;
        if let Some(url) = &self.upstream {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "upstream must be an http:// or https:// URL"
            );
            anyhow::ensure!(
                self.upstream_token.is_some(),
                "upstream needs upstream_token (LEASEHOLD_UPSTREAM_TOKEN): an admin token of \
                 the cloud account"
            );
            anyhow::ensure!(
                self.vendor_jwks.is_some(),
                "upstream needs vendor_jwks: the delegations it fetches are checked like files"
            );
            anyhow::ensure!(
                !self.upstream_interval.is_zero(),
                "upstream_interval_secs must be at least 1 second"
            );
        }
        Ok(())
    }

    /// A configuration for tests: port 0, the given data folder, fast reaper, quiet.
    pub fn new_for_test(data_dir: &Path) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_path_buf(),
            reaper_interval_ms: 50,
            print_root_token: false,
            // Tests move a manual clock; the database's clock would not follow it.
            database_clock: false,
            // Receivers in tests listen on 127.0.0.1; retries come when the manual clock moves.
            webhooks: WebhookConfig {
                allow_private_targets: true,
                connect_timeout: Duration::from_secs(2),
                response_timeout: Duration::from_secs(2),
                poll_interval: Duration::from_millis(20),
                ..WebhookConfig::default()
            },
            ..Config::default()
        }
    }
}
