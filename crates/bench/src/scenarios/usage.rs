//! `leasehold bench usage-query`: the usage series of a license with `--usage-events` session
//! events (10 million by default) over a year, asked for by hour over the whole year through
//! HTTP. Not in `all` (it writes gigabytes).
//!
//! 1. a fresh server (embedded, or one node on a fresh database with `--database-url`), an
//!    account and a license of `SEATS` seats; the server is stopped;
//! 2. the events are written straight into its database in bulk, in the order of their times
//!    (`Gen`: sessions opening every `year / sessions`, each lasting 1 s to 10 min, 200 users,
//!    a denial every 100 opens), after the license's `license_created` moved to the year's
//!    start; the usage rows are emptied, so the server folds the whole year again;
//! 3. the server starts again; the first query waits for the fold of every event (its time is
//!    the fold's); then `USAGE_QUERIES` queries of the year by hour are timed, and one each by
//!    day, by month, and by minute over the last 6 days.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::pg::Scratch;
use crate::http::{Conn, Request};
use crate::measure::Bench;
use crate::setup::{call_json, Admin};
use crate::spawn::{random_hex, SpawnedServer};

/// Seats of the license (the events keep about 48 sessions in use, up to about 90).
const SEATS: u64 = 100;
/// Users holding the sessions.
const USERS: u64 = 200;
/// Timed queries of the year by hour.
const USAGE_QUERIES: usize = 20;
const YEAR_MS: i64 = 365 * 86_400_000;

/// One generated event: (time, kind, session number).
type Event = (i64, &'static str, u64);

/// The events, in the order of their times: session `i` opens at `start + i * step` and ends
/// `1 s + (i * 7919 mod 599 s)` later; every 100th open is preceded by a denial.
struct Gen {
    next: u64,
    sessions: u64,
    start: i64,
    step: i64,
    ends: BinaryHeap<Reverse<(i64, u64)>>,
    denial: Option<u64>,
}

impl Gen {
    fn new(events: u64, start: i64) -> Gen {
        let sessions = (events / 2).max(1);
        Gen {
            next: 0,
            sessions,
            start,
            step: (YEAR_MS - 600_000) / i64::try_from(sessions).unwrap_or(i64::MAX),
            ends: BinaryHeap::new(),
            denial: None,
        }
    }
}

impl Iterator for Gen {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let open_at = (self.next < self.sessions)
            .then(|| self.start + i64::try_from(self.next).unwrap_or(0) * self.step);
        match (self.ends.peek(), open_at) {
            (Some(Reverse((end, i))), open) if open.is_none_or(|o| *end <= o) => {
                let e = (*end, "ended", *i);
                self.ends.pop();
                Some(e)
            }
            (_, Some(at)) => {
                let i = self.next;
                if i.is_multiple_of(100) && self.denial != Some(i) {
                    self.denial = Some(i);
                    return Some((at, "denied", i));
                }
                self.next += 1;
                let lasts = 1_000 + i64::try_from(i * 7_919 % 599_000).unwrap_or(0);
                self.ends.push(Reverse((at + lasts, i)));
                Some((at, "opened", i))
            }
            _ => None,
        }
    }
}

/// The columns of one event, for a license of `account`.
fn columns(e: Event, account: &str, license: &str) -> [String; 7] {
    let (at, kind, i) = e;
    let (session, detail) = match kind {
        "denied" => (String::new(), "no_seat_available".to_owned()),
        "opened" => (format!("s{i}"), "interactive".to_owned()),
        _ => (format!("s{i}"), "logout".to_owned()),
    };
    [
        at.to_string(),
        account.to_owned(),
        license.to_owned(),
        session,
        format!("u{}", i % USERS),
        kind.to_owned(),
        detail,
    ]
}

/// The statements that make the server fold the year again: the license's own events go
/// (the generated ones replace them), the usage rows are emptied, and the watermark is put
/// after the events left (accounts' user and token events, which the fold skips).
const RESET: &[&str] = &[
    "DELETE FROM usage_rows",
    "DELETE FROM usage_users",
    "DELETE FROM usage_waits",
    "DELETE FROM usage_pending",
    "DELETE FROM usage_state",
];

fn write_sqlite(
    path: &std::path::Path,
    n: u64,
    start: i64,
    account: &str,
    license: &str,
) -> anyhow::Result<()> {
    let mut conn = rusqlite::Connection::open(path).context("opening the server's database")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM audit_events WHERE license_id = ?1", [license])?;
    for sql in RESET {
        tx.execute(sql, [])?;
    }
    tx.execute(
        "UPDATE usage_watermark SET seq = (SELECT coalesce(max(seq), 0) FROM audit_events)",
        [],
    )?;
    tx.execute(
        "INSERT INTO audit_events (at, account_id, license_id, event, detail)
         VALUES (?1, ?2, ?3, 'license_created', ?4)",
        rusqlite::params![start - 1, account, license, format!("seats={SEATS}")],
    )?;
    tx.commit()?;
    let mut gen = Gen::new(n, start).peekable();
    while gen.peek().is_some() {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO audit_events (at, account_id, license_id, session_id, username, event, detail)
                 VALUES (?1, ?2, ?3, nullif(?4, ''), ?5, ?6, ?7)",
            )?;
            for e in gen.by_ref().take(200_000) {
                stmt.execute(rusqlite::params_from_iter(columns(e, account, license)))?;
            }
        }
        tx.commit()?;
    }
    Ok(())
}

async fn write_postgres(
    url: &str,
    n: u64,
    start: i64,
    account: &str,
    license: &str,
) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query("DELETE FROM audit_events WHERE license_id = $1")
        .bind(license)
        .execute(&mut conn)
        .await?;
    for sql in RESET {
        sqlx::query(sql).execute(&mut conn).await?;
    }
    sqlx::query(
        "UPDATE usage_watermark SET seq = (SELECT coalesce(max(seq), 0) FROM audit_events)",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "INSERT INTO audit_events (at, account_id, license_id, event, detail)
         VALUES ($1, $2, $3, 'license_created', $4)",
    )
    .bind(start - 1)
    .bind(account)
    .bind(license)
    .bind(format!("seats={SEATS}"))
    .execute(&mut conn)
    .await?;
    let mut copy = conn
        .copy_in_raw(
            "COPY audit_events (at, account_id, license_id, session_id, username, event, detail)
             FROM STDIN WITH (FORMAT text, NULL '')",
        )
        .await?;
    let mut buf = String::with_capacity(8 << 20);
    for e in Gen::new(n, start) {
        buf.push_str(&columns(e, account, license).join("\t"));
        buf.push('\n');
        if buf.len() > (8 << 20) - 512 {
            copy.send(buf.as_bytes()).await?;
            buf.clear();
        }
    }
    copy.send(buf.as_bytes()).await?;
    copy.finish().await?;
    sqlx::query("ANALYZE audit_events")
        .execute(&mut conn)
        .await?;
    Ok(())
}

fn rfc3339(ms: i64) -> anyhow::Result<String> {
    Ok(OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)?.format(&Rfc3339)?)
}

/// One query: its latency and its answer.
async fn query(conn: &mut Conn, path: &str, token: &str) -> anyhow::Result<(Duration, Value)> {
    let started = Instant::now();
    let (status, body) = conn
        .call(Request {
            method: "GET",
            path,
            token: Some(token),
            body: None,
        })
        .await?;
    let took = started.elapsed();
    if status != 200 {
        bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok((took, serde_json::from_slice(&body)?))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let scratch = match &args.database_url {
        Some(url) => Some(Scratch::create(url).await?),
        None => None,
    };
    let result = run_on(bench, scratch.as_ref()).await;
    if let Some(s) = scratch {
        s.drop_all().await?;
    }
    result
}

async fn run_on(bench: &mut Bench, scratch: Option<&Scratch>) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let n = args.usage_events;
    let db_url = scratch.map(|s| s.url(&s.name));
    let root = format!("lh_root_bench_{}", random_hex(16));
    let mut server = SpawnedServer::spawn(
        args.data_root.clone(),
        args.keep_data,
        db_url.as_deref(),
        &root,
    )?;
    server.wait_healthy().await?;
    let admin = Admin::new(server.addr, &root, "usage-bench").await?;
    let license = admin.license(SEATS, 1200).await?;
    let mut conn = Conn::new(server.addr);
    let lic = call_json(
        &mut conn,
        "GET",
        &format!("/v1/licenses/{license}"),
        &admin.admin_token,
        None,
        &[200],
    )
    .await?;
    let created = lic["created_at"].as_str().context("no created_at")?;
    let now = OffsetDateTime::parse(created, &Rfc3339)?;
    let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000)?;
    let start = now_ms - YEAR_MS;
    server.stop();

    let store = if db_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    println!("usage-query ({store}): writing {n} session events over a year…");
    let t = Instant::now();
    match &db_url {
        Some(url) => write_postgres(url, n, start, &admin.account_id, &license).await?,
        None => {
            let path = server.data_dir().join("leasehold.db");
            let (account, lic) = (admin.account_id.clone(), license.clone());
            tokio::task::spawn_blocking(move || write_sqlite(&path, n, start, &account, &lic))
                .await??
        }
    }
    let written = t.elapsed();
    println!(
        "usage-query ({store}): written in {:.1} s",
        written.as_secs_f64()
    );

    server.restart().await?;
    let mut conn = Conn::new(server.addr);
    let year = format!(
        "/v1/licenses/{license}/usage?from={}&to={}",
        rfc3339(start)?,
        rfc3339(now_ms)?
    );
    let hourly = format!("{year}&bucket=hour");
    let (fold, first) = query(&mut conn, &hourly, &admin.admin_token).await?;
    let buckets = first["buckets"].as_array().map_or(0, Vec::len);
    let opens: u64 = first["buckets"]
        .as_array()
        .map_or(0, |b| b.iter().filter_map(|x| x["opens"].as_u64()).sum());
    println!(
        "usage-query ({store}): first query (folds all {n} events) {:.1} s: {buckets} buckets, {opens} opens, high water {}",
        fold.as_secs_f64(),
        first["high_water"]
    );
    let mut times = Vec::new();
    for _ in 0..USAGE_QUERIES {
        times.push(query(&mut conn, &hourly, &admin.admin_token).await?.0);
    }
    times.sort();
    let q = |p: f64| ms(times[((times.len() - 1) as f64 * p).round() as usize]);
    let (day, _) = query(&mut conn, &format!("{year}&bucket=day"), &admin.admin_token).await?;
    let (month, _) = query(
        &mut conn,
        &format!("{year}&bucket=month"),
        &admin.admin_token,
    )
    .await?;
    let week = format!(
        "/v1/licenses/{license}/usage?from={}&to={}&bucket=minute",
        rfc3339(now_ms - 6 * 86_400_000)?,
        rfc3339(now_ms)?
    );
    let (minute, _) = query(&mut conn, &week, &admin.admin_token).await?;
    println!(
        "usage-query ({store}): year by hour p50 {:.1} ms p90 {:.1} ms max {:.1} ms ({USAGE_QUERIES} queries); by day {:.1} ms, by month {:.1} ms; 6 days by minute {:.1} ms",
        q(0.5),
        q(0.9),
        q(1.0),
        ms(day),
        ms(month),
        ms(minute)
    );
    if let Some(path) = &args.json {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let line = json!({
            "scenario": format!("usage-query-{store}"), "events": n, "write_secs": written.as_secs_f64(),
            "fold_secs": fold.as_secs_f64(), "buckets": buckets,
            "hour_year_p50_ms": q(0.5), "hour_year_p90_ms": q(0.9), "hour_year_max_ms": q(1.0),
            "day_year_ms": ms(day), "month_year_ms": ms(month), "minute_6_days_ms": ms(minute),
        });
        writeln!(f, "{line}")?;
    }
    Ok(())
}
