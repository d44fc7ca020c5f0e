//! What the store reports to the `metrics` facade: the size of each batch it commits and how
//! long the commit took, per backend (`store`: `sqlite` or `postgres`) and kind of batch
//! (`kind`: `write` for the SQLite writer, the lane's kind on PostgreSQL). The server installs
//! the recorder and exports them; without a recorder (store tests) they cost nothing.
//!
//! Handles are taken once per writer or lane (`BatchMetrics::new`), so a batch pays two
//! histogram records and no lookup.

use std::time::Duration;

/// Batch size: jobs (requests) committed together.
pub const BATCH_SIZE: &str = "leasehold_store_batch_size";
/// Batch latency: the transaction and its commit (with the fsync, on SQLite), retries included.
pub const COMMIT_SECONDS: &str = "leasehold_store_commit_seconds";

/// The histograms of one writer or lane.
pub(crate) struct BatchMetrics {
    size: metrics::Histogram,
    latency: metrics::Histogram,
}

impl BatchMetrics {
    pub(crate) fn new(store: &'static str, kind: &'static str) -> Self {
        BatchMetrics {
            size: metrics::histogram!(BATCH_SIZE, "store" => store, "kind" => kind),
            latency: metrics::histogram!(COMMIT_SECONDS, "store" => store, "kind" => kind),
        }
    }

    /// A batch of `jobs` committed (or failed for good) after `took`.
    pub(crate) fn record(&self, jobs: usize, took: Duration) {
        self.size.record(jobs as f64);
        self.latency.record(took.as_secs_f64());
    }
}
