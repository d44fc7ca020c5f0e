//! Heartbeats. Most are answered from this node's memory (`hold`): the session is held and the
//! node's ends feed is fresh; the flusher writes their expiries once a second (`flush`). The
//! others go to the node's heartbeat lane, batched: a held session memory could not answer
//! (the feed is late, or memory finds it expired) is slid by one guarded multi-row update of
//! the batch, without reading it first; a session this node does not hold is read first (one
//! query for the batch: its row and its license's terms), then slid by the same update. What
//! the update finds live is held.
//!
//! A session the core rule finds expired ends at once (and never comes back) when its stored
//! expiry is `REAP_LAG_MS` past; otherwise another node may hold a later expiry not written
//! yet, so the heartbeat is asked again `REAP_LAG_MS` later (by then any such expiry is on
//! disk) and then settled: slid if it is live after all, ended if not. A session whose end is
//! decided (under its license's floor, or past its license's end: see `mass`) is answered
//! ended and never slid.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold_core::{LicenseTerms, Timestamp};
use leasehold_proto::OnFull;
use sqlx::postgres::PgPool;
use sqlx::Row;
use tokio::sync::mpsc;

use super::end::end_now;
use super::errors::clone_error;
use super::flush::flush_sql;
use super::hold::{Hold, LicenseMark, REAP_LAG_MS};
use super::lanes::{answer_each, Job, Lane};
use super::queue::QueueCtx;
use super::read::fetch_session;
use super::rows::{SessionRow, TermsCache, SESSION_COLS, SESSION_COLS_N};
use crate::records::Session;
use crate::{StoreError, StoreResult};

/// Heartbeat batchers per node; a session always goes to the same one. One lane (as for ends
/// and point reads): a batch takes whatever arrived while the previous one ran, so one lane
/// makes batches twice as large as two lanes under the same load, and the statement a batch
/// costs (PostgreSQL's and the node's CPU per statement dominate) is paid half as often.
pub(super) const HEARTBEAT_LANES: usize = 1;

/// How long a heartbeat batch waits for more after its first heartbeat.
const LINGER: Duration = Duration::from_millis(5);

/// A heartbeat: the session, and the time it was sent.
pub(super) struct Beat {
    pub(super) session_id: String,
    pub(super) now: Timestamp,
    /// The account and user the caller says the session is theirs (`Store::heartbeat_owned`),
    /// checked by the batch's own read: the point read such a request used to start with is
    /// folded into the batch. Another account's session is not found; another user's of the
    /// same account is answered as it is, not slid (the caller sees whose it is).
    pub(super) owner: Option<(Arc<str>, String)>,
    /// Asked again after `REAP_LAG_MS`: a session still found expired ends now.
    pub(super) settle: bool,
}

/// What a batch answers an owned heartbeat whose session is not the caller's, or `None` when it
/// is (or nobody is asking).
fn foreign(beat: &Beat, session: &Session) -> Option<StoreResult<Session>> {
    let (account_id, username) = beat.owner.as_ref()?;
    if session.account_id != *account_id {
        return Some(Err(StoreError::NotFound("session")));
    }
    (session.username != *username).then(|| Ok(session.clone()))
}

/// A request of a heartbeat lane.
pub(super) type HeartbeatJob = Job<Beat, Session>;

/// What a batch decided for one heartbeat: its answer, or `None` when it is asked again
/// later (expired by its stored expiry, but within `REAP_LAG_MS` of it).
pub(super) type Outcome = Option<StoreResult<Session>>;

/// The heartbeat lane: batches of what memory could not answer (see the module doc).
pub(super) struct HeartbeatLane {
    pool: PgPool,
    cache: Arc<TermsCache>,
    queue: Arc<QueueCtx>,
    hold: Arc<Hold>,
    /// The lane's own channel, for heartbeats asked again (weak: the lane stops with the store).
    again: mpsc::WeakSender<HeartbeatJob>,
    serve: HashMap<String, Timestamp>,
}

impl HeartbeatLane {
    pub(super) fn new(
        pool: PgPool,
        cache: Arc<TermsCache>,
        queue: Arc<QueueCtx>,
        hold: Arc<Hold>,
        again: mpsc::WeakSender<HeartbeatJob>,
    ) -> Self {
        HeartbeatLane {
            pool,
            cache,
            queue,
            hold,
            again,
            serve: HashMap::new(),
        }
    }
}

/// A heartbeat to slide: its session (with the new expiry), terms and their hash.
struct Slide {
    job: usize,
    /// When its heartbeat was sent.
    now: Timestamp,
    session: Session,
    terms: Arc<LicenseTerms>,
    terms_hash: i32,
}

impl Lane for HeartbeatLane {
    type Job = HeartbeatJob;
    type Batch = Vec<HeartbeatJob>;
    type Done = Vec<Outcome>;
    const KIND: &'static str = "heartbeat";

    fn gather(&mut self, received: &mut Vec<Self::Job>) -> Self::Batch {
        std::mem::take(received)
    }

    /// What reaches this lane is a heartbeat memory could not answer: most often one of a
    /// session heartbeating every minute or so, for which a few milliseconds are nothing and a
    /// statement shared by more of them is much cheaper.
    fn linger(&self) -> Duration {
        LINGER
    }

    async fn run(&mut self, jobs: &Self::Batch) -> Result<Self::Done, sqlx::Error> {
        run_batch(&self.pool, &self.cache, &self.hold, jobs, &mut self.serve).await
    }

    fn report(&self, jobs: &Self::Batch, error: &sqlx::Error) {
        tracing::warn!(error = %error, jobs = jobs.len(), "heartbeat batch failed");
    }

    fn answer(&mut self, jobs: Self::Batch, done: StoreResult<Self::Done>) {
        // Freed seats of queueing licenses go to their waiters: the open lane serves them.
        for (license_id, now) in self.serve.drain() {
            self.queue.serve(&license_id, now);
        }
        let outcomes = match done {
            Ok(outcomes) => outcomes,
            Err(e) => return answer_each(jobs, Err(e)),
        };
        for (mut job, outcome) in jobs.into_iter().zip(outcomes) {
            match outcome {
                Some(result) => job.answer(result),
                None => {
                    job.ask.settle = true;
                    let again = self.again.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(REAP_LAG_MS as u64)).await;
                        match again.upgrade() {
                            Some(lane) => {
                                if let Err(mpsc::error::SendError(job)) = lane.send(job).await {
                                    job.answer(Err(stopped()));
                                }
                            }
                            None => job.answer(Err(stopped())),
                        }
                    });
                }
            }
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the heartbeat batcher has stopped".into())
}

/// One batch: the read of the sessions not held, one guarded multi-row update (its own commit)
/// of every slide. The queueing licenses of sessions it found expired (and ended) go to `serve`.
async fn run_batch(
    pool: &PgPool,
    cache: &TermsCache,
    hold: &Hold,
    jobs: &[HeartbeatJob],
    serve: &mut HashMap<String, Timestamp>,
) -> Result<Vec<Outcome>, sqlx::Error> {
    // What the batch's statements find live is found so from this instant on (see `Hold::put`).
    let read_at = Instant::now();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(jobs.len());
    let mut slides: Vec<Slide> = Vec::new();
    let mut unknown: Vec<(usize, &Beat)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let beat = &job.ask;
        outcomes.push(Some(Err(StoreError::NotFound("session"))));
        let Some((mut session, terms, terms_hash)) = hold.get(&beat.session_id) else {
            unknown.push((i, beat));
            continue;
        };
        if let Some(answer) = foreign(beat, &session) {
            set(&mut outcomes, i, Some(answer));
            continue;
        }
        // Held: slid without a read when it is live by what this node knows; the update's
        // guard is the database's word.
        match session.clock.heartbeat(&terms, beat.now) {
            Ok(_) => slides.push(Slide {
                job: i,
                now: beat.now,
                session,
                terms,
                terms_hash,
            }),
            Err(_) => unknown.push((i, beat)),
        }
    }
    let mut expired: Vec<(String, i64, &'static str)> = Vec::new();
    if !unknown.is_empty() {
        let ids: Vec<&str> = unknown.iter().map(|(_, b)| b.session_id.as_str()).collect();
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLS}, hashtext(l.terms) FROM sessions s
             JOIN licenses l ON l.id = s.license_id WHERE s.id = ANY($1)"
        ))
        .bind(&ids)
        .fetch_all(pool)
        .await?;
        let mut found: HashMap<String, (StoreResult<SessionRow>, i32)> = HashMap::new();
        for row in &rows {
            let id: String = row.try_get(0)?;
            let hash: i32 = row.try_get(SESSION_COLS_N)?;
            found.insert(id, (SessionRow::read(row, cache), hash));
        }
        for (i, beat) in unknown {
            let outcome = match found.get(&beat.session_id) {
                None => Some(Err(StoreError::NotFound("session"))),
                Some((Err(e), _)) => Some(Err(clone_error(e))),
                Some((Ok(row), hash)) => {
                    match decide(beat, &with_held_expiry(hold, row), &mut expired, serve) {
                        Decision::Slide(session) => {
                            slides.push(Slide {
                                job: i,
                                now: beat.now,
                                session: *session,
                                terms: row.terms.clone(),
                                terms_hash: *hash,
                            });
                            continue;
                        }
                        Decision::Answer(answer) => Some(*answer),
                        Decision::Later => None,
                    }
                }
            };
            if outcome.is_some() {
                hold.forget(&beat.session_id);
            }
            set(&mut outcomes, i, outcome);
        }
    }
    end_now(pool, expired).await?;
    if !slides.is_empty() {
        write_slides(pool, cache, hold, slides, read_at, &mut outcomes).await?;
    }
    Ok(outcomes)
}

/// `row` with the later of its stored expiry and the one this node answered (not written yet):
/// what decides whether it expired, and why.
fn with_held_expiry(hold: &Hold, row: &SessionRow) -> SessionRow {
    let mut row = row.clone();
    if let Some(exp) = hold.expiry(&row.session.id) {
        if exp > row.session.clock.expires_at.millis() {
            row.session.clock.expires_at = Timestamp::from_millis(exp);
        }
    }
    row
}

/// Sets the outcome of job `i`.
fn set(outcomes: &mut [Outcome], i: usize, outcome: Outcome) {
    if let Some(slot) = outcomes.get_mut(i) {
        *slot = outcome;
    }
}

/// What a heartbeat of a session read from the database does.
enum Decision {
    /// Slide it: the session with its new expiry.
    Slide(Box<Session>),
    Answer(Box<StoreResult<Session>>),
    /// Asked again `REAP_LAG_MS` later.
    Later,
}

/// What a heartbeat of a session read from the database does (see `Decision`).
fn decide(
    beat: &Beat,
    row: &SessionRow,
    expired: &mut Vec<(String, i64, &'static str)>,
    serve: &mut HashMap<String, Timestamp>,
) -> Decision {
    if let Some(answer) = foreign(beat, &row.session) {
        return Decision::Answer(Box::new(answer));
    }
    if row.ended.is_some() {
        return Decision::Answer(Box::new(Err(row.ended_error())));
    }
    let mut session = row.session.clone();
    let stored = session.clock.expires_at.millis();
    match session.clock.heartbeat(&row.terms, beat.now) {
        Ok(_) => Decision::Slide(Box::new(session)),
        // Expired as stored, but another node may hold a later expiry not written yet.
        Err(_) if !beat.settle && stored > beat.now.millis() - REAP_LAG_MS => Decision::Later,
        Err(e) => {
            // Expired: it ends now and never comes back.
            let reason = session.clock.expiry_reason().as_str();
            expired.push((session.id.clone(), beat.now.millis(), reason));
            if row.terms.on_full == OnFull::Queue {
                serve.insert(session.license_id.to_string(), beat.now);
            }
            Decision::Answer(Box::new(Err(e.into())))
        }
    }
}

/// The guarded update of every slide (the flush's statement: the latest expiry per session),
/// then each answer: the expiry stored, held in memory; a session the update did not find live
/// is answered ended (and leaves memory).
async fn write_slides(
    pool: &PgPool,
    cache: &TermsCache,
    hold: &Hold,
    slides: Vec<Slide>,
    read_at: Instant,
    outcomes: &mut [Outcome],
) -> Result<(), sqlx::Error> {
    let mut latest: HashMap<&str, (i64, i64)> = HashMap::new();
    for s in &slides {
        let exp = s.session.clock.expires_at.millis();
        let now = s.now.millis();
        let entry = latest.entry(s.session.id.as_str()).or_insert((exp, now));
        if exp > entry.0 {
            *entry = (exp, now);
        }
    }
    let mut sorted: Vec<(&str, (i64, i64))> = latest.into_iter().collect();
    sorted.sort_unstable();
    let ids: Vec<&str> = sorted.iter().map(|(id, _)| *id).collect();
    let exps: Vec<i64> = sorted.iter().map(|(_, (e, _))| *e).collect();
    let nows: Vec<i64> = sorted.iter().map(|(_, (_, n))| *n).collect();
    let rows = sqlx::query(&flush_sql())
        .bind(&ids)
        .bind(&exps)
        .bind(&nows)
        .fetch_all(pool)
        .await?;
    let mut stored: HashMap<String, (i64, LicenseMark)> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let mark = (row.try_get(3)?, row.try_get(4)?, row.try_get(2)?);
        stored.insert(row.try_get(0)?, (row.try_get(1)?, mark));
    }
    for slide in slides {
        let outcome = match stored.get(&slide.session.id) {
            Some(&(exp, mark)) => {
                // Answer what is stored: that is what every other node relies on.
                let mut session = slide.session;
                session.clock.expires_at = Timestamp::from_millis(exp);
                if mark.2 == slide.terms_hash {
                    hold.put(session.clone(), slide.terms, mark, read_at);
                } else {
                    // Its terms changed on some node: read again next time.
                    hold.forget(&session.id);
                }
                Ok(session)
            }
            None => {
                // Ended, under a floor or reapable meanwhile: it stays ended.
                hold.forget(&slide.session.id);
                match fetch_session(pool, cache, &slide.session.id).await {
                    Ok(Some(row)) if row.ended.is_some() => Err(row.ended_error()),
                    Ok(Some(row)) => Err(StoreError::Rule(
                        leasehold_core::RuleError::SessionEnded(row.session.clock.expiry_reason()),
                    )),
                    Ok(None) => Err(StoreError::NotFound("session")),
                    Err(e) => Err(e),
                }
            }
        };
        set(outcomes, slide.job, Some(outcome));
    }
    Ok(())
}
