//! The one integration-test binary of the cli crate: tests that run the real `leasehold`
//! binary as a child process. Add modules here, not new test binaries.
// Tests unwrap, expect and panic: a failure is the test failing (the lint wall is for the
// product code).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod bench_smoke;
mod borrow;
mod c_abi;
mod c_programs;
mod crash;
mod delegation;
mod hook_receiver;
mod kit;
mod logs;
mod mass_end;
mod multinode;
mod pg;
mod pg_audit;
mod pg_borrow;
mod pg_contention;
mod pg_delegation;
mod pg_events;
mod pg_hold;
mod pg_kept_connections;
mod pg_live_counts;
mod pg_tls;
mod pg_usage;
mod pg_usernames;
mod pg_webhooks;
mod readme_tour;
mod run_program;
mod skew;
mod support;
mod tls;
mod webhooks;
