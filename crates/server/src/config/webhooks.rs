//! The `[webhooks]` settings: which targets may be called (SSRF), the HTTP timeouts, the retry
//! schedule, the dispatcher's pace and bounds, and the `license.expiring` notice.

use std::time::Duration;

use serde::Deserialize;

/// How webhooks are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Allow targets on loopback, link-local, private and other non-public addresses
    /// (refused by default: a server-side request forgery guard).
    pub allow_private_targets: bool,
    /// Connecting to a receiver (TCP and TLS) must finish within this.
    pub connect_timeout: Duration,
    /// The receiver's whole answer must arrive within this.
    pub response_timeout: Duration,
    /// The first retry waits about this long; each next one twice as long (with jitter), at
    /// most `retry_max_interval`.
    pub retry_base: Duration,
    pub retry_max_interval: Duration,
    /// A delivery still failing this long after its event is marked failed.
    pub retry_for: Duration,
    /// How often the dispatcher looks for new events and due deliveries.
    pub poll_interval: Duration,
    /// Deliveries sent at once by this node.
    pub concurrency: usize,
    /// Most deliveries waiting per endpoint: events beyond are logged as failed at once
    /// (`backlog full`), so a dead receiver never grows the outbox without bound.
    pub max_pending_per_endpoint: u64,
    /// A backlog (deliveries waiting) above this is an alert: a warning in the log and
    /// `leasehold_webhook_backlog_alert 1` in `/metrics`.
    pub backlog_alert: u64,
    /// `license.expiring` is raised this many days before a license's `expires_at`.
    pub expiring_days: u32,
    /// Delivered and failed deliveries are kept in the delivery log this many days.
    pub log_retention_days: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow_private_targets: false,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(10),
            retry_max_interval: Duration::from_secs(3600),
            retry_for: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_millis(200),
            concurrency: 16,
            max_pending_per_endpoint: 10_000,
            backlog_alert: 1_000,
            expiring_days: 7,
            log_retention_days: 30,
        }
    }
}

/// The `[webhooks]` table of the TOML file; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksFile {
    pub allow_private_targets: Option<bool>,
    pub connect_timeout_ms: Option<u64>,
    pub response_timeout_ms: Option<u64>,
    pub retry_base_ms: Option<u64>,
    pub retry_max_interval_secs: Option<u64>,
    pub retry_for_secs: Option<u64>,
    pub poll_interval_ms: Option<u64>,
    pub concurrency: Option<usize>,
    pub max_pending_per_endpoint: Option<u64>,
    pub backlog_alert: Option<u64>,
    pub expiring_days: Option<u32>,
    pub log_retention_days: Option<u32>,
}

impl WebhookConfig {
    pub fn apply_file(&mut self, f: WebhooksFile) {
        let ms = Duration::from_millis;
        if let Some(v) = f.allow_private_targets {
            self.allow_private_targets = v;
        }
        if let Some(v) = f.connect_timeout_ms {
            self.connect_timeout = ms(v);
        }
        if let Some(v) = f.response_timeout_ms {
            self.response_timeout = ms(v);
        }
        if let Some(v) = f.retry_base_ms {
            self.retry_base = ms(v);
        }
        if let Some(v) = f.retry_max_interval_secs {
            self.retry_max_interval = Duration::from_secs(v);
        }
        if let Some(v) = f.retry_for_secs {
            self.retry_for = Duration::from_secs(v);
        }
        if let Some(v) = f.poll_interval_ms {
            self.poll_interval = ms(v);
        }
        if let Some(v) = f.concurrency {
            self.concurrency = v;
        }
        if let Some(v) = f.max_pending_per_endpoint {
            self.max_pending_per_endpoint = v;
        }
        if let Some(v) = f.backlog_alert {
            self.backlog_alert = v;
        }
        if let Some(v) = f.expiring_days {
            self.expiring_days = v;
        }
        if let Some(v) = f.log_retention_days {
            self.log_retention_days = v;
        }
    }

    pub fn check(&self) -> anyhow::Result<()> {
        for (name, value) in [
            ("webhooks.connect_timeout_ms", self.connect_timeout),
            ("webhooks.response_timeout_ms", self.response_timeout),
            ("webhooks.retry_base_ms", self.retry_base),
            ("webhooks.poll_interval_ms", self.poll_interval),
        ] {
            anyhow::ensure!(!value.is_zero(), "{name} must be at least 1");
        }
        anyhow::ensure!(
            self.concurrency > 0 && self.max_pending_per_endpoint > 0,
            "webhooks.concurrency and webhooks.max_pending_per_endpoint must be at least 1"
        );
        anyhow::ensure!(
            self.log_retention_days > 0,
            "webhooks.log_retention_days must be at least 1"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_table_sets_what_it_names_and_zero_timeouts_are_refused() {
        let mut c = WebhookConfig::default();
        c.apply_file(
            toml::from_str("allow_private_targets = true\nretry_base_ms = 50\nexpiring_days = 3")
                .unwrap(),
        );
        assert!(c.allow_private_targets);
        assert_eq!(c.retry_base, Duration::from_millis(50));
        assert_eq!(c.expiring_days, 3);
        assert!(c.check().is_ok());
        c.connect_timeout = Duration::ZERO;
        assert!(c
            .check()
            .unwrap_err()
            .to_string()
            .contains("connect_timeout"));
        assert!(toml::from_str::<WebhooksFile>("allow_private = true").is_err());
    }
}
