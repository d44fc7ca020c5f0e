//! Leasehold storage: the `Store` trait every backend implements, the records it stores, the
//! embedded SQLite backend (the zero-configuration default) and the PostgreSQL backend (several
//! server nodes sharing one database).
//!
//! Seat decisions are made *inside* the store, atomically, by calling the pure rules of
//! `leasehold-core`: a backend is responsible for making "count live sessions, decide, insert"
//! one indivisible step (a mutex over in-memory state for SQLite; row locks for PostgreSQL).
//! What both do around the rules (the seat view, the verdict on an open, the audit events) is
//! written once, in `admission`; how both write records into columns, in `codec`.
// Checked access in the store: a bad index is an error to answer, not a panic under the lock.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod admin_events;
mod admission;
pub mod audit;
mod codec;
pub mod copy;
pub mod delegation;
mod error;
pub mod events;
pub mod metrics;
pub mod origin;
pub mod postgres;
pub mod records;
pub mod sqlite;
#[cfg(test)]
mod testkit;
pub mod usage;
pub mod webhooks;

use async_trait::async_trait;
use leasehold_core::Timestamp;
use leasehold_proto::EndReason;

pub use audit::{AuditEntry, AuditQuery, AUDIT_EVENT_KINDS};
pub use delegation::DelegationChange;
pub use error::{StoreError, StoreResult};
pub use events::{EventHub, SessionEvent, Subscription};
pub use origin::Origin;
pub use records::*;
pub use webhooks::WebhookStore;

/// Everything the server needs from storage.
#[async_trait]
pub trait Store: WebhookStore + Send + Sync + 'static {
    // ---- settings and credentials ----
    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>>;
    async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()>;
    /// Stores `value` under `key` unless the key is set already; answers the value stored.
    /// Nodes sharing one database agree on one value this way (e.g. the lease signing key).
    async fn put_setting_if_absent(&self, key: &str, value: &str) -> StoreResult<String> {
        if let Some(existing) = self.get_setting(key).await? {
            return Ok(existing);
        }
        self.put_setting(key, value).await?;
        Ok(value.to_owned())
    }
    /// Stores a credential; a user's token or a service user's access token is recorded as a
    /// `token_issued` audit event at `now` (never the token itself).
    async fn put_credential(&self, credential: Credential, now: Timestamp) -> StoreResult<()>;
    /// The credential whose token hashes to `hash`, if it exists and has not expired at `now`.
    async fn find_credential(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<Credential>>;

    // ---- accounts and users ----
    async fn create_account(&self, account: Account, admin: Credential) -> StoreResult<()>;
    async fn get_account(&self, id: &str) -> StoreResult<Option<Account>>;
    async fn get_user(&self, account_id: &str, username: &str) -> StoreResult<Option<User>>;
    /// Creates or replaces a user. An inactive user holds no seat: its live sessions end
    /// (`user_deactivated`) in the same atomic step, so no open can be committed for it once
    /// this is acknowledged (opens check the flag in their own atomic step).
    async fn put_user(&self, user: User, now: Timestamp) -> StoreResult<UserPut>;
    async fn find_user_by_client_id(&self, client_id: &str) -> StoreResult<Option<User>>;
    /// The account's users, by username.
    async fn list_users(&self, account_id: &str) -> StoreResult<Vec<User>>;
    /// The account's licenses, oldest first.
    async fn list_licenses(&self, account_id: &str) -> StoreResult<Vec<License>>;

    // ---- licenses ----
    async fn create_license(&self, license: License) -> StoreResult<()>;
    async fn get_license(&self, id: &str) -> StoreResult<Option<License>>;
    async fn update_license(&self, license: License, now: Timestamp) -> StoreResult<()>;
    /// The licenses imported from delegations (a local server's), for the warnings ahead of
    /// their ends.
    async fn delegated_licenses(&self) -> StoreResult<Vec<License>>;
    /// Changes a license's delegations (dark sites) in its atomic step with the opens: the
    /// free seats are counted and the new terms written under the same lock. Answers the
    /// license as it is after the change (unchanged when the change changes nothing).
    async fn change_delegations(
        &self,
        license_id: &str,
        change: DelegationChange,
        now: Timestamp,
    ) -> StoreResult<License>;

    // ---- sessions: the hot path ----
    /// Opens a session (or returns the live one of the same client instance), atomically
    /// against the seat rule. Answers once the new session is durable.
    async fn open_session(&self, req: OpenRequest, now: Timestamp) -> StoreResult<Opened>;
    /// Like `open_session`, but on a full queueing license with `wait` the request joins the
    /// license's queue (strict first come, first served) and gets a `QueueTicket`. A newcomer
    /// never takes a seat that waiters are owed.
    async fn admit(&self, req: OpenRequest, wait: bool, now: Timestamp) -> StoreResult<Admission>;
    /// Leaves the queue; false when the ticket is no longer queued (granted meanwhile).
    async fn leave_queue(&self, license_id: &str, ticket: u64) -> StoreResult<bool>;
    /// The license's waiters, in order.
    async fn list_queue(&self, license_id: &str, now: Timestamp)
        -> StoreResult<Vec<QueuedRequest>>;
    /// Slides a live session's expiry. Fails with `SessionEnded` once it has ended.
    async fn heartbeat(&self, session_id: &str, now: Timestamp) -> StoreResult<Session>;
    /// The heartbeat of a session holder: checks that `session_id` is a session of `username`
    /// in `account_id` and slides its expiry, answering only the new expiry. An unknown session
    /// or another account's is `NotFound("session")`; another user's of the same account is
    /// `OwnedHeartbeat::NotOwner` (checked before the session's state, as a read would be);
    /// an ended one fails with `SessionEnded`.
    ///
    /// The default is a read then `heartbeat`; a backend may do both in one step.
    async fn heartbeat_owned(
        &self,
        session_id: &str,
        account_id: &str,
        username: &str,
        now: Timestamp,
    ) -> StoreResult<OwnedHeartbeat> {
        let found = self
            .get_session(session_id)
            .await?
            .filter(|s| &*s.session.account_id == account_id)
            .ok_or(StoreError::NotFound("session"))?;
        if found.session.username != username {
            return Ok(OwnedHeartbeat::NotOwner);
        }
        let session = self.heartbeat(session_id, now).await?;
        Ok(OwnedHeartbeat::Beat(session.clock.expires_at))
    }
    /// Ends a live session (logout or revoke). Answers once the end is durable.
    async fn end_session(
        &self,
        session_id: &str,
        reason: EndReason,
        now: Timestamp,
    ) -> StoreResult<Session>;
    /// Revokes every live session of a license (`revoked`): one decision, durable when this
    /// answers, after which none of them is answered as live (heartbeats get
    /// `session_ended`, listings and `in_use` leave them out). Their ends reach the disk and
    /// the audit log in the background, in bounded batches (`UsageStats::ending` counts those
    /// on their way). Answers how many were revoked.
    async fn revoke_license_sessions(&self, license_id: &str, now: Timestamp) -> StoreResult<u32>;
    /// A session, live or ended.
    async fn get_session(&self, session_id: &str) -> StoreResult<Option<SessionLookup>>;
    async fn list_live_sessions(
        &self,
        license_id: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>>;
    async fn usage(&self, license_id: &str, now: Timestamp) -> StoreResult<UsageStats>;
    /// The license's borrowed sessions that ended before their `borrow_until` (returned,
    /// reclaimed, revoked, ended in a mass end) and whose `borrow_until` is after `now`: their
    /// leases are valid by signature still. Those whose end is decided but not yet written are
    /// among them. Ordered by `borrow_until`.
    async fn revoked_leases(
        &self,
        license_id: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<RevokedLease>>;
    /// Ends every session whose `expires_at` has passed (and every session of a license whose
    /// end has passed); answers how many, per reason. Costs O(expired), not O(all sessions).
    async fn reap_expired(&self, now: Timestamp) -> StoreResult<EndCounts>;
    /// Seats, sessions in use and queue length of every license, for metrics: one query (one
    /// lock on SQLite), whatever the number of licenses.
    async fn license_gauges(&self) -> StoreResult<Vec<LicenseGauges>>;
    /// The append-only audit log of a license, oldest first, at most `limit` events.
    async fn audit_log(&self, license_id: &str, limit: usize) -> StoreResult<Vec<AuditEvent>>;
    /// Audit events across licenses and accounts (`crate::audit`), in `seq` order: those
    /// matching every filter of `query`, after its cursor, at most `query.limit`. A page never
    /// leaves out an event that a later page could still show with a smaller `seq`.
    async fn audit_page(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;
    /// Retention: deletes the audit events older than `before` among the oldest `batch` (in
    /// `seq` order); answers how many. Costs one indexed read when the oldest event is not due.
    /// Aggregates (usage statistics, denial counts, the usage rows) are kept elsewhere and
    /// stay; an event the usage fold has not read yet is never deleted.
    async fn prune_audit(&self, before: Timestamp, batch: usize) -> StoreResult<usize>;

    // ---- usage series (`crate::usage`) ----
    /// Folds the audit events not folded yet into the usage rows; answers how many were read.
    /// On PostgreSQL one node folds at a time: the others answer 0 at once.
    async fn usage_rollup(&self) -> StoreResult<usize>;
    /// The usage series of one subject (a license, an account): folds what is pending first,
    /// so the answer is exact up to `query.now`.
    async fn usage_series(&self, query: &usage::SeriesQuery) -> StoreResult<usage::UsageSeries>;

    // ---- licensing models ----
    /// `registered_users`: activates or deactivates a user on the license, atomically against
    /// the active-user limit; deactivation ends the user's live sessions on it
    /// (`user_deactivated`). Answers the registration and whether it was created.
    async fn set_license_user(
        &self,
        license_id: &str,
        username: &str,
        active: bool,
        now: Timestamp,
    ) -> StoreResult<(LicenseUserChange, bool)>;
    async fn list_license_users(&self, license_id: &str) -> StoreResult<Vec<LicenseUser>>;
    /// `node_locked`: activates a device, atomically against the activation limit; re-activating
    /// one answers the existing activation. Answers whether it was created.
    async fn activate_device(
        &self,
        license_id: &str,
        fingerprint: &str,
        name: &str,
        now: Timestamp,
    ) -> StoreResult<(DeviceActivation, bool)>;
    /// Frees a device activation and ends the device's live sessions (`device_deactivated`).
    async fn deactivate_device(
        &self,
        license_id: &str,
        fingerprint: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>>;
    async fn list_devices(&self, license_id: &str) -> StoreResult<Vec<DeviceActivation>>;
    /// Live sessions of one user across the account's licenses.
    async fn list_user_sessions(
        &self,
        account_id: &str,
        username: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>>;

    // ---- time ----
    /// The server's wall clock stepped by `delta_ms` (the server's time is about to follow it):
    /// every live session keeps its remaining life. Called with no other call in flight.
    /// Answers how many sessions moved.
    async fn shift_live_sessions(&self, delta_ms: i64) -> StoreResult<usize>;

    // ---- session events ----
    /// This process's hub, where the event streams of session owners wait (see `events`).
    fn event_hub(&self) -> &std::sync::Arc<EventHub>;
    /// Raises `event` for the streams of every server node: SQLite (one process) delivers it
    /// to its hub; PostgreSQL NOTIFYs it on the events channel, and each node's listener
    /// (this one's too) delivers it to its own hub. Called once the change is durable.
    async fn publish(&self, event: SessionEvent) -> StoreResult<()>;

    // ---- health ----
    /// Whether the store can take writes now: `Unavailable` with the reason when it cannot
    /// (the embedded database refuses writes, PostgreSQL cannot be reached).
    async fn health(&self) -> StoreResult<()>;
}
