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

#[cfg(test)]
mod tests {
    use leasehold_proto::EndReason;

    use crate::records::EndCounts;
    use crate::sqlite::SqliteStore;
    use crate::testkit::{open, tenant, T0};
    use crate::Store;

    #[test]
    fn end_counts_are_kept_per_license_and_reason() {
        let mut ended = EndCounts::default();
        ended.add("a", EndReason::Inactivity, 2);
        ended.add("b", EndReason::Inactivity, 1);
        ended.add("a", EndReason::Inactivity, 3);
        ended.add("a", EndReason::Lifetime, 1);
        ended.add("b", EndReason::Lifetime, 0);
        let counts: Vec<_> = ended.iter().collect();
        assert_eq!(
            counts,
            [
                ("a", EndReason::Inactivity, 5),
                ("b", EndReason::Inactivity, 1),
                ("a", EndReason::Lifetime, 1),
            ]
        );
        assert_eq!(ended.total(), 7);
    }

    #[tokio::test]
    async fn the_gauges_and_the_reaper_answer_per_license() {
        // Arrange: 3 seats, two sessions.
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("leasehold.db"), T0).unwrap();
        tenant(&store, 3, &["bob"]).await;
        store.open_session(open(1, "bob", "a"), T0).await.unwrap();
        store.open_session(open(2, "bob", "b"), T0).await.unwrap();

        // Act / Assert: capacity and use in one call; the expiries counted for the license.
        let gauges = store.license_gauges().await.unwrap();
        assert_eq!(gauges.len(), 1);
        let g = &gauges[0];
        assert_eq!(
            (g.license_id.as_str(), g.seats, g.in_use, g.waiting),
            ("lic", 3, 2, 0)
        );
        let ended = store.reap_expired(T0.plus_secs(61)).await.unwrap();
        let counts: Vec<_> = ended.iter().collect();
        assert_eq!(counts, [("lic", EndReason::Inactivity, 2)]);
        let g = &store.license_gauges().await.unwrap()[0];
        assert_eq!((g.seats, g.in_use), (3, 0));
    }
}
