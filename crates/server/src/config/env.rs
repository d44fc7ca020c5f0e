//! The `LEASEHOLD_*` environment variables of the server, applied over the file. An unknown
//! `LEASEHOLD_` variable is warned about (a typo would otherwise be silently ignored).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::Config;

/// Every variable the binary reads (the client commands' ones too, so they are not warned
/// about).
const KNOWN_ENV: &[&str] = &[
    "LEASEHOLD_LISTEN",
    "LEASEHOLD_DATA_DIR",
    "LEASEHOLD_ADMIN_TOKEN",
    "LEASEHOLD_CONFIG",
    "LEASEHOLD_DATABASE_URL",
    "LEASEHOLD_URL",
    "LEASEHOLD_TOKEN",
    "LEASEHOLD_CA_FILE",
    "LEASEHOLD_LOG",
    "LEASEHOLD_TLS_CERT",
    "LEASEHOLD_TLS_KEY",
    "LEASEHOLD_MAX_BODY_BYTES",
    "LEASEHOLD_HEADER_READ_TIMEOUT_SECS",
    "LEASEHOLD_BODY_READ_TIMEOUT_SECS",
    "LEASEHOLD_IDLE_TIMEOUT_SECS",
    "LEASEHOLD_EVENT_KEEPALIVE_SECS",
    "LEASEHOLD_AUDIT_RETENTION_DAYS",
    "LEASEHOLD_MAX_CONNECTIONS",
    "LEASEHOLD_MAX_URI_BYTES",
    "LEASEHOLD_AUTH_FAILURES_PER_MINUTE_PER_ADDRESS",
    "LEASEHOLD_AUTH_FAILURES_PER_MINUTE_PER_CREDENTIAL",
    "LEASEHOLD_CORS_ALLOWED_ORIGINS",
    "LEASEHOLD_METRICS_TOKEN",
    "LEASEHOLD_WEBHOOKS_ALLOW_PRIVATE_TARGETS",
    "LEASEHOLD_VENDOR_JWKS",
    "LEASEHOLD_UPSTREAM",
    "LEASEHOLD_UPSTREAM_TOKEN",
    "LEASEHOLD_UPSTREAM_INTERVAL_SECS",
];

/// A non-empty variable.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A non-empty variable parsed as a number.
fn number<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    var(name)
        .map(|v| v.trim().parse::<T>())
        .transpose()
        .with_context(|| format!("{name} is not a number"))
}

impl Config {
    pub(super) fn apply_env(&mut self) -> anyhow::Result<()> {
        for (key, _) in std::env::vars() {
            if key.starts_with("LEASEHOLD_") && !KNOWN_ENV.contains(&key.as_str()) {
                tracing::warn!(variable = %key, "unknown LEASEHOLD_ environment variable ignored");
            }
        }
        if let Some(v) = var("LEASEHOLD_LISTEN") {
            self.listen = v.parse().context("LEASEHOLD_LISTEN is not an address")?;
        }
        if let Some(v) = var("LEASEHOLD_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("LEASEHOLD_VENDOR_JWKS") {
            self.vendor_jwks = Some(PathBuf::from(v));
        }
        if let Some(v) = var("LEASEHOLD_UPSTREAM") {
            self.upstream = Some(v);
        }
        if let Some(v) = var("LEASEHOLD_UPSTREAM_TOKEN") {
            self.upstream_token = Some(v);
        }
        if let Some(v) = number("LEASEHOLD_UPSTREAM_INTERVAL_SECS")? {
            self.upstream_interval = Duration::from_secs(v);
        }
        if let Some(v) = var("LEASEHOLD_DATABASE_URL") {
            self.database_url = Some(v);
        }
        if let Some(v) = var("LEASEHOLD_ADMIN_TOKEN") {
            self.admin_token = Some(v);
        }
        if let Some(v) = var("LEASEHOLD_TLS_CERT") {
            self.tls_cert = Some(PathBuf::from(v));
        }
        if let Some(v) = var("LEASEHOLD_TLS_KEY") {
            self.tls_key = Some(PathBuf::from(v));
        }
        if let Some(v) = number("LEASEHOLD_MAX_BODY_BYTES")? {
            self.max_body_bytes = v;
        }
        if let Some(v) = number("LEASEHOLD_HEADER_READ_TIMEOUT_SECS")? {
            self.limits.header_read_timeout = Duration::from_secs(v);
        }
        if let Some(v) = number("LEASEHOLD_BODY_READ_TIMEOUT_SECS")? {
            self.limits.body_read_timeout = Duration::from_secs(v);
        }
        if let Some(v) = number("LEASEHOLD_EVENT_KEEPALIVE_SECS")? {
            self.event_keepalive = Duration::from_secs(v);
        }
        if let Some(v) = number("LEASEHOLD_AUDIT_RETENTION_DAYS")? {
            self.audit_retention_days = Some(v);
        }
        if let Some(v) = var("LEASEHOLD_WEBHOOKS_ALLOW_PRIVATE_TARGETS") {
            self.webhooks.allow_private_targets = v
                .trim()
                .parse()
                .context("LEASEHOLD_WEBHOOKS_ALLOW_PRIVATE_TARGETS is not true or false")?;
        }
        if let Some(v) = number("LEASEHOLD_IDLE_TIMEOUT_SECS")? {
            self.limits.idle_timeout = Duration::from_secs(v);
        }
        if let Some(v) = number("LEASEHOLD_MAX_CONNECTIONS")? {
            self.limits.max_connections = v;
        }
        if let Some(v) = number("LEASEHOLD_MAX_URI_BYTES")? {
            self.limits.max_uri_bytes = v;
        }
        if let Some(v) = number::<u32>("LEASEHOLD_AUTH_FAILURES_PER_MINUTE_PER_ADDRESS")? {
            self.auth_failures_per_minute_per_address = v.max(1);
        }
        if let Some(v) = number::<u32>("LEASEHOLD_AUTH_FAILURES_PER_MINUTE_PER_CREDENTIAL")? {
            self.auth_failures_per_minute_per_credential = v.max(1);
        }
        if let Some(v) = var("LEASEHOLD_CORS_ALLOWED_ORIGINS") {
            self.cors_allowed_origins = v
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = var("LEASEHOLD_METRICS_TOKEN") {
            self.metrics_token = Some(v);
        }
        Ok(())
    }
}
