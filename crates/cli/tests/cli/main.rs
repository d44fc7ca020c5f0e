//! The one integration-test binary of the cli crate: tests that run the real `leasehold`
//! binary as a child process. Add modules here, not new test binaries.

mod crash;
mod multinode;
mod pg;
mod support;
