//! The one integration-test binary of the SDK crate (one binary links and starts once: add
//! modules here, not new files under `tests/`).
//!
//! - `mock`: the SDK against a scripted in-process server, for exact requests and for failures
//!   the real server does not produce on demand.
//! - `real_server`: the SDK against the real Leasehold server on port 0 with a real clock.

mod mock;
mod real_server;
