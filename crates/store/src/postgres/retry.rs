//! Transactions that run again when they lose a race: a deadlock (`40P01`) or a serialization
//! failure (`40001`, what a `SERIALIZABLE` engine such as CockroachDB or YugabyteDB answers to
//! any conflict) rolls the transaction back whole, so running its body again is safe.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::{StoreError, StoreResult};

/// Attempts of an admin transaction: more than a lane's, since several admins writing the
/// same record at once lose to each other in turn (one winner per round). 24 writers of one
/// license over two nodes under SERIALIZABLE (test `pg_contention`) ran out of 10 attempts in
/// 2 of 8 runs (a 503), of 30 in none of 8: at most ~2.5 s of pauses in all.
const ATTEMPTS: u32 = 30;
/// The longest pause before an attempt; pauses are random up to `2^attempt` ms below it, so
/// that the losers of one round do not all collide again in the next.
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Runs `body` (a block using `$tx: &mut Transaction<'static, Postgres>`; `?` and `return`
/// leave the block, not the function) in a transaction and commits it. A body or commit that
/// fails on contention (`StoreError::Contended`) is rolled back and run again in a new
/// transaction, up to `ATTEMPTS` times; any other error rolls back and is the answer.
///
/// The body may run more than once: it must do nothing outside the transaction (no memory
/// changed, no message sent) that a rolled-back attempt would leave behind. (A macro, not a
/// function taking an async closure: the futures of `async_trait` methods must be `Send` for
/// every lifetime, which async closures borrowing their arguments cannot yet promise.)
macro_rules! transaction {
    ($pool:expr, |$tx:ident| $body:block) => {{
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result: $crate::StoreResult<_> = match $pool.begin().await {
                Ok(mut owned) => {
                    let $tx = &mut owned;
                    let done: $crate::StoreResult<_> = async { $body }.await;
                    match done {
                        Ok(value) => owned
                            .commit()
                            .await
                            .map(|()| value)
                            .map_err($crate::postgres::errors::db_error),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err($crate::postgres::errors::db_error(e)),
            };
            if let Some(result) = $crate::postgres::retry::settle(result, attempt).await {
                break result;
            }
        }
    }};
}
pub(super) use transaction;

/// Runs `step` (one statement, or a procedure whose every transaction may run again) until it
/// does not lose a race, up to `ATTEMPTS` times: for callers outside `async_trait` methods.
pub(super) async fn again<T, F, Fut>(mut step: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        if let Some(result) = settle(step().await, attempt).await {
            return result;
        }
    }
}

/// What attempt `attempt` of a transaction came to: `None` to run it again (after a pause),
/// or the answer.
pub(super) async fn settle<T>(result: StoreResult<T>, attempt: u32) -> Option<StoreResult<T>> {
    match result {
        Err(StoreError::Contended(cause)) if attempt < ATTEMPTS => {
            tracing::debug!(%cause, attempt, "transaction contended; running it again");
            tokio::time::sleep(pause(attempt)).await;
            None
        }
        other => Some(other),
    }
}

/// A random pause before attempt `attempt + 1`: up to `2^attempt` ms, at most `MAX_PAUSE`.
fn pause(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(1 << attempt.min(16)).min(MAX_PAUSE);
    let random = RandomState::new().build_hasher().finish();
    let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(random % micros.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_with_the_attempt_and_stay_under_the_cap() {
        for attempt in 1..40 {
            let ceiling = Duration::from_millis(1 << attempt.min(16)).min(MAX_PAUSE);
            for _ in 0..50 {
                assert!(pause(attempt) < ceiling);
            }
        }
        assert!((0..200).any(|_| pause(8) > Duration::from_millis(2)));
    }
}
