//! The Leasehold HTTP server: configuration, authentication, lease signing, the application
//! layer (sessions, accounts, licenses, activations), the axum router of seat protocol v1,
//! the reaper, metrics, and `Application`, which binds and runs it all.
//!
//! Layers, each calling only the ones below it: `http` (routes, extractors, views, tracing) →
//! the application modules (`sessions`, `events`, `accounts`, `licenses`, `activations`,
//! `audit`, with `access` for tenant checks) → `leasehold_store` (where the licensing rules run
//! atomically).

pub mod access;
pub mod accounts;
pub mod activations;
pub mod audit;
pub mod auth;
pub mod borrow;
pub mod clock;
pub mod clock_steps;
pub mod config;
pub mod delegation;
pub mod error;
pub mod events;
pub mod http;
pub mod jws;
pub mod lease;
pub mod licenses;
pub mod log_throttle;
pub mod metrics;
pub mod reaper;
pub mod sessions;
pub mod startup;
pub mod state;
pub mod time_gate;
pub mod ui;
pub mod usage;
pub mod webhooks;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use startup::{Application, RunningServer, DB_FILE};
pub use state::AppState;
