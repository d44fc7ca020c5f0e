//! Rust SDK for Leasehold, a license server that enforces how many
//! sessions ("seats") of a product run at once.
//!
//! What it gives you:
//!
//! - [`Client`]: one typed `async` method per route of the seat protocol v1 (accounts,
//!   licenses, users and tokens, devices, sessions, usage, JWKS, health), with bearer-token or OAuth2
//!   client-credentials authentication ([`Client::with_client_credentials`] obtains and renews
//!   the access token by itself), and retries with exponential backoff and jitter on transport
//!   errors and HTTP 503 only ([`RetryPolicy`]).
//! - [`Client::checkout`]: takes a seat and returns a [`LeaseGuard`] that heartbeats in the
//!   background, holds the session's event stream (a revoke is heard within a second or two;
//!   heartbeats alone when streaming is blocked), publishes a [`LeaseStatus`] on a
//!   `tokio::sync::watch` channel, and returns the seat on [`LeaseGuard::release`] or on drop.
//! - [`LeaseVerifier`]: offline verification of the signed lease (an EdDSA JWT) every session
//!   carries, against the server's published keys.
//! - [`Client::borrow`]: a seat borrowed for offline use until a chosen instant, kept as a
//!   [`BorrowedSeat`] (lease and key set) that [`BorrowedSeat::verify_offline`] checks with no
//!   network; [`Client::check_borrowed`] adds the revoked-lease list when online,
//!   [`Client::return_borrowed`] gives the seat back early.
//! - [`ClientError`]: one error type; API errors carry the server's stable
//!   [`ErrorCode`] (the token endpoint's RFC 6749 errors are mapped to the nearest one).
//! - HTTPS (rustls): `https://` URLs are verified against the system's trust store, or only
//!   against your CA with [`ClientBuilder::ca_file`] / [`ClientBuilder::ca_pem`].
//!
//! A complete program (checkout with queueing and lease verification, reacting to a lost
//! seat, release) is `examples/checkout.rs`: `cargo run -p leasehold-client --example checkout
//! -- LICENSE_ID` with `LEASEHOLD_URL` and `LEASEHOLD_TOKEN` set.
//!
//! # Taking a seat
//!
//! ```no_run
//! use leasehold_client::{Client, LeaseStatus};
//!
//! # async fn run() -> Result<(), leasehold_client::ClientError> {
//! let client = Client::with_token("http://localhost:8080", "user-token")?;
//! let guard = client.checkout("lic_123", "laptop-42", "editor-1").await?;
//! println!("session {} until {}", guard.session_id(), guard.expires_at());
//!
//! // React when the seat is lost (revoked by an admin, server unreachable for too long...).
//! let mut status = guard.subscribe();
//! tokio::spawn(async move {
//!     while status.changed().await.is_ok() {
//!         if let LeaseStatus::Lost { reason } = &*status.borrow() {
//!             eprintln!("license seat lost: {reason}");
//!         }
//!     }
//! });
//!
//! // ... use the licensed feature ...
//!
//! guard.release().await?; // give the seat back (dropping the guard also does, best-effort)
//! # Ok(())
//! # }
//! ```
//!
//! When every seat is taken, `checkout` fails with 409 `no_seat_available`:
//!
//! ```no_run
//! # async fn run(client: leasehold_client::Client) -> Result<(), leasehold_client::ClientError> {
//! use leasehold_client::CheckoutOptions;
//!
//! // On a license with `on_full: "queue"`, wait up to a minute for a seat.
//! match client
//!     .checkout_with("lic_123", "laptop-42", "editor-1", CheckoutOptions::new().wait_secs(60))
//!     .await
//! {
//!     Ok(guard) => { /* ... */ guard.release().await?; }
//!     Err(err) if err.is_no_seat_available() => eprintln!("all seats are in use, try later"),
//!     Err(err) => return Err(err),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Service users
//!
//! ```no_run
//! # async fn run() -> Result<(), leasehold_client::ClientError> {
//! use leasehold_client::Client;
//!
//! // The access token is fetched on first use and renewed before it expires.
//! let client = Client::with_client_credentials("http://localhost:8080", "svc_id", "svc_secret")?;
//! let guard = client.checkout("lic_123", "backend-host-1", "worker-7").await?;
//! # drop(guard);
//! # Ok(())
//! # }
//! ```
//!
//! # Verifying a lease offline
//!
//! ```no_run
//! # async fn run(client: leasehold_client::Client, lease: String) -> Result<(), leasehold_client::ClientError> {
//! use leasehold_client::LeaseVerifier;
//!
//! // Fetch the server's keys once (cached by the client) ...
//! let verifier = client.lease_verifier().await?;
//! // ... or build the verifier from a key set the vendor ships:
//! let jwks: leasehold_client::proto::Jwks = serde_json::from_str(r#"{"keys": []}"#)
//!     .map_err(|e| leasehold_client::ClientError::Decode(e.to_string()))?;
//! let _shipped = LeaseVerifier::from_jwks(&jwks);
//!
//! let now = 1_750_000_000; // seconds since the Unix epoch, from your clock
//! let claims = verifier.verify(&lease, now)?;
//! println!("{} holds session {} of license {}", claims.sub, claims.sid, claims.lic);
//! # Ok(())
//! # }
//! ```
//!
//! # TLS
//!
//! The workspace builds `reqwest` without a TLS backend. To talk to an `https://` server, enable
//! one in your application (for example `reqwest = { version = "0.12", features =
//! ["rustls-tls"] }`: Cargo's feature unification turns it on for this crate too) or pass your
//! own client with [`ClientBuilder::http_client`].
//!
//! # Time
//!
//! The wall clock is read in one place, [`SystemClock`]; pass another [`Clock`] through
//! [`CheckoutOptions::clock`] in tests. [`LeaseVerifier::verify`] takes the current time as an
//! argument.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![warn(missing_docs)]

mod borrow;
mod client;
pub mod clock;
mod error;
mod events;
mod guard;
mod retry;
mod verify;

/// The wire types of the protocol, re-exported so that applications need no direct dependency.
pub use leasehold_proto as proto;

pub use borrow::BorrowedSeat;
pub use client::{
    Client, ClientBuilder, DeviceActivation, SessionEvents, SessionStreamEvent, UsageQuery,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT,
};
pub use clock::{Clock, FixedClock, SystemClock};
pub use error::{ClientError, Result};
pub use guard::{CheckoutOptions, LeaseGuard, LeaseStatus, LostReason};
pub use leasehold_proto::{EndReason, ErrorCode, LeaseClaims};
pub use retry::RetryPolicy;
pub use verify::LeaseVerifier;
