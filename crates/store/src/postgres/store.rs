//! `impl Store for PgStore`: each call moves the caller's `now` onto the database's clock
//! (`clock`), hands the work to the module of its concern (or to a lane of this node), and
//! serves the queues of licenses where a seat may have freed once the change is committed.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use leasehold_core::{SessionState, Timestamp};
use leasehold_proto::EndReason;

use super::end::EndAsk;
use super::heartbeat::Beat;
use super::lanes::{ask, lane_of};
use super::node::PgStore;
use super::open::OpenAsk;
use super::{accounts, audit, borrow, delegation, licenses, mass, models, queue, reaper, sessions};
use crate::records::*;
use crate::usage::{SeriesQuery, UsageSeries};
use crate::{
    AuditEntry, AuditQuery, DelegationChange, EventHub, SessionEvent, Store, StoreError,
    StoreResult,
};

impl PgStore {
    /// Opens (or queues) through the license's open lane.
    async fn send_open(
        &self,
        req: OpenRequest,
        wait: bool,
        now: Timestamp,
    ) -> StoreResult<Admission> {
        self.queue.saw(now);
        let lane = lane_of(req.license_id.as_str(), self.opens.len());
        let open = OpenAsk { req, wait, now };
        ask(&self.opens, lane, open, "the open batcher has stopped").await
    }

    /// Slides a session through its heartbeat lane (checking its owner when one is given).
    async fn beat(
        &self,
        session_id: &str,
        owner: Option<(Arc<str>, String)>,
        now: Timestamp,
    ) -> StoreResult<Session> {
        let now = self.clock.db(now);
        if let Some(answer) = self.hold.beat(session_id, owner.as_ref(), now) {
            return answer;
        }
        let lane = lane_of(session_id, self.heartbeats.len());
        let beat = Beat {
            session_id: session_id.to_owned(),
            now,
            owner,
            settle: false,
        };
        ask(
            &self.heartbeats,
            lane,
            beat,
            "the heartbeat batcher has stopped",
        )
        .await
    }

    /// `NotFound("license")` unless the license exists.
    async fn require_license(&self, license_id: &str) -> StoreResult<()> {
        match self.get_license(license_id).await? {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound("license")),
        }
    }
}

impl PgStore {
    /// Drops the sessions `ended` from this node's memory.
    fn forget_ended(&self, ended: &[Session]) {
        for s in ended {
            self.hold.forget(&s.id);
        }
    }

    /// The queues of the licenses where `ended` freed seats are served.
    fn serve_freed(&self, ended: &[Session], now: Timestamp) {
        let licenses: HashSet<&str> = ended.iter().map(|s| &*s.license_id).collect();
        for license_id in licenses {
            self.queue.serve(license_id, now);
        }
    }
}

#[async_trait]
impl Store for PgStore {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        accounts::get_setting(&self.pool, key).await
    }

    async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        accounts::put_setting(&self.pool, key, value).await
    }

    async fn put_setting_if_absent(&self, key: &str, value: &str) -> StoreResult<String> {
        accounts::put_setting_if_absent(&self.pool, key, value).await
    }

    async fn put_credential(&self, credential: Credential, now: Timestamp) -> StoreResult<()> {
        let now = self.clock.db(now);
        let hash = credential.hash;
        let put = accounts::put_credential(&self.pool, credential, now).await;
        self.tokens.forget(&hash);
        put
    }

    async fn find_credential(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<Credential>> {
        let now = self.clock.db(now);
        let found = match self.tokens.get(hash, now) {
            Some(credential) => Some(credential),
            None => {
                let found = self.credentials.get(*hash).await?;
                if let Some(credential) = &found {
                    self.tokens.put(credential.clone(), now);
                }
                found
            }
        };
        Ok(found.filter(|c| c.expires_at.is_none_or(|at| now < at)))
    }

    async fn create_account(&self, account: Account, admin: Credential) -> StoreResult<()> {
        accounts::create_account(&self.pool, account, admin).await
    }

    async fn get_account(&self, id: &str) -> StoreResult<Option<Account>> {
        accounts::get_account(&self.pool, id).await
    }

    async fn get_user(&self, account_id: &str, username: &str) -> StoreResult<Option<User>> {
        self.users
            .get((account_id.to_owned(), username.to_owned()))
            .await
    }

    async fn put_user(&self, user: User, now: Timestamp) -> StoreResult<UserPut> {
        let now = self.clock.db(now);
        let (put, ended) = accounts::put_user(&self.pool, &self.cache, user, now).await?;
        self.forget_ended(&ended);
        self.serve_freed(&ended, now);
        Ok(put)
    }

    async fn find_user_by_client_id(&self, client_id: &str) -> StoreResult<Option<User>> {
        accounts::find_user_by_client_id(&self.pool, client_id).await
    }

    async fn list_users(&self, account_id: &str) -> StoreResult<Vec<User>> {
        accounts::list_users(&self.pool, account_id).await
    }

    async fn list_licenses(&self, account_id: &str) -> StoreResult<Vec<License>> {
        licenses::list_licenses(&self.pool, &self.cache, account_id).await
    }

    async fn create_license(&self, license: License) -> StoreResult<()> {
        licenses::create_license(&self.pool, license).await
    }

    async fn get_license(&self, id: &str) -> StoreResult<Option<License>> {
        self.licenses
            .get(id.to_owned())
            .await?
            .map(|found| found.map_err(StoreError::Unavailable))
            .transpose()
    }

    async fn update_license(&self, license: License, now: Timestamp) -> StoreResult<()> {
        let now = self.clock.db(now);
        licenses::update_license(&self.pool, &license, now).await?;
        // Its terms changed: its held sessions read them again.
        self.hold.forget_license(&license.id);
        // More seats (or a lifted suspension) may serve the queue.
        self.queue.serve(&license.id, now);
        Ok(())
    }

    async fn delegated_licenses(&self) -> StoreResult<Vec<License>> {
        delegation::delegated_licenses(&self.pool).await
    }

    async fn change_delegations(
        &self,
        license_id: &str,
        change: DelegationChange,
        now: Timestamp,
    ) -> StoreResult<License> {
        let now = self.clock.db(now);
        let license = delegation::change_delegations(&self.pool, license_id, &change, now).await?;
        self.hold.forget_license(license_id);
        // A return gives seats back: they may serve the queue.
        self.queue.serve(license_id, now);
        Ok(license)
    }

    async fn admit(&self, req: OpenRequest, wait: bool, now: Timestamp) -> StoreResult<Admission> {
        let now = self.clock.db(now);
        self.send_open(req, wait, now).await
    }

    async fn leave_queue(&self, license_id: &str, ticket: u64) -> StoreResult<bool> {
        queue::leave(&self.pool, &self.queue, &self.cache, license_id, ticket).await
    }

    async fn list_queue(
        &self,
        license_id: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<QueuedRequest>> {
        let now = self.clock.db(now);
        let queued = queue::list(&self.pool, license_id, now).await?;
        if queued.is_empty() {
            self.require_license(license_id).await?;
        }
        Ok(queued)
    }

    async fn open_session(&self, req: OpenRequest, now: Timestamp) -> StoreResult<Opened> {
        let now = self.clock.db(now);
        match self.send_open(req, false, now).await? {
            Admission::Opened(opened) => Ok(opened),
            // Not asked to wait: admission answers at once.
            Admission::Queued(_) => Err(StoreError::Unavailable("unexpected queue entry".into())),
        }
    }

    async fn heartbeat(&self, session_id: &str, now: Timestamp) -> StoreResult<Session> {
        self.beat(session_id, None, now).await
    }

    /// One batch does the ownership check and the slide (no point read first).
    async fn heartbeat_owned(
        &self,
        session_id: &str,
        account_id: &str,
        username: &str,
        now: Timestamp,
    ) -> StoreResult<OwnedHeartbeat> {
        let owner = (Arc::from(account_id), username.to_owned());
        let session = self.beat(session_id, Some(owner), now).await?;
        if session.username != username {
            return Ok(OwnedHeartbeat::NotOwner);
        }
        Ok(OwnedHeartbeat::Beat(session.clock.expires_at))
    }

    async fn end_session(
        &self,
        session_id: &str,
        reason: EndReason,
        now: Timestamp,
    ) -> StoreResult<Session> {
        let now = self.clock.db(now);
        self.queue.saw(now);
        let lane = lane_of(session_id, self.ends.len());
        let end = EndAsk {
            session_id: session_id.to_owned(),
            reason,
            now,
            origin: crate::origin::of_end(reason),
        };
        let ended = ask(&self.ends, lane, end, "the logout batcher has stopped").await;
        // Ended (or found ended): never answered from memory again.
        self.hold.forget(session_id);
        ended
    }

    async fn revoke_license_sessions(&self, license_id: &str, now: Timestamp) -> StoreResult<u32> {
        let now = self.clock.db(now);
        let n = mass::revoke_all(&self.pool, &self.cache, license_id, now).await?;
        self.hold.forget_license(license_id);
        self.queue.serve(license_id, now);
        Ok(n)
    }

    async fn get_session(&self, session_id: &str) -> StoreResult<Option<SessionLookup>> {
        let Some(found) = self.sessions.get(session_id.to_owned()).await? else {
            return Ok(None);
        };
        let row = found.map_err(StoreError::Unavailable)?;
        Ok(Some(SessionLookup {
            state: match row.ended {
                Some(reason) => SessionState::Ended(reason),
                None => SessionState::Live,
            },
            // A heartbeat answered from this node's memory may be ahead of the stored expiry.
            session: self.hold.overlay(row.session),
        }))
    }

    async fn list_live_sessions(
        &self,
        license_id: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let now = self.clock.db(now);
        let live = sessions::list_live_sessions(&self.pool, &self.cache, license_id, now).await?;
        if live.is_empty() {
            self.require_license(license_id).await?;
        }
        Ok(live)
    }

    async fn usage(&self, license_id: &str, now: Timestamp) -> StoreResult<UsageStats> {
        licenses::usage(&self.pool, &self.cache, license_id, self.clock.db(now)).await
    }

    async fn revoked_leases(
        &self,
        license_id: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<RevokedLease>> {
        self.require_license(license_id).await?;
        borrow::revoked_leases(&self.pool, license_id, self.clock.db(now)).await
    }

    async fn reap_expired(&self, now: Timestamp) -> StoreResult<EndCounts> {
        let now = self.clock.db(now);
        self.queue.saw(now);
        reaper::reap_expired(&self.pool, &self.cache, &self.hold, &self.queue, now).await
    }

    async fn license_gauges(&self) -> StoreResult<Vec<LicenseGauges>> {
        licenses::license_gauges(&self.pool).await
    }

    async fn audit_log(&self, license_id: &str, limit: usize) -> StoreResult<Vec<AuditEvent>> {
        licenses::audit_log(&self.pool, license_id, limit).await
    }

    async fn audit_page(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        audit::audit_page(&self.pool, &self.audit_horizon, query).await
    }

    async fn usage_rollup(&self) -> StoreResult<usize> {
        self.rollup
            .catch_up(&self.pool, &self.audit_horizon, false)
            .await
    }

    async fn usage_series(&self, query: &SeriesQuery) -> StoreResult<UsageSeries> {
        let query = SeriesQuery {
            now: self.clock.db(Timestamp::from_millis(query.now)).millis(),
            ..query.clone()
        };
        self.rollup
            .series(&self.pool, &self.audit_horizon, &query)
            .await
    }

    async fn prune_audit(&self, before: Timestamp, batch: usize) -> StoreResult<usize> {
        let before = self.clock.db(before);
        audit::prune_audit(&self.pool, before.millis(), batch).await
    }

    async fn set_license_user(
        &self,
        license_id: &str,
        username: &str,
        active: bool,
        now: Timestamp,
    ) -> StoreResult<(LicenseUserChange, bool)> {
        let now = self.clock.db(now);
        let (change, created, _) =
            models::set_license_user(&self.pool, &self.cache, license_id, username, active, now)
                .await?;
        self.hold.forget_license(license_id);
        // Deactivating frees the user's seats; activating raises the active-user count.
        self.queue.serve(license_id, now);
        Ok((change, created))
    }

    async fn list_license_users(&self, license_id: &str) -> StoreResult<Vec<LicenseUser>> {
        self.require_license(license_id).await?;
        models::list_license_users(&self.pool, license_id).await
    }

    async fn activate_device(
        &self,
        license_id: &str,
        fingerprint: &str,
        name: &str,
        now: Timestamp,
    ) -> StoreResult<(DeviceActivation, bool)> {
        let now = self.clock.db(now);
        models::activate_device(&self.pool, &self.cache, license_id, fingerprint, name, now).await
    }

    async fn deactivate_device(
        &self,
        license_id: &str,
        fingerprint: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let now = self.clock.db(now);
        let ended =
            models::deactivate_device(&self.pool, &self.cache, license_id, fingerprint, now)
                .await?;
        self.forget_ended(&ended);
        if !ended.is_empty() {
            self.queue.serve(license_id, now);
        }
        Ok(ended)
    }

    async fn list_devices(&self, license_id: &str) -> StoreResult<Vec<DeviceActivation>> {
        self.require_license(license_id).await?;
        models::list_devices(&self.pool, license_id).await
    }

    async fn list_user_sessions(
        &self,
        account_id: &str,
        username: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let now = self.clock.db(now);
        sessions::list_user_sessions(&self.pool, &self.cache, account_id, username, now).await
    }

    /// Nothing to move: on PostgreSQL a session's expiry is judged by the database's clock,
    /// which a step of this node's clock does not change; the node's offset to it moves
    /// instead (see `clock`).
    async fn shift_live_sessions(&self, delta_ms: i64) -> StoreResult<usize> {
        self.clock.node_stepped(delta_ms);
        Ok(0)
    }

    fn event_hub(&self) -> &std::sync::Arc<EventHub> {
        &self.events
    }

    /// NOTIFY on the events channel, batched with the node's other events and without waiting
    /// for it: every node's listener (this one's too) delivers it.
    async fn publish(&self, event: SessionEvent) -> StoreResult<()> {
        self.publisher.publish(&event)
    }

    /// One round trip on a pooled connection (bounded by the pool's acquire timeout).
    async fn health(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(super::errors::db_error)
    }
}
