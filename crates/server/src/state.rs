//! `AppState`: what every request shares (the store, the clock, the lease signer, the plans),
//! behind one `Arc`. The HTTP layer and the application layer both read it; neither imports
//! the router for it.

use std::future::Future;
use std::sync::Arc;

use leasehold_core::{PlanCatalog, Timestamp};
use leasehold_store::{Store, TokenHash};

use crate::clock::Clock;
use crate::http::ratelimit::AuthLimiter;
use crate::lease::LeaseSigner;
use crate::time_gate::TimeGate;

/// Everything a request needs. One `Arc`: axum clones the state for every request that
/// extracts it, so a clone is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of `AppState`.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub signer: LeaseSigner,
    pub plans: PlanCatalog,
    pub access_token_ttl_secs: u64,
    /// The OpenAPI document served at `/openapi.json`.
    pub openapi: String,
    /// Passed by every call from its reading of the time to the end of its store call; a
    /// wall-clock step is applied alone (see `crate::clock`).
    pub time_gate: TimeGate,
    /// Largest request body read (413 beyond).
    pub max_body_bytes: usize,
    /// Budgets of failed authentications (see `http::ratelimit`).
    pub auth_limiter: AuthLimiter,
    /// The hash of the configured metrics token, which may read every series of `/metrics`.
    pub metrics_token_hash: Option<TokenHash>,
    /// Keep-alive period of session event streams (see `crate::events`).
    pub event_keepalive: std::time::Duration,
    /// Webhook settings and the dispatcher's wake-up (`crate::webhooks`).
    pub webhooks: crate::webhooks::Webhooks,
    /// Dark sites: the vendor keys imported delegations must be signed with (`vendor_jwks`).
    pub vendor_keys: Vec<leasehold_proto::Jwk>,
}

impl Shared {
    /// Runs a store call with the server's time, so that a clock step is never applied between
    /// the reading of the time and the call: the call sees the sessions and the time on the
    /// same side of the step. Hold it only for the store call (never across a queue wait).
    pub async fn with_now<T, F>(&self, call: impl FnOnce(Timestamp) -> F) -> T
    where
        F: Future<Output = T>,
    {
        let _inside = self.time_gate.enter().await;
        call(self.clock.now()).await
    }
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
