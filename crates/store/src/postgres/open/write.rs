//! What an open batch writes (steps 8–10 of `open_batch`): its new queue entries, then every
//! other write in one multi-row statement (slid re-opens, new sessions, usage statistics,
//! served queue heads, audit events), then the notices to the nodes whose waiters were served.

use std::collections::HashMap;

use leasehold_core::Timestamp;
use sqlx::{Postgres, Row, Transaction};

use super::decide::{Served, Slides};
use super::view::LicState;
use super::{OpenJob, Outcome};
use crate::codec::refusal_json;
use crate::postgres::queue::{QueueCtx, Registration};
use crate::postgres::rows::AuditRows;
use crate::postgres::QUEUE_CHANNEL;
use crate::records::*;
use crate::StoreError;

/// Added to a license's longest wait for a queue entry's deadline.
const QUEUE_DEADLINE_MARGIN_MILLIS: i64 = 5_000;

/// New queue entries, as column arrays for one multi-row insert.
#[derive(Default)]
struct Entries {
    license_id: Vec<String>,
    username: Vec<String>,
    kind: Vec<String>,
    device_id: Vec<String>,
    instance_id: Vec<String>,
    new_id: Vec<String>,
    deadline: Vec<i64>,
    actor: Vec<Option<String>>,
    request_id: Vec<Option<String>>,
    client_addr: Vec<Option<String>>,
}

/// 8. New queue entries for the newcomers that wait (`to_queue`: job index, position), their
///    tickets taken here, under the license locks, in arrival order. Each is registered with
///    this node's waiters *before* the commit (no outcome can be committed, let alone
///    notified, before its waiter is known here) and its outcome becomes its ticket.
pub(super) async fn enqueue<'q>(
    tx: &mut Transaction<'_, Postgres>,
    queue: &'q QueueCtx,
    jobs: &[OpenJob],
    lics: &HashMap<String, LicState>,
    to_queue: Vec<(usize, u32)>,
    outcomes: &mut [Outcome],
    now: Timestamp,
) -> Result<Registration<'q>, sqlx::Error> {
    let mut registration = Registration::new(queue);
    if to_queue.is_empty() {
        return Ok(registration);
    }
    let mut entries = Entries::default();
    for &(i, _) in &to_queue {
        let Some(job) = jobs.get(i) else { continue };
        let req = &job.ask.req;
        entries.license_id.push(req.license_id.clone());
        entries.username.push(req.username.clone());
        entries.kind.push(req.kind.as_str().to_owned());
        entries.device_id.push(req.device_id.clone());
        entries.instance_id.push(req.instance_id.clone());
        entries.new_id.push(req.new_id.clone());
        entries.actor.push(req.origin.actor.clone());
        entries.request_id.push(req.origin.request_id.clone());
        entries.client_addr.push(req.origin.client_addr.clone());
        let max_wait = lics
            .get(&req.license_id)
            .map_or(0, |l| l.license.terms.max_queue_wait_secs);
        let wait_millis = i64::try_from(max_wait.saturating_mul(1000)).unwrap_or(i64::MAX);
        entries.deadline.push(
            now.millis()
                .saturating_add(wait_millis)
                .saturating_add(QUEUE_DEADLINE_MARGIN_MILLIS),
        );
    }
    let rows = sqlx::query(
        "INSERT INTO queue_entries (license_id, node_id, username, kind, device_id,
                                    instance_id, new_id, enqueued_at, deadline,
                                    actor, request_id, client_addr)
         SELECT v.l, $1, v.u, v.k, v.d, v.i, v.n, $2, v.dl, v.a, v.r, v.c
         FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::int8[], $10::text[], $11::text[], $12::text[])
              WITH ORDINALITY AS v(l, u, k, d, i, n, dl, a, r, c, ord)
         ORDER BY v.ord
         RETURNING ticket, new_id",
    )
    .bind(&queue.node_id)
    .bind(now.millis())
    .bind(entries.license_id)
    .bind(entries.username)
    .bind(entries.kind)
    .bind(entries.device_id)
    .bind(entries.instance_id)
    .bind(entries.new_id)
    .bind(entries.deadline)
    .bind(entries.actor)
    .bind(entries.request_id)
    .bind(entries.client_addr)
    .fetch_all(&mut **tx)
    .await?;
    let mut tickets: HashMap<String, i64> = HashMap::new();
    for row in &rows {
        tickets.insert(row.try_get(1)?, row.try_get(0)?);
    }
    for (i, position) in to_queue {
        let (Some(job), Some(slot)) = (jobs.get(i), outcomes.get_mut(i)) else {
            continue;
        };
        let Some(&ticket) = tickets.get(&job.ask.req.new_id) else {
            *slot = Outcome::Done(Err(StoreError::Unavailable(
                "a queue entry was not stored".into(),
            )));
            continue;
        };
        let granted = registration.add(ticket, &job.ask.req.license_id);
        *slot = Outcome::Queued(Some(QueueTicket {
            ticket: ticket as u64,
            position,
            granted,
        }));
    }
    Ok(registration)
}

/// The batch's new sessions, as column arrays.
#[derive(Default)]
struct SessionColumns {
    id: Vec<String>,
    license_id: Vec<String>,
    username: Vec<String>,
    kind: Vec<&'static str>,
    device_id: Vec<String>,
    instance_id: Vec<String>,
    opened_at: Vec<i64>,
    expires_at: Vec<i64>,
    hard_end: Vec<Option<i64>>,
    overdraft: Vec<bool>,
    license_end: Vec<Option<i64>>,
    borrow_until: Vec<Option<i64>>,
}

impl SessionColumns {
    fn of(sessions: &[Session]) -> Self {
        let mut c = SessionColumns::default();
        for s in sessions {
            c.id.push(s.id.clone());
            c.license_id.push(s.license_id.to_string());
            c.username.push(s.username.clone());
            c.kind.push(s.kind.as_str());
            c.device_id.push(s.device_id.clone());
            c.instance_id.push(s.instance_id.clone());
            c.opened_at.push(s.clock.opened_at.millis());
            c.expires_at.push(s.clock.expires_at.millis());
            c.hard_end.push(s.clock.hard_end.map(Timestamp::millis));
            c.overdraft.push(s.overdraft);
            c.license_end
                .push(s.clock.license_end.map(Timestamp::millis));
            c.borrow_until
                .push(s.clock.borrow_until.map(Timestamp::millis));
        }
        c
    }
}

/// The usage statistics of the batch's licenses, as column arrays.
#[derive(Default)]
struct UsageColumns {
    license_id: Vec<String>,
    high_water: Vec<i32>,
    low_water: Vec<i32>,
    denials: Vec<i64>,
}

impl UsageColumns {
    fn of(lics: &HashMap<String, LicState>) -> Self {
        let mut c = UsageColumns::default();
        for lic in lics.values() {
            c.license_id.push(lic.license.id.clone());
            c.high_water
                .push(i32::try_from(lic.live).unwrap_or(i32::MAX));
            c.low_water
                .push(i32::try_from(lic.low_water).unwrap_or(i32::MAX));
            c.denials.push(lic.denials);
        }
        c
    }
}

/// The served queue heads' new states, as column arrays: ticket, state, session, refusal.
#[derive(Default)]
struct ServedColumns {
    ticket: Vec<i64>,
    state: Vec<&'static str>,
    session_id: Vec<Option<String>>,
    refusal: Vec<Option<String>>,
}

impl ServedColumns {
    fn of(served: &[Served]) -> Self {
        let mut c = ServedColumns::default();
        for s in served {
            c.ticket.push(s.ticket);
            match &s.outcome {
                Ok(opened) => {
                    c.state.push("granted");
                    c.session_id.push(Some(opened.session.id.clone()));
                    c.refusal.push(None);
                }
                Err(refusal) => {
                    c.state.push("refused");
                    c.session_id.push(None);
                    c.refusal.push(Some(refusal_json(refusal)));
                }
            }
        }
        c
    }
}

/// 9. Every other change of the batch (slid re-opens, new sessions, usage statistics, served
///    queue heads, audit events), in one statement. A new session's `epoch` is its license's
///    floor, which the batch's row lock keeps still (see `live`).
pub(super) async fn changes(
    tx: &mut Transaction<'_, Postgres>,
    lics: &HashMap<String, LicState>,
    slides: Slides,
    opened: &[Session],
    audit: AuditRows,
    served: &[Served],
) -> Result<(), sqlx::Error> {
    let sessions = SessionColumns::of(opened);
    let usage = UsageColumns::of(lics);
    let served = ServedColumns::of(served);
    sqlx::query(
        "WITH slid AS (
             UPDATE sessions s SET expires_at = GREATEST(s.expires_at, v.exp)
             FROM unnest($1::text[], $2::int8[]) AS v(id, exp)
             WHERE s.id = v.id AND s.ended_at IS NULL
         ), opened AS (
             INSERT INTO sessions (id, license_id, username, kind, device_id, instance_id,
                                   opened_at, expires_at, hard_end, overdraft, license_end,
                                   borrow_until, epoch, reap_at)
             SELECT v.*, l.end_below, v.e
             FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::int8[], $10::int8[], $11::int8[], $23::bool[],
                         $24::int8[], $29::int8[]) AS v(id, license_id, u, k, d, i, o, e, h, od, le, bu)
             JOIN licenses l ON l.id = v.license_id
         ), usage AS (
             UPDATE license_usage u
             SET high_water = GREATEST(u.high_water, v.hi),
                 low_water = LEAST(u.low_water, v.lo),
                 denials = u.denials + v.d
             FROM unnest($12::text[], $13::int4[], $14::int4[], $15::int8[]) AS v(l, hi, lo, d)
             WHERE u.license_id = v.l
         ), served AS (
             UPDATE queue_entries q SET state = v.state, session_id = v.sid, refusal = v.refusal
             FROM unnest($25::int8[], $26::text[], $27::text[], $28::text[])
                  AS v(ticket, state, sid, refusal)
             WHERE q.ticket = v.ticket AND q.state = 'waiting'
         )
         INSERT INTO audit_events (at, account_id, license_id, session_id, username, event, detail,
                                   actor, request_id, client_addr)
         SELECT * FROM unnest($16::int8[], $17::text[], $18::text[], $19::text[], $20::text[],
                              $21::text[], $22::text[], $30::text[], $31::text[], $32::text[])",
    )
    .bind(slides.ids)
    .bind(slides.expires_at)
    .bind(sessions.id)
    .bind(sessions.license_id)
    .bind(sessions.username)
    .bind(sessions.kind)
    .bind(sessions.device_id)
    .bind(sessions.instance_id)
    .bind(sessions.opened_at)
    .bind(sessions.expires_at)
    .bind(sessions.hard_end)
    .bind(usage.license_id)
    .bind(usage.high_water)
    .bind(usage.low_water)
    .bind(usage.denials)
    .bind(audit.at)
    .bind(audit.account_id)
    .bind(audit.license_id)
    .bind(audit.session_id)
    .bind(audit.username)
    .bind(audit.event)
    .bind(audit.detail)
    .bind(sessions.overdraft)
    .bind(sessions.license_end)
    .bind(served.ticket)
    .bind(served.state)
    .bind(served.session_id)
    .bind(served.refusal)
    .bind(sessions.borrow_until)
    .bind(audit.actor)
    .bind(audit.request_id)
    .bind(audit.client_addr)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// 10. Tells the other nodes whose waiters were served (delivered when the batch commits).
///     This node's own waiters are handed their outcome directly after the commit.
pub(super) async fn notify(
    tx: &mut Transaction<'_, Postgres>,
    queue: &QueueCtx,
    served: &[Served],
) -> Result<(), sqlx::Error> {
    let notices: Vec<String> = served
        .iter()
        .filter(|s| s.node_id != queue.node_id)
        .map(|s| format!("{}:{}", s.node_id, s.ticket))
        .collect();
    if notices.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(QUEUE_CHANNEL)
        .bind(notices)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
