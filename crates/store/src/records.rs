//! Records the store keeps: accounts, credentials, users, licenses, sessions, audit events.

use std::sync::Arc;

use leasehold_core::{session::SessionClock, LicenseTerms, SessionState, Timestamp};
use leasehold_proto::{EndReason, LicenseModel, UserKind};

/// SHA-256 of a bearer token or client secret. Only hashes are stored.
pub type TokenHash = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub created_at: Timestamp,
}

/// What a bearer token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The server's root admin: creates accounts.
    Root,
    /// An account admin: manages one account's licenses, users and sessions.
    AccountAdmin { account_id: String },
    /// A personal token of an account user.
    User {
        account_id: String,
        username: String,
    },
    /// A short-lived OAuth2 access token of a service user.
    ServiceAccess {
        account_id: String,
        username: String,
    },
}

impl Principal {
    pub fn kind_str(&self) -> &'static str {
        match self {
            Principal::Root => "root",
            Principal::AccountAdmin { .. } => "account_admin",
            Principal::User { .. } => "user",
            Principal::ServiceAccess { .. } => "service_access",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub hash: TokenHash,
    pub principal: Principal,
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub account_id: String,
    pub username: String,
    pub kind: UserKind,
    pub active: bool,
    pub client_id: Option<String>,
    pub client_secret_hash: Option<TokenHash>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    pub id: String,
    pub account_id: String,
    pub model: LicenseModel,
    pub terms: LicenseTerms,
    pub created_at: Timestamp,
}

/// A session as stored. `license_id` and `account_id` are shared with the license's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub license_id: Arc<str>,
    pub account_id: Arc<str>,
    pub username: String,
    pub kind: UserKind,
    pub device_id: String,
    pub instance_id: String,
    pub clock: SessionClock,
    pub heartbeat_interval_secs: u64,
    /// Took an overdraft seat (beyond the purchased ones).
    pub overdraft: bool,
}

/// A user's registration on a `registered_users` license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseUser {
    pub license_id: String,
    pub username: String,
    pub active: bool,
    pub updated_at: Timestamp,
}

/// A device activated on a `node_locked` license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceActivation {
    pub license_id: String,
    pub fingerprint: String,
    pub name: String,
    pub activated_at: Timestamp,
}

/// Outcome of creating or changing an account's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPut {
    /// The user did not exist before.
    pub created: bool,
    /// Sessions ended because the user is inactive now (`user_deactivated`): their ends are
    /// decided (durably) when this is answered, and may still be reaching the disk.
    pub ended: u32,
}

/// Outcome of changing a user's registration on a license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseUserChange {
    pub user: LicenseUser,
    /// Sessions ended because the user was deactivated (decided, as for `UserPut::ended`).
    pub ended: u32,
}

/// How many sessions ended, per license and reason (a reaper pass, a mass end): for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndCounts(Vec<(String, EndReason, u64)>);

impl EndCounts {
    /// `n` more of `license_id` ended for `reason`. Passes go license by license, so the last
    /// entry is looked at first.
    pub fn add(&mut self, license_id: &str, reason: EndReason, n: u64) {
        if n == 0 {
            return;
        }
        let found = self
            .0
            .iter_mut()
            .rev()
            .find(|(l, r, _)| *r == reason && l == license_id);
        match found {
            Some((_, _, count)) => *count += n,
            None => self.0.push((license_id.to_owned(), reason, n)),
        }
    }

    /// The counts, per license and reason.
    pub fn iter(&self) -> impl Iterator<Item = (&str, EndReason, u64)> + '_ {
        self.0.iter().map(|(l, r, n)| (l.as_str(), *r, *n))
    }

    /// How many in all.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, _, n)| n).sum()
    }
}

/// The answer of `Store::heartbeat_owned` when the session exists and belongs to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnedHeartbeat {
    /// The caller's session is live; its new expiry.
    Beat(Timestamp),
    /// The session belongs to another user of the same account (403).
    NotOwner,
}

/// A session found by id, with its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLookup {
    pub session: Session,
    pub state: SessionState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// Id for the new session, chosen by the caller.
    pub new_id: String,
    pub license_id: String,
    pub username: String,
    pub kind: UserKind,
    pub device_id: String,
    pub instance_id: String,
    /// A borrow for offline use until this instant (the license's borrow policy decides, in
    /// the same atomic step as the seat); `None` for an ordinary session.
    pub borrow_until: Option<Timestamp>,
    /// The request that asks (its `opened` or `denied` event records it); boxed, so that an
    /// open waiting in a lane stays small.
    pub origin: Box<crate::origin::Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub session: Session,
    /// False when the client instance's existing live session was returned.
    pub created: bool,
}

/// What the metrics show of one license at a scrape: its capacity and use now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseGauges {
    pub license_id: String,
    pub account_id: String,
    /// The seats of its terms.
    pub seats: u32,
    /// Sessions holding a seat (none past the license's end).
    pub in_use: u32,
    /// Clients waiting in its queue (on PostgreSQL: those of live nodes).
    pub waiting: u32,
    /// Its alerts (terms), for `/metrics` and the webhook dispatcher.
    pub alerts: leasehold_core::Alerts,
    /// Its end (terms' `expires_at`).
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageStats {
    pub seats: u32,
    /// Sessions holding a seat now. A session whose end has been decided is not among them,
    /// from the decision on.
    pub in_use: u32,
    /// Sessions whose end has been decided (durably) but is not on disk yet: a mass end (a
    /// license's end, a revoke of all its sessions, deactivations) in progress. Their seats
    /// are free; the audit log gets their `ended` events as they land.
    pub ending: u32,
    pub high_water: u32,
    pub low_water: u32,
    pub denials: u64,
    pub since: Timestamp,
    /// Live sessions holding overdraft seats.
    pub overdraft_in_use: u32,
    /// Live borrowed sessions (among `in_use`).
    pub borrowed: u32,
    /// Seats delegated to local servers at the time of the reading (`LicenseTerms::delegated_at`).
    pub delegated: u32,
    /// `registered_users`: active users; `node_locked`: activated devices.
    pub activations: Option<u32>,
}

/// A borrowed session that ended before its `borrow_until`: its lease is still valid by its
/// signature until then, so it is listed as revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedLease {
    pub session_id: String,
    pub username: String,
    pub device_id: String,
    pub reason: EndReason,
    pub ended_at: Timestamp,
    /// The lease's `exp`.
    pub borrow_until: Timestamp,
}

/// One line of the append-only audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub account_id: String,
    pub license_id: String,
    pub session_id: Option<String>,
    pub username: Option<String>,
    /// `opened`, `ended`, `denied`, `license_created`, `license_updated`, `device_activated`,
    /// `device_deactivated` (built by `crate::admission`).
    pub event: String,
    /// For `ended`: the reason.
    pub detail: Option<String>,
    /// The request behind the event (`crate::origin`).
    pub origin: crate::origin::Origin,
}

pub fn end_reason_str(reason: EndReason) -> &'static str {
    reason.as_str()
}

/// A seat granted to a waiting client. The session is answered once `durable` reports that it
/// is on disk (`Grant::wait_durable`).
#[derive(Debug)]
pub struct Grant {
    pub opened: Opened,
    pub durable: tokio::sync::oneshot::Receiver<Result<(), String>>,
}

impl Grant {
    /// Waits until the granted session is durable.
    pub async fn wait_durable(self) -> Result<Opened, crate::StoreError> {
        match self.durable.await {
            Ok(Ok(())) => Ok(self.opened),
            Ok(Err(e)) => Err(crate::StoreError::Unavailable(e)),
            Err(_) => Err(crate::StoreError::Unavailable(
                "the database writer has stopped".into(),
            )),
        }
    }
}

/// A place in a license's queue. `granted` delivers the seat (or a refusal if the license
/// changed); dropping it leaves the queue.
#[derive(Debug)]
pub struct QueueTicket {
    pub ticket: u64,
    /// 1 is the next to be served.
    pub position: u32,
    pub granted: tokio::sync::oneshot::Receiver<Result<Grant, crate::StoreError>>,
}

/// The answer of an admission: a session now, or a place in the queue.
#[derive(Debug)]
pub enum Admission {
    Opened(Opened),
    Queued(QueueTicket),
}

/// A waiting open, as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRequest {
    pub ticket: u64,
    pub position: u32,
    pub username: String,
    pub device_id: String,
    pub instance_id: String,
    pub since: Timestamp,
}
