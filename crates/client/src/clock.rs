//! The wall clock as a seam. The SDK reads the wall clock in one place only, [`SystemClock`],
//! and only where it must: to turn a session's server-given `expires_at` into a local deadline
//! and to check the expiry of a lease it just received. Tests (and apps that keep their own
//! notion of time) pass another [`Clock`] in through
//! [`CheckoutOptions::clock`](crate::CheckoutOptions::clock).
//!
//! Waiting (backoff, heartbeat intervals, token renewal) uses tokio's monotonic clock, so
//! tests can also pause and advance time with `tokio::time::pause`.

use std::sync::Mutex;

use time::OffsetDateTime;

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time (UTC).
    fn now(&self) -> OffsetDateTime;

    /// The current time as seconds since the Unix epoch, as lease verification wants it.
    fn now_unix(&self) -> i64 {
        self.now().unix_timestamp()
    }
}

/// The operating system's clock. The only wall-clock read of the SDK.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one sanctioned wall-clock read of the SDK (see clippy.toml).
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that says what it is told: for tests.
#[derive(Debug)]
pub struct FixedClock(Mutex<OffsetDateTime>);

impl FixedClock {
    /// A clock stopped at `now`.
    pub fn new(now: OffsetDateTime) -> Self {
        FixedClock(Mutex::new(now))
    }

    /// Moves the clock to `now`.
    pub fn set(&self, now: OffsetDateTime) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = now;
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: time::Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_moves_only_when_told() {
        let start = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let clock = FixedClock::new(start);
        assert_eq!(clock.now_unix(), 1_700_000_000);
        clock.advance(time::Duration::seconds(90));
        assert_eq!(clock.now_unix(), 1_700_000_090);
        clock.set(start);
        assert_eq!(clock.now(), start);
    }
}
