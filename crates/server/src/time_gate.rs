//! The time gate: a clock step is applied only while no session call is between its reading of
//! the time and the end of its store call (see `crate::clock`).
//!
//! Calls pass it with two atomic operations (a count of calls in flight, and a look at the
//! "stepping" flag): a heartbeat must not pay for a lock on a path taken a hundred thousand
//! times a second for an event that happens a few times a year. The one that applies a step
//! raises the flag, waits until the calls in flight are done, applies it, and lowers the flag;
//! calls that arrive meanwhile wait for it. Both sides use sequentially consistent order, so a
//! call and a step never both miss each other: either the step sees the call counted, or the
//! call sees the flag.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How often a waiting side looks again (steps are rare and short).
const RECHECK: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
pub struct TimeGate {
    in_flight: AtomicUsize,
    stepping: AtomicBool,
}

/// A call inside the gate; leaves it when dropped.
pub struct Passage<'a>(&'a TimeGate);

impl Drop for Passage<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl TimeGate {
    /// Enters the gate (waiting while a step is being applied).
    pub async fn enter(&self) -> Passage<'_> {
        loop {
            if !self.stepping.load(Ordering::SeqCst) {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                if !self.stepping.load(Ordering::SeqCst) {
                    return Passage(self);
                }
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            tokio::time::sleep(RECHECK).await;
        }
    }

    /// Runs `apply` with no call inside the gate (only one applier at a time: the reaper).
    pub async fn alone<T, F: Future<Output = T>>(&self, apply: impl FnOnce() -> F) -> T {
        self.stepping.store(true, Ordering::SeqCst);
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(RECHECK).await;
        }
        let result = apply().await;
        self.stepping.store(false, Ordering::SeqCst);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_step_waits_for_the_calls_inside_and_holds_back_new_ones() {
        // Arrange: a call is inside.
        let gate = Arc::new(TimeGate::default());
        let inside = gate.enter().await;

        // Act: a step starts; it cannot apply yet.
        let applied = Arc::new(AtomicBool::new(false));
        let step = {
            let (gate, applied) = (gate.clone(), applied.clone());
            tokio::spawn(async move {
                gate.alone(|| async { applied.store(true, Ordering::SeqCst) })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !applied.load(Ordering::SeqCst),
            "applied with a call inside"
        );

        // A new call waits for the step, which goes once the first call leaves.
        let later = {
            let (gate, applied) = (gate.clone(), applied.clone());
            tokio::spawn(async move {
                let _in = gate.enter().await;
                applied.load(Ordering::SeqCst)
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(inside);
        step.await.unwrap();

        // Assert: the later call entered after the step was applied.
        assert!(later.await.unwrap());
    }
}
