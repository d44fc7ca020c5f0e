//! The failed-authentication limiter: a budget of failures per client address and per
//! credential (a presented token's hash, or a service user's `client_id`), each refilled
//! evenly over a minute (GCRA: one "theoretical arrival time" per key).
//!
//! The rules, and why:
//! - **Only failures are counted, and only failures are refused.** A request with a valid
//!   credential is never refused because of failures: not of other addresses, and not of the
//!   same address either (a shared NAT, a reverse proxy, a campus behind one address: one
//!   misconfigured client must not lock out its neighbours, and an attacker must not be able
//!   to lock out a victim by failing on its behalf). A failure over budget is answered 429
//!   `rate_limited` with `Retry-After` instead of 401. Valid credentials cannot be guessed
//!   (256 random bits), so the budget is not what keeps them safe: it tells a client to back
//!   off, makes a flood visible (`/metrics`, a throttled log line), and keeps its cost low.
//! - **A presented token over its budget is refused before it is looked up** (429): it has
//!   failed before, so it is not a valid token (tokens are minted by the server, never chosen),
//!   and refusing it early can never refuse a valid credential. This check costs one atomic
//!   load while no token is over budget, so the success path does not touch the limiter.
//! - A `client_id` over budget is *not* refused early: its owner's correct secret must keep
//!   working whatever others try with that id; its wrong secrets get 429.
//! - IPv6 addresses count per /64 (one host usually owns a whole /64).
//! - Memory is bounded: at most `MAX_KEYS` keys per table; expired ones are swept when a table
//!   is full, and while it is still full every new failure is answered 429 (fail closed, for
//!   failures only).
//!
//! Time is passed in (the server's milliseconds), so tests walk it forward.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// The window over which a budget refills.
const WINDOW_MS: i64 = 60_000;
/// Most keys kept per table.
pub const MAX_KEYS: usize = 100_000;

/// What a failed authentication gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within budget: the usual 401.
    Refused,
    /// Over budget: 429, retry after this many seconds.
    Limited { scope: Scope, retry_after_secs: u64 },
}

/// Which budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Address,
    Credential,
}

impl Scope {
    /// For messages: "too many failed authentications {phrase}".
    pub fn phrase(self) -> &'static str {
        match self {
            Scope::Address => "from this address",
            Scope::Credential => "with this credential",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Address => "address",
            Scope::Credential => "credential",
        }
    }
}

/// A credential's key: 128 bits of the SHA-256 of the presented token, or of the client id.
pub type CredentialKey = u128;

/// The key of a presented token, from its SHA-256 hash.
pub fn token_key(hash: &[u8; 32]) -> CredentialKey {
    let mut first = [0u8; 16];
    first.copy_from_slice(hash.get(..16).unwrap_or(&[0u8; 16]));
    u128::from_be_bytes(first)
}

/// The key of a service user's client id.
pub fn client_key(client_id: &str) -> CredentialKey {
    use sha2::{Digest, Sha256};
    let hash: [u8; 32] = Sha256::new()
        .chain_update(b"client_id:")
        .chain_update(client_id.as_bytes())
        .finalize()
        .into();
    token_key(&hash)
}

/// The key of an address: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
fn address_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => (u128::from(v6) >> 64 << 64) | 1,
        },
    }
}

/// A budget: `per_minute` failures, refilled evenly.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// Milliseconds one failure costs.
    interval_ms: i64,
}

impl Budget {
    fn per_minute(n: u32) -> Self {
        Budget {
            interval_ms: WINDOW_MS / i64::from(n.max(1)),
        }
    }
}

/// One table of keys and their theoretical arrival times.
#[derive(Default)]
struct Table(HashMap<u128, i64>);

impl Table {
    /// Counts a failure of `key` at `now` if the budget allows it: `Ok(tat)` with the new
    /// arrival time, or `Err(retry_after_ms)`.
    fn charge(&mut self, key: u128, budget: Budget, now: i64) -> Result<i64, i64> {
        let tat = self.0.get(&key).copied().unwrap_or(now).max(now);
        let next = tat + budget.interval_ms;
        if next - now > WINDOW_MS {
            return Err(next - now - WINDOW_MS);
        }
        if !self.0.contains_key(&key) && self.0.len() >= MAX_KEYS {
            self.0.retain(|_, tat| *tat > now);
            if self.0.len() >= MAX_KEYS {
                return Err(WINDOW_MS);
            }
        }
        self.0.insert(key, next);
        Ok(next)
    }

    /// Whether the next failure of `key` would be over budget, and for how long.
    fn blocked_for(&self, key: u128, budget: Budget, now: i64) -> Option<i64> {
        let tat = self.0.get(&key).copied()?.max(now);
        let over = tat + budget.interval_ms - now - WINDOW_MS;
        (over > 0).then_some(over)
    }
}

/// See the module doc.
pub struct AuthLimiter {
    per_address: Budget,
    per_credential: Budget,
    tables: Mutex<Tables>,
    /// Until when (server milliseconds) some credential may be over budget: before then, a
    /// presented token is looked up in the table; after, not at all.
    credentials_blocked_until: AtomicI64,
}

#[derive(Default)]
struct Tables {
    addresses: Table,
    credentials: Table,
}

impl AuthLimiter {
    /// Budgets in failures per minute, per address and per credential.
    pub fn new(per_address_per_minute: u32, per_credential_per_minute: u32) -> Self {
        AuthLimiter {
            per_address: Budget::per_minute(per_address_per_minute),
            per_credential: Budget::per_minute(per_credential_per_minute),
            tables: Mutex::new(Tables::default()),
            credentials_blocked_until: AtomicI64::new(i64::MIN),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // Plain numbers: a panic elsewhere cannot leave them half-written.
        self.tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Before a presented token is looked up: `Some(retry_after_secs)` when that token is over
    /// its budget (it failed too often, so it is not a valid token). One atomic load unless
    /// some credential is over budget now.
    pub fn token_blocked(&self, key: CredentialKey, now: i64) -> Option<u64> {
        if now >= self.credentials_blocked_until.load(Ordering::Relaxed) {
            return None;
        }
        self.tables()
            .credentials
            .blocked_for(key, self.per_credential, now)
            .map(secs_up)
    }

    /// After a failed authentication from `ip` with `credential` (none: nothing usable was
    /// presented): counts it, and says whether it is answered as usual or with 429.
    pub fn failed(&self, ip: IpAddr, credential: Option<CredentialKey>, now: i64) -> Verdict {
        let mut tables = self.tables();
        let tables = &mut *tables;
        let address = address_key(ip);
        if let Some(over) = tables.addresses.blocked_for(address, self.per_address, now) {
            return limited(Scope::Address, over);
        }
        if let Some(key) = credential {
            if let Some(over) = tables
                .credentials
                .blocked_for(key, self.per_credential, now)
            {
                return limited(Scope::Credential, over);
            }
            match tables.credentials.charge(key, self.per_credential, now) {
                Ok(tat) => {
                    // Over budget from the next failure on: open the early check until then.
                    let until = tat + self.per_credential.interval_ms - WINDOW_MS;
                    if until > now {
                        self.credentials_blocked_until
                            .fetch_max(until, Ordering::Relaxed);
                    }
                }
                Err(over) => return limited(Scope::Credential, over),
            }
        }
        match tables.addresses.charge(address, self.per_address, now) {
            Ok(_) => Verdict::Refused,
            Err(over) => limited(Scope::Address, over),
        }
    }
}

fn secs_up(ms: i64) -> u64 {
    u64::try_from((ms + 999) / 1000).unwrap_or(1).max(1)
}

fn limited(scope: Scope, over_ms: i64) -> Verdict {
    Verdict::Limited {
        scope,
        retry_after_secs: secs_up(over_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn an_address_gets_its_budget_then_429_until_it_refills() {
        let limiter = AuthLimiter::new(3, 100);
        let t = 1_000_000;
        for i in 0..3 {
            assert_eq!(limiter.failed(A, Some(i), t), Verdict::Refused);
        }
        let Verdict::Limited {
            scope,
            retry_after_secs,
        } = limiter.failed(A, Some(9), t)
        else {
            panic!("not limited")
        };
        assert_eq!(scope, Scope::Address);
        assert_eq!(retry_after_secs, 20); // one failure refills every 20 s
                                          // Another address is not affected.
        assert_eq!(limiter.failed(B, Some(10), t), Verdict::Refused);
        // After Retry-After, one more failure is within budget again.
        assert_eq!(limiter.failed(A, Some(11), t + 20_000), Verdict::Refused);
        assert!(matches!(
            limiter.failed(A, Some(12), t + 20_000),
            Verdict::Limited { .. }
        ));
    }

    #[test]
    fn a_credential_over_budget_is_refused_early_from_any_address() {
        let limiter = AuthLimiter::new(1000, 2);
        let t = 5_000;
        let bad = token_key(&[7u8; 32]);
        assert_eq!(limiter.token_blocked(bad, t), None);
        assert_eq!(limiter.failed(A, Some(bad), t), Verdict::Refused);
        assert_eq!(limiter.token_blocked(bad, t), None);
        assert_eq!(limiter.failed(B, Some(bad), t), Verdict::Refused);
        // Two failures in a minute: the third would be over budget, from anywhere.
        assert_eq!(limiter.token_blocked(bad, t), Some(30));
        assert!(matches!(
            limiter.failed(A, Some(bad), t),
            Verdict::Limited {
                scope: Scope::Credential,
                ..
            }
        ));
        // Other tokens are not looked at as blocked.
        assert_eq!(limiter.token_blocked(token_key(&[8u8; 32]), t), None);
        assert_eq!(limiter.token_blocked(bad, t + 30_000), None);
    }

    #[test]
    fn the_early_check_is_closed_while_nothing_is_over_budget() {
        let limiter = AuthLimiter::new(1000, 10);
        assert_eq!(
            limiter.credentials_blocked_until.load(Ordering::Relaxed),
            i64::MIN
        );
        limiter.failed(A, Some(1), 0);
        assert_eq!(
            limiter.credentials_blocked_until.load(Ordering::Relaxed),
            i64::MIN,
            "one failure in ten does not open it"
        );
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(mapped), address_key(A));
    }

    #[test]
    fn a_full_table_answers_429_for_new_failures_and_sweeps_the_expired() {
        let mut table = Table::default();
        let budget = Budget::per_minute(60);
        for k in 0..MAX_KEYS as u128 {
            table.charge(k, budget, 0).unwrap();
        }
        assert_eq!(table.charge(u128::MAX, budget, 0), Err(WINDOW_MS));
        // Once the old entries have refilled, they are swept and the new key fits.
        assert!(table.charge(u128::MAX, budget, 2_000).is_ok());
        assert_eq!(table.0.len(), 1);
    }

    #[test]
    fn client_ids_and_tokens_have_distinct_keys() {
        assert_ne!(client_key("lh_cid_1"), client_key("lh_cid_2"));
        assert_eq!(client_key("lh_cid_1"), client_key("lh_cid_1"));
    }
}
