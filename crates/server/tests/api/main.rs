//! The one integration-test binary of the server crate: black-box tests of seat protocol v1
//! against the real server on port 0. Add modules here, not new test binaries.
// Tests unwrap, expect and panic: a failure is the test failing (the lint wall is for the
// product code).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod bad_input;
mod borrow;
mod dashboard;
mod delegation;
mod docs;
mod edge_auth;
mod edge_headers;
mod edge_limits;
mod edge_tls;
mod events;
mod helpers;
mod isolation;
mod mass_end;
mod metrics;
mod models;
mod oauth_rfc;
mod pg;
mod protocol;
mod queue;
mod race;
mod receiver;
mod time;
mod usage;
mod usernames;
mod webhooks;
