//! Steps 2–5 of an open batch in one statement (when no asking license has a floor pending):
//! the asking users' active flags (`FOR SHARE`), the asking instances' live sessions and the
//! licenses' expired sessions (`FOR UPDATE`), and the seat counts, read in that order by one
//! `UNION ALL` (its branches run one after the other, so users are locked before any session,
//! as in the statement-per-step path). The license lock is held from the lock statement to the
//! commit; one round trip less under it is what a hot license's opens per second are made of
//! (`leasehold bench pg`: the lock was held across seven round trips, now four).
//!
//! The counts come from the statement's snapshot, taken before the reclaimed sessions end: the
//! batch takes those out itself. A session a reaper or a logout ended while the statement waited
//! for its row would still be counted, and a refusal could hinge on it: a license that may be
//! full for this batch is counted again by a statement of its own (as the step-by-step path
//! does), after every row lock is taken.

use std::collections::{HashMap, HashSet};

use leasehold_core::Timestamp;
use sqlx::{Postgres, Row, Transaction};

use super::{count_seats, InstanceKey, LicState, OpenJob, Reclaim, PLAIN_SESSION_COLS};
use crate::postgres::end::end_expired;
use crate::postgres::hold::REAP_LAG_SQL;
use crate::postgres::REAP_BATCH;
use crate::records::Session;

/// What the census answers: the asking users' active flags, by (account, username), and the
/// asking instances' live sessions.
pub(super) type Census = (
    HashMap<(String, String), bool>,
    HashMap<InstanceKey, Session>,
);

/// Reads steps 2–5 in one statement, ends the expired sessions it reclaims (their events in
/// `reclaim.audit`; a session live in this node's memory keeps its seat) and leaves the seat counts in `lics`.
pub(super) async fn read(
    tx: &mut Transaction<'_, Postgres>,
    lics: &mut HashMap<String, LicState>,
    locked: &[String],
    asking: &[InstanceKey],
    jobs: &[OpenJob],
    now: Timestamp,
    reclaim: Reclaim<'_>,
) -> Result<Census, sqlx::Error> {
    let mut user_keys: Vec<(String, String)> = asking
        .iter()
        .filter_map(|k| Some((lics.get(&k.0)?.license.account_id.clone(), k.1.clone())))
        .collect();
    user_keys.sort();
    user_keys.dedup();
    let (mut pair_l, mut pair_u): (Vec<String>, Vec<String>) =
        asking.iter().map(|k| (k.0.clone(), k.1.clone())).unzip();
    for lic in lics.values() {
        for u in &lic.license.terms.reserved {
            pair_l.push(lic.license.id.clone());
            pair_u.push(u.as_str().to_owned());
        }
    }
    let floors: Vec<i64> = locked
        .iter()
        .map(|id| lics.get(id).map_or(0, |l| l.floor))
        .collect();
    // One column set for every branch: a tag, then the session columns (a user's row carries
    // its account in `license_id` and its flag in `overdraft`; a count its number in `seq`).
    let rows = sqlx::query(&format!(
        "SELECT 'u'::text, NULL::text, u.account_id, u.username, NULL::text, NULL::text, NULL::text,
                NULL::int8, NULL::int8, NULL::int8, u.active, NULL::int8, NULL::int8, NULL::int8
         FROM unnest($1::text[], $2::text[]) AS k(a, n)
         CROSS JOIN LATERAL (
             SELECT * FROM users u WHERE u.account_id = k.a AND u.username = k.n FOR SHARE
         ) u
         UNION ALL
         SELECT 'i'::text, {PLAIN_SESSION_COLS}, s.seq
         FROM unnest($3::text[], $4::text[], $5::text[], $6::text[]) AS k(l, u, d, i)
         CROSS JOIN LATERAL (
             SELECT * FROM sessions s
             WHERE s.license_id = k.l AND s.username = k.u AND s.device_id = k.d
               AND s.instance_id = k.i AND s.ended_at IS NULL
             FOR UPDATE
         ) s
         UNION ALL
         SELECT x.* FROM (
             SELECT 'x'::text, {PLAIN_SESSION_COLS}, s.seq
             FROM sessions s
             WHERE s.license_id = ANY($7) AND s.ended_at IS NULL
               AND s.reap_at <= $8 - {REAP_LAG_SQL} AND s.expires_at <= $8 - {REAP_LAG_SQL}
             ORDER BY s.reap_at LIMIT $9
             FOR UPDATE
         ) x
         UNION ALL
         SELECT 'c'::text, NULL, c.license_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                NULL, sum(c.live)::int8
         FROM license_live c
         JOIN unnest($7::text[], $10::int8[]) AS f(l, below)
           ON c.license_id = f.l AND c.epoch = f.below
         WHERE c.license_id = ANY($7)
         GROUP BY c.license_id
         UNION ALL
         SELECT 'c'::text, NULL, k.l, k.u, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, n.live
         FROM (SELECT DISTINCT l, u FROM unnest($11::text[], $12::text[]) AS k(l, u)) AS k
         JOIN unnest($7::text[], $10::int8[]) AS f(l, below) ON f.l = k.l
         CROSS JOIN LATERAL (
             SELECT count(*) AS live FROM sessions s
             WHERE s.license_id = k.l AND s.username = k.u AND s.ended_at IS NULL
               AND s.seq >= f.below
         ) n
         WHERE n.live > 0"
    ))
    .bind(user_keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
    .bind(user_keys.iter().map(|k| k.1.clone()).collect::<Vec<_>>())
    .bind(asking.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
    .bind(asking.iter().map(|k| k.1.clone()).collect::<Vec<_>>())
    .bind(asking.iter().map(|k| k.2.clone()).collect::<Vec<_>>())
    .bind(asking.iter().map(|k| k.3.clone()).collect::<Vec<_>>())
    .bind(locked)
    // Reclaims only what every node's reaper may end (see `hold`).
    .bind(now.millis())
    .bind(REAP_BATCH)
    .bind(&floors)
    .bind(pair_l)
    .bind(pair_u)
    .fetch_all(&mut **tx)
    .await?;

    let mut users = HashMap::with_capacity(user_keys.len());
    let mut existing: HashMap<InstanceKey, Session> = HashMap::new();
    let mut seqs: HashMap<String, i64> = HashMap::new();
    let mut expired: Vec<Session> = Vec::new();
    for lic in lics.values_mut() {
        lic.live = 0;
        lic.per_user.clear();
    }
    for row in &rows {
        let tag: &str = row.try_get(0)?;
        match tag {
            "u" => {
                users.insert((row.try_get(2)?, row.try_get(3)?), row.try_get(10)?);
            }
            "i" | "x" => {
                let license_id: String = row.try_get(2)?;
                let Some(lic) = lics.get(&license_id) else {
                    continue;
                };
                let session = lic.session(row, 1)?;
                seqs.insert(session.id.clone(), row.try_get(13)?);
                if tag == "x" {
                    // Live in this node's memory (a heartbeat answered, not written yet): it
                    // keeps its seat, counted in use.
                    expired.extend(reclaim.hold.still_expired(vec![session], now));
                } else {
                    existing.insert(
                        (
                            license_id,
                            session.username.clone(),
                            session.device_id.clone(),
                            session.instance_id.clone(),
                        ),
                        session,
                    );
                }
            }
            _ => {
                let license_id: String = row.try_get(2)?;
                let username: Option<String> = row.try_get(3)?;
                let n = u32::try_from(row.try_get::<i64, _>(13)?).unwrap_or(u32::MAX);
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
        }
    }

    // The asking instances' expired sessions end here too (the instance gets a new one).
    let mut ending: HashSet<String> = expired.iter().map(|s| s.id.clone()).collect();
    existing.retain(|_, s| {
        reclaim.hold.overlay_in_place(s);
        if s.clock.is_live(now) {
            return true;
        }
        if ending.insert(s.id.clone()) {
            expired.push(s.clone());
        }
        false
    });
    end_expired(tx, &expired, now, reclaim.audit).await?;
    // The counts were read before these ends: the ones above their license's floor (those
    // the counts hold) come out.
    for s in &expired {
        let Some(lic) = lics.get_mut(s.license_id.as_ref()) else {
            continue;
        };
        if seqs.get(&s.id).is_some_and(|&seq| seq >= lic.floor) {
            lic.live = lic.live.saturating_sub(1);
            if let Some(n) = lic.per_user.get_mut(&s.username) {
                *n = n.saturating_sub(1);
            }
        }
    }

    if locked.iter().any(|id| may_refuse(lics, id, jobs, now)) {
        for lic in lics.values_mut() {
            lic.live = 0;
            lic.per_user.clear();
        }
        count_seats(tx, lics, locked, asking).await?;
    }
    for lic in lics.values_mut() {
        lic.low_water = lic.live;
    }
    Ok((users, existing))
}

/// Whether a decision of this batch on license `id` could be a refusal that a stale count
/// decides: its asks could fill it (the queue's heads count as asks), or a per-user limit or
/// a reserved seat depends on an asking user's sessions.
fn may_refuse(
    lics: &HashMap<String, LicState>,
    id: &str,
    jobs: &[OpenJob],
    now: Timestamp,
) -> bool {
    let Some(lic) = lics.get(id) else {
        return false;
    };
    let terms = &lic.license.terms;
    let asks = jobs.iter().filter(|j| j.ask.req.license_id == id).count() + lic.heads.len();
    let asks = u32::try_from(asks).unwrap_or(u32::MAX);
    if lic.live.saturating_add(asks) >= terms.capacity(now) {
        return true;
    }
    let per_user_matters = terms.max_sessions_per_user.is_some() || !terms.reserved.is_empty();
    per_user_matters && lic.per_user.values().any(|&n| n > 0)
}
