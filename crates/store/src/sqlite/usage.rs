//! Usage series on SQLite (`crate::usage`): the fold runs on a connection of its own, off the
//! writer thread, so the seat path never waits for it but to share SQLite's write lock for one
//! short transaction a chunk (at most `usage::CHUNK` events, the settled ones: see
//! `usage::fold`). The writer commits audit events in `seq` order, so reading after the
//! watermark never skips one. A query folds what has settled, then the rest in memory. Its commits are not
//! fsync'd (`synchronous=NORMAL`): the rows and the watermark commit together, and what a
//! crash loses is folded again from the audit log, which retention keeps until it is folded.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::schema::open_connection;
use crate::codec::parse_terms;
use crate::usage::fold::subjects;
use crate::usage::sql::{self, decode_hist, encode_hist, row_from, row_values, SeriesQuery};
use crate::usage::{
    in_time_order, settled, Acc, Bucket, Folder, Grain, SeriesRows, SubjectState, UsageEvent,
    UsageSeries, Writes, CHUNK, PENDING_FOR_MS,
};
use crate::StoreResult;

/// The fold's connection and its state (`None`: rebuilt from the database at the next chunk).
pub(super) struct Rollup(Mutex<(Connection, Option<Folder>)>);

impl Rollup {
    pub(super) fn open(path: &Path) -> StoreResult<Rollup> {
        let conn = open_connection(path)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Rollup(Mutex::new((conn, None))))
    }

    /// Forgets the fold's state: the next chunk rebuilds it from the rows (as after a restart).
    #[cfg(test)]
    pub(super) fn forget(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).1 = None;
    }

    /// Folds every event not folded yet; answers how many were read.
    pub(super) fn catch_up(&self) -> StoreResult<usize> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (conn, folder) = &mut *guard;
        catch_up(conn, folder)
    }

    /// Folds what has settled, then reads the series with the rest folded in memory.
    pub(super) fn series(&self, q: &SeriesQuery) -> StoreResult<UsageSeries> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (conn, folder) = &mut *guard;
        catch_up(conn, folder)?;
        let f = match folder {
            Some(f) => f,
            None => {
                let watermark: i64 = conn.query_row(sql::WATERMARK, [], |r| r.get(0))?;
                folder.insert(Folder::resume(watermark, pending(conn)?))
            }
        };
        let (after, _) = f.ahead.next_read(f.watermark);
        let mut tail = f.ahead.tail().to_vec();
        tail.extend(read_events(conn, after, TAIL_MAX)?);
        let mut rows = read_rows(conn, q)?;
        if !tail.is_empty() {
            let mut fork = f.fork(&subjects(&tail));
            for subject in fork.missing(&tail) {
                if let Some(state) = load_subject(conn, &subject)? {
                    fork.insert(state);
                }
            }
            let seats = current_seats(conn, &tail)?;
            for e in in_time_order(&tail) {
                fork.fold(&e, &|id| seats.get(id).copied());
            }
            rows.merge_tail(q, &fork.take_writes());
        }
        Ok(rows.series(q))
    }
}

fn catch_up(conn: &mut Connection, folder: &mut Option<Folder>) -> StoreResult<usize> {
    let mut total = 0;
    loop {
        match chunk(conn, folder) {
            Ok(n) => {
                total += n;
                if n < CHUNK {
                    return Ok(total);
                }
            }
            Err(e) => {
                *folder = None;
                return Err(e);
            }
        }
    }
}

/// Folds the next chunk of events in one transaction; answers how many were read.
fn chunk(conn: &mut Connection, folder: &mut Option<Folder>) -> StoreResult<usize> {
    let watermark: i64 = conn.query_row(sql::WATERMARK, [], |r| r.get(0))?;
    let f = match folder {
        Some(f) if f.watermark == watermark => f,
        _ => folder.insert(Folder::resume(watermark, pending(conn)?)),
    };
    let (after, room) = f.ahead.next_read(watermark);
    let read = match room {
        0 => Vec::new(),
        _ => read_events(conn, after, room)?,
    };
    // The writer commits events in `seq` order: what was not read is not written yet.
    let read = f.ahead.chunk(read, room, after);
    let latest: i64 = conn
        .prepare_cached(sql::LATEST_AT)?
        .query_row(params![i64::MAX], |r| r.get(0))
        .optional()?
        .unwrap_or(i64::MIN);
    let take = settled(&read, latest);
    let (events, rest) = read.split_at(take.min(read.len()));
    f.ahead.keep(rest.to_vec());
    if events.is_empty() {
        return Ok(0);
    }
    for subject in f.missing(events) {
        if let Some(state) = load_subject(conn, &subject)? {
            f.insert(state);
        }
    }
    let seats = current_seats(conn, events)?;
    for e in in_time_order(events) {
        f.fold(&e, &|id| seats.get(id).copied());
    }
    let forget = f.latest() - PENDING_FOR_MS;
    f.forget_pending_before(forget);
    let writes = f.take_writes();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    write(&tx, &writes, forget)?;
    tx.commit()?;
    Ok(events.len())
}

fn pending(conn: &Connection) -> rusqlite::Result<HashMap<String, i64>> {
    let mut stmt = conn.prepare_cached(sql::PENDING)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Most events of the tail a query folds in memory (those of the last `SETTLE_MS`).
const TAIL_MAX: usize = 1_000_000;

fn read_events(
    conn: &Connection,
    watermark: i64,
    limit: usize,
) -> rusqlite::Result<Vec<UsageEvent>> {
    let mut stmt = conn.prepare_cached(sql::EVENTS)?;
    let rows = stmt.query_map(params![watermark, i64::MAX, limit as i64], |r| {
        Ok(UsageEvent {
            seq: r.get(0)?,
            at: r.get(1)?,
            account_id: r.get(2)?,
            license_id: r.get(3)?,
            session_id: r.get(4)?,
            username: r.get(5)?,
            event: r.get(6)?,
            detail: r.get(7)?,
        })
    })?;
    rows.collect()
}

/// The seats now of the licenses of `events`.
fn current_seats(conn: &Connection, events: &[UsageEvent]) -> StoreResult<HashMap<String, i64>> {
    let mut out = HashMap::new();
    let mut stmt = conn.prepare_cached(sql::LICENSE_TERMS)?;
    for e in events {
        if e.license_id.is_empty() || out.contains_key(&e.license_id) {
            continue;
        }
        let terms: Option<String> = stmt
            .query_row(params![e.license_id], |r| r.get(0))
            .optional()?;
        if let Some(t) = terms {
            let seats = parse_terms(&e.license_id, &t)?.seats;
            out.insert(e.license_id.clone(), i64::from(seats));
        }
    }
    Ok(out)
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Acc> {
    let mut v = [0i64; 16];
    for (i, slot) in v.iter_mut().enumerate() {
        *slot = r.get(i)?;
    }
    let mut acc = row_from(v);
    acc.hist = decode_hist(&r.get::<_, String>(16)?);
    Ok(acc)
}

/// A subject's state as stored, with its open rows (histogram and users), if it has one.
fn load_subject(conn: &Connection, subject: &str) -> StoreResult<Option<SubjectState>> {
    let state: Option<(i64, i64, i64)> = conn
        .prepare_cached(sql::STATE)?
        .query_row(params![subject], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((in_use, seats, t)) = state else {
        return Ok(None);
    };
    let mut st = SubjectState::fresh(subject.to_owned(), seats, t);
    st.in_use = in_use;
    for g in Grain::ALL {
        let start = g.start_of(t);
        let key = params![subject, g.code(), start];
        let row = conn
            .prepare_cached(&sql::row_at())?
            .query_row(key, read_row)
            .optional()?;
        let Some(mut acc) = row else { continue };
        let mut stmt = conn.prepare_cached(sql::ROW_USERS)?;
        for u in stmt.query_map(key, |r| r.get::<_, String>(0))? {
            acc.users.insert(u?);
        }
        acc.users_written = !acc.users.is_empty();
        if let Some(slot) = st.open.get_mut(g.index()) {
            *slot = Some(acc);
        }
    }
    Ok(Some(st))
}

fn write(tx: &Transaction<'_>, w: &Writes, forget: i64) -> rusqlite::Result<()> {
    let mut put_row = tx.prepare_cached(&sql::put_row())?;
    let mut put_user = tx.prepare_cached(sql::PUT_USER)?;
    let mut rows: Vec<(&str, Grain, &Acc, bool)> = w
        .closed
        .iter()
        .map(|(s, g, a)| (s.as_str(), *g, a, false))
        .collect();
    for st in &w.states {
        tx.prepare_cached(sql::PUT_STATE)?
            .execute(params![st.subject, st.in_use, st.seats, st.t])?;
        for (g, acc) in Grain::ALL.iter().zip(st.open.iter()) {
            if let Some(acc) = acc {
                rows.push((st.subject.as_str(), *g, acc, true));
            }
        }
    }
    for (subject, g, acc, open) in rows {
        let v = row_values(acc);
        let mut p: Vec<rusqlite::types::Value> = vec![subject.to_owned().into(), g.code().into()];
        p.extend(v.iter().map(|x| rusqlite::types::Value::Integer(*x)));
        p.push(encode_hist(&acc.hist).into());
        put_row.execute(rusqlite::params_from_iter(p))?;
        match sql::user_names(g, acc, open) {
            sql::UserNames::Put => {
                for u in &acc.new_users {
                    put_user.execute(params![subject, g.code(), acc.start, u])?;
                }
            }
            sql::UserNames::Drop => {
                tx.prepare_cached(sql::DEL_USERS)?.execute(params![
                    subject,
                    g.code(),
                    acc.start
                ])?;
            }
            sql::UserNames::Keep => {}
        }
    }
    for (subject, at, wait) in &w.waits {
        tx.prepare_cached(sql::PUT_WAIT)?
            .execute(params![subject, at, wait])?;
    }
    for (id, license, account, at) in &w.pending_added {
        tx.prepare_cached(sql::ADD_PENDING)?
            .execute(params![id, license, account, at])?;
    }
    for id in &w.pending_removed {
        tx.prepare_cached(sql::DEL_PENDING)?.execute(params![id])?;
    }
    tx.prepare_cached(sql::FORGET_PENDING)?
        .execute(params![forget])?;
    tx.prepare_cached(sql::SET_WATERMARK)?
        .execute(params![w.watermark])?;
    Ok(())
}

fn range(
    conn: &Connection,
    subject: &str,
    g: Grain,
    from: i64,
    to: i64,
) -> rusqlite::Result<Vec<Acc>> {
    let mut stmt = conn.prepare_cached(&sql::range_rows())?;
    let rows = stmt.query_map(params![subject, g.code(), from, to], read_row)?;
    rows.collect()
}

fn read_rows(conn: &Connection, q: &SeriesQuery) -> rusqlite::Result<SeriesRows> {
    let grain = q.bucket.grain();
    let rows = range(conn, &q.subject, grain, q.from, q.to)?;
    let hour_rows = match q.bucket {
        Bucket::Day | Bucket::Month => range(conn, &q.subject, Grain::Hour, q.from, q.to)?,
        _ => Vec::new(),
    };
    let seed = conn
        .prepare_cached(sql::SEED)?
        .query_row(params![q.subject, q.from], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let waits: Vec<(i64, i64)> = conn
        .prepare_cached(sql::WAITS)?
        .query_map(params![q.subject, q.from, q.to], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let day_users: Vec<(i64, String)> = match q.bucket {
        Bucket::Month => conn
            .prepare_cached(sql::DAY_USERS)?
            .query_map(params![q.subject, q.from, q.to], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?,
        _ => Vec::new(),
    };
    Ok(SeriesRows {
        rows,
        hour_rows,
        seed,
        waits,
        day_users,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::sqlite::SqliteStore;
    use crate::testkit::{open, tenant, T0};
    use crate::usage::{license_subject, Bucket, SeriesQuery, UsageSeries, MINUTE_MS};
    use crate::{AuditQuery, Store};
    use leasehold_core::Timestamp;
    use leasehold_proto::EndReason;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(T0.millis() + secs * 1000)
    }

    async fn minutes(store: &SqliteStore, now: Timestamp) -> UsageSeries {
        store
            .usage_series(&SeriesQuery {
                subject: license_subject("lic"),
                bucket: Bucket::Minute,
                from: T0.millis(),
                to: T0.millis() + 2 * MINUTE_MS,
                now: now.millis(),
                seats_now: 5,
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn retention_never_deletes_what_the_fold_or_the_fanout_has_not_read_and_the_rows_stay() {
        // Arrange: bob and amy hold seats from 1 s and 2 s; amy leaves at 20 s.
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("leasehold.db"), T0).unwrap();
        tenant(&store, 5, &["bob", "amy"]).await;
        store
            .open_session(open(1, "bob", "a"), at(1))
            .await
            .unwrap();
        let amy = store
            .open_session(open(2, "amy", "b"), at(2))
            .await
            .unwrap();
        store
            .end_session(&amy.session.id, EndReason::Logout, at(20))
            .await
            .unwrap();
        // A later event (at 100 s) settles those before 90 s; it stays unfolded itself.
        store
            .open_session(open(3, "amy", "c"), at(100))
            .await
            .unwrap();
        let later = Timestamp::from_millis(T0.millis() + 86_400_000);

        // Act: prune everything before the fold ran, after it (with the webhook fan-out still
        // behind: it has not read them either), then after the fan-out too.
        let before_fold = store.prune_audit(later, 1000).await.unwrap();
        let folded = store.usage_rollup().await.unwrap();
        let fanout_behind = store.prune_audit(later, 1000).await.unwrap();
        use crate::WebhookStore;
        let cursor = store.fanout_cursor().await.unwrap();
        let horizon = store.audit_horizon().await.unwrap();
        let fanout = crate::webhooks::Fanout {
            seq: horizon,
            deliveries: Vec::new(),
            alert_states: Vec::new(),
        };
        assert!(store.commit_fanout(cursor, fanout).await.unwrap());
        let after_fold = store.prune_audit(later, 1000).await.unwrap();
        let series = minutes(&store, at(110)).await;

        // Assert: nothing went before the fold and the fan-out read it; all of it after; the
        // series stays.
        assert_eq!(before_fold, 0);
        assert_eq!(fanout_behind, 0);
        assert!(folded >= 5, "{folded}");
        assert_eq!(after_fold, folded);
        let left = store
            .audit_page(&AuditQuery {
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].event.event, "opened");
        let b: Vec<_> = series
            .buckets
            .iter()
            .map(|b| (b.high_water, b.low_water, b.opens))
            .collect();
        // Minute 1: bob alone, then amy again from 100 s (folded at query time: unsettled).
        assert_eq!(b, [(2, 0, 2), (2, 1, 1)]);
        assert!((series.buckets[0].average_in_use - (59.0 + 18.0) / 60.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn a_revoke_of_every_session_counts_them_out_as_their_ends_land() {
        // Arrange: three sessions, then a revoke of all of them at 30 s.
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("leasehold.db"), T0).unwrap();
        tenant(&store, 5, &["bob"]).await;
        for n in 1..=3 {
            store
                .open_session(open(n, "bob", &format!("i{n}")), at(10))
                .await
                .unwrap();
        }
        assert_eq!(
            store.revoke_license_sessions("lic", at(30)).await.unwrap(),
            3
        );

        // Act: the ends are written by the drain, in the background.
        let mut series = minutes(&store, at(60)).await;
        for _ in 0..200 {
            if series.buckets[1].high_water == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            series = minutes(&store, at(60)).await;
        }

        // Assert: 3 in use from 10 s to the revoke at 30 s, then none.
        let m0 = &series.buckets[0];
        assert_eq!((m0.high_water, m0.low_water), (3, 0));
        assert!(
            (m0.average_in_use - 3.0 * 20.0 / 60.0).abs() < 1e-9,
            "{m0:?}"
        );
        assert_eq!(series.buckets[1].high_water, 0);
    }

    #[tokio::test]
    async fn folding_step_by_step_across_a_restart_equals_folding_at_once() {
        // Arrange: the same sessions on two stores, over 3 hours and 4 users; store A folds
        // after every step and forgets its fold's state every 7 steps (rebuilt from its rows,
        // as after a restart), store B folds once at the end.
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = SqliteStore::open(&da.path().join("leasehold.db"), T0).unwrap();
        let b = SqliteStore::open(&db.path().join("leasehold.db"), T0).unwrap();
        let users = ["ann", "bob", "cid", "dan"];
        tenant(&a, 3, &users).await;
        tenant(&b, 3, &users).await;
        let mut live: Vec<(u32, String)> = Vec::new();
        for step in 0..40u32 {
            // 20 s apart, and 40 minutes more every 10 steps (sessions expire meanwhile).
            let t = at(i64::from(step) * 20 + i64::from(step / 10) * 2400);
            for s in [&a, &b] {
                s.reap_expired(t).await.unwrap();
            }
            if step % 7 == 6 {
                a.forget_usage_fold();
            }
            let user = users[step as usize % 4];
            if step % 3 == 2 && !live.is_empty() {
                let (_, id) = live.remove(0);
                for s in [&a, &b] {
                    // (It may have expired meanwhile: then it ended already, on both.)
                    let _ = s.end_session(&id, EndReason::Logout, t).await;
                }
            } else {
                for s in [&a, &b] {
                    let _ = s
                        .open_session(open(step, user, &format!("i{step}")), t)
                        .await;
                }
                if a.get_session(&crate::testkit::session_id(step))
                    .await
                    .unwrap()
                    .is_some()
                {
                    live.push((step, crate::testkit::session_id(step)));
                }
            }
            a.usage_rollup().await.unwrap();
        }

        // Act / Assert: every bucket size answers the same on both.
        let now = at(3 * 3600);
        for bucket in [Bucket::Minute, Bucket::Hour, Bucket::Day, Bucket::Month] {
            let q = SeriesQuery {
                subject: license_subject("lic"),
                bucket,
                from: bucket.floor(T0.millis()),
                to: bucket.ceil(now.millis() + 1),
                now: now.millis(),
                seats_now: 3,
            };
            let (sa, sb) = (
                a.usage_series(&q).await.unwrap(),
                b.usage_series(&q).await.unwrap(),
            );
            for (i, (x, y)) in sa.buckets.iter().zip(sb.buckets.iter()).enumerate() {
                assert_eq!(x, y, "{bucket:?} bucket {i}");
            }
            assert_eq!(sa, sb, "{bucket:?}");
            assert!(sa.high_water >= 2, "{bucket:?}: {sa:?}");
        }
    }
}
