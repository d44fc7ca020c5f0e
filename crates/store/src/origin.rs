//! Where an audited change came from: the actor (the credential's principal), the request id
//! and the client address of the request that made it. The server's application layer runs a
//! call's store work inside `scope`; event builders read `current()`. Opens carry theirs in
//! `OpenRequest::origin` instead (PostgreSQL decides them in a batch task of its own, SQLite
//! may grant a queued one during another request). Work outside a request (the reaper, the
//! background writes of mass ends) has none, and its events record none.

use std::future::Future;

use leasehold_proto::EndReason;

/// The request behind an audit event (each part `None` where the request had none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// `root`, `admin:<account id>`, `user:<username>` or `service:<username>`.
    pub actor: Option<String>,
    pub request_id: Option<String>,
    pub client_addr: Option<String>,
}

tokio::task_local! {
    static CURRENT: Origin;
}

/// Runs `f` as the work of the request `origin`.
pub async fn scope<F: Future>(origin: Origin, f: F) -> F::Output {
    CURRENT.scope(origin, f).await
}

/// The origin of the request whose work this is (empty outside one).
pub fn current() -> Origin {
    CURRENT.try_with(Origin::clone).unwrap_or_default()
}

/// The origin of an end for `reason`: the current request's when a call ends the session
/// (logout, revoke, reclaim, return, deactivations), none when time does (an expiry found
/// during another request is not that request's doing).
pub fn of_end(reason: EndReason) -> Origin {
    match reason {
        EndReason::Logout
        | EndReason::Revoked
        | EndReason::Reclaimed
        | EndReason::Returned
        | EndReason::UserDeactivated
        | EndReason::DeviceDeactivated => current(),
        EndReason::Inactivity
        | EndReason::Lifetime
        | EndReason::LicenseExpired
        | EndReason::BorrowEnded
        | EndReason::DelegationExpired
        | EndReason::DelegationReturned
        | EndReason::Unknown => Origin::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_origin_is_the_scopes_and_ends_by_time_have_none() {
        let origin = Origin {
            actor: Some("root".into()),
            request_id: Some("r1".into()),
            client_addr: Some("127.0.0.1".into()),
        };
        assert_eq!(current(), Origin::default());
        scope(origin.clone(), async {
            assert_eq!(current(), origin);
            assert_eq!(of_end(EndReason::Revoked), origin);
            assert_eq!(of_end(EndReason::Inactivity), Origin::default());
        })
        .await;
    }
}
