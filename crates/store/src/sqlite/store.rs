//! `SqliteStore`, the `Store` implementation over memory: take the lock, ask `Mem`, queue the
//! writes, let go of the lock, then await the writer's acknowledgement.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use leasehold_core::{RuleError, SessionState, Timestamp};
use leasehold_proto::EndReason;

use super::load::load;
use super::mem::{AdmitStep, Found, Mem};
use super::ops::WriteOp;
use super::read::Reader;
use super::recovery;
use super::schema::{migrate, open_connection};
use super::writer::{self, acked, Faults};
use crate::admin_events;
use crate::admission;
use crate::records::*;
use crate::usage::{SeriesQuery, UsageSeries};
use crate::{
    AuditEntry, AuditQuery, DelegationChange, EventHub, SessionEvent, Store, StoreError,
    StoreResult,
};

/// The embedded SQLite store.
pub struct SqliteStore {
    /// Shared with the writer, which rebuilds it from the disk after a failed write.
    mem: Arc<Mutex<Mem>>,
    reader: Reader,
    faults: Faults,
    /// The folder of the database: its free space is part of the store's health.
    dir: PathBuf,
    /// Its free space as last read (`u64::MAX`: unknown), and when (ms since `opened`): read at
    /// most once a second, so a busy health endpoint costs no system call per request.
    free: AtomicU64,
    free_read_at: AtomicU64,
    opened: Instant,
    /// The event streams of this process (one process holds every stream of a SQLite store).
    events: Arc<EventHub>,
    /// Webhook deliveries being sent (`super::webhooks`): this process is the only sender, so
    /// a claim is held in memory, not written.
    pub(super) webhook_claims: Mutex<std::collections::HashSet<i64>>,
    /// The usage fold's own connection (`usage.rs`).
    rollup: Arc<super::usage::Rollup>,
}

impl SqliteStore {
    /// The reading connection.
    pub(super) fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Opens (creating if needed) the database at `path`, migrates it and loads the live state.
    pub fn open(path: &Path, now: Timestamp) -> StoreResult<Self> {
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel();
        let mut mem = load(&conn, tx, now)?;
        // Ends decided before a stop (a mass end under way) are written again.
        if mem.ending_total() > 0 {
            tracing::warn!(
                sessions = mem.ending_total(),
                "sessions whose end was decided before the last stop are being ended"
            );
            mem.wake_drain();
        }
        let clamped = mem.clamp_after_restart(now);
        if clamped > 0 {
            tracing::warn!(
                sessions = clamped,
                "live sessions expired further ahead than the clock allows (it went back while the server was down): clamped to their timeout"
            );
        }
        let touches = mem.touches.clone();
        let reader = Reader::open(path)?;
        let rollup = Arc::new(super::usage::Rollup::open(path)?);
        let mem = Arc::new(Mutex::new(mem));
        let faults = Faults::default();
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => Path::new(".").to_path_buf(),
        };
        writer::spawn(
            conn,
            dir.clone(),
            rx,
            touches,
            Arc::downgrade(&mem),
            faults.clone(),
        )?;
        Ok(SqliteStore {
            events: EventHub::new(),
            mem,
            reader,
            faults,
            dir,
            free: AtomicU64::new(u64::MAX),
            free_read_at: AtomicU64::new(0),
            opened: Instant::now(),
            webhook_claims: Mutex::default(),
            rollup,
        })
    }

    /// Forgets the usage fold's state (tests: the next fold rebuilds it from its rows).
    #[cfg(test)]
    pub(crate) fn forget_usage_fold(&self) {
        self.rollup.forget();
    }

    /// The free space of the database's file system, read at most once a second.
    fn free_bytes(&self) -> u64 {
        let now = self.opened.elapsed().as_millis() as u64;
        let read_at = self.free_read_at.load(Ordering::Relaxed);
        if read_at == 0 || now.saturating_sub(read_at) >= 1_000 {
            let free = recovery::free_bytes(&self.dir).unwrap_or(u64::MAX);
            self.free.store(free, Ordering::Relaxed);
            self.free_read_at.store(now.max(1), Ordering::Relaxed);
        }
        self.free.load(Ordering::Relaxed)
    }

    /// Fault injection for tests of the failure path: while set, the disk refuses every write
    /// with the error of a full disk (`SQLITE_FULL`), so the store goes through what it does on
    /// a real one (see `recovery`).
    pub fn inject_write_failures(&self, fail: bool) {
        self.faults.full.store(fail, Ordering::Release);
    }

    /// Fault injection for tests of mass ends: the drain writes at most `chunks` more chunks of
    /// decided ends, then leaves the rest in memory (as a crash would find them).
    #[cfg(test)]
    pub(crate) fn limit_drain(&self, chunks: usize) {
        self.faults.drain_chunks.store(chunks, Ordering::Release);
    }

    fn mem(&self) -> MutexGuard<'_, Mem> {
        // A panic while holding the lock must not take the whole server down with it.
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Memory, for a change: refused (503, nothing changed) while the disk refuses writes.
    pub(super) fn write(&self) -> StoreResult<MutexGuard<'_, Mem>> {
        let mem = self.mem();
        mem.writable()?;
        Ok(mem)
    }

    /// The answer about a session that is not live in memory: `SessionEnded` with the reason
    /// on disk, or not found.
    async fn ended_on_disk<T>(&self, session_id: &str) -> StoreResult<T> {
        match self.get_session(session_id).await? {
            Some(SessionLookup {
                state: SessionState::Ended(reason),
                ..
            }) => Err(RuleError::SessionEnded(reason).into()),
            _ => Err(StoreError::NotFound("session")),
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(self.mem().settings.get(key).cloned())
    }

    async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        let rx = {
            let mut mem = self.write()?;
            mem.settings.insert(key.into(), value.into());
            mem.send(vec![WriteOp::Setting(key.into(), value.into())])
        };
        acked(rx).await
    }

    async fn put_credential(&self, credential: Credential, now: Timestamp) -> StoreResult<()> {
        let event = admin_events::token_issued(&credential, now);
        let rx = {
            let mut mem = self.write()?;
            if let Some(at) = credential.expires_at {
                mem.credential_expiry.insert((at, credential.hash));
            }
            mem.credentials.insert(credential.hash, credential.clone());
            let mut ops = vec![WriteOp::Credential(Box::new(credential))];
            ops.extend(event.map(|e| WriteOp::Audit(Box::new(e))));
            mem.send(ops)
        };
        acked(rx).await
    }

    async fn find_credential(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<Credential>> {
        let mem = self.mem();
        Ok(mem
            .credentials
            .get(hash)
            .filter(|c| c.expires_at.is_none_or(|at| now < at))
            .cloned())
    }

    async fn create_account(&self, account: Account, admin: Credential) -> StoreResult<()> {
        let rx = {
            let mut mem = self.write()?;
            if mem.accounts.contains_key(&account.id) {
                return Err(StoreError::Conflict(format!(
                    "account {} exists",
                    account.id
                )));
            }
            mem.accounts.insert(account.id.clone(), account.clone());
            mem.credentials.insert(admin.hash, admin.clone());
            mem.send(vec![
                WriteOp::Account(account),
                WriteOp::Credential(Box::new(admin)),
            ])
        };
        acked(rx).await
    }

    async fn get_account(&self, id: &str) -> StoreResult<Option<Account>> {
        Ok(self.mem().accounts.get(id).cloned())
    }

    async fn get_user(&self, account_id: &str, username: &str) -> StoreResult<Option<User>> {
        Ok(self
            .mem()
            .users
            .get(&(account_id.to_owned(), username.to_owned()))
            .cloned())
    }

    async fn put_user(&self, user: User, now: Timestamp) -> StoreResult<UserPut> {
        let (rx, created, ended) = {
            let mut mem = self.write()?;
            if !mem.accounts.contains_key(&user.account_id) {
                return Err(StoreError::NotFound("account"));
            }
            if let Some(cid) = &user.client_id {
                mem.client_ids.insert(
                    cid.clone(),
                    (user.account_id.clone(), user.username.clone()),
                );
            }
            let created = mem
                .users
                .insert(
                    (user.account_id.clone(), user.username.clone()),
                    user.clone(),
                )
                .is_none();
            let mut ops = vec![
                WriteOp::User(Box::new(user.clone())),
                WriteOp::Audit(Box::new(admin_events::user_put(&user, created, now))),
            ];
            let mut ended = 0;
            if !user.active {
                // One decision for all the user's sessions, durable with the user's record.
                let (n, floor) = mem.deactivate_user(&user.account_id, &user.username, now)?;
                ended = n;
                ops.extend(floor);
            }
            (mem.send(ops), created, ended)
        };
        acked(rx).await?;
        Ok(UserPut { created, ended })
    }

    async fn find_user_by_client_id(&self, client_id: &str) -> StoreResult<Option<User>> {
        let mem = self.mem();
        Ok(mem
            .client_ids
            .get(client_id)
            .and_then(|key| mem.users.get(key))
            .cloned())
    }

    async fn list_users(&self, account_id: &str) -> StoreResult<Vec<User>> {
        let mem = self.mem();
        let mut users: Vec<User> = mem
            .users
            .values()
            .filter(|u| u.account_id == account_id)
            .cloned()
            .collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    async fn list_licenses(&self, account_id: &str) -> StoreResult<Vec<License>> {
        let mem = self.mem();
        let mut licenses: Vec<License> = mem
            .licenses
            .iter()
            .filter(|l| l.license.account_id == account_id)
            .map(|l| l.license.clone())
            .collect();
        licenses.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(licenses)
    }

    async fn create_license(&self, license: License) -> StoreResult<()> {
        let rx = {
            let mut mem = self.write()?;
            if !mem.accounts.contains_key(&license.account_id) {
                return Err(StoreError::NotFound("account"));
            }
            if mem.license_at(&license.id).is_some() {
                return Err(StoreError::Conflict(format!(
                    "license {} exists",
                    license.id
                )));
            }
            let ops = vec![
                WriteOp::License(Box::new(license.clone())),
                WriteOp::Audit(Box::new(admission::license_created(&license))),
            ];
            mem.add_license(license);
            mem.send(ops)
        };
        acked(rx).await
    }

    async fn get_license(&self, id: &str) -> StoreResult<Option<License>> {
        Ok(self.mem().lic(id).map(|l| l.license.clone()))
    }

    async fn update_license(&self, license: License, now: Timestamp) -> StoreResult<()> {
        let rx = self.write()?.update_license(license, now)?;
        acked(rx).await
    }

    async fn delegated_licenses(&self) -> StoreResult<Vec<License>> {
        Ok(self.mem().delegated_licenses())
    }

    async fn change_delegations(
        &self,
        license_id: &str,
        change: DelegationChange,
        now: Timestamp,
    ) -> StoreResult<License> {
        let (license, rx) = self.write()?.change_delegations(license_id, &change, now)?;
        if let Some(rx) = rx {
            acked(rx).await?;
        }
        Ok(license)
    }

    async fn open_session(&self, req: OpenRequest, now: Timestamp) -> StoreResult<Opened> {
        match self.admit(req, false, now).await? {
            Admission::Opened(opened) => Ok(opened),
            // Not asked to wait: admission answers at once.
            Admission::Queued(_) => Err(StoreError::Unavailable("unexpected queue entry".into())),
        }
    }

    async fn admit(&self, req: OpenRequest, wait: bool, now: Timestamp) -> StoreResult<Admission> {
        let step = self.write()?.admit(&req, wait, now)?;
        match step {
            AdmitStep::Reopened(opened) => Ok(Admission::Opened(opened)),
            AdmitStep::Granted(session, rx) => {
                acked(rx).await?;
                Ok(Admission::Opened(Opened {
                    session,
                    created: true,
                }))
            }
            AdmitStep::Queued(ticket) => Ok(Admission::Queued(ticket)),
        }
    }

    async fn leave_queue(&self, license_id: &str, ticket: u64) -> StoreResult<bool> {
        Ok(self.mem().leave_queue(license_id, ticket))
    }

    async fn list_queue(
        &self,
        license_id: &str,
        _now: Timestamp,
    ) -> StoreResult<Vec<QueuedRequest>> {
        self.mem().list_queue(license_id)
    }

    async fn heartbeat(&self, session_id: &str, now: Timestamp) -> StoreResult<Session> {
        {
            let mut mem = self.write()?;
            match mem.lookup(session_id) {
                Some(Found::Live(slot)) => {
                    mem.beat(slot, now)?;
                    return mem.session(slot).ok_or(StoreError::NotFound("session"));
                }
                Some(Found::Ended(reason)) => return Err(RuleError::SessionEnded(reason).into()),
                None => {}
            }
        }
        self.ended_on_disk(session_id).await
    }

    async fn heartbeat_owned(
        &self,
        session_id: &str,
        account_id: &str,
        username: &str,
        now: Timestamp,
    ) -> StoreResult<OwnedHeartbeat> {
        let in_memory = self
            .write()?
            .beat_owned(session_id, account_id, username, now);
        if let Some(answer) = in_memory {
            return answer;
        }
        // Not in memory: ended long ago (or unknown); the database knows whose it was.
        let found = self
            .get_session(session_id)
            .await?
            .filter(|s| &*s.session.account_id == account_id)
            .ok_or(StoreError::NotFound("session"))?;
        if found.session.username != username {
            return Ok(OwnedHeartbeat::NotOwner);
        }
        match found.state {
            SessionState::Ended(reason) => Err(RuleError::SessionEnded(reason).into()),
            SessionState::Live => Err(StoreError::NotFound("session")),
        }
    }

    async fn end_session(
        &self,
        session_id: &str,
        reason: EndReason,
        now: Timestamp,
    ) -> StoreResult<Session> {
        let ended = self.write()?.end_session(session_id, reason, now)?;
        match ended {
            Some((session, rx)) => {
                acked(rx).await?;
                Ok(session)
            }
            None => self.ended_on_disk(session_id).await,
        }
    }

    async fn revoke_license_sessions(&self, license_id: &str, now: Timestamp) -> StoreResult<u32> {
        let (n, rx) = self.write()?.revoke_all(license_id, now)?;
        acked(rx).await?;
        Ok(n)
    }

    async fn get_session(&self, session_id: &str) -> StoreResult<Option<SessionLookup>> {
        // An ended session in memory: its reason is known even while its end is in flight.
        let ended = {
            let mem = self.mem();
            match mem.lookup(session_id) {
                Some(Found::Live(slot)) => {
                    return Ok(mem.session(slot).map(|session| SessionLookup {
                        session,
                        state: SessionState::Live,
                    }));
                }
                Some(Found::Ended(_)) => mem.ended_session(session_id),
                None => None,
            }
        };
        self.reader.session(session_id, ended)
    }

    async fn list_live_sessions(
        &self,
        license_id: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let mem = self.mem();
        let Some(li) = mem.license_at(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        // Ending sessions are not listed, nor expired ones (the license's end caps them all).
        let mut out: Vec<Session> = mem
            .license_slots(li, |r| now.millis() < r.expires_at)
            .into_iter()
            .filter_map(|slot| mem.session(slot))
            .filter(|s| s.clock.is_live(now))
            .collect();
        out.sort_by(|a, b| (a.clock.opened_at, &a.id).cmp(&(b.clock.opened_at, &b.id)));
        Ok(out)
    }

    async fn usage(&self, license_id: &str, now: Timestamp) -> StoreResult<UsageStats> {
        let mem = self.mem();
        let Some(lic) = mem.lic(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        let mut usage = lic.usage(mem.started);
        usage.delegated = lic.license.terms.delegated_at(now);
        if let Some(li) = mem.license_at(license_id) {
            usage.borrowed = mem.borrowed_now(li);
        }
        // Past the license's end, every session of it is over from that instant, reaper or not.
        if lic.license.terms.expires_at.is_some_and(|end| end <= now) {
            usage.ending += usage.in_use;
            usage.in_use = 0;
            usage.overdraft_in_use = 0;
            usage.borrowed = 0;
        }
        Ok(usage)
    }

    async fn revoked_leases(
        &self,
        license_id: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<RevokedLease>> {
        self.mem().revoked_leases(license_id, now)
    }

    async fn reap_expired(&self, now: Timestamp) -> StoreResult<EndCounts> {
        // Ending a session is a write: while the disk refuses them, expired sessions wait.
        if self.mem().broken().is_some() {
            return Ok(EndCounts::default());
        }
        // Mass expiries are decided in chunks, letting go of the lock between them so
        // heartbeats and opens are not held up; the drain writes them (`mem::ending`).
        let mut ended = EndCounts::default();
        while self.mem().reap_chunk(now, &mut ended) {
            tokio::task::yield_now().await;
        }
        self.mem().sweep(now);
        Ok(ended)
    }

    async fn license_gauges(&self) -> StoreResult<Vec<LicenseGauges>> {
        let mem = self.mem();
        Ok(mem.licenses.iter().map(|l| l.gauges()).collect())
    }

    async fn audit_log(&self, license_id: &str, limit: usize) -> StoreResult<Vec<AuditEvent>> {
        self.reader.audit_log(license_id, limit)
    }

    async fn audit_page(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        self.reader.audit_page(query)
    }

    async fn usage_rollup(&self) -> StoreResult<usize> {
        let rollup = self.rollup.clone();
        blocking(move || rollup.catch_up()).await
    }

    async fn usage_series(&self, query: &SeriesQuery) -> StoreResult<UsageSeries> {
        let rollup = self.rollup.clone();
        let query = query.clone();
        blocking(move || rollup.series(&query)).await
    }

    async fn prune_audit(&self, before: Timestamp, batch: usize) -> StoreResult<usize> {
        let Some((up_to_seq, count)) = self.reader.prunable(before, batch)? else {
            return Ok(0);
        };
        let rx = self
            .write()?
            .send(vec![WriteOp::PruneAudit { up_to_seq, before }]);
        acked(rx).await?;
        Ok(count)
    }

    async fn set_license_user(
        &self,
        license_id: &str,
        username: &str,
        active: bool,
        now: Timestamp,
    ) -> StoreResult<(LicenseUserChange, bool)> {
        let (rx, change, created) = self
            .write()?
            .set_license_user(license_id, username, active, now)?;
        acked(rx).await?;
        Ok((change, created))
    }

    async fn list_license_users(&self, license_id: &str) -> StoreResult<Vec<LicenseUser>> {
        let mem = self.mem();
        let Some(lic) = mem.lic(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        let mut users: Vec<LicenseUser> = lic.users.values().cloned().collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    async fn activate_device(
        &self,
        license_id: &str,
        fingerprint: &str,
        name: &str,
        now: Timestamp,
    ) -> StoreResult<(DeviceActivation, bool)> {
        let (device, rx) = self
            .write()?
            .activate_device(license_id, fingerprint, name, now)?;
        let Some(rx) = rx else {
            return Ok((device, false));
        };
        acked(rx).await?;
        Ok((device, true))
    }

    async fn deactivate_device(
        &self,
        license_id: &str,
        fingerprint: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let (rx, ended) = self
            .write()?
            .deactivate_device(license_id, fingerprint, now)?;
        acked(rx).await?;
        Ok(ended)
    }

    async fn list_devices(&self, license_id: &str) -> StoreResult<Vec<DeviceActivation>> {
        let mem = self.mem();
        let Some(lic) = mem.lic(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        let mut devices: Vec<DeviceActivation> = lic.devices.values().cloned().collect();
        devices.sort_by(|a, b| {
            (a.activated_at, &a.fingerprint).cmp(&(b.activated_at, &b.fingerprint))
        });
        Ok(devices)
    }

    async fn list_user_sessions(
        &self,
        account_id: &str,
        username: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let mem = self.mem();
        let mut out: Vec<Session> = mem
            .user_slots(account_id, username)
            .into_iter()
            .filter_map(|slot| mem.session(slot))
            .filter(|s| s.clock.is_live(now))
            .collect();
        out.sort_by(|a, b| (a.clock.opened_at, &a.id).cmp(&(b.clock.opened_at, &b.id)));
        Ok(out)
    }

    async fn shift_live_sessions(&self, delta_ms: i64) -> StoreResult<usize> {
        Ok(self.mem().shift_live(delta_ms))
    }

    fn event_hub(&self) -> &Arc<EventHub> {
        &self.events
    }

    /// One process holds every stream: the event goes straight to its hub.
    async fn publish(&self, event: SessionEvent) -> StoreResult<()> {
        self.events.deliver(&event);
        Ok(())
    }

    /// Refused writes, or a file system with less free space than writes need to resume.
    async fn health(&self) -> StoreResult<()> {
        self.mem().writable()?;
        let free = self.free_bytes();
        if free < recovery::RESUME_FREE_BYTES {
            return Err(StoreError::Unavailable(format!(
                "the disk of the database is (nearly) full: {free} bytes free"
            )));
        }
        Ok(())
    }
}

/// Runs blocking database work (the usage fold) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("the usage fold stopped: {e}")))?
}
