//! Server configuration. Layers, later ones winning: built-in defaults, the TOML file
//! (`--config`), `LEASEHOLD_*` environment variables, command-line flags (applied by the CLI).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use leasehold_core::Plan;
use serde::Deserialize;

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
    /// PostgreSQL: judge session times by the database's clock (the default; nodes' clocks may
    /// then disagree). Off only in tests that move a manual clock by hand.
    pub database_clock: bool,
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
        }
    }
}

/// The TOML file's shape; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub reaper_interval_ms: Option<u64>,
    pub max_body_bytes: Option<usize>,
    pub access_token_ttl_secs: Option<u64>,
    /// `postgres://…`: several nodes share that database.
    pub database_url: Option<String>,
    pub database_pool_size: Option<u32>,
    /// `[plans.NAME] base_seats = 3, max_seats = 35`
    #[serde(default)]
    pub plans: BTreeMap<String, Plan>,
}

const KNOWN_ENV: &[&str] = &[
    "LEASEHOLD_LISTEN",
    "LEASEHOLD_DATA_DIR",
    "LEASEHOLD_ADMIN_TOKEN",
    "LEASEHOLD_CONFIG",
    "LEASEHOLD_DATABASE_URL",
    "LEASEHOLD_URL",
    "LEASEHOLD_TOKEN",
    "LEASEHOLD_LOG",
];

impl Config {
    /// Defaults, then the file (if any), then the environment.
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

    pub fn apply_file(&mut self, file: FileConfig) {
        if let Some(v) = file.listen {
            self.listen = v;
        }
        if let Some(v) = file.data_dir {
            self.data_dir = v;
        }
        if let Some(v) = file.reaper_interval_ms {
            self.reaper_interval_ms = v.max(10);
        }
        if let Some(v) = file.max_body_bytes {
            self.max_body_bytes = v;
        }
        if let Some(v) = file.access_token_ttl_secs {
            self.access_token_ttl_secs = v.max(1);
        }
        if let Some(v) = file.database_url {
            self.database_url = Some(v);
        }
        if let Some(v) = file.database_pool_size {
            self.database_pool_size = v.max(2);
        }
        self.plans.extend(file.plans);
    }

    fn apply_env(&mut self) -> anyhow::Result<()> {
        for (key, _) in std::env::vars() {
            if key.starts_with("LEASEHOLD_") && !KNOWN_ENV.contains(&key.as_str()) {
                tracing::warn!(variable = %key, "unknown LEASEHOLD_ environment variable ignored");
            }
        }
        if let Ok(v) = std::env::var("LEASEHOLD_LISTEN") {
            self.listen = v.parse().context("LEASEHOLD_LISTEN is not an address")?;
        }
        if let Ok(v) = std::env::var("LEASEHOLD_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Ok(v) = std::env::var("LEASEHOLD_DATABASE_URL") {
            if !v.is_empty() {
                self.database_url = Some(v);
            }
        }
        if let Ok(v) = std::env::var("LEASEHOLD_ADMIN_TOKEN") {
            if !v.is_empty() {
                self.admin_token = Some(v);
            }
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
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_can_select_postgresql_and_size_its_pool() {
        let file: FileConfig = toml::from_str(
            "database_url = \"postgres://lh:pw@db.internal/leasehold\"\ndatabase_pool_size = 24\n",
        )
        .unwrap();
        let mut config = Config::default();
        assert_eq!(config.database_url, None);
        config.apply_file(file);
        assert_eq!(
            config.database_url.as_deref(),
            Some("postgres://lh:pw@db.internal/leasehold")
        );
        assert_eq!(config.database_pool_size, 24);
        // The URL may hold a password: it never shows in the debug output.
        assert!(!format!("{config:?}").contains("pw@"));
    }
}
