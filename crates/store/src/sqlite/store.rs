//! `SqliteStore`, the `Store` implementation over memory: take the lock, ask `Mem`, queue the
//! writes, let go of the lock, then await the writer's acknowledgement.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use leasehold_core::seats::{decide_device_activation, decide_user_activation};
use leasehold_core::session::SessionClock;
use leasehold_core::{RuleError, SessionState, Timestamp};
use leasehold_proto::{EndReason, LicenseModel, UserKind};
use rusqlite::{params, Connection, OptionalExtension};

use super::load::load;
use super::mem::{AdmitStep, Found, Mem, REAP_CHUNK};
use super::ops::WriteOp;
use super::schema::{migrate, open_connection};
use super::slab::{parse_sid, VACANT};
use super::writer::{acked, writer_loop};
use crate::admission;
use crate::codec::{parse_end_reason, parse_kind, session_clock};
use crate::records::*;
use crate::{Store, StoreError, StoreResult};

/// The embedded SQLite store.
pub struct SqliteStore {
    mem: Mutex<Mem>,
    reader: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, migrates it and loads the live state.
    pub fn open(path: &Path, now: Timestamp) -> StoreResult<Self> {
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel();
        let mem = load(&conn, tx, now)?;
        let touches = mem.touches.clone();
        let reader = open_connection(path)?;
        std::thread::Builder::new()
            .name("leasehold-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, touches))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(SqliteStore {
            mem: Mutex::new(mem),
            reader: Mutex::new(reader),
        })
    }

    pub(crate) fn mem(&self) -> MutexGuard<'_, Mem> {
        // A panic while holding the lock must not take the whole server down with it.
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(&conn)?)
    }

    /// The answer about a session that is not live in memory: `SessionEnded` with the reason
    /// on disk, or not found.
    pub(crate) async fn ended_on_disk<T>(&self, session_id: &str) -> StoreResult<T> {
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
            let mut mem = self.mem();
            mem.settings.insert(key.into(), value.into());
            mem.send(vec![WriteOp::Setting(key.into(), value.into())])
        };
        acked(rx).await
    }

    async fn put_credential(&self, credential: Credential) -> StoreResult<()> {
        let rx = {
            let mut mem = self.mem();
            if let Some(at) = credential.expires_at {
                mem.credential_expiry.insert((at, credential.hash));
            }
            mem.credentials.insert(credential.hash, credential.clone());
            mem.send(vec![WriteOp::Credential(Box::new(credential))])
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
            let mut mem = self.mem();
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

    async fn put_user(&self, user: User) -> StoreResult<bool> {
        let (rx, created) = {
            let mut mem = self.mem();
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
            (mem.send(vec![WriteOp::User(Box::new(user))]), created)
        };
        acked(rx).await?;
        Ok(created)
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
            let mut mem = self.mem();
            if !mem.accounts.contains_key(&license.account_id) {
                return Err(StoreError::NotFound("account"));
            }
            if mem.license_index.contains_key(&license.id) {
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
        let rx = {
            let mut mem = self.mem();
            let Some(li) = mem.license_at(&license.id) else {
                return Err(StoreError::NotFound("license"));
            };
            let state = &mut mem.licenses[li];
            let end_changed = state.license.terms.expires_at != license.terms.expires_at;
            state.license = license.clone();
            let mut ops = vec![
                WriteOp::Audit(Box::new(admission::license_updated(&license, now))),
                WriteOp::License(Box::new(license.clone())),
            ];
            if end_changed {
                // Live sessions end with the license: bring their expiry forward if needed.
                // On disk one statement does the same for all of them (`CapLicenseEnd`).
                for slot in mem.license_slots(li, |_| true) {
                    let mut clock = mem.slots[slot as usize].clock();
                    clock.cap_at_license_end(license.terms.expires_at);
                    mem.set_clock(slot, &clock);
                }
                ops.push(WriteOp::CapLicenseEnd {
                    license_id: license.id.clone(),
                    end: license.terms.expires_at,
                });
            }
            // More seats (or lifted suspension) may serve the queue.
            mem.to_serve.push(li as u32);
            mem.last_now = mem.last_now.max(now);
            mem.send(ops)
        };
        acked(rx).await
    }

    async fn open_session(&self, req: OpenRequest, now: Timestamp) -> StoreResult<Opened> {
        match self.admit(req, false, now).await? {
            Admission::Opened(opened) => Ok(opened),
            // Not asked to wait: admission answers at once.
            Admission::Queued(_) => Err(StoreError::Unavailable("unexpected queue entry".into())),
        }
    }

    async fn admit(&self, req: OpenRequest, wait: bool, now: Timestamp) -> StoreResult<Admission> {
        let step = self.mem().admit(&req, wait, now)?;
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
        let mut mem = self.mem();
        let Some(li) = mem.license_at(license_id) else {
            return Ok(false);
        };
        let lic = &mut mem.licenses[li];
        let before = lic.queue.len();
        lic.queue.retain(|w| w.ticket != ticket);
        let left = lic.queue.len() < before;
        if left {
            // The head may have changed: a grant blocked behind it may now go through.
            mem.to_serve.push(li as u32);
            mem.serve_queues();
        }
        Ok(left)
    }

    async fn list_queue(
        &self,
        license_id: &str,
        _now: Timestamp,
    ) -> StoreResult<Vec<QueuedRequest>> {
        let mem = self.mem();
        let Some(lic) = mem.lic(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        Ok(lic
            .queue
            .iter()
            .filter(|w| !w.tx.is_closed())
            .enumerate()
            .map(|(i, w)| QueuedRequest {
                ticket: w.ticket,
                position: i as u32 + 1,
                username: w.req.username.clone(),
                device_id: w.req.device_id.clone(),
                instance_id: w.req.instance_id.clone(),
                since: w.since,
            })
            .collect())
    }

    async fn heartbeat(&self, session_id: &str, now: Timestamp) -> StoreResult<Session> {
        {
            let mut mem = self.mem();
            match mem.lookup(session_id) {
                Some(Found::Live(slot)) => {
                    mem.beat(slot, now)?;
                    return Ok(mem.session(slot));
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
        {
            let mut mem = self.mem();
            if let Some(id) = parse_sid(session_id) {
                // One lock hold: ownership, then the heartbeat in place.
                let (license, user, live) = if let Some(slot) = mem.find(id) {
                    let r = &mem.slots[slot as usize];
                    (r.license, r.user, Some(slot))
                } else if let Some(e) = mem.ended.get(&id) {
                    (e.license, e.user, None)
                } else {
                    (VACANT, 0, None)
                };
                if license != VACANT {
                    let owner = mem.licenses.get(license as usize);
                    if owner.is_none_or(|l| &*l.account_id != account_id) {
                        return Err(StoreError::NotFound("session"));
                    }
                    if mem.names.name(user) != username {
                        return Ok(OwnedHeartbeat::NotOwner);
                    }
                    return match live {
                        Some(slot) => Ok(OwnedHeartbeat::Beat(mem.beat(slot, now)?.expires_at)),
                        None => match mem.ended.get(&id) {
                            Some(e) => Err(RuleError::SessionEnded(e.reason).into()),
                            None => Err(StoreError::NotFound("session")),
                        },
                    };
                }
            }
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
        let ended = {
            let mut mem = self.mem();
            match mem.lookup(session_id) {
                Some(Found::Live(slot)) => {
                    let clock = mem.slots[slot as usize].clock();
                    if !clock.is_live(now) {
                        let expiry = clock.expiry_reason();
                        if let Some((_, ops)) = mem.end_live(slot, expiry, now) {
                            mem.send_unacked(ops);
                        }
                        return Err(RuleError::SessionEnded(expiry).into());
                    }
                    mem.end_live(slot, reason, now)
                        .map(|(s, ops)| (s, mem.send(ops)))
                }
                Some(Found::Ended(reason)) => return Err(RuleError::SessionEnded(reason).into()),
                None => None,
            }
        };
        match ended {
            Some((session, rx)) => {
                acked(rx).await?;
                Ok(session)
            }
            None => self.ended_on_disk(session_id).await,
        }
    }

    async fn get_session(&self, session_id: &str) -> StoreResult<Option<SessionLookup>> {
        // An ended session in memory: its reason is known even while its end is in flight.
        let ended = {
            let mem = self.mem();
            match mem.lookup(session_id) {
                Some(Found::Live(slot)) => {
                    return Ok(Some(SessionLookup {
                        session: mem.session(slot),
                        state: SessionState::Live,
                    }));
                }
                Some(Found::Ended(reason)) => parse_sid(session_id)
                    .and_then(|id| mem.ended.get(&id))
                    .and_then(|e| {
                        let lic = mem.licenses.get(e.license as usize)?;
                        Some((
                            reason,
                            lic.id.clone(),
                            lic.account_id.clone(),
                            mem.names.name(e.user).to_owned(),
                        ))
                    }),
                None => None,
            }
        };
        let row = self.read(|conn| {
            conn.prepare_cached(
                "SELECT s.license_id, l.account_id, s.username, s.kind, s.device_id, s.instance_id,
                        s.opened_at, s.expires_at, s.hard_end, s.end_reason
                 FROM sessions s JOIN licenses l ON l.id = s.license_id WHERE s.id = ?1",
            )?
            .query_row(params![session_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                ))
            })
            .optional()
        })?;
        let Some((
            license_id,
            account_id,
            username,
            kind,
            device_id,
            instance_id,
            opened,
            expires,
            hard_end,
            reason,
        )) = row
        else {
            // Ended before its row was written (a grant nobody received): what memory knows.
            return Ok(
                ended.map(|(reason, license_id, account_id, username)| SessionLookup {
                    session: Session {
                        id: session_id.to_owned(),
                        license_id,
                        account_id,
                        username,
                        kind: UserKind::Interactive,
                        device_id: String::new(),
                        instance_id: String::new(),
                        clock: SessionClock {
                            opened_at: Timestamp::from_millis(0),
                            expires_at: Timestamp::from_millis(0),
                            hard_end: None,
                            license_end: None,
                        },
                        heartbeat_interval_secs: 0,
                        overdraft: false,
                    },
                    state: SessionState::Ended(reason),
                }),
            );
        };
        let state = match (reason, ended) {
            (_, Some((known, ..))) => SessionState::Ended(known),
            (Some(r), None) => SessionState::Ended(parse_end_reason(&r)),
            // Committed as live but no longer in memory: it ended and the end is in flight.
            (None, None) => SessionState::Ended(EndReason::Unknown),
        };
        Ok(Some(SessionLookup {
            session: Session {
                id: session_id.to_owned(),
                license_id: Arc::from(license_id.as_str()),
                account_id: Arc::from(account_id.as_str()),
                username,
                kind: parse_kind(&kind),
                device_id,
                instance_id,
                clock: session_clock(opened, expires, hard_end, None),
                heartbeat_interval_secs: 0,
                overdraft: false,
            },
            state,
        }))
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
        let mut out: Vec<Session> = mem
            .license_slots(li, |r| now.millis() < r.expires_at)
            .into_iter()
            .map(|slot| mem.session(slot))
            .collect();
        out.sort_by(|a, b| (a.clock.opened_at, &a.id).cmp(&(b.clock.opened_at, &b.id)));
        Ok(out)
    }

    async fn usage(&self, license_id: &str, _now: Timestamp) -> StoreResult<UsageStats> {
        let mem = self.mem();
        let Some(lic) = mem.lic(license_id) else {
            return Err(StoreError::NotFound("license"));
        };
        Ok(UsageStats {
            seats: lic.license.terms.seats,
            in_use: lic.live,
            high_water: lic.high_water,
            low_water: lic.low_water,
            denials: lic.denials,
            since: mem.started,
            overdraft_in_use: lic.overdraft_live,
            activations: lic.activations(),
        })
    }

    async fn reap_expired(&self, now: Timestamp) -> StoreResult<Vec<Session>> {
        // Mass expiries (a license ending under a million sessions) are reaped in chunks,
        // letting go of the lock between them so heartbeats and opens are not held up.
        let mut ended = Vec::new();
        loop {
            let more = {
                let mut mem = self.mem();
                let due: Vec<usize> = (0..mem.licenses.len())
                    .filter(|&li| {
                        mem.licenses[li]
                            .expiry
                            .first()
                            .is_some_and(|&(at, _)| at <= now.millis())
                    })
                    .collect();
                let mut ops = Vec::new();
                let mut budget = REAP_CHUNK;
                for li in due {
                    if budget == 0 {
                        break;
                    }
                    let (mut e, mut o) = mem.reap_license_upto(li, now, budget);
                    budget = budget.saturating_sub(e.len());
                    ended.append(&mut e);
                    ops.append(&mut o);
                }
                if !ops.is_empty() {
                    mem.send_unacked(ops);
                }
                budget == 0
            };
            if !more {
                break;
            }
            tokio::task::yield_now().await;
        }
        let mut mem = self.mem();
        let mut ops = Vec::new();
        // Expired access tokens are dropped the same way: O(expired).
        while let Some(&(at, hash)) = mem.credential_expiry.first() {
            if at > now {
                break;
            }
            mem.credential_expiry.pop_first();
            mem.credentials.remove(&hash);
            ops.push(WriteOp::DeleteCredential(hash));
        }
        mem.forget_old_ends(now);
        if !ops.is_empty() {
            mem.send_unacked(ops);
        }
        Ok(ended)
    }

    async fn in_use_by_license(&self) -> StoreResult<Vec<(String, u32)>> {
        let mem = self.mem();
        Ok(mem
            .licenses
            .iter()
            .map(|l| (l.license.id.clone(), l.live))
            .collect())
    }

    async fn audit_log(&self, license_id: &str, limit: usize) -> StoreResult<Vec<AuditEvent>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT at, account_id, license_id, session_id, username, event, detail
                 FROM audit_events WHERE license_id = ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![license_id, limit as i64], |r| {
                Ok(AuditEvent {
                    at: Timestamp::from_millis(r.get(0)?),
                    account_id: r.get(1)?,
                    license_id: r.get(2)?,
                    session_id: r.get(3)?,
                    username: r.get(4)?,
                    event: r.get(5)?,
                    detail: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }

    async fn set_license_user(
        &self,
        license_id: &str,
        username: &str,
        active: bool,
        now: Timestamp,
    ) -> StoreResult<(LicenseUserChange, bool)> {
        let (rx, change, created) = {
            let mut mem = self.mem();
            let Some(li) = mem.license_at(license_id) else {
                return Err(StoreError::NotFound("license"));
            };
            let lic = &mut mem.licenses[li];
            let previous = lic.users.get(username).cloned();
            let was_active = previous.as_ref().is_some_and(|u| u.active);
            if active {
                decide_user_activation(&lic.license.terms, lic.active_users, was_active)?;
            } else if lic.license.terms.model != LicenseModel::RegisteredUsers {
                decide_user_activation(&lic.license.terms, 0, true)?;
            }
            let user = LicenseUser {
                license_id: license_id.to_owned(),
                username: username.to_owned(),
                active,
                updated_at: now,
            };
            match (was_active, active) {
                (false, true) => lic.active_users += 1,
                (true, false) => lic.active_users = lic.active_users.saturating_sub(1),
                _ => {}
            }
            lic.users.insert(username.to_owned(), user.clone());
            let mut ops = vec![WriteOp::LicenseUser(user.clone())];
            let mut ended = Vec::new();
            if let (false, Some(user)) = (active, mem.names.get(username)) {
                for slot in mem.license_slots(li, |r| r.user == user) {
                    if let Some((s, mut o)) = mem.end_live(slot, EndReason::UserDeactivated, now) {
                        ended.push(s);
                        ops.append(&mut o);
                    }
                }
            }
            (
                mem.send(ops),
                LicenseUserChange { user, ended },
                previous.is_none(),
            )
        };
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
        let (rx, device) = {
            let mut mem = self.mem();
            let Some(lic) = mem.lic_mut(license_id) else {
                return Err(StoreError::NotFound("license"));
            };
            let existing = lic.devices.get(fingerprint).cloned();
            decide_device_activation(
                &lic.license.terms,
                lic.devices.len() as u32,
                existing.is_some(),
            )?;
            if let Some(device) = existing {
                return Ok((device, false));
            }
            let device = DeviceActivation {
                license_id: license_id.to_owned(),
                fingerprint: fingerprint.to_owned(),
                name: name.to_owned(),
                activated_at: now,
            };
            lic.devices.insert(fingerprint.to_owned(), device.clone());
            let audit = WriteOp::Audit(Box::new(admission::device_activated(
                &lic.license.account_id,
                license_id,
                fingerprint,
                now,
            )));
            (
                mem.send(vec![WriteOp::Device(device.clone()), audit]),
                device,
            )
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
        let (rx, ended) = {
            let mut mem = self.mem();
            let Some(li) = mem.license_at(license_id) else {
                return Err(StoreError::NotFound("license"));
            };
            let lic = &mut mem.licenses[li];
            if lic.devices.remove(fingerprint).is_none() {
                return Err(StoreError::NotFound("device"));
            }
            let mut ops = vec![
                WriteOp::DeleteDevice {
                    license_id: license_id.to_owned(),
                    fingerprint: fingerprint.to_owned(),
                },
                WriteOp::Audit(Box::new(admission::device_deactivated(
                    &lic.license.account_id,
                    license_id,
                    fingerprint,
                    now,
                ))),
            ];
            let mut ended = Vec::new();
            for slot in mem.license_slots(li, |r| r.device() == fingerprint) {
                if let Some((s, mut o)) = mem.end_live(slot, EndReason::DeviceDeactivated, now) {
                    ended.push(s);
                    ops.append(&mut o);
                }
            }
            (mem.send(ops), ended)
        };
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
            .filter(|&slot| now.millis() < mem.slots[slot as usize].expires_at)
            .map(|slot| mem.session(slot))
            .collect();
        out.sort_by(|a, b| (a.clock.opened_at, &a.id).cmp(&(b.clock.opened_at, &b.id)));
        Ok(out)
    }

    async fn end_user_sessions(
        &self,
        account_id: &str,
        username: &str,
        reason: EndReason,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let (rx, ended) = {
            let mut mem = self.mem();
            let mut ops = Vec::new();
            let mut ended = Vec::new();
            for slot in mem.user_slots(account_id, username) {
                if let Some((s, mut o)) = mem.end_live(slot, reason, now) {
                    ended.push(s);
                    ops.append(&mut o);
                }
            }
            (mem.send(ops), ended)
        };
        acked(rx).await?;
        Ok(ended)
    }

    async fn shift_live_sessions(&self, delta_ms: i64) -> StoreResult<usize> {
        Ok(self.mem().shift_live(delta_ms))
    }
}
