//! Applies a step of the wall clock (see `crate::clock`): with no session call in flight, the
//! store moves every live session's expiry by the step, then the clock is re-anchored to the
//! wall clock. Checked by the reaper before each tick.

use crate::state::AppState;

/// Applies a pending wall-clock step, if there is one.
pub async fn apply(state: &AppState) {
    if state.clock.wall_step().is_none() {
        return;
    }
    state
        .time_gate
        .alone(|| async {
            let Some(delta) = state.clock.wall_step() else {
                return;
            };
            match state.store.shift_live_sessions(delta).await {
                Ok(moved) => {
                    state.clock.reanchor();
                    tracing::warn!(
                        step_ms = delta,
                        live_sessions = moved,
                        "the wall clock stepped: live sessions keep their remaining life"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, step_ms = delta, "cannot apply a wall-clock step yet");
                }
            }
        })
        .await;
}
