//! What the SQLite backend answers from the database rather than memory: a session memory no
//! longer knows (ended more than a few minutes ago) and the audit log. Reads have their own
//! connection (`Reader`); in WAL mode they never wait for the writer.

use std::path::Path;
use std::sync::{Arc, Mutex};

use leasehold_core::session::SessionClock;
use leasehold_core::{SessionState, Timestamp};
use leasehold_proto::{EndReason, UserKind};
use rusqlite::{params, Connection, OptionalExtension};

use super::mem::EndedSession;
use super::schema::open_connection;
use crate::codec::{parse_end_reason, parse_kind, session_clock};
use crate::records::*;
use crate::StoreResult;

/// The reading connection.
pub(super) struct Reader(Mutex<Connection>);

impl Reader {
    pub(super) fn open(path: &Path) -> StoreResult<Self> {
        Ok(Reader(Mutex::new(open_connection(path)?)))
    }

    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let conn = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(&conn)?)
    }

    /// A session that is not live in memory, as its row says, with what memory still knows of
    /// its end (`ended`: its reason wins, even while the end is in flight).
    pub(super) fn session(
        &self,
        session_id: &str,
        ended: Option<EndedSession>,
    ) -> StoreResult<Option<SessionLookup>> {
        let row = self.read(|conn| {
            conn.prepare_cached(
                "SELECT s.license_id, l.account_id, s.username, s.kind, s.device_id, s.instance_id,
                        s.opened_at, s.expires_at, s.hard_end, s.end_reason, s.borrow_until
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
                    r.get::<_, Option<i64>>(10)?,
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
            borrow_until,
        )) = row
        else {
            // Ended before its row was written (a grant nobody received): what memory knows.
            return Ok(ended.map(|e| SessionLookup {
                session: Session {
                    id: session_id.to_owned(),
                    license_id: e.license_id,
                    account_id: e.account_id,
                    username: e.username,
                    kind: UserKind::Interactive,
                    device_id: String::new(),
                    instance_id: String::new(),
                    clock: SessionClock {
                        opened_at: Timestamp::from_millis(0),
                        expires_at: Timestamp::from_millis(0),
                        hard_end: None,
                        license_end: None,
                        license_end_reason: EndReason::LicenseExpired,
                        borrow_until: None,
                    },
                    heartbeat_interval_secs: 0,
                    overdraft: false,
                },
                state: SessionState::Ended(e.reason),
            }));
        };
        let state = match (reason, ended) {
            (_, Some(known)) => SessionState::Ended(known.reason),
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
                clock: session_clock(opened, expires, hard_end, None, borrow_until),
                heartbeat_interval_secs: 0,
                overdraft: false,
            },
            state,
        }))
    }

    /// The audit log of a license, oldest first, at most `limit` events.
    pub(super) fn audit_log(&self, license_id: &str, limit: usize) -> StoreResult<Vec<AuditEvent>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT at, account_id, license_id, session_id, username, event, detail,
                        actor, request_id, client_addr
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
                    origin: crate::Origin {
                        actor: r.get(7)?,
                        request_id: r.get(8)?,
                        client_addr: r.get(9)?,
                    },
                })
            })?;
            rows.collect()
        })
    }
}
