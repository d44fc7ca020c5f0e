//! Credentials this node read lately: every request authenticates, and a heartbeat answered
//! from memory (`hold`) should not pay a read of its token either. A credential found by the
//! database is reused for `HOLD_TRUST_MS` (by the callers' clock) from the request that read it,
//! the same bound a held session has: a credential changed on another node is seen within it,
//! one changed on this node at once. Only found credentials are kept (an unknown token asks
//! the database every time), and entries older than the bound leave at the next read that
//! finds the map over `PRUNE_OVER` entries.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use leasehold_core::Timestamp;

use super::hold::HOLD_TRUST_MS;
use crate::records::{Credential, TokenHash};

/// Entries over which a store prunes the stale ones.
const PRUNE_OVER: usize = 4_096;

/// The node's recently read credentials (see the module doc).
#[derive(Default)]
pub(super) struct Tokens(Mutex<HashMap<TokenHash, (Credential, i64)>>);

impl Tokens {
    fn lock(&self) -> MutexGuard<'_, HashMap<TokenHash, (Credential, i64)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The credential of `hash` if it was read within `HOLD_TRUST_MS` of `now`.
    pub(super) fn get(&self, hash: &TokenHash, now: Timestamp) -> Option<Credential> {
        let map = self.lock();
        let (credential, read_at) = map.get(hash)?;
        let age = now.millis() - read_at;
        ((0..=HOLD_TRUST_MS).contains(&age)).then(|| credential.clone())
    }

    /// Keeps `credential`, read from the database for a request at `now`.
    pub(super) fn put(&self, credential: Credential, now: Timestamp) {
        let mut map = self.lock();
        if map.len() >= PRUNE_OVER {
            map.retain(|_, (_, at)| now.millis() - *at <= HOLD_TRUST_MS);
        }
        map.insert(credential.hash, (credential, now.millis()));
    }

    /// Forgets `hash` (its credential was written on this node).
    pub(super) fn forget(&self, hash: &TokenHash) {
        self.lock().remove(hash);
    }
}
