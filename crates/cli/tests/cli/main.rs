//! The one integration-test binary of the cli crate: tests that run the real `leasehold`
//! binary as a child process. Add modules here, not new test binaries.

mod admin;
mod bench_smoke;
mod crash;
mod kit;
mod logs;
mod multinode;
mod pg;
mod run_program;
mod skew;
mod support;
