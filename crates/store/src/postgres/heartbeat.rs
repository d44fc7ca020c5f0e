//! Heartbeats, batched: one read of the sessions and their terms, `SessionClock::heartbeat` for
//! each, one guarded multi-row update of the new expiries. A session found expired ends at once
//! (and never comes back); one whose end is decided (under its license's floor, or past its
//! license's end: see `mass`) is answered ended and never slid.

use std::collections::HashMap;
use std::sync::Arc;

use leasehold_core::Timestamp;
use leasehold_proto::OnFull;
use sqlx::postgres::PgPool;
use sqlx::Row;

use super::end::end_now;
use super::errors::clone_error;
use super::lanes::{Job, SessionBatch};
use super::mass::LIVE_UNDER_LICENSE;
use super::read::fetch_session;
use super::rows::{SessionRow, TermsCache, SESSION_COLS};
use crate::records::Session;
use crate::{StoreError, StoreResult};

/// Heartbeat batchers per node; a session always goes to the same one. One lane (as for ends
/// and point reads): a batch takes whatever arrived while the previous one ran, so one lane
/// makes batches twice as large as two lanes under the same load, and the statement a batch
/// costs (PostgreSQL's and the node's CPU per statement dominate) is paid half as often.
/// `leasehold bench pg` (3 nodes, 64 connections): two lanes each → one, CPU per heartbeat
/// (nodes + PostgreSQL) ~680 → ~390 µs, per checkout cycle ~1.8 → ~1.2 ms (BENCHMARKS.md).
pub(super) const HEARTBEAT_LANES: usize = 1;

/// A heartbeat: the session, and the time it was sent.
pub(super) struct Beat {
    pub(super) session_id: String,
    pub(super) now: Timestamp,
    /// The account and user the caller says the session is theirs (`Store::heartbeat_owned`),
    /// checked by the batch's own read: the point read such a request used to start with is
    /// folded into the batch. Another account's session is not found; another user's of the
    /// same account is answered as it is, not slid (the caller sees whose it is).
    pub(super) owner: Option<(Arc<str>, String)>,
}

/// What a batch answers an owned heartbeat whose session is not the caller's, or `None` when it
/// is (or nobody is asking).
fn foreign(beat: &Beat, row: &SessionRow) -> Option<StoreResult<Session>> {
    let (account_id, username) = beat.owner.as_ref()?;
    if row.session.account_id != *account_id {
        return Some(Err(StoreError::NotFound("session")));
    }
    (row.session.username != *username).then(|| Ok(row.session.clone()))
}

/// A request of a heartbeat lane.
pub(super) type HeartbeatJob = Job<Beat, Session>;

impl SessionBatch for Beat {
    const KIND: &'static str = "heartbeat";

    /// One heartbeat batch: one read, one guarded multi-row update (its own commit). The
    /// queueing licenses of sessions it found expired (and ended) go to `serve`.
    async fn run(
        pool: &PgPool,
        cache: &TermsCache,
        jobs: &[HeartbeatJob],
        serve: &mut HashMap<String, Timestamp>,
    ) -> Result<Vec<StoreResult<Session>>, sqlx::Error> {
        let ids: Vec<String> = jobs.iter().map(|j| j.ask.session_id.clone()).collect();
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLS} FROM sessions s JOIN licenses l ON l.id = s.license_id
             WHERE s.id = ANY($1)"
        ))
        .bind(&ids)
        .fetch_all(pool)
        .await?;
        let mut found: HashMap<String, StoreResult<SessionRow>> = HashMap::new();
        for row in &rows {
            let id: String = row.try_get(0)?;
            found.insert(id, SessionRow::read(row, cache));
        }
        // Each job's new expiry, computed by the core rule; the store keeps the latest per session.
        // `slid[i]`: job i's session is to be slid (its answer is the expiry stored after).
        let mut results: Vec<StoreResult<Session>> = Vec::with_capacity(jobs.len());
        let mut slid: Vec<bool> = Vec::with_capacity(jobs.len());
        let mut updates: HashMap<String, (i64, i64)> = HashMap::new();
        let mut expired: Vec<(String, i64, &'static str)> = Vec::new();
        for job in jobs {
            let beat = &job.ask;
            let row = match found.get(&beat.session_id) {
                None => Err(StoreError::NotFound("session")),
                Some(Err(e)) => Err(clone_error(e)),
                Some(Ok(row)) => Ok(row),
            };
            let foreign = row.as_ref().ok().and_then(|row| foreign(beat, row));
            slid.push(foreign.is_none() && row.as_ref().is_ok_and(|r| r.ended.is_none()));
            let result = match (row, foreign) {
                (Err(e), _) => Err(e),
                (Ok(_), Some(answer)) => answer,
                (Ok(row), None) if row.ended.is_some() => Err(row.ended_error()),
                (Ok(row), None) => {
                    let mut session = row.session.clone();
                    match session.clock.heartbeat(&row.terms, beat.now) {
                        Ok(exp) => {
                            let entry = updates
                                .entry(session.id.clone())
                                .or_insert((exp.millis(), beat.now.millis()));
                            if exp.millis() > entry.0 {
                                *entry = (exp.millis(), beat.now.millis());
                            }
                            Ok(session)
                        }
                        Err(e) => {
                            // Expired but not reaped yet: it ends now and never comes back.
                            let reason = session.clock.expiry_reason().as_str();
                            expired.push((session.id.clone(), beat.now.millis(), reason));
                            if row.terms.on_full == OnFull::Queue {
                                serve.insert(session.license_id.to_string(), beat.now);
                            }
                            Err(e.into())
                        }
                    }
                }
            };
            results.push(result);
        }
        end_now(pool, expired).await?;
        if updates.is_empty() {
            return Ok(results);
        }
        let (mut u_ids, mut u_exp, mut u_now) = (Vec::new(), Vec::new(), Vec::new());
        let mut sorted: Vec<(String, (i64, i64))> = updates.into_iter().collect();
        sorted.sort();
        for (id, (exp, now)) in sorted {
            u_ids.push(id);
            u_exp.push(exp);
            u_now.push(now);
        }
        let rows = sqlx::query(&format!(
            "UPDATE sessions s SET expires_at = GREATEST(s.expires_at, v.exp)
             FROM unnest($1::text[], $2::int8[], $3::int8[]) AS v(id, exp, now), licenses l
             WHERE s.id = v.id AND s.ended_at IS NULL AND s.expires_at > v.now
               AND l.id = s.license_id AND {LIVE_UNDER_LICENSE}
             RETURNING s.id, s.expires_at"
        ))
        .bind(u_ids)
        .bind(u_exp)
        .bind(u_now)
        .fetch_all(pool)
        .await?;
        let mut stored: HashMap<String, i64> = HashMap::new();
        for row in &rows {
            stored.insert(row.try_get(0)?, row.try_get(1)?);
        }
        for (result, _) in results.iter_mut().zip(&slid).filter(|(_, slid)| **slid) {
            let Ok(session) = result else { continue };
            match stored.get(&session.id) {
                // Answer what is stored: that is what every other node relies on.
                Some(&exp) => session.clock.expires_at = Timestamp::from_millis(exp),
                None => {
                    // Ended or expired between the read and the update: it stays ended.
                    let id = session.id.clone();
                    let reason = match fetch_session(pool, cache, &id).await {
                        Ok(Some(row)) => Some(row.ended_error()),
                        Ok(None) => Some(StoreError::NotFound("session")),
                        Err(e) => Some(e),
                    };
                    if let Some(e) = reason {
                        *result = Err(e);
                    }
                }
            }
        }
        Ok(results)
    }
}
