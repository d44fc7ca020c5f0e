//! PostgreSQL test support: a fresh database per test, real `leasehold serve` nodes on it, and a
//! TCP proxy in front of PostgreSQL that a test can cut to simulate the database going away.
//!
//! The server comes from `LEASEHOLD_TEST_DATABASE_URL` (a role that may create databases).
//! Unset, the tests print a notice and pass without running, except under CI (`CI` set), where
//! a missing database is a failure.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::Connection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::{free_port, BIN};

pub const ROOT: &str = "root-token-for-multinode-tests-0123456789";

/// The base URL, or `None` (with a notice) when PostgreSQL tests cannot run here.
pub fn base_url(test: &str) -> Option<String> {
    match std::env::var("LEASEHOLD_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: LEASEHOLD_TEST_DATABASE_URL must be set in CI"
            );
            eprintln!("notice: {test} skipped: set LEASEHOLD_TEST_DATABASE_URL to run it");
            None
        }
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let end = base[start..]
        .find('/')
        .map(|i| start + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// `url` pointed at `127.0.0.1:port` instead of its host, and the `host:port` it had.
pub fn with_port(url: &str, port: u16) -> (String, String) {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    let end = url[start..]
        .find('/')
        .map(|i| start + i)
        .unwrap_or(url.len());
    let authority = &url[start..end];
    let (creds, host) = match authority.rsplit_once('@') {
        Some((c, h)) => (format!("{c}@"), h),
        None => (String::new(), authority),
    };
    let target = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    let target = target.replace("localhost", "127.0.0.1");
    (
        format!("{}{creds}127.0.0.1:{port}{}", &url[..start], &url[end..]),
        target,
    )
}

/// A database created for one test, dropped by `drop_db` (or left for CI's cleanup when the
/// test fails: see `test_database_name`).
pub struct TestDb {
    pub url: String,
    pub name: String,
    admin: String,
}

impl TestDb {
    pub async fn create(test: &str) -> Option<TestDb> {
        let admin = base_url(test)?;
        let name = test_database_name(&admin);
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("LEASEHOLD_TEST_DATABASE_URL must accept connections");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        Some(TestDb {
            url: with_database(&admin, &name),
            name,
            admin,
        })
    }

    /// Runs one statement as the admin role, in the admin database.
    pub async fn admin_sql(&self, sql: &str) {
        let mut conn = sqlx::PgConnection::connect(&self.admin).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        conn.close().await.ok();
    }

    /// The database as an earlier version left it: `migrations` applied in order and recorded
    /// as schema versions 1, 2… (a migration test then runs `leasehold migrate`). Answers a
    /// connection to it.
    pub async fn at_version(&self, migrations: &[&str]) -> sqlx::PgConnection {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY,
                                          applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        for (i, sql) in migrations.iter().enumerate() {
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(i as i32 + 1)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn
    }

    /// Every license's live counters (`license_live`, kept by triggers) against a count of its
    /// sessions, in one snapshot: in use (not under the license's floor), every live session,
    /// the overdraft ones.
    pub async fn assert_live_counts_exact(&self) {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        let rows: Vec<(String, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT l.id,
                    (SELECT COALESCE(sum(live), 0)::int8 FROM license_live c
                     WHERE c.license_id = l.id AND c.epoch = l.end_below),
                    (SELECT count(*) FROM sessions s WHERE s.license_id = l.id
                     AND s.ended_at IS NULL AND s.seq >= l.end_below),
                    (SELECT COALESCE(sum(live), 0)::int8 FROM license_live c
                     WHERE c.license_id = l.id),
                    (SELECT count(*) FROM sessions s WHERE s.license_id = l.id
                     AND s.ended_at IS NULL),
                    (SELECT COALESCE(sum(overdraft), 0)::int8 FROM license_live c
                     WHERE c.license_id = l.id),
                    (SELECT count(*) FROM sessions s WHERE s.license_id = l.id
                     AND s.ended_at IS NULL AND s.overdraft)
             FROM licenses l",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        conn.close().await.ok();
        for (id, in_use, counted_in_use, live, counted_live, over, counted_over) in rows {
            assert_eq!(
                (in_use, live, over),
                (counted_in_use, counted_live, counted_over),
                "license {id}: counters (in use, live, overdraft) against the sessions"
            );
        }
    }

    pub async fn drop_db(self) {
        self.admin_sql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .await;
    }
}

/// One `leasehold serve` process.
pub struct Node {
    child: Child,
    pub url: String,
    pub log: std::path::PathBuf,
}

impl Node {
    /// Starts a node (PostgreSQL when `database_url` is given, else SQLite in `data_dir`)
    /// without waiting for it: several nodes start at once, as in a real rollout.
    pub fn spawn(database_url: Option<&str>, data_dir: &Path, root: Option<&str>) -> Node {
        Node::spawn_with_env(database_url, data_dir, root, &[])
    }

    /// `spawn`, with extra environment variables (e.g. a faked clock).
    pub fn spawn_with_env(
        database_url: Option<&str>,
        data_dir: &Path,
        root: Option<&str>,
        env: &[(&str, &str)],
    ) -> Node {
        std::fs::create_dir_all(data_dir).unwrap();
        let port = free_port();
        let log = data_dir.join(format!("node-{port}.log"));
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir)
        .env_remove("LEASEHOLD_DATABASE_URL")
        .env_remove("LEASEHOLD_ADMIN_TOKEN")
        .env("LEASEHOLD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        if let Some(url) = database_url {
            cmd.args(["--database-url", url]);
        }
        if let Some(root) = root {
            cmd.env("LEASEHOLD_ADMIN_TOKEN", root);
        }
        cmd.envs(env.iter().copied());
        Node {
            child: cmd.spawn().unwrap(),
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    pub async fn ready(&mut self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "node {} exited early ({status}):\n{}",
                    self.url,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not become healthy",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One multi-node test at a time: each runs several servers, and two machines' worth of
/// nodes would fight over 2 cores and PostgreSQL's connection limit.
pub async fn exclusive() -> tokio::sync::SemaphorePermit<'static> {
    static SLOT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    SLOT.acquire().await.unwrap()
}

/// Starts `n` PostgreSQL nodes at once on `db` and waits until all serve.
pub async fn cluster(db_url: &str, dir: &Path, n: usize) -> Vec<Node> {
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| Node::spawn(Some(db_url), &dir.join(format!("node{i}")), Some(ROOT)))
        .collect();
    for node in &mut nodes {
        node.ready().await;
    }
    nodes
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// One call: status and JSON body, or the transport error (a dead node).
pub async fn call(
    http: &reqwest::Client,
    method: Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value), reqwest::Error> {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await?;
    let status = r.status();
    let text = r.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// A heartbeat of `id` on `node`: its status and body.
pub async fn beat(
    http: &reqwest::Client,
    node: &str,
    token: &str,
    id: &str,
) -> (StatusCode, Value) {
    call(
        http,
        Method::POST,
        format!("{node}/v1/sessions/{id}/heartbeat"),
        token,
        Some(serde_json::json!({})),
    )
    .await
    .unwrap()
}

/// Heartbeats `id` on `node` every 50 ms until it is answered something else than 200; how
/// long that took (at most `limit`).
pub async fn until_refused(
    http: &reqwest::Client,
    node: &str,
    token: &str,
    id: &str,
    limit: Duration,
) -> (Duration, StatusCode, Value) {
    let started = Instant::now();
    loop {
        let (st, b) = beat(http, node, token, id).await;
        if st != StatusCode::OK {
            return (started.elapsed(), st, b);
        }
        assert!(
            started.elapsed() < limit,
            "still answered 200 after {:?}: {b}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Account, license and users made through one node's API.
pub struct Setup {
    pub account: String,
    pub admin: String,
    pub license: String,
}

pub async fn setup(http: &reqwest::Client, node: &str, license: Value) -> Setup {
    let (s, a) = call(
        http,
        Method::POST,
        format!("{node}/v1/accounts"),
        ROOT,
        Some(serde_json::json!({"name": "Acme"})),
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let account = a["id"].as_str().unwrap().to_owned();
    let admin = a["admin_token"].as_str().unwrap().to_owned();
    let mut body = license;
    body["account_id"] = Value::String(account.clone());
    let (s, l) = call(
        http,
        Method::POST,
        format!("{node}/v1/licenses"),
        &admin,
        Some(body),
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::CREATED, "{l}");
    Setup {
        account,
        admin,
        license: l["id"].as_str().unwrap().to_owned(),
    }
}

impl Setup {
    /// Creates an interactive user and answers a token of theirs.
    pub async fn user(&self, http: &reqwest::Client, node: &str, name: &str) -> String {
        let (s, b) = call(
            http,
            Method::PUT,
            format!("{node}/v1/accounts/{}/users/{name}", self.account),
            &self.admin,
            Some(serde_json::json!({"kind": "interactive"})),
        )
        .await
        .unwrap();
        assert!(s.is_success(), "{b}");
        let (s, t) = call(
            http,
            Method::POST,
            format!("{node}/v1/accounts/{}/users/{name}/tokens", self.account),
            &self.admin,
            Some(serde_json::json!({})),
        )
        .await
        .unwrap();
        assert_eq!(s, StatusCode::CREATED, "{t}");
        t["token"].as_str().unwrap().to_owned()
    }

    pub async fn in_use(&self, http: &reqwest::Client, node: &str) -> u64 {
        let (s, l) = call(
            http,
            Method::GET,
            format!("{node}/v1/licenses/{}", self.license),
            &self.admin,
            None,
        )
        .await
        .unwrap();
        assert_eq!(s, StatusCode::OK, "{l}");
        l["usage"]["in_use"].as_u64().unwrap()
    }

    pub async fn audit(&self, http: &reqwest::Client, node: &str) -> Vec<Value> {
        let (s, a) = call(
            http,
            Method::GET,
            format!("{node}/v1/licenses/{}/audit", self.license),
            &self.admin,
            None,
        )
        .await
        .unwrap();
        assert_eq!(s, StatusCode::OK, "{a}");
        a["events"].as_array().unwrap().clone()
    }

    pub async fn live_ids(&self, http: &reqwest::Client, node: &str) -> Vec<String> {
        let (s, l) = call(
            http,
            Method::GET,
            format!("{node}/v1/licenses/{}/sessions", self.license),
            &self.admin,
            None,
        )
        .await
        .unwrap();
        assert_eq!(s, StatusCode::OK, "{l}");
        l["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// A TCP proxy to PostgreSQL. `cut()` drops every connection and refuses new ones (as a
/// stopped database would); `restore()` lets connections through again.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let task = {
            let up = up.clone();
            let generation = generation.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = target.clone();
                    let mut cut = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(&target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Proxy {
            port,
            up,
            generation,
            task,
        }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// A fresh name for a test's own database: the base database's name (the one
/// `LEASEHOLD_TEST_DATABASE_URL` points at) + `_t_` + random hex, so that a CI run drops only
/// the databases of its own tests, never those of another run on the same server.
fn test_database_name(base_url: &str) -> String {
    let path = base_url.split_once('?').map_or(base_url, |(b, _)| b);
    let after_host = path.find("://").map_or(path, |i| &path[i + 3..]);
    let base = after_host
        .split_once('/')
        .map(|(_, db)| db)
        .filter(|db| !db.is_empty())
        .unwrap_or("leasehold");
    format!(
        "{base}_t_{:016x}",
        RandomState::new().build_hasher().finish()
    )
}
