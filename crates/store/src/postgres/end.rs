//! Ending sessions: logouts and revokes, batched (one multi-row `UPDATE … RETURNING` that also
//! writes the `ended` events, guarded by `ended_at IS NULL AND expires_at > now`), and the ends
//! the other paths share: sessions found expired, and every live session of a user or device.
//! A session ends exactly once, with one `ended` event, whichever path on whichever node comes
//! first.

use std::collections::HashMap;

use leasehold_core::{RuleError, Timestamp};
use leasehold_proto::{EndReason, OnFull};
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};

use super::errors::{clone_error, db_error};
use super::lanes::{Job, SessionBatch};
use super::mass::LIVE_UNDER_LICENSE;
use super::read::fetch_session;
use super::rows::{insert_audit, AuditRows, SessionRow, TermsCache, SESSION_COLS};
use crate::admission;
use crate::records::Session;
use crate::{Origin, StoreError, StoreResult};

/// Logout/revoke batchers per node; a session always goes to the same one.
pub(super) const END_LANES: usize = 1;

/// A logout or revoke: the session, why it ends, and when.
pub(super) struct EndAsk {
    pub(super) session_id: String,
    pub(super) reason: EndReason,
    pub(super) now: Timestamp,
    /// The request that asks (taken in its task: the batch runs in the lane's).
    pub(super) origin: Origin,
}

/// A request of a logout lane.
pub(super) type EndJob = Job<EndAsk, Session>;

impl SessionBatch for EndAsk {
    const KIND: &'static str = "logout";

    /// One logout batch: a single statement ends every still-live session and writes its
    /// event. The queueing licenses of the sessions it ended go to `serve`.
    async fn run(
        pool: &PgPool,
        cache: &TermsCache,
        jobs: &[EndJob],
        serve: &mut HashMap<String, Timestamp>,
    ) -> Result<Vec<StoreResult<Session>>, sqlx::Error> {
        // The first request for a session ends it; a repeat in the same batch finds it ended.
        let mut first: HashMap<&str, usize> = HashMap::new();
        let (mut ids, mut reasons, mut nows) = (Vec::new(), Vec::new(), Vec::new());
        let (mut actors, mut request_ids, mut addrs) = (Vec::new(), Vec::new(), Vec::new());
        for (i, job) in jobs.iter().enumerate() {
            let end = &job.ask;
            if first.insert(end.session_id.as_str(), i).is_none() {
                ids.push(end.session_id.clone());
                reasons.push(end.reason.as_str());
                nows.push(end.now.millis());
                actors.push(end.origin.actor.as_deref());
                request_ids.push(end.origin.request_id.as_deref());
                addrs.push(end.origin.client_addr.as_deref());
            }
        }
        let rows = sqlx::query(&format!(
            "WITH v AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[],
                                      $6::text[])
                     AS v(id, reason, now, actor, request_id, client_addr)
             ), e AS (
                 UPDATE sessions s SET ended_at = v.now, end_reason = v.reason
                 FROM v, licenses l
                 WHERE s.id = v.id AND s.ended_at IS NULL AND s.expires_at > v.now
                   AND l.id = s.license_id AND {LIVE_UNDER_LICENSE}
                 RETURNING s.*
             ), a AS (
                 INSERT INTO audit_events (at, account_id, license_id, session_id, username, event,
                                           detail, actor, request_id, client_addr)
                 SELECT e.ended_at, l.account_id, e.license_id, e.id, e.username, 'ended',
                        e.end_reason, v.actor, v.request_id, v.client_addr
                 FROM e JOIN licenses l ON l.id = e.license_id JOIN v ON v.id = e.id
             )
             SELECT {SESSION_COLS} FROM e AS s JOIN licenses l ON l.id = s.license_id"
        ))
        .bind(ids)
        .bind(reasons)
        .bind(nows)
        .bind(actors)
        .bind(request_ids)
        .bind(addrs)
        .fetch_all(pool)
        .await?;
        let mut ended: HashMap<String, StoreResult<Session>> = HashMap::new();
        for row in &rows {
            let id: String = row.try_get(0)?;
            let read = SessionRow::read(row, cache);
            if let Ok(r) = &read {
                if r.terms.on_full == OnFull::Queue {
                    let now = first
                        .get(id.as_str())
                        .and_then(|&i| jobs.get(i))
                        .map_or(r.session.clock.opened_at, |j| j.ask.now);
                    serve.insert(r.session.license_id.to_string(), now);
                }
            }
            ended.insert(id, read.map(|r| r.session));
        }
        let mut results = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            let end = &job.ask;
            let first_job = first.get(end.session_id.as_str()).copied().unwrap_or(i);
            let result = match ended.get(&end.session_id) {
                Some(Ok(session)) if first_job == i => Ok(session.clone()),
                Some(Ok(_)) => {
                    let reason = jobs.get(first_job).map_or(end.reason, |j| j.ask.reason);
                    Err(StoreError::Rule(RuleError::SessionEnded(reason)))
                }
                Some(Err(e)) => Err(clone_error(e)),
                // Not live: tell why; an expired session not reaped yet ends now, with its reason.
                None => match fetch_session(pool, cache, &end.session_id).await {
                    Ok(Some(row)) => {
                        if row.ended.is_none() {
                            let reason = row.session.clock.expiry_reason().as_str();
                            end_now(
                                pool,
                                vec![(row.session.id.clone(), end.now.millis(), reason)],
                            )
                            .await?;
                            if row.terms.on_full == OnFull::Queue {
                                serve.insert(row.session.license_id.to_string(), end.now);
                            }
                        }
                        Err(row.ended_error())
                    }
                    Ok(None) => Err(StoreError::NotFound("session")),
                    Err(e) => Err(e),
                },
            };
            results.push(result);
        }
        Ok(results)
    }
}

/// Ends sessions found expired (`(id, now, reason)`) at once, with their `ended` events. The
/// end is guarded like the reaper's (`ended_at IS NULL`, under the row lock): whichever of a
/// heartbeat, a logout or a reaper on any node comes first ends a session, exactly once.
pub(super) async fn end_now(
    pool: &PgPool,
    expired: Vec<(String, i64, &'static str)>,
) -> Result<(), sqlx::Error> {
    if expired.is_empty() {
        return Ok(());
    }
    let (mut ids, mut nows, mut reasons) = (Vec::new(), Vec::new(), Vec::new());
    for (id, now, reason) in expired {
        ids.push(id);
        nows.push(now);
        reasons.push(reason);
    }
    sqlx::query(
        "WITH e AS (
             UPDATE sessions s SET ended_at = v.now, end_reason = v.reason
             FROM unnest($1::text[], $2::int8[], $3::text[]) AS v(id, now, reason)
             WHERE s.id = v.id AND s.ended_at IS NULL AND s.expires_at <= v.now
             RETURNING s.id, s.license_id, s.username, v.now AS at, v.reason AS reason
         )
         INSERT INTO audit_events (at, account_id, license_id, session_id, username, event, detail)
         SELECT e.at, l.account_id, e.license_id, e.id, e.username, 'ended', e.reason
         FROM e JOIN licenses l ON l.id = e.license_id",
    )
    .bind(ids)
    .bind(nows)
    .bind(reasons)
    .execute(pool)
    .await?;
    Ok(())
}

/// Ends `sessions` (locked by the caller's transaction, still live) because they expired, and
/// queues their `ended` events.
pub(super) async fn end_expired(
    tx: &mut Transaction<'_, Postgres>,
    sessions: &[Session],
    now: Timestamp,
    audit: &mut AuditRows,
) -> Result<(), sqlx::Error> {
    if sessions.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = sessions.iter().map(|s| s.id.clone()).collect();
    let reasons: Vec<&'static str> = sessions
        .iter()
        .map(|s| s.clock.expiry_reason().as_str())
        .collect();
    sqlx::query(
        "UPDATE sessions s SET ended_at = $1, end_reason = v.reason
         FROM unnest($2::text[], $3::text[]) AS v(id, reason)
         WHERE s.id = v.id AND s.ended_at IS NULL",
    )
    .bind(now.millis())
    .bind(ids)
    .bind(reasons)
    .execute(&mut **tx)
    .await?;
    for s in sessions {
        audit.push(admission::ended(s, now, s.clock.expiry_reason()));
    }
    Ok(())
}

/// Ends the live sessions matching `condition` (over `s` sessions and `l` licenses, with
/// parameters from `$3`) for `reason`, with their `ended` audit events. Sessions whose end is
/// decided already (under their license's floor) keep that end.
pub(super) async fn end_sessions(
    tx: &mut Transaction<'_, Postgres>,
    cache: &TermsCache,
    condition: &str,
    params: &[&str],
    reason: EndReason,
    now: Timestamp,
) -> StoreResult<Vec<Session>> {
    let sql = format!(
        "UPDATE sessions s SET ended_at = $1, end_reason = $2
         FROM licenses l
         WHERE l.id = s.license_id AND s.ended_at IS NULL AND s.seq >= l.end_below
           AND {condition}
         RETURNING {SESSION_COLS}"
    );
    let mut query = sqlx::query(&sql).bind(now.millis()).bind(reason.as_str());
    for p in params {
        query = query.bind(*p);
    }
    let rows = query.fetch_all(&mut **tx).await.map_err(db_error)?;
    let mut audit = AuditRows::default();
    let mut ended = Vec::with_capacity(rows.len());
    for row in &rows {
        let session = SessionRow::read(row, cache)?.session;
        audit.push(admission::ended(&session, now, reason));
        ended.push(session);
    }
    insert_audit(tx, audit).await.map_err(db_error)?;
    Ok(ended)
}
