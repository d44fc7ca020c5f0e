//! The application layer of offline borrowing: what a borrow request asks of the store, how a
//! borrowed session's end is named, and the revoked-lease list. The borrow itself is an open
//! (`sessions::open` with `borrow_until`): the store decides the seat and the borrow policy in
//! one atomic step and answers once the borrow is durable; its lease (`sessions::sign_lease`)
//! is marked `borrowed` and expires at `borrow_until`.
//!
//! Ends: the owner's `DELETE /v1/sessions/{id}` of a borrowed session is a return
//! (`returned`); an admin's is a reclaim (`reclaimed`): an admin revoke of a borrowed seat is
//! the reclaim of a lost or stolen device, the same act. Either way the lease file stays valid
//! by its signature until its `exp`, so every borrow that ends before its `borrow_until` (also
//! in a mass end: the license's end, a revoke of all, a deactivation) is listed at
//! `GET /v1/licenses/{id}/revoked-leases` until then.

use leasehold_core::Timestamp;
use leasehold_proto::EndReason;
use leasehold_store::{Principal, RevokedLease, Session};

use crate::access;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// What a request's `borrow_until` and `wait_secs` ask of the store: the borrow's end, if any.
/// A borrow does not wait in a queue: both together are refused (400), not one ignored.
pub fn requested(
    borrow_until: Option<time::OffsetDateTime>,
    wait_secs: Option<u64>,
) -> ApiResult<Option<Timestamp>> {
    match (borrow_until, wait_secs) {
        (Some(_), Some(w)) if w > 0 => Err(ApiError::BadRequest(
            "a borrow does not wait in the queue: give borrow_until or wait_secs, not both".into(),
        )),
        (until, _) => Ok(until.map(Timestamp::from_offset)),
    }
}

/// The reason a `DELETE /v1/sessions/{id}` ends `session` with: for a borrowed seat, a return
/// by its owner or a reclaim by an admin; otherwise a logout or a revoke.
pub fn end_reason(session: &Session, by_admin: bool) -> EndReason {
    match (session.clock.is_borrowed(), by_admin) {
        (true, true) => EndReason::Reclaimed,
        (true, false) => EndReason::Returned,
        (false, true) => EndReason::Revoked,
        (false, false) => EndReason::Logout,
    }
}

/// The license's revoked leases, for its admins and for its own users (the SDK checks the list
/// with the user's token whenever it is online).
#[tracing::instrument(skip(state, auth))]
pub async fn revoked_leases(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
) -> ApiResult<Vec<RevokedLease>> {
    match &auth.0 {
        Principal::Root | Principal::AccountAdmin { .. } => {
            access::admin_license(state, auth, license_id).await?;
        }
        _ => {
            let holder = access::session_holder(auth)?;
            access::holder_license(state, holder, license_id).await?;
        }
    }
    Ok(state
        .store
        .revoked_leases(license_id, state.clock.now())
        .await?)
}
