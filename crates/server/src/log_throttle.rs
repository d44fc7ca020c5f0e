//! Log lines that cannot flood the log: an event that may come thousands of times a second
//! (a refused connection, a header that never completed, a failed authentication over budget)
//! writes at most one line per period, saying how many happened since the last line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// At most one line per this period, per kind of event.
pub const PERIOD: Duration = Duration::from_secs(10);

/// Counts events of one kind and says when a line is due.
pub struct LogThrottle {
    /// Milliseconds since the process epoch when the next line may be written.
    next_line_ms: AtomicU64,
    /// Events since the last line.
    count: AtomicU64,
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
    }
}

impl LogThrottle {
    pub const fn new() -> Self {
        LogThrottle {
            next_line_ms: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one event. `Some(n)`: write a line now, for these `n` events (this one too).
    pub fn hit(&self) -> Option<u64> {
        self.hit_at(now_ms())
    }

    fn hit_at(&self, now: u64) -> Option<u64> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let due = self.next_line_ms.load(Ordering::Relaxed);
        if now < due {
            return None;
        }
        let next = now + PERIOD.as_millis() as u64;
        // One caller wins the line; the others keep counting.
        self.next_line_ms
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .ok()
            .map(|_| self.count.swap(0, Ordering::Relaxed))
    }
}

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count() {
        let t = LogThrottle::new();
        assert_eq!(t.hit_at(1_000), Some(1));
        for _ in 0..99 {
            assert_eq!(t.hit_at(2_000), None);
        }
        assert_eq!(t.hit_at(11_000), Some(100));
        assert_eq!(t.hit_at(11_001), None);
    }
}
