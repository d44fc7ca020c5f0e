//! The seat protocol an application speaks: open a session (take a seat), heartbeat it,
//! close it, and see the queue of a license that queues. Most applications use
//! [`Client::checkout`], which drives these.

use std::time::Duration;

use leasehold_proto::{Heartbeat, OpenSession, QueueList, RevokedLeaseList, Session};
use reqwest::Method;

use super::Client;
use crate::error::Result;

impl Client {
    /// `POST /v1/sessions`: opens a session (takes a seat). Answers with the instance's
    /// existing live session when it already has one. Fails with 409
    /// [`no_seat_available`](leasehold_proto::ErrorCode::NoSeatAvailable) when the license is
    /// full (after waiting up to `wait_secs` when the license queues).
    ///
    /// Most applications want [`Client::checkout`], which also heartbeats.
    pub async fn open_session(&self, open: &OpenSession) -> Result<Session> {
        let mut request = self.json_request(Method::POST, &["v1", "sessions"], open, true)?;
        if let Some(wait) = open.wait_secs {
            request.timeout = request.timeout.saturating_add(Duration::from_secs(wait));
        }
        self.call(request).await
    }

    /// `POST /v1/sessions/{id}/heartbeat`: keeps a session alive. Answers with the new expiry
    /// and possibly a re-signed lease; fails with 410
    /// [`session_ended`](leasehold_proto::ErrorCode::SessionEnded) and a reason once the
    /// session has ended.
    pub async fn heartbeat(&self, session_id: &str) -> Result<Heartbeat> {
        self.heartbeat_with(session_id, false).await
    }

    /// [`Client::heartbeat`], asking with `renew_lease` for a lease re-signed with the new
    /// expiry (`?lease=true`). Signing costs the server CPU: ask when the held lease is past
    /// half its life, as [`LeaseGuard`](crate::LeaseGuard) does, not on every heartbeat.
    pub async fn heartbeat_with(&self, session_id: &str, renew_lease: bool) -> Result<Heartbeat> {
        let mut request =
            self.request(Method::POST, &["v1", "sessions", session_id, "heartbeat"])?;
        // Extending a session twice is extending it once: safe to resend after any transport
        // error (a stale pooled connection after a server restart, say).
        request.idempotent = true;
        if renew_lease {
            request.url.query_pairs_mut().append_pair("lease", "true");
        }
        self.call(request).await
    }

    /// `DELETE /v1/sessions/{id}`: closes a session (the owner logs out, or an account admin
    /// revokes it), freeing its seat.
    pub async fn close_session(&self, session_id: &str) -> Result<()> {
        let request = self.request(Method::DELETE, &["v1", "sessions", session_id])?;
        self.execute(request).await.map(drop)
    }

    /// `GET /v1/licenses/{id}/queue`: clients waiting for a seat, in order (an account admin
    /// sees all of them, a user only its own requests).
    pub async fn license_queue(&self, license_id: &str) -> Result<QueueList> {
        let request = self.request(Method::GET, &["v1", "licenses", license_id, "queue"])?;
        self.call(request).await
    }

    /// `GET /v1/licenses/{id}/revoked-leases`: borrow leases that no longer hold a seat though
    /// they have not expired (see [`Client::check_borrowed`]).
    pub async fn revoked_leases(&self, license_id: &str) -> Result<RevokedLeaseList> {
        let request = self.request(
            Method::GET,
            &["v1", "licenses", license_id, "revoked-leases"],
        )?;
        self.call(request).await
    }
}
