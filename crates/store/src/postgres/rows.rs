//! Rows as the PostgreSQL backend reads and writes them: the columns each reader expects, the
//! readers (sessions with their terms, licenses, users, credentials, registrations, audit
//! events), the node's cache of parsed license terms, and audit events batched for one insert.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use leasehold_core::session::SessionClock;
use leasehold_core::{LicenseTerms, RuleError, Timestamp};
use leasehold_proto::EndReason;
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row};

use super::errors::db_error;
use crate::codec::{
    hash_from, parse_end_reason, parse_kind, parse_model, parse_terms, principal_from,
    session_clock,
};
use crate::records::*;
use crate::{StoreError, StoreResult};

/// Runs `query` and reads every row it answers with `read`, in order.
pub(super) async fn fetch_rows<T>(
    query: Query<'_, Postgres, PgArguments>,
    pool: &PgPool,
    read: impl FnMut(&PgRow) -> Result<T, sqlx::Error>,
) -> StoreResult<Vec<T>> {
    let rows = query.fetch_all(pool).await.map_err(db_error)?;
    rows.iter()
        .map(read)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(db_error)
}

/// Runs `query` (of `SESSION_COLS`) and reads the sessions it answers, in order.
pub(super) async fn fetch_sessions(
    query: Query<'_, Postgres, PgArguments>,
    pool: &PgPool,
    cache: &TermsCache,
) -> StoreResult<Vec<Session>> {
    let rows = query.fetch_all(pool).await.map_err(db_error)?;
    rows.iter()
        .map(|r| SessionRow::read(r, cache).map(|row| row.session))
        .collect()
}

/// Parsed license terms, cached per node by the exact JSON text stored: a PATCH from any node
/// changes the text, so a stale entry is never used.
#[derive(Default)]
pub(super) struct TermsCache(Mutex<HashMap<String, (String, Arc<LicenseTerms>)>>);

impl TermsCache {
    /// The terms stored as `json` for `license_id`, parsed once per text.
    pub(super) fn get(&self, license_id: &str, json: &str) -> StoreResult<Arc<LicenseTerms>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((text, terms)) = map.get(license_id) {
            if text == json {
                return Ok(terms.clone());
            }
        }
        let terms = Arc::new(parse_terms(license_id, json)?);
        map.insert(license_id.to_owned(), (json.to_owned(), terms.clone()));
        Ok(terms)
    }

    /// The terms as an owned value (for a `License`).
    pub(super) fn owned(&self, license_id: &str, json: &str) -> StoreResult<LicenseTerms> {
        Ok((*self.get(license_id, json)?).clone())
    }
}

// ---- sessions ----

/// Columns of a session joined with its license, in the order `SessionRow::read` expects.
pub(super) const SESSION_COLS: &str = "s.id, s.license_id, l.account_id, s.username, s.kind, \
     s.device_id, s.instance_id, s.opened_at, s.expires_at, s.hard_end, s.ended_at, \
     s.end_reason, l.terms, s.overdraft, s.license_end, s.seq, l.end_below, l.end_reason, \
     s.borrow_until";

/// How many columns `SESSION_COLS` has (a query may select more after them).
pub(super) const SESSION_COLS_N: usize = 19;

/// A session as stored, live or ended, with its license's terms.
#[derive(Clone)]
pub(super) struct SessionRow {
    /// The session; its expiry capped by its license's current end.
    pub(super) session: Session,
    /// Why it ended, once it has, or once its end is decided: a live row under its license's
    /// floor (see `mass`) is ended for every caller, and its row is ended by the reaper.
    pub(super) ended: Option<EndReason>,
    pub(super) terms: Arc<LicenseTerms>,
}

impl SessionRow {
    /// Reads a row of `SESSION_COLS`.
    pub(super) fn read(row: &PgRow, cache: &TermsCache) -> StoreResult<Self> {
        let get = |e: sqlx::Error| StoreError::Unavailable(format!("reading a session: {e}"));
        let license_id: String = row.try_get(1).map_err(get)?;
        let terms_text: String = row.try_get(12).map_err(get)?;
        let terms = cache.get(&license_id, &terms_text)?;
        let ended_at: Option<i64> = row.try_get(10).map_err(get)?;
        let end_reason: Option<String> = row.try_get(11).map_err(get)?;
        let seq: i64 = row.try_get(15).map_err(get)?;
        let floor: i64 = row.try_get(16).map_err(get)?;
        let floor_reason: Option<String> = row.try_get(17).map_err(get)?;
        let decided = (seq < floor).then_some(floor_reason);
        let ended = match (ended_at, decided) {
            (Some(_), _) => Some(end_reason),
            (None, Some(floor_reason)) => Some(floor_reason),
            (None, None) => None,
        }
        .map(|reason| {
            reason
                .as_deref()
                .map_or(EndReason::Unknown, parse_end_reason)
        });
        let kind: String = row.try_get(4).map_err(get)?;
        let session = Session {
            id: row.try_get(0).map_err(get)?,
            license_id: Arc::from(license_id.as_str()),
            account_id: Arc::from(row.try_get::<String, _>(2).map_err(get)?.as_str()),
            username: row.try_get(3).map_err(get)?,
            kind: parse_kind(&kind),
            device_id: row.try_get(5).map_err(get)?,
            instance_id: row.try_get(6).map_err(get)?,
            clock: capped(
                session_clock(
                    row.try_get(7).map_err(get)?,
                    row.try_get(8).map_err(get)?,
                    row.try_get(9).map_err(get)?,
                    row.try_get(14).map_err(get)?,
                    row.try_get(18).map_err(get)?,
                ),
                &terms,
            ),
            heartbeat_interval_secs: terms.heartbeat_interval_secs(),
            overdraft: row.try_get(13).map_err(get)?,
        };
        Ok(SessionRow {
            session,
            ended,
            terms,
        })
    }

    /// The error of a call on this session once it has ended (or expired, not reaped yet).
    pub(super) fn ended_error(&self) -> StoreError {
        let reason = self
            .ended
            .unwrap_or_else(|| self.session.clock.expiry_reason());
        StoreError::Rule(RuleError::SessionEnded(reason))
    }
}

/// A session's timing capped by its license's current end: a license's end ends its sessions
/// from that instant, before the reaper writes their ends (see `mass`).
pub(super) fn capped(mut clock: SessionClock, terms: &LicenseTerms) -> SessionClock {
    clock.cap_at_end_of(terms);
    clock
}

// ---- licenses ----

/// Columns of a license, in the order `LicenseRow::read` expects.
pub(super) const LICENSE_COLS: &str = "id, account_id, model, terms, created_at";

/// A license row, its model and terms not parsed yet.
pub(super) struct LicenseRow {
    pub(super) id: String,
    account_id: String,
    model: String,
    terms: String,
    created_at: i64,
}

impl LicenseRow {
    /// Reads a row of `LICENSE_COLS`.
    pub(super) fn read(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(LicenseRow {
            id: row.try_get(0)?,
            account_id: row.try_get(1)?,
            model: row.try_get(2)?,
            terms: row.try_get(3)?,
            created_at: row.try_get(4)?,
        })
    }

    /// The license, its terms parsed by `terms` (from the license id and the stored JSON).
    pub(super) fn parse(
        self,
        terms: impl FnOnce(&str, &str) -> StoreResult<LicenseTerms>,
    ) -> StoreResult<License> {
        let model = parse_model(&self.id, &self.model)?;
        let terms = terms(&self.id, &self.terms)?;
        Ok(License {
            id: self.id,
            account_id: self.account_id,
            model,
            terms,
            created_at: Timestamp::from_millis(self.created_at),
        })
    }
}

// ---- users and credentials ----

/// Columns of a user, in the order `user_from` expects.
pub(super) const USER_COLS: &str =
    "account_id, username, kind, active, client_id, client_secret_hash, created_at";

/// Reads a row of `USER_COLS`.
pub(super) fn user_from(row: &PgRow) -> Result<User, sqlx::Error> {
    Ok(User {
        account_id: row.try_get(0)?,
        username: row.try_get(1)?,
        kind: parse_kind(&row.try_get::<String, _>(2)?),
        active: row.try_get(3)?,
        client_id: row.try_get(4)?,
        client_secret_hash: row.try_get::<Option<Vec<u8>>, _>(5)?.and_then(hash_from),
        created_at: Timestamp::from_millis(row.try_get(6)?),
    })
}

/// Stores a credential, replacing one with the same hash.
pub(super) const INSERT_CREDENTIAL: &str =
    "INSERT INTO credentials (hash, kind, account_id, username, expires_at)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (hash) DO UPDATE SET kind = excluded.kind, account_id = excluded.account_id,
         username = excluded.username, expires_at = excluded.expires_at";

/// Columns of a credential, in the order `credential_from` expects.
pub(super) const CREDENTIAL_COLS: &str = "hash, kind, account_id, username, expires_at";

/// Reads a row of `CREDENTIAL_COLS`; `None` when its hash or principal cannot be read.
pub(super) fn credential_from(row: &PgRow) -> Result<Option<Credential>, sqlx::Error> {
    let Some(hash) = hash_from(row.try_get(0)?) else {
        return Ok(None);
    };
    let kind: String = row.try_get(1)?;
    let Some(principal) = principal_from(&kind, row.try_get(2)?, row.try_get(3)?) else {
        return Ok(None);
    };
    let expires_at: Option<i64> = row.try_get(4)?;
    Ok(Some(Credential {
        hash,
        principal,
        expires_at: expires_at.map(Timestamp::from_millis),
    }))
}

// ---- registrations (licensing models) ----

/// Reads a row of `license_id, username, active, updated_at`.
pub(super) fn license_user_from(row: &PgRow) -> Result<LicenseUser, sqlx::Error> {
    Ok(LicenseUser {
        license_id: row.try_get(0)?,
        username: row.try_get(1)?,
        active: row.try_get(2)?,
        updated_at: Timestamp::from_millis(row.try_get(3)?),
    })
}

/// Reads a row of `license_id, fingerprint, name, activated_at`.
pub(super) fn device_from(row: &PgRow) -> Result<DeviceActivation, sqlx::Error> {
    Ok(DeviceActivation {
        license_id: row.try_get(0)?,
        fingerprint: row.try_get(1)?,
        name: row.try_get(2)?,
        activated_at: Timestamp::from_millis(row.try_get(3)?),
    })
}

// ---- the audit log ----

/// Reads a row of `at, account_id, license_id, session_id, username, event, detail`.
pub(super) fn audit_event_from(row: &PgRow) -> Result<AuditEvent, sqlx::Error> {
    audit_event_from_offset(row, 0)
}

/// An audit event whose columns start at column `first` of the row.
pub(super) fn audit_event_from_offset(
    row: &PgRow,
    first: usize,
) -> Result<AuditEvent, sqlx::Error> {
    Ok(AuditEvent {
        at: Timestamp::from_millis(row.try_get(first)?),
        account_id: row.try_get(first + 1)?,
        license_id: row.try_get(first + 2)?,
        session_id: row.try_get(first + 3)?,
        username: row.try_get(first + 4)?,
        event: row.try_get(first + 5)?,
        detail: row.try_get(first + 6)?,
        origin: crate::Origin {
            actor: row.try_get(first + 7)?,
            request_id: row.try_get(first + 8)?,
            client_addr: row.try_get(first + 9)?,
        },
    })
}

/// Audit events to write, as column arrays for one multi-row `INSERT … SELECT unnest(…)`.
#[derive(Default)]
pub(super) struct AuditRows {
    pub(super) at: Vec<i64>,
    pub(super) account_id: Vec<String>,
    pub(super) license_id: Vec<String>,
    pub(super) session_id: Vec<Option<String>>,
    pub(super) username: Vec<Option<String>>,
    pub(super) event: Vec<String>,
    pub(super) detail: Vec<Option<String>>,
    pub(super) actor: Vec<Option<String>>,
    pub(super) request_id: Vec<Option<String>>,
    pub(super) client_addr: Vec<Option<String>>,
}

impl AuditRows {
    /// The rows of one event.
    pub(super) fn of(e: AuditEvent) -> Self {
        let mut rows = AuditRows::default();
        rows.push(e);
        rows
    }

    pub(super) fn push(&mut self, e: AuditEvent) {
        self.at.push(e.at.millis());
        self.account_id.push(e.account_id);
        self.license_id.push(e.license_id);
        self.session_id.push(e.session_id);
        self.username.push(e.username);
        self.event.push(e.event);
        self.detail.push(e.detail);
        self.actor.push(e.origin.actor);
        self.request_id.push(e.origin.request_id);
        self.client_addr.push(e.origin.client_addr);
    }

    fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

const INSERT_AUDIT: &str = "INSERT INTO audit_events
     (at, account_id, license_id, session_id, username, event, detail, actor, request_id, client_addr)
     SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                          $8::text[], $9::text[], $10::text[])";

/// Writes `rows` in one statement (none when there are none).
pub(super) async fn insert_audit(
    conn: &mut sqlx::PgConnection,
    rows: AuditRows,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(INSERT_AUDIT)
        .bind(rows.at)
        .bind(rows.account_id)
        .bind(rows.license_id)
        .bind(rows.session_id)
        .bind(rows.username)
        .bind(rows.event)
        .bind(rows.detail)
        .bind(rows.actor)
        .bind(rows.request_id)
        .bind(rows.client_addr)
        .execute(conn)
        .await?;
    Ok(())
}
