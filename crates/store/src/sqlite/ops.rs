//! The write operations memory queues for the writer, and the SQL each one runs.

use std::sync::Arc;

use leasehold_core::Timestamp;
use leasehold_proto::EndReason;
use rusqlite::params;

use super::mem::Floor;
use super::slab::{Sid, SidText};
use crate::codec::{principal_columns, terms_json};
use crate::records::*;
use crate::Origin;

/// One change to persist. Large records are boxed: a mass expiry queues a million ops.
#[derive(Debug)]
pub(super) enum WriteOp {
    Setting(String, String),
    Account(Account),
    Credential(Box<Credential>),
    DeleteCredential(TokenHash),
    User(Box<User>),
    License(Box<License>),
    /// A new session, with its place in the order of opens.
    InsertSession {
        session: Box<Session>,
        seq: u64,
    },
    Touch {
        id: Sid,
        expires_at: Timestamp,
        hard_end: Option<Timestamp>,
        license_end: Option<Timestamp>,
    },
    /// A mass end of every session of a license opened before `floor.below` (see
    /// `mem::ending`): the durable decision its ends are drained under.
    LicenseFloor {
        license_id: Arc<str>,
        floor: Floor,
    },
    /// The same for every session of a deactivated user of an account.
    UserFloor {
        account_id: String,
        username: String,
        floor: Floor,
    },
    /// The same for a user deactivated on a `registered_users` license.
    LicenseUserFloor {
        license_id: Arc<str>,
        username: String,
        floor: Floor,
    },
    LicenseUser(LicenseUser),
    Device(DeviceActivation),
    DeleteDevice {
        license_id: String,
        fingerprint: String,
    },
    /// A session ended, and its `ended` audit event (no string is copied for it): both are
    /// written only while the session is live on disk, so an end written twice (decided
    /// again after a restart) is recorded once.
    EndSession {
        id: Sid,
        at: Timestamp,
        reason: EndReason,
        account_id: Arc<str>,
        license_id: Arc<str>,
        username: Arc<str>,
        /// The request that ended it (`origin::of_end`), boxed: most ends have none.
        origin: Option<Box<Origin>>,
    },
    Audit(Box<AuditEvent>),
    /// Retention: the audit events up to `up_to_seq` older than `before`.
    PruneAudit {
        up_to_seq: i64,
        before: Timestamp,
    },
    /// Webhook endpoints, deliveries and the dispatcher's cursor (`super::webhooks`).
    Webhook(Box<super::webhooks::WebhookOp>),
}

pub(super) fn apply_op(tx: &rusqlite::Transaction<'_>, op: &WriteOp) -> rusqlite::Result<()> {
    match op {
        WriteOp::Webhook(op) => super::webhooks::apply(tx, op)?,
        WriteOp::PruneAudit { up_to_seq, before } => {
            tx.prepare_cached("DELETE FROM audit_events WHERE seq <= ?1 AND at < ?2")?
                .execute(params![up_to_seq, before.millis()])?;
        }
        WriteOp::Setting(k, v) => {
            tx.prepare_cached("INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)")?
                .execute(params![k, v])?;
        }
        WriteOp::Account(a) => {
            tx.prepare_cached("INSERT INTO accounts (id, name, created_at) VALUES (?1, ?2, ?3)")?
                .execute(params![a.id, a.name, a.created_at.millis()])?;
        }
        WriteOp::Credential(c) => {
            let (account_id, username) = principal_columns(&c.principal);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO credentials (hash, kind, account_id, username, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                &c.hash[..],
                c.principal.kind_str(),
                account_id,
                username,
                c.expires_at.map(Timestamp::millis)
            ])?;
        }
        WriteOp::DeleteCredential(hash) => {
            tx.prepare_cached("DELETE FROM credentials WHERE hash = ?1")?
                .execute(params![&hash[..]])?;
        }
        WriteOp::User(u) => {
            // An upsert, not a replace: the row's floor (`end_below`) stays.
            tx.prepare_cached(
                "INSERT INTO users
                 (account_id, username, kind, active, client_id, client_secret_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (account_id, username) DO UPDATE SET kind = excluded.kind,
                     active = excluded.active, client_id = excluded.client_id,
                     client_secret_hash = excluded.client_secret_hash,
                     created_at = excluded.created_at",
            )?
            .execute(params![
                u.account_id,
                u.username,
                u.kind.as_str(),
                u.active,
                u.client_id,
                u.client_secret_hash.map(|h| h.to_vec()),
                u.created_at.millis()
            ])?;
        }
        WriteOp::License(l) => {
            let terms = terms_json(&l.terms)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            tx.prepare_cached(
                "INSERT INTO licenses (id, account_id, model, terms, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET terms = excluded.terms, model = excluded.model",
            )?
            .execute(params![
                l.id,
                l.account_id,
                l.model.as_str(),
                terms,
                l.created_at.millis()
            ])?;
        }
        WriteOp::InsertSession { session: s, seq } => {
            tx.prepare_cached(
                "INSERT INTO sessions (id, license_id, username, kind, device_id, instance_id,
                                       opened_at, expires_at, hard_end, overdraft, license_end,
                                       seq, borrow_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                s.id,
                &*s.license_id,
                s.username,
                s.kind.as_str(),
                s.device_id,
                s.instance_id,
                s.clock.opened_at.millis(),
                s.clock.expires_at.millis(),
                s.clock.hard_end.map(Timestamp::millis),
                s.overdraft,
                s.clock.license_end.map(Timestamp::millis),
                seq_column(*seq),
                s.clock.borrow_until.map(Timestamp::millis)
            ])?;
        }
        WriteOp::Touch {
            id,
            expires_at,
            hard_end,
            license_end,
        } => {
            // `hard_end` moves only with a wall-clock step (`shift_live`). A touch made before
            // the license's end changed may hold a later expiry than the new end: the end caps
            // it whenever it is read (memory and `load` cap every session by its license's
            // current end), so the license's end on disk is what counts.
            tx.prepare_cached(
                "UPDATE sessions SET expires_at = ?2, license_end = ?3, hard_end = ?4
                 WHERE id = ?1 AND ended_at IS NULL",
            )?
            .execute(params![
                SidText::new(*id).as_str(),
                expires_at.millis(),
                license_end.map(Timestamp::millis),
                hard_end.map(Timestamp::millis)
            ])?;
        }
        WriteOp::LicenseFloor { license_id, floor } => {
            tx.prepare_cached(
                "UPDATE licenses SET end_below = ?2, end_reason = ?3, end_at = ?4 WHERE id = ?1",
            )?
            .execute(params![
                &**license_id,
                seq_column(floor.below),
                floor.reason.as_str(),
                floor.at.millis()
            ])?;
        }
        WriteOp::UserFloor {
            account_id,
            username,
            floor,
        } => {
            tx.prepare_cached(
                "UPDATE users SET end_below = ?3, end_at = ?4 WHERE account_id = ?1 AND username = ?2",
            )?
            .execute(params![
                account_id,
                username,
                seq_column(floor.below),
                floor.at.millis()
            ])?;
        }
        WriteOp::LicenseUserFloor {
            license_id,
            username,
            floor,
        } => {
            tx.prepare_cached(
                "UPDATE license_users SET end_below = ?3, end_at = ?4
                 WHERE license_id = ?1 AND username = ?2",
            )?
            .execute(params![
                &**license_id,
                username,
                seq_column(floor.below),
                floor.at.millis()
            ])?;
        }
        WriteOp::LicenseUser(u) => {
            // An upsert, not a replace: the row's floor (`end_below`) stays.
            tx.prepare_cached(
                "INSERT INTO license_users (license_id, username, active, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (license_id, username) DO UPDATE SET active = excluded.active,
                     updated_at = excluded.updated_at",
            )?
            .execute(params![
                u.license_id,
                u.username,
                u.active,
                u.updated_at.millis()
            ])?;
        }
        WriteOp::Device(d) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO license_devices (license_id, fingerprint, name, activated_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                d.license_id,
                d.fingerprint,
                d.name,
                d.activated_at.millis()
            ])?;
        }
        WriteOp::DeleteDevice {
            license_id,
            fingerprint,
        } => {
            tx.prepare_cached(
                "DELETE FROM license_devices WHERE license_id = ?1 AND fingerprint = ?2",
            )?
            .execute(params![license_id, fingerprint])?;
        }
        WriteOp::EndSession {
            id,
            at,
            reason,
            account_id,
            license_id,
            username,
            origin,
        } => {
            let id = SidText::new(*id);
            let ended = tx
                .prepare_cached(
                    "UPDATE sessions SET ended_at = ?2, end_reason = ?3 WHERE id = ?1 AND ended_at IS NULL",
                )?
                .execute(params![id.as_str(), at.millis(), reason.as_str()])?;
            if ended == 0 {
                return Ok(());
            }
            tx.prepare_cached(
                "INSERT INTO audit_events (at, account_id, license_id, session_id, username, event, detail,
                                           actor, request_id, client_addr)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'ended', ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                at.millis(),
                &**account_id,
                &**license_id,
                id.as_str(),
                &**username,
                reason.as_str(),
                origin.as_ref().and_then(|o| o.actor.as_deref()),
                origin.as_ref().and_then(|o| o.request_id.as_deref()),
                origin.as_ref().and_then(|o| o.client_addr.as_deref()),
            ])?;
        }
        WriteOp::Audit(e) => {
            tx.prepare_cached(
                "INSERT INTO audit_events (at, account_id, license_id, session_id, username, event, detail,
                                           actor, request_id, client_addr)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                e.at.millis(),
                e.account_id,
                e.license_id,
                e.session_id,
                e.username,
                e.event,
                e.detail,
                e.origin.actor,
                e.origin.request_id,
                e.origin.client_addr,
            ])?;
        }
    }
    Ok(())
}

/// A `seq` as the database stores it (SQLite integers are signed).
pub(super) fn seq_column(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
