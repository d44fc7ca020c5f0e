//! The clock seam, and how the server keeps time across wall-clock steps.
//!
//! Library code never reads the wall clock: it asks a `Clock`, which is the system clock in
//! production and a `ManualClock` that tests move by hand.
//!
//! # Steps of the wall clock
//!
//! The server's time (`now()`) is the wall clock as of the last anchoring, advanced by a
//! monotonic clock. A step of the wall clock (an NTP correction, a VM resumed after hours) does
//! not move it: the life left of every session keeps being measured in real elapsed time. The
//! reaper notices the step (`wall_step()`: the wall clock is more than `STEP_THRESHOLD_MILLIS`
//! away from `now()`) within one tick, and then, with no session call in flight (the time gate
//! of `AppState`), the store moves every live session's expiry by the step, so its remaining
//! life is kept, and `reanchor()` makes `now()` the wall clock again. Times on the wire are
//! wall-clock times, off by less than `STEP_THRESHOLD_MILLIS` (a gradual NTP slew moves the
//! monotonic clock too, so it never adds up).
//!
//! The bound: a session's life is measured to within `STEP_THRESHOLD_MILLIS` whatever the
//! steps; a step of the wall clock while the server is down is seen at start as downtime (see
//! the store's load rule).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use leasehold_core::Timestamp;

/// A wall clock further than this from the server's time has stepped.
pub const STEP_THRESHOLD_MILLIS: i64 = 1_000;

pub trait Clock: Send + Sync + 'static {
    /// The server's time (see the module doc): wall-clock time that does not jump.
    fn now(&self) -> Timestamp;
    /// How far the wall clock has stepped from `now()`, when it is more than
    /// `STEP_THRESHOLD_MILLIS` away (positive: the wall clock jumped ahead).
    fn wall_step(&self) -> Option<i64>;
    /// Makes `now()` the wall clock again (once live sessions were moved by the step).
    fn reanchor(&self);
}

/// `now()` from a monotonic reading and the offset to the wall clock fixed at anchoring.
fn anchored(steady_millis: i64, offset: &AtomicI64) -> Timestamp {
    Timestamp::from_millis(steady_millis.saturating_add(offset.load(Ordering::Acquire)))
}

fn step(wall_millis: i64, now: Timestamp) -> Option<i64> {
    let delta = wall_millis.saturating_sub(now.millis());
    (delta.abs() > STEP_THRESHOLD_MILLIS).then_some(delta)
}

/// The real clocks: the system's wall clock and its monotonic clock, with the anchor of one
/// server (each `Application` has its own, so one server's re-anchoring never skips another's
/// step).
#[derive(Debug)]
pub struct SystemClock {
    /// The monotonic origin of this clock.
    start: Instant,
    /// Wall-clock milliseconds minus monotonic milliseconds since `start`, fixed at creation
    /// and at every re-anchoring.
    offset: AtomicI64,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock {
            start: Instant::now(),
            offset: AtomicI64::new(Self::wall_millis()),
        }
    }

    #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
    fn wall_millis() -> i64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        since_epoch.as_millis() as i64
    }

    fn steady_millis(&self) -> i64 {
        self.start.elapsed().as_millis() as i64
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        anchored(self.steady_millis(), &self.offset)
    }

    fn wall_step(&self) -> Option<i64> {
        step(Self::wall_millis(), self.now())
    }

    fn reanchor(&self) {
        self.offset.store(
            Self::wall_millis() - self.steady_millis(),
            Ordering::Release,
        );
    }
}

/// A clock that only moves when told to. `advance_secs` moves the wall clock and the monotonic
/// clock together (time passes); `step_wall_secs` moves the wall clock alone (a step).
#[derive(Debug)]
pub struct ManualClock {
    wall: AtomicI64,
    steady: AtomicI64,
    offset: AtomicI64,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            wall: AtomicI64::new(start.millis()),
            steady: AtomicI64::new(0),
            offset: AtomicI64::new(start.millis()),
        }
    }

    pub fn advance_secs(&self, secs: i64) {
        self.wall.fetch_add(secs * 1000, Ordering::SeqCst);
        self.steady.fetch_add(secs * 1000, Ordering::SeqCst);
    }

    /// The wall clock jumps by `secs`; elapsed time does not.
    pub fn step_wall_secs(&self, secs: i64) {
        self.wall.fetch_add(secs * 1000, Ordering::SeqCst);
    }

    /// Time passes until `now()` is `at` (the wall clock keeps its distance to it).
    pub fn set(&self, at: Timestamp) {
        let by = at.millis() - self.now().millis();
        self.wall.fetch_add(by, Ordering::SeqCst);
        self.steady.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        anchored(self.steady.load(Ordering::SeqCst), &self.offset)
    }

    fn wall_step(&self) -> Option<i64> {
        step(self.wall.load(Ordering::SeqCst), self.now())
    }

    fn reanchor(&self) {
        let offset = self.wall.load(Ordering::SeqCst) - self.steady.load(Ordering::SeqCst);
        self.offset.store(offset, Ordering::SeqCst);
    }
}

/// Converts a `Timestamp` to the wire type.
pub fn to_offset(ts: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts.millis()) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    #[test]
    fn a_wall_clock_step_does_not_move_the_servers_time_until_reanchored() {
        // Arrange
        let clock = ManualClock::new(T0);
        clock.advance_secs(10);

        // Act: the wall clock jumps 2 h ahead, then 5 s pass.
        clock.step_wall_secs(7200);
        clock.advance_secs(5);

        // Assert: elapsed time only, until re-anchored.
        assert_eq!(clock.now(), T0.plus_secs(15));
        assert_eq!(clock.wall_step(), Some(7_200_000));
        clock.reanchor();
        assert_eq!(clock.now(), T0.plus_secs(7215));
        assert_eq!(clock.wall_step(), None);
    }

    #[test]
    fn small_differences_are_not_steps() {
        let clock = ManualClock::new(T0);
        clock.step_wall_secs(1);
        assert_eq!(clock.wall_step(), None);
        clock.step_wall_secs(-3);
        assert_eq!(clock.wall_step(), Some(-2000));
    }

    #[test]
    fn set_moves_time_and_keeps_a_pending_step() {
        let clock = ManualClock::new(T0);
        clock.step_wall_secs(-3600);
        clock.set(T0.plus_secs(60));
        assert_eq!(clock.now(), T0.plus_secs(60));
        assert_eq!(clock.wall_step(), Some(-3_600_000));
    }

    #[test]
    fn the_system_clock_reads_the_wall_clock() {
        let clock = SystemClock::new();
        let wall = SystemClock::wall_millis();
        assert!((clock.now().millis() - wall).abs() < STEP_THRESHOLD_MILLIS);
        assert_eq!(clock.wall_step(), None);
    }
}
