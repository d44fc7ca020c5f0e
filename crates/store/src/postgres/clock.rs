//! The PostgreSQL backend's clock: session times are judged by the database's clock, not by
//! each node's, so skew between nodes can neither end nor extend a session.
//!
//! A node reads the database's clock as its own time plus an offset: measured when the store
//! connects (half a round trip either side), then re-measured at every queue sweep (once a
//! second) and followed at most `SLEW_MILLIS` per sweep, so a slow drift between the two clocks
//! is tracked while a jump of either clock is not taken at once. A wall-clock step of the node
//! (applied by the server, see `Store::shift_live_sessions`) moves the offset the other way:
//! the database time this node computes does not jump.
//!
//! Without a node clock (`PgOptions::node_clock` unset: tests that move time by hand, the copy
//! tool) the offset stays 0 and the times callers pass are used as they are.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use leasehold_core::Timestamp;
use sqlx::PgPool;

/// The node's own time, read when the offset is measured.
pub type NodeClock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Most the offset follows a new measurement per sweep (1 ms a second: 1,000 ppm, above any
/// real drift between two synchronised clocks).
const SLEW_MILLIS: i64 = 1;

/// This node's reading of the database's clock.
pub struct DbClock {
    node: Option<NodeClock>,
    /// Database time minus node time, in milliseconds.
    offset: AtomicI64,
}

impl DbClock {
    pub fn new(node: Option<NodeClock>) -> Self {
        DbClock {
            node,
            offset: AtomicI64::new(0),
        }
    }

    /// The database's time when this node's time is `node_now`.
    pub fn db(&self, node_now: Timestamp) -> Timestamp {
        Timestamp::from_millis(
            node_now
                .millis()
                .saturating_add(self.offset.load(Ordering::Acquire)),
        )
    }

    /// Database time minus node time, now.
    async fn measure(&self, pool: &PgPool) -> Result<Option<i64>, sqlx::Error> {
        let Some(node) = &self.node else {
            return Ok(None);
        };
        let before = node().millis();
        let db: i64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
                .fetch_one(pool)
                .await?;
        let after = node().millis();
        Ok(Some(db - (before + (after - before) / 2)))
    }

    /// Takes the offset as measured (when the store connects).
    pub async fn set(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        if let Some(offset) = self.measure(pool).await? {
            self.offset.store(offset, Ordering::Release);
        }
        Ok(())
    }

    /// Follows a new measurement by at most `SLEW_MILLIS` (at every sweep).
    pub async fn follow(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        if let Some(measured) = self.measure(pool).await? {
            let current = self.offset.load(Ordering::Acquire);
            let step = (measured - current).clamp(-SLEW_MILLIS, SLEW_MILLIS);
            self.offset.fetch_add(step, Ordering::AcqRel);
        }
        Ok(())
    }

    /// The node's clock is about to jump by `delta_ms`: the database time it computes must not.
    pub fn node_stepped(&self, delta_ms: i64) {
        self.offset.fetch_sub(delta_ms, Ordering::AcqRel);
    }

    pub fn offset_millis(&self) -> i64 {
        self.offset.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_node_clock_times_pass_through() {
        let clock = DbClock::new(None);
        let t = Timestamp::from_millis(1_800_000_000_000);
        assert_eq!(clock.db(t), t);
    }

    #[test]
    fn a_node_step_does_not_move_the_database_time() {
        // Arrange: the database is 2 s ahead of this node.
        let clock = DbClock::new(None);
        clock.offset.store(2_000, Ordering::Release);
        let before = Timestamp::from_millis(1_000_000);

        // Act: the node's clock jumps 2 h ahead.
        clock.node_stepped(7_200_000);

        // Assert
        let after = Timestamp::from_millis(before.millis() + 7_200_000);
        assert_eq!(clock.db(after), Timestamp::from_millis(1_002_000));
    }
}
