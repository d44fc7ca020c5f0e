//! The one integration-test binary of the ffi crate. The C ABI against a real server, and the C
//! and C++ programs compiled against the library, are tested in the cli crate's binary (it can
//! spawn `leasehold serve`); here: what needs no server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod boundary;
mod dotnet_guide;
mod header;
