//! The load itself: the workers that drive a run, and the opening of many sessions (the
//! admin calls that set a scenario up are in `setup.rs`).
//!
//! Every worker is a task with one keep-alive connection and its own histograms, so the hot
//! loop shares nothing but a few atomics. Given several servers (the nodes of one cluster),
//! worker `i` connects to server `i % n`: the connections are spread round-robin. Closed loop (as fast as answers come back) by default;
//! open loop at a fixed total rate with `rate`: a pacer thread releases sends evenly (every
//! `PACER_TICK`; tokio's timers fire per millisecond, which would send the load in bursts of
//! rate/1000 requests and measure the generator's own queueing), an idle worker takes the next
//! one. Latency is measured from the actual send, and sends that left more than one worker
//! interval (workers / rate) after their scheduled time are counted as `behind`, so a
//! generator that cannot keep up is visible.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::hist::Hist;
use crate::http::{json_str, Conn, Request};

/// How long and how hard to drive.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub warmup: Duration,
    pub duration: Duration,
    /// Total requests (operations) per second; `None`: as fast as the server answers.
    pub rate: Option<f64>,
}

/// What the workers measured, merged.
#[derive(Default, Clone)]
pub struct Stats {
    /// Every request.
    pub all: Hist,
    /// Opens (checkout, contended) — or the only request kind.
    pub open: Hist,
    /// Closes (checkout, contended).
    pub close: Hist,
    /// Completed operations (a checkout cycle is one operation of two requests).
    pub ops: u64,
    pub requests: u64,
    pub errors: u64,
    /// 409 no_seat_available answers (contended): answers, not errors.
    pub denials: u64,
    pub behind: u64,
    pub connects: u64,
    pub first_error: Option<String>,
    /// Measured seconds.
    pub secs: f64,
}

impl Stats {
    fn merge(&mut self, o: &Stats) {
        self.all.merge(&o.all);
        self.open.merge(&o.open);
        self.close.merge(&o.close);
        self.ops += o.ops;
        self.requests += o.requests;
        self.errors += o.errors;
        self.denials += o.denials;
        self.behind += o.behind;
        self.connects += o.connects;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }

    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.secs.max(1e-9)
    }
}

/// One live session the bench holds: its owner's token, its id, and the index of the server
/// (of the addresses it was opened over) that opened it.
#[derive(Clone)]
pub struct Held {
    pub token: Arc<str>,
    pub id: String,
    pub node: usize,
}

/// What one worker does per operation.
#[derive(Clone)]
pub enum Job {
    Healthz,
    /// Heartbeats its sessions round-robin.
    Heartbeat(Arc<Vec<Held>>),
    /// Open then close, on a license with free seats.
    Checkout {
        token: Arc<str>,
        body: Arc<Vec<u8>>,
    },
    /// Open; close when granted; a denial is an answer.
    Contended {
        token: Arc<str>,
        body: Arc<Vec<u8>>,
    },
}

/// Outside control of a run: record only while `record` is set; end early once `stop` is.
#[derive(Clone, Default)]
pub struct Control {
    pub record: Option<Arc<AtomicBool>>,
    pub stop: Option<Arc<AtomicBool>>,
}

/// Runs `jobs[i]` on worker `i`, connected to `addrs[i % addrs.len()]`, for the shape's
/// warmup + duration.
pub async fn drive(addrs: &[SocketAddr], shape: Shape, jobs: Vec<Job>) -> anyhow::Result<Stats> {
    drive_controlled(addrs, shape, jobs, Control::default()).await
}

/// How often the open-loop pacer releases the sends that became due.
const PACER_TICK: Duration = Duration::from_micros(100);

/// The open loop's schedule: send `k` is due at `start + k / rate`.
struct Pacer {
    /// One permit per send that is due and not yet taken.
    due: Semaphore,
    /// Sends taken so far (the next one's index).
    taken: AtomicU64,
    start: Instant,
    rate: f64,
}

impl Pacer {
    /// Releases due sends every `PACER_TICK` until `until` (or `done`), on its own thread.
    fn start(rate: f64, until: Instant, done: Arc<AtomicBool>) -> Arc<Pacer> {
        let pacer = Arc::new(Pacer {
            due: Semaphore::new(0),
            taken: AtomicU64::new(0),
            start: Instant::now(),
            rate,
        });
        let p = pacer.clone();
        std::thread::spawn(move || {
            // Linux otherwise lets a 100 µs sleep overrun by its default 50 µs timer slack.
            // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
            }
            let mut released = 0u64;
            loop {
                let now = Instant::now();
                if now >= until || done.load(Ordering::Relaxed) {
                    break;
                }
                let due = ((now - p.start).as_secs_f64() * p.rate) as u64;
                if due > released {
                    p.due.add_permits((due - released) as usize);
                    released = due;
                }
                std::thread::sleep(PACER_TICK);
            }
            p.due.close();
        });
        pacer
    }

    /// Waits for the next due send; how late it is against its schedule. `None`: the run ended.
    async fn next(&self) -> Option<Duration> {
        self.due.acquire().await.ok()?.forget();
        let k = self.taken.fetch_add(1, Ordering::Relaxed);
        let scheduled = self.start + Duration::from_secs_f64(k as f64 / self.rate);
        Some(Instant::now().saturating_duration_since(scheduled))
    }
}

/// `drive` under outside control.
pub async fn drive_controlled(
    addrs: &[SocketAddr],
    shape: Shape,
    jobs: Vec<Job>,
    control: Control,
) -> anyhow::Result<Stats> {
    if addrs.is_empty() {
        bail!("no server to drive");
    }
    let workers = jobs.len();
    let start = Instant::now();
    let measure_from = start + shape.warmup;
    let until = measure_from + shape.duration;
    let done = Arc::new(AtomicBool::new(false));
    let pacer = shape.rate.map(|r| {
        let rate = r.max(1e-3);
        let late = Duration::from_secs_f64(workers as f64 / rate);
        (Pacer::start(rate, until, done.clone()), late)
    });
    let mut handles = Vec::with_capacity(workers);
    for (i, job) in jobs.into_iter().enumerate() {
        handles.push(tokio::spawn(worker(
            addrs[i % addrs.len()],
            job,
            pacer.clone(),
            (measure_from, until),
            control.clone(),
        )));
    }
    let mut total = Stats::default();
    let mut failure = None;
    for h in handles {
        match h.await {
            Ok(st) => total.merge(&st),
            Err(e) => failure = Some(e),
        }
    }
    done.store(true, Ordering::Relaxed);
    if let Some(e) = failure {
        return Err(e).context("bench worker panicked");
    }
    total.secs = shape.duration.as_secs_f64();
    Ok(total)
}

async fn worker(
    addr: SocketAddr,
    job: Job,
    pacer: Option<(Arc<Pacer>, Duration)>,
    (measure_from, until): (Instant, Instant),
    control: Control,
) -> Stats {
    let flag = |f: &Option<Arc<AtomicBool>>, default: bool| {
        f.as_ref().map_or(default, |f| f.load(Ordering::Relaxed))
    };
    let mut conn = Conn::new(addr);
    let mut st = Stats::default();
    let mut raw = Vec::with_capacity(512);
    let mut turn = 0usize;
    loop {
        if let Some((pacer, late)) = &pacer {
            match pacer.next().await {
                Some(lateness) => {
                    if lateness > *late {
                        st.behind += u64::from(Instant::now() >= measure_from);
                    }
                }
                None => break,
            }
        }
        let began = Instant::now();
        if began >= until || flag(&control.stop, false) {
            break;
        }
        let record = began >= measure_from && flag(&control.record, true);
        let result = one_op(&mut conn, &job, &mut raw, &mut turn, &mut st, record).await;
        if let Err(e) = result {
            if record {
                st.error(e);
            }
            // Do not spin on a dead server.
            tokio::time::sleep(Duration::from_millis(5)).await;
        } else if record {
            st.ops += 1;
        }
    }
    st.connects = conn.connects;
    st
}

/// Sends one request, records its latency; the status and the time it took.
async fn timed(
    conn: &mut Conn,
    raw: &[u8],
    st: &mut Stats,
    record: bool,
) -> Result<(u16, Duration), String> {
    let t = Instant::now();
    let status = conn.send(raw).await.map_err(|e| e.to_string())?;
    let took = t.elapsed();
    if record {
        st.all.record(took);
        st.requests += 1;
    }
    Ok((status, took))
}

pub(crate) fn unexpected(what: &str, status: u16, body: &[u8]) -> String {
    format!(
        "{what}: HTTP {status}: {}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    )
}

async fn one_op(
    conn: &mut Conn,
    job: &Job,
    raw: &mut Vec<u8>,
    turn: &mut usize,
    st: &mut Stats,
    record: bool,
) -> Result<(), String> {
    match job {
        Job::Healthz => {
            Conn::encode(
                &Request {
                    method: "GET",
                    path: "/healthz",
                    token: None,
                    body: None,
                },
                raw,
            );
            let (status, took) = timed(conn, raw, st, record).await?;
            if record {
                st.open.record(took);
            }
            if status != 200 {
                return Err(unexpected("healthz", status, conn.body()));
            }
        }
        Job::Heartbeat(sessions) => {
            let held = &sessions[*turn % sessions.len()];
            *turn += 1;
            let path = format!("/v1/sessions/{}/heartbeat", held.id);
            Conn::encode(
                &Request {
                    method: "POST",
                    path: &path,
                    token: Some(&held.token),
                    body: None,
                },
                raw,
            );
            let (status, took) = timed(conn, raw, st, record).await?;
            if record {
                st.open.record(took);
            }
            if status != 200 {
                return Err(unexpected("heartbeat", status, conn.body()));
            }
        }
        Job::Checkout { token, body } | Job::Contended { token, body } => {
            Conn::encode(
                &Request {
                    method: "POST",
                    path: "/v1/sessions",
                    token: Some(token),
                    body: Some(body),
                },
                raw,
            );
            let (status, took) = timed(conn, raw, st, record).await?;
            if record {
                st.open.record(took);
            }
            match status {
                201 => {}
                409 if matches!(job, Job::Contended { .. }) => {
                    if record {
                        st.denials += 1;
                    }
                    return Ok(());
                }
                _ => return Err(unexpected("open", status, conn.body())),
            }
            let path = match json_str(conn.body(), "id") {
                Some(id) => format!("/v1/sessions/{id}"),
                None => return Err("open: no session id in the answer".into()),
            };
            Conn::encode(
                &Request {
                    method: "DELETE",
                    path: &path,
                    token: Some(token),
                    body: None,
                },
                raw,
            );
            let (status, took) = timed(conn, raw, st, record).await?;
            if record {
                st.close.record(took);
            }
            if status != 204 {
                return Err(unexpected("close", status, conn.body()));
            }
        }
    }
    Ok(())
}

/// The body of `POST /v1/sessions` on `license_id` from `device`, `instance`.
pub fn open_body(license_id: &str, device: &str, instance: &str) -> Vec<u8> {
    json!({"license_id": license_id, "device_id": device, "instance_id": instance})
        .to_string()
        .into_bytes()
}

/// Opens `n` sessions on `license_id`, session `i` held by `tokens[i % tokens.len()]` on its
/// own device and instance, `concurrency` opens in flight (opener `k` on `addrs[k % n]`).
/// Returns them and the open stats.
pub async fn open_many(
    addrs: &[SocketAddr],
    license_id: &str,
    tokens: &[Arc<str>],
    n: usize,
    concurrency: usize,
    tag: &str,
    progress: bool,
) -> anyhow::Result<(Vec<Held>, Stats)> {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let tokens: Arc<Vec<Arc<str>>> = Arc::new(tokens.to_vec());
    if addrs.is_empty() {
        bail!("no server to open sessions on");
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for k in 0..concurrency.clamp(1, n.max(1)) {
        let node = k % addrs.len();
        let addr = addrs[node];
        let (next, failed, tokens) = (next.clone(), failed.clone(), tokens.clone());
        let (license, tag) = (license_id.to_owned(), tag.to_owned());
        handles.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut st = Stats::default();
            let mut out = Vec::new();
            let mut raw = Vec::with_capacity(512);
            while !failed.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if progress && i > 0 && i % 100_000 == 0 {
                    eprintln!(
                        "  opened {i} sessions ({:.0}/s)",
                        i as f64 / started.elapsed().as_secs_f64()
                    );
                }
                let token = tokens[i % tokens.len()].clone();
                let body = open_body(&license, &format!("{tag}-d{i}"), &format!("{tag}-i{i}"));
                Conn::encode(
                    &Request {
                        method: "POST",
                        path: "/v1/sessions",
                        token: Some(&token),
                        body: Some(&body),
                    },
                    &mut raw,
                );
                match timed(&mut conn, &raw, &mut st, true).await {
                    Ok((201, took)) => {
                        st.open.record(took);
                        st.ops += 1;
                        match json_str(conn.body(), "id") {
                            Some(id) => out.push(Held {
                                token,
                                id: id.to_owned(),
                                node,
                            }),
                            None => st.error("open: no id".into()),
                        }
                    }
                    Ok((status, _)) => {
                        st.error(unexpected("open", status, conn.body()));
                        failed.store(true, Ordering::Relaxed);
                    }
                    Err(e) => {
                        st.error(e);
                        failed.store(true, Ordering::Relaxed);
                    }
                }
            }
            st.connects = conn.connects;
            (out, st)
        }));
    }
    let mut held = Vec::with_capacity(n);
    let mut total = Stats::default();
    for h in handles {
        let (out, st) = h.await?;
        held.extend(out);
        total.merge(&st);
    }
    total.secs = started.elapsed().as_secs_f64();
    if let Some(e) = &total.first_error {
        bail!("opening sessions failed after {}: {e}", held.len());
    }
    Ok((held, total))
}
