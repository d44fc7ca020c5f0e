//! Usage series on PostgreSQL (`crate::usage`). One node folds at a time: each chunk is one
//! transaction under a transaction-scoped advisory lock, folding the settled events (see
//! `usage::fold`) after the stored watermark up to the audit log's horizon (`audit::horizon`: no event can still commit
//! below it, so none is skipped however nodes interleave), and writing rows, states and the
//! watermark with multi-row statements. A node whose folder is not at the stored watermark
//! (another node folded meanwhile) reloads the states it needs from the rows; so a node that sees
//! another one fold leaves the background fold to it for a while (`LEAVE_TO_OTHER`), and one node
//! ends up folding, reading each event once (`usage::ReadAhead`).

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Row};
use tokio::sync::Mutex;

use super::audit::horizon;
use super::errors::db_error;
use crate::codec::parse_terms;
use crate::usage::fold::subjects;
use crate::usage::sql::{self, decode_hist, encode_hist, row_from, row_values, SeriesQuery};
use crate::usage::{
    in_time_order, settled, Acc, Bucket, Folder, Grain, SeriesRows, SubjectState, UsageEvent,
    UsageSeries, Writes, CHUNK, PENDING_FOR_MS,
};
use crate::StoreResult;

/// Key of the advisory lock of the usage fold ("usage" in ASCII).
const FOLD_LOCK: i64 = 0x0075_7361_6765;

/// How long a node leaves the background fold to the node that folded last. The nodes' ticks
/// are not aligned, so without it every node would fold in turn, each reloading the states and
/// re-reading the events another node had just folded.
const LEAVE_TO_OTHER: Duration = Duration::from_secs(3);

/// This node's fold.
#[derive(Default)]
pub(super) struct PgRollup(Mutex<FoldNode>);

/// This node's part in the fold.
#[derive(Default)]
struct FoldNode {
    /// `None`: rebuilt at the next chunk.
    folder: Option<Folder>,
    /// The stored watermark as this node last saw or wrote it.
    seen: Option<i64>,
    /// Another node moved the watermark: this one leaves the background fold to it till then.
    left_until: Option<Instant>,
}

impl PgRollup {
    /// Folds what has settled. `wait`: wait for the node folding now (a query); otherwise a
    /// node that does not get the lock answers 0 at once (the background fold).
    pub(super) async fn catch_up(
        &self,
        pool: &PgPool,
        known: &AtomicI64,
        wait: bool,
    ) -> StoreResult<usize> {
        let mut node = self.0.lock().await;
        if !wait && node.left_until.is_some_and(|t| Instant::now() < t) {
            return Ok(0);
        }
        catch_up(pool, known, &mut node, wait).await
    }

    /// Folds what has settled, then reads the series with the rest folded in memory, in one
    /// transaction holding the fold's lock (no node folds between the reads).
    pub(super) async fn series(
        &self,
        pool: &PgPool,
        known: &AtomicI64,
        q: &SeriesQuery,
    ) -> StoreResult<UsageSeries> {
        let mut node = self.0.lock().await;
        catch_up(pool, known, &mut node, true).await?;
        let below = horizon(pool, known).await?;
        let mut tx = pool.begin().await.map_err(db_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FOLD_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let f = current(&mut tx, &mut node.folder).await?;
        let (after, _) = f.ahead.next_read(f.watermark);
        let mut tail = f.ahead.tail().to_vec();
        tail.extend(read_events(&mut tx, after, below, TAIL_MAX).await?);
        let mut rows = read_rows(&mut tx, q).await?;
        if !tail.is_empty() {
            let mut fork = f.fork(&subjects(&tail));
            for subject in fork.missing(&tail) {
                if let Some(state) = load_subject(&mut tx, &subject).await? {
                    fork.insert(state);
                }
            }
            let seats = current_seats(&mut tx, &tail).await?;
            for e in in_time_order(&tail) {
                fork.fold(&e, &|id| seats.get(id).copied());
            }
            rows.merge_tail(q, &fork.take_writes());
        }
        tx.rollback().await.map_err(db_error)?;
        Ok(rows.series(q))
    }
}

/// Most events of the tail a query folds in memory (those of the last `SETTLE_MS`).
const TAIL_MAX: usize = 1_000_000;

async fn catch_up(
    pool: &PgPool,
    known: &AtomicI64,
    node: &mut FoldNode,
    wait: bool,
) -> StoreResult<usize> {
    let mut total = 0;
    loop {
        match chunk(pool, known, node, wait).await {
            Ok(Some(n)) if n >= CHUNK => total += n,
            Ok(Some(n)) => return Ok(total + n),
            Ok(None) => return Ok(total),
            Err(e) => {
                node.folder = None;
                return Err(e);
            }
        }
    }
}

/// The folder at the stored watermark (rebuilt when another node folded meanwhile).
async fn current<'a>(
    conn: &mut PgConnection,
    folder: &'a mut Option<Folder>,
) -> StoreResult<&'a mut Folder> {
    let watermark: i64 = sqlx::query_scalar(sql::WATERMARK)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
    if folder.as_ref().is_none_or(|f| f.watermark != watermark) {
        let pending: Vec<(String, i64)> = sqlx::query_as(sql::PENDING)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        *folder = Some(Folder::resume(watermark, pending.into_iter().collect()));
    }
    folder
        .as_mut()
        .ok_or_else(|| crate::StoreError::Unavailable("the usage fold has no state".into()))
}

async fn read_events(
    conn: &mut PgConnection,
    after: i64,
    below: i64,
    limit: usize,
) -> StoreResult<Vec<UsageEvent>> {
    sqlx::query(sql::EVENTS)
        .bind(after)
        .bind(below)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?
        .iter()
        .map(|r| {
            Ok(UsageEvent {
                seq: r.try_get(0)?,
                at: r.try_get(1)?,
                account_id: r.try_get(2)?,
                license_id: r.try_get(3)?,
                session_id: r.try_get(4)?,
                username: r.try_get(5)?,
                event: r.try_get(6)?,
                detail: r.try_get(7)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(db_error)
}

/// The seats now of the licenses of `events`.
async fn current_seats(
    conn: &mut PgConnection,
    events: &[UsageEvent],
) -> StoreResult<HashMap<String, i64>> {
    let mut seats: HashMap<String, i64> = HashMap::new();
    for e in events {
        if e.license_id.is_empty() || seats.contains_key(&e.license_id) {
            continue;
        }
        let terms: Option<String> = sqlx::query_scalar(sql::LICENSE_TERMS)
            .bind(&e.license_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        if let Some(t) = terms {
            let n = parse_terms(&e.license_id, &t)?.seats;
            seats.insert(e.license_id.clone(), i64::from(n));
        }
    }
    Ok(seats)
}

/// One chunk in one transaction; `None` when another node holds the lock or folded since this
/// one last looked (and `wait` is off: the background fold).
async fn chunk(
    pool: &PgPool,
    known: &AtomicI64,
    node: &mut FoldNode,
    wait: bool,
) -> StoreResult<Option<usize>> {
    let below = horizon(pool, known).await?;
    let mut tx = pool.begin().await.map_err(db_error)?;
    if wait {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FOLD_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    } else {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(FOLD_LOCK)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        if !got {
            return Ok(None);
        }
        let stored: i64 = sqlx::query_scalar(sql::WATERMARK)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        if node.seen.is_some_and(|seen| seen != stored) {
            node.seen = Some(stored);
            node.left_until = Some(Instant::now() + LEAVE_TO_OTHER);
            return Ok(None);
        }
    }
    let folder = &mut node.folder;
    let f = current(&mut tx, folder).await?;
    node.seen = Some(f.watermark);
    let (after, room) = f.ahead.next_read(f.watermark);
    let read = match room {
        0 => Vec::new(),
        _ => read_events(&mut tx, after, below, room).await?,
    };
    let read = f.ahead.chunk(read, room, below);
    let latest: Option<i64> = sqlx::query_scalar(sql::LATEST_AT)
        .bind(below)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
    let take = settled(&read, latest.unwrap_or(i64::MIN));
    let (events, rest) = read.split_at(take.min(read.len()));
    f.ahead.keep(rest.to_vec());
    if events.is_empty() {
        return Ok(Some(0));
    }
    for subject in f.missing(events) {
        if let Some(state) = load_subject(&mut tx, &subject).await? {
            f.insert(state);
        }
    }
    let seats = current_seats(&mut tx, events).await?;
    for e in in_time_order(events) {
        f.fold(&e, &|id| seats.get(id).copied());
    }
    let forget = f.latest() - PENDING_FOR_MS;
    f.forget_pending_before(forget);
    let writes = f.take_writes();
    if let Err(e) = write(&mut tx, &writes, forget).await {
        *folder = None;
        return Err(e);
    }
    tx.commit().await.map_err(db_error)?;
    node.seen = Some(writes.watermark);
    Ok(Some(events.len()))
}

fn read_row(r: &sqlx::postgres::PgRow) -> Result<Acc, sqlx::Error> {
    let mut v = [0i64; 16];
    for (i, slot) in v.iter_mut().enumerate() {
        *slot = r.try_get(i)?;
    }
    let mut acc = row_from(v);
    acc.hist = decode_hist(r.try_get::<&str, _>(16)?);
    Ok(acc)
}

async fn load_subject(conn: &mut PgConnection, subject: &str) -> StoreResult<Option<SubjectState>> {
    let state: Option<(i64, i64, i64)> = sqlx::query_as(sql::STATE)
        .bind(subject)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    let Some((in_use, seats, t)) = state else {
        return Ok(None);
    };
    let mut st = SubjectState::fresh(subject.to_owned(), seats, t);
    st.in_use = in_use;
    for g in Grain::ALL {
        let start = g.start_of(t);
        let row = sqlx::query(&sql::row_at())
            .bind(subject)
            .bind(g.code())
            .bind(start)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        let Some(row) = row else { continue };
        let mut acc = read_row(&row).map_err(db_error)?;
        let users: Vec<String> = sqlx::query_scalar(sql::ROW_USERS)
            .bind(subject)
            .bind(g.code())
            .bind(start)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        acc.users.extend(users);
        acc.users_written = !acc.users.is_empty();
        if let Some(slot) = st.open.get_mut(g.index()) {
            *slot = Some(acc);
        }
    }
    Ok(Some(st))
}

/// Writes a chunk's changes with one statement per table.
async fn write(conn: &mut PgConnection, w: &Writes, forget: i64) -> StoreResult<()> {
    let mut rows: Vec<(&str, Grain, &Acc, bool)> = w
        .closed
        .iter()
        .map(|(s, g, a)| (s.as_str(), *g, a, false))
        .collect();
    for st in &w.states {
        for (g, acc) in Grain::ALL.iter().zip(st.open.iter()) {
            if let Some(acc) = acc {
                rows.push((st.subject.as_str(), *g, acc, true));
            }
        }
    }
    // Rows: subject, grain, then the 16 number columns, one array each, then the histograms.
    let subjects: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let grains: Vec<i64> = rows.iter().map(|r| r.1.code()).collect();
    let values: Vec<[i64; 16]> = rows.iter().map(|r| row_values(r.2)).collect();
    let cols: Vec<&str> = sql::ROW_COLS.split(", ").collect();
    let updates: Vec<String> = cols
        .iter()
        .skip(1)
        .chain(std::iter::once(&"hist"))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let unnest: Vec<String> = (3..=18).map(|n| format!("${n}::bigint[]")).collect();
    let put_rows = format!(
        "INSERT INTO usage_rows (subject, grain, {}, hist)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], {}, $19::text[])
         ON CONFLICT (subject, grain, start) DO UPDATE SET {}",
        sql::ROW_COLS,
        unnest.join(", "),
        updates.join(", ")
    );
    let mut q = sqlx::query(&put_rows).bind(&subjects).bind(&grains);
    for i in 0..16 {
        let col: Vec<i64> = values
            .iter()
            .map(|v| v.get(i).copied().unwrap_or(0))
            .collect();
        q = q.bind(col);
    }
    let hists: Vec<String> = rows.iter().map(|r| encode_hist(&r.2.hist)).collect();
    q.bind(&hists).execute(&mut *conn).await.map_err(db_error)?;

    let (mut us, mut ug, mut ustart, mut un) = (vec![], vec![], vec![], vec![]);
    let (mut ds, mut dg, mut dstart) = (vec![], vec![], vec![]);
    for (subject, g, acc, open) in &rows {
        match sql::user_names(*g, acc, *open) {
            sql::UserNames::Put => {
                for u in &acc.new_users {
                    us.push(*subject);
                    ug.push(g.code());
                    ustart.push(acc.start);
                    un.push(u.as_str());
                }
            }
            sql::UserNames::Drop => {
                ds.push(*subject);
                dg.push(g.code());
                dstart.push(acc.start);
            }
            sql::UserNames::Keep => {}
        }
    }
    if !ds.is_empty() {
        sqlx::query(
            "DELETE FROM usage_users u
             USING UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS d (subject, grain, start)
             WHERE u.subject = d.subject AND u.grain = d.grain AND u.start = d.start",
        )
        .bind(&ds)
        .bind(&dg)
        .bind(&dstart)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    sqlx::query(
        "INSERT INTO usage_users (subject, grain, start, username)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&us)
    .bind(&ug)
    .bind(&ustart)
    .bind(&un)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;

    let subjects: Vec<&str> = w.states.iter().map(|s| s.subject.as_str()).collect();
    let in_use: Vec<i64> = w.states.iter().map(|s| s.in_use).collect();
    let seats: Vec<i64> = w.states.iter().map(|s| s.seats).collect();
    let t: Vec<i64> = w.states.iter().map(|s| s.t).collect();
    sqlx::query(
        "INSERT INTO usage_state (subject, in_use, seats, t)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
         ON CONFLICT (subject) DO UPDATE
         SET in_use = excluded.in_use, seats = excluded.seats, t = excluded.t",
    )
    .bind(&subjects)
    .bind(&in_use)
    .bind(&seats)
    .bind(&t)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;

    let ws: Vec<&str> = w.waits.iter().map(|x| x.0.as_str()).collect();
    let wat: Vec<i64> = w.waits.iter().map(|x| x.1).collect();
    let wms: Vec<i64> = w.waits.iter().map(|x| x.2).collect();
    sqlx::query(
        "INSERT INTO usage_waits (subject, at, wait_ms)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[])",
    )
    .bind(&ws)
    .bind(&wat)
    .bind(&wms)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    for (id, license, account, at) in &w.pending_added {
        sqlx::query(sql::ADD_PENDING)
            .bind(id)
            .bind(license)
            .bind(account)
            .bind(at)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    if !w.pending_removed.is_empty() {
        sqlx::query("DELETE FROM usage_pending WHERE session_id = ANY($1)")
            .bind(&w.pending_removed)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    sqlx::query(sql::FORGET_PENDING)
        .bind(forget)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    sqlx::query(sql::SET_WATERMARK)
        .bind(w.watermark)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

async fn range(
    conn: &mut PgConnection,
    subject: &str,
    g: Grain,
    from: i64,
    to: i64,
) -> StoreResult<Vec<Acc>> {
    sqlx::query(&sql::range_rows())
        .bind(subject)
        .bind(g.code())
        .bind(from)
        .bind(to)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?
        .iter()
        .map(read_row)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(db_error)
}

async fn read_rows(conn: &mut PgConnection, q: &SeriesQuery) -> StoreResult<SeriesRows> {
    let grain = q.bucket.grain();
    let rows = range(conn, &q.subject, grain, q.from, q.to).await?;
    let hour_rows = match q.bucket {
        Bucket::Day | Bucket::Month => range(conn, &q.subject, Grain::Hour, q.from, q.to).await?,
        _ => Vec::new(),
    };
    let seed: Option<(i64, i64, i64)> = sqlx::query_as(sql::SEED)
        .bind(&q.subject)
        .bind(q.from)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    let waits: Vec<(i64, i64)> = sqlx::query_as(sql::WAITS)
        .bind(&q.subject)
        .bind(q.from)
        .bind(q.to)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
    let day_users: Vec<(i64, String)> = match q.bucket {
        Bucket::Month => sqlx::query_as(sql::DAY_USERS)
            .bind(&q.subject)
            .bind(q.from)
            .bind(q.to)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?,
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
