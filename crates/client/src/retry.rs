//! Retry policy: how many times a request is tried and how long to wait in between.
//!
//! Only failures that may go away by themselves are retried: transport errors (connection
//! refused, reset, timeout) and HTTP 503. A 4xx answer is never retried: the same request would
//! be refused again. Requests that are not idempotent (creating an account, a license or a token)
//! are retried after a transport error only when the connection could not even be opened, so a
//! request that may have reached the server is never sent twice.
//!
//! Waits grow exponentially (`initial_backoff * 2^(retry-1)`, capped at `max_backoff`) with
//! "equal jitter": a random wait between half and all of that value, so that many clients that
//! failed together do not come back together.

use std::time::Duration;

use rand::Rng;

/// How a [`Client`](crate::Client) retries failed requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total number of tries per request, the first one included (1 disables retries).
    pub max_attempts: u32,
    /// Wait before the first retry (before jitter).
    pub initial_backoff: Duration,
    /// Upper bound of any single wait, also applied to a server's `Retry-After`.
    pub max_backoff: Duration,
    /// Randomize each wait between half and all of its value.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// 4 tries, waits of about 200 ms, 400 ms, 800 ms, never more than 5 s, with jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// A policy that tries every request exactly once.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// A policy with `max_attempts` tries and the given first wait, doubling up to `max_backoff`.
    pub fn new(max_attempts: u32, initial_backoff: Duration, max_backoff: Duration) -> Self {
        RetryPolicy {
            max_attempts,
            initial_backoff,
            max_backoff,
            jitter: true,
        }
    }

    /// Returns the same policy with jitter switched on or off (off makes waits predictable in
    /// tests).
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        let full = self
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        if !self.jitter || full.is_zero() {
            return full;
        }
        let full_nanos = u64::try_from(full.as_nanos()).unwrap_or(u64::MAX);
        let half = full_nanos / 2;
        Duration::from_nanos(rand::thread_rng().gen_range(half..=full_nanos))
    }

    /// The wait before retry number `retry`, stretched to the server's `Retry-After` when that is
    /// longer, and never above `max_backoff`.
    pub(crate) fn backoff_after(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let wait = self.backoff(retry);
        match retry_after {
            Some(asked) if asked > wait => asked.min(self.max_backoff),
            _ => wait,
        }
    }

    /// At least one attempt, even when `max_attempts` was set to 0.
    pub(crate) fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_without_jitter() {
        let policy = RetryPolicy::new(10, Duration::from_millis(100), Duration::from_millis(700))
            .with_jitter(false);
        let waits: Vec<u128> = (1..=5).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 700, 700]);
        assert_eq!(policy.backoff(1000), Duration::from_millis(700));
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_wait() {
        let policy = RetryPolicy::new(10, Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..200 {
            let wait = policy.backoff(3);
            assert!(wait >= Duration::from_millis(200) && wait <= Duration::from_millis(400));
        }
    }

    #[test]
    fn retry_after_stretches_the_wait_but_not_past_the_cap() {
        let policy = RetryPolicy::new(3, Duration::from_millis(100), Duration::from_secs(2))
            .with_jitter(false);
        assert_eq!(
            policy.backoff_after(1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            policy.backoff_after(1, Some(Duration::from_secs(60))),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.backoff_after(1, Some(Duration::ZERO)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn zero_attempts_still_means_one_try() {
        let policy = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.attempts(), 1);
        assert_eq!(RetryPolicy::none().attempts(), 1);
    }
}
