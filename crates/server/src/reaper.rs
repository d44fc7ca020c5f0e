//! The reaper: ends expired sessions every tick, so a crashed client's seat comes back within
//! one interval of its `expires_at`; with `audit_retention_days`, it also deletes audit events
//! past their retention, a bounded batch a tick.

use std::time::Duration;

use leasehold_core::Timestamp;

use crate::state::AppState;

/// Most audit events one tick deletes (a transaction of its own, after the tick's ends).
pub const AUDIT_PRUNE_BATCH: usize = 1000;

const MILLIS_PER_DAY: i64 = 24 * 60 * 60 * 1000;

/// Ends expired sessions every `interval`: a session is reclaimed within one interval of its
/// `expires_at` (and at once by a full license that needs the seat). With
/// `audit_retention_days`, each tick then deletes up to `AUDIT_PRUNE_BATCH` audit events older
/// than that (a tick with nothing due costs one read of the oldest event).
pub async fn run(state: AppState, interval: Duration, audit_retention_days: Option<u32>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        crate::clock_steps::apply(&state).await;
        match state.with_now(|now| state.store.reap_expired(now)).await {
            Ok(ended) => {
                for (license_id, reason, n) in ended.iter() {
                    crate::metrics::ended_n(license_id, reason, n);
                }
                if ended.total() > 0 {
                    tracing::debug!(count = ended.total(), "reclaimed expired sessions");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reaper failed"),
        }
        if let Some(days) = audit_retention_days {
            prune_audit(&state, days).await;
        }
    }
}

async fn prune_audit(state: &AppState, days: u32) {
    let now = state.clock.now();
    let before = Timestamp::from_millis(
        now.millis()
            .saturating_sub(i64::from(days).saturating_mul(MILLIS_PER_DAY)),
    );
    match state.store.prune_audit(before, AUDIT_PRUNE_BATCH).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(count = n, "deleted audit events past their retention"),
        Err(e) => tracing::warn!(error = %e, "audit retention failed"),
    }
}
