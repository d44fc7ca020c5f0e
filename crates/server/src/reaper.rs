//! The reaper: ends expired sessions every tick, so a crashed client's seat comes back within
//! one interval of its `expires_at`.

use std::time::Duration;

use crate::state::AppState;

/// Ends expired sessions every `interval`: a session is reclaimed within one interval of its
/// `expires_at` (and at once by a full license that needs the seat).
pub async fn run(state: AppState, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        crate::clock_steps::apply(&state).await;
        match state.with_now(|now| state.store.reap_expired(now)).await {
            Ok(ended) => {
                for (reason, n) in ended.iter() {
                    crate::metrics::ended_n(reason, n);
                }
                if ended.total() > 0 {
                    tracing::debug!(count = ended.total(), "reclaimed expired sessions");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reaper failed"),
        }
    }
}
