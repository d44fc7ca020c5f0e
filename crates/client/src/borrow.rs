//! Borrowed seats: a seat taken for offline use until a chosen instant, stored as a
//! [`BorrowedSeat`] (the borrow lease and the server's key set that verifies it), and checked
//! with no network at all.
//!
//! ```text
//!   Client::borrow ──► BorrowedSeat ──save──► seat.lease ──load──► verify_offline(device, now)
//!                                                             │        (signature, borrow claim,
//!                                                             │         device, now < exp)
//!                                                             └──► Client::check_borrowed
//!                                                                   (online: also not listed at
//!                                                                    /revoked-leases)
//!   Client::return_borrowed ──► the seat is free at once (`returned`), the lease is listed
//! ```
//!
//! A borrow lease stays valid by its signature until its `exp` (the borrow's end), even after
//! the seat went back early (returned, or reclaimed by an admin for a lost device): whoever is
//! online checks the license's revoked-lease list, and the SDK does so in
//! [`Client::check_borrowed`].

use std::path::Path;

use leasehold_proto::{Jwks, LeaseClaims, OpenSession};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::verify::LeaseVerifier;

/// The format version of a saved [`BorrowedSeat`].
const FORMAT: u32 = 1;

/// A borrowed seat as its owner keeps it: everything needed to use it offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BorrowedSeat {
    /// Format version (1).
    pub format: u32,
    /// The borrow lease: an EdDSA JWT with `borrowed: true`, `exp` at the borrow's end.
    pub lease: String,
    /// The server's key set when the seat was borrowed: what verifies the lease offline.
    pub jwks: Jwks,
    /// The license, session and device the lease names.
    pub license_id: String,
    /// The borrowed session (the lease's `sid`).
    pub session_id: String,
    /// The device the seat is bound to.
    pub device_id: String,
    /// When the borrow ends.
    #[serde(with = "time::serde::rfc3339")]
    pub borrow_until: OffsetDateTime,
}

impl BorrowedSeat {
    /// Reads a seat saved with [`BorrowedSeat::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::Config(format!("reading {}: {e}", path.display())))?;
        let seat: BorrowedSeat = serde_json::from_str(&text).map_err(|e| {
            ClientError::LeaseInvalid(format!("{} is not a borrowed seat: {e}", path.display()))
        })?;
        if seat.format != FORMAT {
            return Err(ClientError::LeaseInvalid(format!(
                "{}: format {} is not one this SDK reads ({FORMAT})",
                path.display(),
                seat.format
            )));
        }
        Ok(seat)
    }

    /// Writes the seat to `path` (a new file beside it, then renamed over it: a crash leaves
    /// the old file or the new one, never half of one).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| ClientError::Decode(format!("encoding the seat: {e}")))?;
        let tmp = path.with_extension("lease.tmp");
        let io =
            |e: std::io::Error| ClientError::Config(format!("writing {}: {e}", path.display()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        // Readable by its owner only: whoever holds the file (on a machine with the same
        // device id) holds the seat.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io)?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Checks the seat with no network: the lease's signature against the saved key set, that
    /// it is a borrow lease of this seat, bound to `device_id`, and not expired at `now_unix`
    /// (seconds since the Unix epoch). Answers the lease's claims.
    pub fn verify_offline(&self, device_id: &str, now_unix: i64) -> Result<LeaseClaims> {
        let verifier = LeaseVerifier::from_jwks(&self.jwks)?;
        let claims = verifier.verify(&self.lease, now_unix)?;
        if !claims.borrowed {
            return Err(ClientError::LeaseInvalid(
                "not a borrow lease: it holds a seat only while heartbeated".into(),
            ));
        }
        if claims.sid != self.session_id || claims.lic != self.license_id {
            return Err(ClientError::LeaseInvalid(format!(
                "the lease names session {} of license {}, not this seat's",
                claims.sid, claims.lic
            )));
        }
        if claims.device_id != device_id {
            return Err(ClientError::LeaseInvalid(format!(
                "the lease is bound to device {:?}, not {device_id:?}",
                claims.device_id
            )));
        }
        Ok(claims)
    }
}

impl Client {
    /// Borrows a seat of `license_id` for offline use until `until`: opens a session with
    /// `borrow_until` (the license's borrow policy decides: 409 `borrow_not_allowed`,
    /// `borrow_too_long`, `borrow_limit_reached`, or `no_seat_available`), fetches the key
    /// set and checks the lease against it before answering the seat to save.
    pub async fn borrow(
        &self,
        license_id: &str,
        device_id: &str,
        instance_id: &str,
        until: OffsetDateTime,
    ) -> Result<BorrowedSeat> {
        let jwks = self.jwks().await?;
        let session = self
            .open_session(&OpenSession {
                license_id: license_id.to_owned(),
                device_id: device_id.to_owned(),
                instance_id: instance_id.to_owned(),
                wait_secs: None,
                borrow_until: Some(until),
            })
            .await?;
        let lease = session
            .lease
            .ok_or_else(|| ClientError::LeaseInvalid("the server sent no lease".into()))?;
        let borrow_until = session.borrow_until.ok_or_else(|| {
            ClientError::LeaseInvalid(
                "the server answered an online session, not a borrow (this client instance \
                 holds one: borrow from another instance)"
                    .into(),
            )
        })?;
        let seat = BorrowedSeat {
            format: FORMAT,
            lease,
            jwks,
            license_id: session.license_id,
            session_id: session.id,
            device_id: device_id.to_owned(),
            borrow_until,
        };
        // The key set fetched first verifies the lease signed after it (a key rotated in
        // between is fetched again).
        let now = session.opened_at.unix_timestamp();
        if let Err(first) = seat.verify_offline(device_id, now) {
            let jwks = self.jwks().await?;
            let seat = BorrowedSeat { jwks, ..seat };
            seat.verify_offline(device_id, now).map_err(|_| first)?;
            return Ok(seat);
        }
        Ok(seat)
    }

    /// Gives a borrowed seat back early (`DELETE /v1/sessions/{id}` by its owner: `returned`):
    /// the seat is free at once. The lease is listed as revoked until it would have expired.
    pub async fn return_borrowed(&self, seat: &BorrowedSeat) -> Result<()> {
        self.close_session(&seat.session_id).await
    }

    /// Checks a borrowed seat online: [`BorrowedSeat::verify_offline`], then the license's
    /// revoked-lease list. Fails with [`ClientError::LeaseRevoked`] when the lease is listed
    /// (reclaimed, returned, revoked); a server that cannot be reached is the caller's to
    /// judge (the offline check stands).
    pub async fn check_borrowed(
        &self,
        seat: &BorrowedSeat,
        device_id: &str,
        now_unix: i64,
    ) -> Result<LeaseClaims> {
        let claims = seat.verify_offline(device_id, now_unix)?;
        let revoked = self.revoked_leases(&seat.license_id).await?;
        if let Some(listed) = revoked
            .leases
            .iter()
            .find(|l| l.session_id == seat.session_id)
        {
            return Err(ClientError::LeaseRevoked(format!(
                "the borrowed seat {} was {} on the server",
                seat.session_id,
                listed.reason.as_str()
            )));
        }
        Ok(claims)
    }
}
