//! The one integration-test binary of the server crate: black-box tests of seat protocol v1
//! against the real server on port 0. Add modules here, not new test binaries.

mod bad_input;
mod docs;
mod helpers;
mod isolation;
mod models;
mod pg;
mod protocol;
mod queue;
mod race;
mod time;
