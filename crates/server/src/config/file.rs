//! The TOML configuration file (`--config`, `LEASEHOLD_CONFIG`): its keys, every one optional,
//! and how they apply over the defaults. Unknown keys are refused, so a typo is an error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use leasehold_core::Plan;
use serde::Deserialize;

use super::Config;

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
    /// HTTPS: certificate chain and private key, PEM files.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub header_read_timeout_secs: Option<u64>,
    pub body_read_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_uri_bytes: Option<usize>,
    pub auth_failures_per_minute_per_address: Option<u32>,
    pub auth_failures_per_minute_per_credential: Option<u32>,
    /// `["https://admin.example.com"]`: origins allowed to call the API from a browser.
    pub cors_allowed_origins: Option<Vec<String>>,
    pub metrics_token: Option<String>,
    pub vendor_jwks: Option<PathBuf>,
    pub upstream: Option<String>,
    pub upstream_token: Option<String>,
    pub upstream_interval_secs: Option<u64>,
    /// Keep-alive comments of session event streams, every this many seconds.
    pub event_keepalive_secs: Option<u64>,
    /// Delete audit events older than this many days (unset: keep them forever).
    pub audit_retention_days: Option<u32>,
    /// `[webhooks]`: delivery settings (`super::webhooks`).
    pub webhooks: Option<super::WebhooksFile>,
    /// `[plans.NAME] base_seats = 3, max_seats = 35`
    #[serde(default)]
    pub plans: BTreeMap<String, Plan>,
}

impl Config {
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
        if let Some(v) = file.tls_cert {
            self.tls_cert = Some(v);
        }
        if let Some(v) = file.tls_key {
            self.tls_key = Some(v);
        }
        if let Some(v) = file.header_read_timeout_secs {
            self.limits.header_read_timeout = Duration::from_secs(v);
        }
        if let Some(v) = file.body_read_timeout_secs {
            self.limits.body_read_timeout = Duration::from_secs(v);
        }
        if let Some(v) = file.event_keepalive_secs {
            self.event_keepalive = Duration::from_secs(v);
        }
        if let Some(v) = file.audit_retention_days {
            self.audit_retention_days = Some(v);
        }
        if let Some(w) = file.webhooks {
            self.webhooks.apply_file(w);
        }
        if let Some(v) = file.idle_timeout_secs {
            self.limits.idle_timeout = Duration::from_secs(v);
        }
        if let Some(v) = file.max_connections {
            self.limits.max_connections = v;
        }
        if let Some(v) = file.max_uri_bytes {
            self.limits.max_uri_bytes = v;
        }
        if let Some(v) = file.auth_failures_per_minute_per_address {
            self.auth_failures_per_minute_per_address = v.max(1);
        }
        if let Some(v) = file.auth_failures_per_minute_per_credential {
            self.auth_failures_per_minute_per_credential = v.max(1);
        }
        if let Some(v) = file.cors_allowed_origins {
            self.cors_allowed_origins = v;
        }
        if let Some(v) = file.metrics_token.filter(|t| !t.is_empty()) {
            self.metrics_token = Some(v);
        }
        if let Some(v) = file.vendor_jwks {
            self.vendor_jwks = Some(v);
        }
        if let Some(v) = file.upstream.filter(|u| !u.is_empty()) {
            self.upstream = Some(v);
        }
        if let Some(v) = file.upstream_token.filter(|t| !t.is_empty()) {
            self.upstream_token = Some(v);
        }
        if let Some(v) = file.upstream_interval_secs {
            self.upstream_interval = Duration::from_secs(v);
        }
        self.plans.extend(file.plans);
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

    #[test]
    fn the_file_sets_tls_limits_cors_and_the_metrics_token() {
        let file: FileConfig = toml::from_str(
            r#"
            tls_cert = "/etc/leasehold/cert.pem"
            tls_key = "/etc/leasehold/key.pem"
            header_read_timeout_secs = 5
            body_read_timeout_secs = 7
            idle_timeout_secs = 30
            max_connections = 100
            max_uri_bytes = 2048
            auth_failures_per_minute_per_address = 12
            auth_failures_per_minute_per_credential = 4
            cors_allowed_origins = ["https://admin.example.com"]
            metrics_token = "scrape-me"
            "#,
        )
        .unwrap();
        let mut config = Config::default();
        config.apply_file(file);
        config.check().unwrap();
        assert_eq!(
            config.tls_key.as_deref(),
            Some(std::path::Path::new("/etc/leasehold/key.pem"))
        );
        assert_eq!(config.limits.header_read_timeout, Duration::from_secs(5));
        assert_eq!(config.limits.body_read_timeout, Duration::from_secs(7));
        assert_eq!(config.limits.idle_timeout, Duration::from_secs(30));
        assert_eq!(config.limits.max_connections, 100);
        assert_eq!(config.limits.max_uri_bytes, 2048);
        assert_eq!(config.auth_failures_per_minute_per_address, 12);
        assert_eq!(config.auth_failures_per_minute_per_credential, 4);
        assert_eq!(config.cors_allowed_origins, ["https://admin.example.com"]);
        assert!(!format!("{config:?}").contains("scrape-me"));
        assert!(toml::from_str::<FileConfig>("tls_certificate = \"x\"").is_err());
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let config = Config {
            tls_cert: Some("cert.pem".into()),
            ..Config::default()
        };
        assert!(config.check().unwrap_err().to_string().contains("tls_key"));
        let mut config = Config::default();
        config.limits.idle_timeout = Duration::ZERO;
        assert!(config
            .check()
            .unwrap_err()
            .to_string()
            .contains("idle_timeout"));
        let config = Config {
            cors_allowed_origins: vec!["https://a.example/path".into()],
            ..Config::default()
        };
        assert!(config.check().is_err());
        let config = Config {
            audit_retention_days: Some(0),
            ..Config::default()
        };
        assert!(config
            .check()
            .unwrap_err()
            .to_string()
            .contains("audit_retention_days"));
    }

    #[test]
    fn audit_events_are_kept_forever_unless_the_file_sets_a_retention() {
        let mut config = Config::default();
        assert_eq!(config.audit_retention_days, None);
        config.apply_file(toml::from_str("audit_retention_days = 90").unwrap());
        config.check().unwrap();
        assert_eq!(config.audit_retention_days, Some(90));
    }

    #[test]
    fn the_file_sets_the_dark_site_keys_and_the_online_mode_is_checked() {
        let file: FileConfig = toml::from_str(
            r#"
            vendor_jwks = "/etc/leasehold/vendor-jwks.json"
            upstream = "https://licenses.vendor.example"
            upstream_token = "lh_adm_x"
            upstream_interval_secs = 60
            "#,
        )
        .unwrap();
        let mut config = Config::default();
        config.apply_file(file);
        config.check().unwrap();
        assert_eq!(config.upstream_interval, Duration::from_secs(60));
        let mut no_token = config.clone();
        no_token.upstream_token = None;
        assert!(no_token
            .check()
            .unwrap_err()
            .to_string()
            .contains("upstream_token"));
        let mut no_keys = config.clone();
        no_keys.vendor_jwks = None;
        assert!(no_keys
            .check()
            .unwrap_err()
            .to_string()
            .contains("vendor_jwks"));
        let mut not_a_url = config.clone();
        not_a_url.upstream = Some("licenses.vendor.example".into());
        assert!(not_a_url.check().unwrap_err().to_string().contains("http"));
        config.upstream_interval = Duration::ZERO;
        assert!(config.check().is_err());
    }
}
