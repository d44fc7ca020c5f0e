//! `AppState`: what every request shares (the store, the clock, the lease signer, the plans),
//! behind one `Arc`. The HTTP layer and the application layer both read it; neither imports
//! the router for it.

use std::sync::Arc;

use leasehold_core::PlanCatalog;
use leasehold_store::Store;

use crate::clock::Clock;
use crate::lease::LeaseSigner;

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
