//! The Leasehold HTTP server: configuration, authentication, lease signing, the axum router of
//! seat protocol v1, the reaper, metrics, and `Application`, which binds and runs it all.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::await_holding_lock
)]

pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod http;
pub mod lease;
pub mod metrics;

pub use app::{Application, RunningServer};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
