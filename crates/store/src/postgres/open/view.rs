//! What an open batch reads under its license locks (steps 1–5 of `open_batch`): the licenses,
//! locked in id order; their queues' live waiters; the asking client instances' live sessions;
//! the expired sessions it reclaims; and the seat counts `crate::admission` decides on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use leasehold_core::{LicenseTerms, Timestamp};
use leasehold_proto::{LicenseModel, OnFull};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};

use super::OpenJob;
use crate::admission::{self, OpenedVia, SeatCounts};
use crate::codec::{parse_kind, parse_terms, session_clock};
use crate::postgres::borrow::count_borrowed;
use crate::postgres::end::end_expired;
use crate::postgres::hold::{Hold, LicenseMark};
use crate::postgres::mass::end_covered_instances;
use crate::postgres::rows::{capped, AuditRows, LicenseRow, LICENSE_COLS};
use crate::postgres::{LIVE_NODE, REAP_BATCH};
use crate::records::*;
use crate::StoreError;

mod census;

/// Most queue heads of one license one batch takes (the next batch goes on).
const QUEUE_HEADS: i64 = 64;

/// One license of an open batch: its (locked) record and the seat view being updated.
pub(in crate::postgres) struct LicState {
    pub(super) license: License,
    id: Arc<str>,
    account_id: Arc<str>,
    pub(super) live: u32,
    per_user: HashMap<String, u32>,
    pub(super) low_water: u32,
    pub(super) denials: i64,
    /// `registered_users`: active users, and the asking users that are active.
    active_users: u32,
    active_asking: HashSet<String>,
    /// `node_locked`: the asking devices that are activated.
    activated_asking: HashSet<String>,
    /// The batch counts and serves this license's queue (it queues, or was asked to serve).
    queue: bool,
    /// Live waiters not served yet: what `must_queue` and queue positions count.
    pub(super) waiting: u32,
    /// The longest live waiters, in ticket order (at most `QUEUE_HEADS`), locked.
    pub(super) heads: Vec<QueueHead>,
    /// The license's floor (see `mass`): its live sessions below it hold no seat.
    floor: i64,
    /// Sessions may still be under the floor.
    floor_pending: bool,
    /// What the ends feed reads of the license (floor, end, hash of the terms), as locked: the
    /// sessions the batch opens are held in memory under it (`hold`).
    pub(super) mark: LicenseMark,
    /// Live borrows, counted only when a borrow of the batch asks for the license
    /// (`borrow::count_borrowed`).
    pub(in crate::postgres) borrowed: u32,
}

/// The counts the batch read under the license's lock, updated as it grants. Registrations are
/// known for the asking users and devices only (see `model_views`).
impl SeatCounts for LicState {
    fn terms(&self) -> &LicenseTerms {
        &self.license.terms
    }

    fn live_sessions(&self) -> u32 {
        self.live
    }

    fn user_live_sessions(&self, username: &str) -> u32 {
        self.per_user.get(username).copied().unwrap_or(0)
    }

    fn active_users(&self) -> u32 {
        self.active_users
    }

    fn user_active(&self, username: &str) -> bool {
        self.active_asking.contains(username)
    }

    fn device_activated(&self, device_id: &str) -> bool {
        self.activated_asking.contains(device_id)
    }
}

impl LicState {
    /// A locked license, before anything is counted; `queue` when the batch serves its queue.
    fn new(license: License, queue: bool) -> Self {
        LicState {
            id: Arc::from(license.id.as_str()),
            account_id: Arc::from(license.account_id.as_str()),
            license,
            live: 0,
            per_user: HashMap::new(),
            low_water: 0,
            denials: 0,
            active_users: 0,
            active_asking: HashSet::new(),
            activated_asking: HashSet::new(),
            queue,
            waiting: 0,
            heads: Vec::new(),
            floor: 0,
            floor_pending: false,
            mark: (0, None, 0),
            borrowed: 0,
        }
    }

    /// The license's floor (see `mass`).
    pub(in crate::postgres) fn floor(&self) -> i64 {
        self.floor
    }

    /// Takes a seat for `req` (granted by the caller): the new session, counted in the view,
    /// with its `opened` event.
    pub(super) fn take_seat(
        &mut self,
        req: &OpenRequest,
        overdraft: bool,
        now: Timestamp,
        via: OpenedVia,
        audit: &mut AuditRows,
    ) -> Session {
        let terms = &self.license.terms;
        let session = Session {
            id: req.new_id.clone(),
            license_id: self.id.clone(),
            account_id: self.account_id.clone(),
            username: req.username.clone(),
            kind: req.kind,
            device_id: req.device_id.clone(),
            instance_id: req.instance_id.clone(),
            clock: admission::new_clock(req, terms, now),
            heartbeat_interval_secs: terms.heartbeat_interval_secs(),
            overdraft,
        };
        self.live += 1;
        self.borrowed += u32::from(req.borrow_until.is_some());
        *self.per_user.entry(req.username.clone()).or_default() += 1;
        audit.push(admission::opened(&session, now, via, (*req.origin).clone()));
        session
    }

    /// A session of this license, read from a row of `PLAIN_SESSION_COLS` starting at column
    /// `at`.
    fn session(&self, row: &PgRow, at: usize) -> Result<Session, sqlx::Error> {
        Ok(Session {
            id: row.try_get(at)?,
            license_id: self.id.clone(),
            account_id: self.account_id.clone(),
            username: row.try_get(at + 2)?,
            kind: parse_kind(&row.try_get::<String, _>(at + 3)?),
            device_id: row.try_get(at + 4)?,
            instance_id: row.try_get(at + 5)?,
            clock: capped(
                session_clock(
                    row.try_get(at + 6)?,
                    row.try_get(at + 7)?,
                    row.try_get(at + 8)?,
                    row.try_get(at + 10)?,
                    row.try_get(at + 11)?,
                ),
                &self.license.terms,
            ),
            heartbeat_interval_secs: self.license.terms.heartbeat_interval_secs(),
            overdraft: row.try_get(at + 9)?,
        })
    }
}

/// Columns of a session of a locked license, as `LicState::session` reads them.
const PLAIN_SESSION_COLS: &str = "s.id, s.license_id, s.username, s.kind, s.device_id, \
     s.instance_id, s.opened_at, s.expires_at, s.hard_end, s.overdraft, s.license_end, \
     s.borrow_until";

/// The sessions of locked licenses in `rows` (of `PLAIN_SESSION_COLS`); rows of other
/// licenses are skipped.
fn sessions_of(
    lics: &HashMap<String, LicState>,
    rows: &[PgRow],
) -> Result<Vec<Session>, sqlx::Error> {
    let mut sessions = Vec::with_capacity(rows.len());
    for row in rows {
        let license_id: String = row.try_get(1)?;
        if let Some(lic) = lics.get(&license_id) {
            sessions.push(lic.session(row, 0)?);
        }
    }
    Ok(sessions)
}

/// A waiting queue entry at the head of its license's queue, locked by the batch.
pub(super) struct QueueHead {
    pub(super) ticket: i64,
    pub(super) node_id: String,
    pub(super) req: OpenRequest,
}

/// A client instance: license, user, device, instance.
pub(super) type InstanceKey = (String, String, String, String);

pub(super) fn instance_key(req: &OpenRequest) -> InstanceKey {
    (
        req.license_id.clone(),
        req.username.clone(),
        req.device_id.clone(),
        req.instance_id.clone(),
    )
}

/// What an open batch read under its license locks, updated as it decides.
pub(super) struct View {
    /// The locked licenses, by id.
    pub(super) lics: HashMap<String, LicState>,
    /// Licenses whose record cannot be read: their opens fail with the cause.
    pub(super) broken: HashMap<String, StoreError>,
    /// The live sessions of the asking client instances (locked).
    pub(super) existing: HashMap<InstanceKey, Session>,
    /// The account-level active flag of the asking users, by (account, username), read
    /// `FOR SHARE`: a deactivation waits for this batch, or this batch for it.
    pub(super) users: HashMap<(String, String), bool>,
}

/// Whether `username` of `account_id` is active, from `View::users` (`None`: no such user).
pub(super) fn user_active(
    users: &HashMap<(String, String), bool>,
    account_id: &str,
    username: &str,
) -> Option<bool> {
    users
        .get(&(account_id.to_owned(), username.to_owned()))
        .copied()
}

/// What a seat reclaim consults and writes: the expiries this node answered and has not
/// written yet (a session live there keeps its seat), and the events of the sessions it ends.
pub(super) struct Reclaim<'a> {
    pub(super) hold: &'a Hold,
    pub(super) audit: &'a mut AuditRows,
}

/// Steps 1–5: locks the batch's licenses and reads everything their decisions need. Expired
/// sessions it reclaims end here, their events in `audit`.
pub(super) async fn read(
    tx: &mut Transaction<'_, Postgres>,
    hold: &Hold,
    jobs: &[OpenJob],
    serve: &HashMap<String, Timestamp>,
    now: Timestamp,
    audit: &mut AuditRows,
) -> Result<View, sqlx::Error> {
    let (mut lics, broken) = lock_licenses(tx, jobs, serve).await?;
    let locked: Vec<String> = lics.keys().cloned().collect();
    queue_heads(tx, &mut lics, now).await?;
    let asking = asking_instances(jobs, &lics);
    // An asking instance's session under its license's floor ends here (it is no longer
    // live; its end was decided): the instance gets a new one.
    let under_floor: Vec<InstanceKey> = asking
        .iter()
        .filter(|k| lics.get(&k.0).is_some_and(|l| l.floor_pending))
        .cloned()
        .collect();
    let (users, existing) = if under_floor.is_empty() && !locked.is_empty() {
        census::read(
            tx,
            &mut lics,
            &locked,
            &asking,
            jobs,
            now,
            Reclaim { hold, audit },
        )
        .await?
    } else {
        let users = user_flags(tx, &lics, &asking).await?;
        end_covered_instances(tx, &under_floor).await?;
        let mut existing = live_instances(tx, &lics, &asking).await?;
        let reclaim = Reclaim { hold, audit };
        reclaim_expired(tx, &lics, &locked, &mut existing, now, reclaim).await?;
        if !locked.is_empty() {
            count_seats(tx, &mut lics, &locked, &asking).await?;
        }
        (users, existing)
    };
    if !locked.is_empty() {
        model_views(tx, &mut lics, &asking).await?;
        let mut borrowing: Vec<String> = jobs
            .iter()
            .filter(|j| j.ask.req.borrow_until.is_some())
            .map(|j| j.ask.req.license_id.clone())
            .filter(|id| lics.contains_key(id))
            .collect();
        borrowing.sort();
        borrowing.dedup();
        count_borrowed(tx, &mut lics, &borrowing).await?;
    }
    Ok(View {
        lics,
        broken,
        existing,
        users,
    })
}

/// 1. Locks the batch's licenses (asked for by its opens, or to serve), in id order: the seat
///    decision of each is now this batch's alone. A license that cannot be read is `broken`.
async fn lock_licenses(
    tx: &mut Transaction<'_, Postgres>,
    jobs: &[OpenJob],
    serve: &HashMap<String, Timestamp>,
) -> Result<(HashMap<String, LicState>, HashMap<String, StoreError>), sqlx::Error> {
    let mut license_ids: Vec<String> = jobs.iter().map(|j| j.ask.req.license_id.clone()).collect();
    license_ids.extend(serve.keys().cloned());
    license_ids.sort();
    license_ids.dedup();
    let rows = sqlx::query(&format!(
        "SELECT {LICENSE_COLS}, end_below, end_pending, ends_at, hashtext(terms) FROM licenses
         WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    ))
    .bind(&license_ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut lics: HashMap<String, LicState> = HashMap::new();
    let mut broken: HashMap<String, StoreError> = HashMap::new();
    for row in &rows {
        let (floor, floor_pending): (i64, bool) = (row.try_get(5)?, row.try_get(6)?);
        let mark: LicenseMark = (floor, row.try_get(7)?, row.try_get(8)?);
        let row = LicenseRow::read(row)?;
        let id = row.id.clone();
        match row.parse(parse_terms) {
            Ok(license) => {
                let queue = license.terms.on_full == OnFull::Queue || serve.contains_key(&id);
                let mut lic = LicState::new(license, queue);
                lic.floor = floor;
                lic.floor_pending = floor_pending;
                lic.mark = mark;
                lics.insert(id, lic);
            }
            Err(e) => {
                broken.insert(id, e);
            }
        }
    }
    Ok((lics, broken))
}

/// 2. The queues of the licenses that serve theirs: how many live waiters there are, and the
///    longest ones (locked, so that a waiter leaving meanwhile waits for this batch and then
///    finds it served). A waiter is live when its node was seen lately and its deadline is
///    ahead.
async fn queue_heads(
    tx: &mut Transaction<'_, Postgres>,
    lics: &mut HashMap<String, LicState>,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let queueing: Vec<String> = lics
        .values()
        .filter(|l| l.queue)
        .map(|l| l.license.id.clone())
        .collect();
    if queueing.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query(&format!(
        "SELECT k.id, c.waiting, h.ticket, h.node_id, h.username, h.kind, h.device_id,
                h.instance_id, h.new_id, h.actor, h.request_id, h.client_addr
         FROM unnest($1::text[]) AS k(id)
         CROSS JOIN LATERAL (
             SELECT count(*) AS waiting FROM queue_entries q JOIN nodes n ON n.node_id = q.node_id
             WHERE q.license_id = k.id AND q.state = 'waiting' AND q.deadline > $2 AND {LIVE_NODE}
         ) AS c
         LEFT JOIN LATERAL (
             SELECT q.ticket, q.node_id, q.username, q.kind, q.device_id, q.instance_id, q.new_id,
                    q.actor, q.request_id, q.client_addr
             FROM queue_entries q JOIN nodes n ON n.node_id = q.node_id
             WHERE q.license_id = k.id AND q.state = 'waiting' AND q.deadline > $2 AND {LIVE_NODE}
             ORDER BY q.ticket LIMIT $3
             FOR UPDATE OF q
         ) AS h ON c.waiting > 0
         ORDER BY k.id, h.ticket"
    ))
    .bind(&queueing)
    .bind(now.millis())
    .bind(QUEUE_HEADS)
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        let license_id: String = row.try_get(0)?;
        let Some(lic) = lics.get_mut(&license_id) else {
            continue;
        };
        lic.waiting = u32::try_from(row.try_get::<i64, _>(1)?).unwrap_or(u32::MAX);
        let Some(ticket) = row.try_get::<Option<i64>, _>(2)? else {
            continue;
        };
        let kind: String = row.try_get(5)?;
        lic.heads.push(QueueHead {
            ticket,
            node_id: row.try_get(3)?,
            req: OpenRequest {
                new_id: row.try_get(8)?,
                license_id: license_id.clone(),
                username: row.try_get(4)?,
                kind: parse_kind(&kind),
                device_id: row.try_get(6)?,
                instance_id: row.try_get(7)?,
                // A borrow never waits in a queue.
                borrow_until: None,
                // The waiter's request, kept with its entry.
                origin: Box::new(crate::Origin {
                    actor: row.try_get(9)?,
                    request_id: row.try_get(10)?,
                    client_addr: row.try_get(11)?,
                }),
            },
        });
    }
    Ok(())
}

/// The client instances asking in this batch: newcomers (of locked licenses), then queue heads.
fn asking_instances(jobs: &[OpenJob], lics: &HashMap<String, LicState>) -> Vec<InstanceKey> {
    let mut asking: Vec<InstanceKey> = jobs
        .iter()
        .filter(|j| lics.contains_key(&j.ask.req.license_id))
        .map(|j| instance_key(&j.ask.req))
        .collect();
    for lic in lics.values() {
        asking.extend(lic.heads.iter().map(|h| instance_key(&h.req)));
    }
    asking
}

/// Step 2, continued: the active flags of the asking users (newcomers and queue heads), locked
/// `FOR SHARE` before any session row. A user's deactivation (`put_user`) updates the flag and
/// ends the user's sessions in one transaction, so it either commits before this read (which
/// then sees the user inactive) or waits for this batch (and then ends what it opened).
async fn user_flags(
    tx: &mut Transaction<'_, Postgres>,
    lics: &HashMap<String, LicState>,
    asking: &[InstanceKey],
) -> Result<HashMap<(String, String), bool>, sqlx::Error> {
    let mut keys: Vec<(String, String)> = asking
        .iter()
        .filter_map(|k| Some((lics.get(&k.0)?.license.account_id.clone(), k.1.clone())))
        .collect();
    keys.sort();
    keys.dedup();
    let mut flags = HashMap::with_capacity(keys.len());
    if keys.is_empty() {
        return Ok(flags);
    }
    let rows = sqlx::query(
        "SELECT u.account_id, u.username, u.active
         FROM unnest($1::text[], $2::text[]) AS k(a, n)
         CROSS JOIN LATERAL (
             SELECT * FROM users u WHERE u.account_id = k.a AND u.username = k.n FOR SHARE
         ) u",
    )
    .bind(keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1.clone()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        flags.insert((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?);
    }
    Ok(flags)
}

/// 3. The live sessions of the asking client instances (idempotent re-open), locked.
async fn live_instances(
    tx: &mut Transaction<'_, Postgres>,
    lics: &HashMap<String, LicState>,
    asking: &[InstanceKey],
) -> Result<HashMap<InstanceKey, Session>, sqlx::Error> {
    let mut existing: HashMap<InstanceKey, Session> = HashMap::new();
    if asking.is_empty() {
        return Ok(existing);
    }
    // One index lookup per asking instance (`LATERAL`): joined to `unnest`, the prepared
    // statement's generic plan hashed every live session instead (~15 ms a batch at 10,000
    // live sessions, O(live) under the license lock).
    let rows = sqlx::query(&format!(
        "SELECT {PLAIN_SESSION_COLS}
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS k(l, u, d, i)
         CROSS JOIN LATERAL (
             SELECT * FROM sessions s
             WHERE s.license_id = k.l AND s.username = k.u AND s.device_id = k.d
               AND s.instance_id = k.i AND s.ended_at IS NULL
             FOR UPDATE
         ) s"
    ))
    .bind(asking.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
    .bind(asking.iter().map(|k| k.1.clone()).collect::<Vec<_>>())
    .bind(asking.iter().map(|k| k.2.clone()).collect::<Vec<_>>())
    .bind(asking.iter().map(|k| k.3.clone()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    for s in sessions_of(lics, &rows)? {
        existing.insert(
            (
                s.license_id.to_string(),
                s.username.clone(),
                s.device_id.clone(),
                s.instance_id.clone(),
            ),
            s,
        );
    }
    Ok(existing)
}

/// 4. Reclaims the batch's licenses' expired sessions before counting (the reaper would
///    within one tick; a full license must not wait for it). A row another transaction is
///    ending (the reaper, a logout) is waited for, not skipped: skipping it would count a seat
///    that is being freed, and refuse an open on a license that has room. No deadlock: those
///    transactions lock session rows only, never a license. An asking instance's expired
///    session is locked by this batch: it ends here in any case.
async fn reclaim_expired(
    tx: &mut Transaction<'_, Postgres>,
    lics: &HashMap<String, LicState>,
    locked: &[String],
    existing: &mut HashMap<InstanceKey, Session>,
    now: Timestamp,
    reclaim: Reclaim<'_>,
) -> Result<(), sqlx::Error> {
    let mut expired: Vec<Session> = Vec::new();
    let mut expired_ids: HashSet<String> = HashSet::new();
    if !locked.is_empty() {
        use crate::postgres::hold::REAP_LAG_SQL;
        let rows = sqlx::query(&format!(
            "SELECT {PLAIN_SESSION_COLS}
             FROM sessions s
             WHERE s.license_id = ANY($1) AND s.ended_at IS NULL
               AND s.reap_at <= $2 - {REAP_LAG_SQL} AND s.expires_at <= $2 - {REAP_LAG_SQL}
             ORDER BY s.reap_at LIMIT $3
             FOR UPDATE"
        ))
        .bind(locked)
        // Reclaims only what every node's reaper may end (see `hold`).
        .bind(now.millis())
        .bind(REAP_BATCH)
        .fetch_all(&mut **tx)
        .await?;
        expired = reclaim.hold.still_expired(sessions_of(lics, &rows)?, now);
        expired_ids = expired.iter().map(|s| s.id.clone()).collect();
    }
    existing.retain(|_, s| {
        reclaim.hold.overlay_in_place(s);
        if s.clock.is_live(now) {
            return true;
        }
        if expired_ids.insert(s.id.clone()) {
            expired.push(s.clone());
        }
        false
    });
    end_expired(tx, &expired, now, reclaim.audit).await
}

/// 5. The seat views: live sessions per license, per asking user and per reserved user. The
///    reclaims of step 4 are visible to the count already (same transaction).
async fn count_seats(
    tx: &mut Transaction<'_, Postgres>,
    lics: &mut HashMap<String, LicState>,
    locked: &[String],
    asking: &[InstanceKey],
) -> Result<(), sqlx::Error> {
    let mut pair_l = Vec::new();
    let mut pair_u = Vec::new();
    for k in asking {
        pair_l.push(k.0.clone());
        pair_u.push(k.1.clone());
    }
    for lic in lics.values() {
        for u in &lic.license.terms.reserved {
            pair_l.push(lic.license.id.clone());
            pair_u.push(u.as_str().to_owned());
        }
    }
    // Sessions under a license's floor hold no seat (their ends are decided: see `mass`).
    // A license's own count is the sum of its counter rows at its floor's epoch (`live`): a
    // license of a million costs what one of ten does. The per-user counts walk each user's
    // live sessions (`LATERAL`: one index range per user; joined, the planner, blind to
    // `unnest`, scanned every live session of every license).
    let floors: Vec<i64> = locked
        .iter()
        .map(|id| lics.get(id).map_or(0, |l| l.floor))
        .collect();
    let rows = sqlx::query(
        "SELECT c.license_id, NULL::text, sum(c.live)::int8 FROM license_live c
         JOIN unnest($1::text[], $4::int8[]) AS f(l, below)
           ON c.license_id = f.l AND c.epoch = f.below
         WHERE c.license_id = ANY($1)
         GROUP BY c.license_id
         UNION ALL
         SELECT k.l, k.u, n.live
         FROM (SELECT DISTINCT l, u FROM unnest($2::text[], $3::text[]) AS k(l, u)) AS k
         JOIN unnest($1::text[], $4::int8[]) AS f(l, below) ON f.l = k.l
         CROSS JOIN LATERAL (
             SELECT count(*) AS live FROM sessions s
             WHERE s.license_id = k.l AND s.username = k.u AND s.ended_at IS NULL
               AND s.seq >= f.below
         ) n
         WHERE n.live > 0",
    )
    .bind(locked)
    .bind(pair_l)
    .bind(pair_u)
    .bind(floors)
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        let license_id: String = row.try_get(0)?;
        let username: Option<String> = row.try_get(1)?;
        let n = u32::try_from(row.try_get::<i64, _>(2)?).unwrap_or(u32::MAX);
        let Some(lic) = lics.get_mut(&license_id) else {
            continue;
        };
        match username {
            None => lic.live = n,
            Some(u) => {
                lic.per_user.insert(u, n);
            }
        }
    }
    for lic in lics.values_mut() {
        lic.low_water = lic.live;
    }
    Ok(())
}

/// 5, continued. The model-specific part of the seat views: active users of
/// `registered_users` licenses, activated devices of `node_locked` ones. Activations take the
/// same license lock, so these counts cannot change under the batch.
async fn model_views(
    tx: &mut Transaction<'_, Postgres>,
    lics: &mut HashMap<String, LicState>,
    asking: &[InstanceKey],
) -> Result<(), sqlx::Error> {
    let registered: Vec<String> = lics
        .values()
        .filter(|l| l.license.terms.model == LicenseModel::RegisteredUsers)
        .map(|l| l.license.id.clone())
        .collect();
    if !registered.is_empty() {
        let rows = sqlx::query(
            "SELECT license_id, username FROM license_users
             WHERE license_id = ANY($1) AND active",
        )
        .bind(&registered)
        .fetch_all(&mut **tx)
        .await?;
        for row in &rows {
            let license_id: String = row.try_get(0)?;
            if let Some(lic) = lics.get_mut(&license_id) {
                lic.active_users += 1;
                lic.active_asking.insert(row.try_get(1)?);
            }
        }
    }
    let locked_devices: Vec<&InstanceKey> = asking
        .iter()
        .filter(|k| {
            lics.get(&k.0)
                .is_some_and(|l| l.license.terms.model == LicenseModel::NodeLocked)
        })
        .collect();
    if !locked_devices.is_empty() {
        let rows = sqlx::query(
            "SELECT d.license_id, d.fingerprint FROM license_devices d
             JOIN unnest($1::text[], $2::text[]) AS k(l, f)
               ON d.license_id = k.l AND d.fingerprint = k.f",
        )
        .bind(
            locked_devices
                .iter()
                .map(|k| k.0.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            locked_devices
                .iter()
                .map(|k| k.2.clone())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut **tx)
        .await?;
        for row in &rows {
            let license_id: String = row.try_get(0)?;
            if let Some(lic) = lics.get_mut(&license_id) {
                lic.activated_asking.insert(row.try_get(1)?);
            }
        }
    }
    Ok(())
}
