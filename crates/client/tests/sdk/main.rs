//! The one integration-test binary of the SDK crate (one binary links and starts once: add
//! modules here, not new files under `tests/`).
//!
//! - `borrow`: borrowed seats: offline verification against a saved key set, return, reclaim.
//! - `events`: the SDK with the session event stream (revoke within 2 s, refused streams).
//! - `mock`: the SDK against a scripted in-process server, for exact requests and for failures
//!   the real server does not produce on demand.
//! - `real_server`: the SDK against the real Leasehold server on port 0 with a real clock.
//! - `tls`: the SDK against the real server over HTTPS, with a CA made in the test.
// Tests unwrap, expect and panic: a failure is the test failing (the lint wall is for the
// product code).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod borrow;
mod events;
mod mock;
mod real_server;
mod tls;
