//! A short run of `leasehold bench` (a few seconds, small numbers) so the command cannot rot:
//! every scenario runs against a server it spawns itself, and none reports an error. The `pg`
//! scenario runs on `LEASEHOLD_TEST_DATABASE_URL` (skipped with a notice when it is unset,
//! except under CI, as the other PostgreSQL tests).

use std::path::Path;
use std::process::Command;

use crate::support::BIN;

#[test]
fn bench_runs_every_scenario_briefly() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.jsonl");
    let out = Command::new(BIN)
        .args([
            "bench",
            "sink,healthz,heartbeat,checkout,contended,hold,expire",
            "--spawn-server",
            "--concurrency",
            "4",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--half-load",
            "--sessions",
            "20",
            "--seats",
            "2",
            "--million",
            "300",
            "--million-users",
            "5",
            "--hold-secs",
            "1",
            "--hold-interval",
            "1",
            "--expire-heartbeaters",
            "10",
            "--expire-heartbeat-rate",
            "200",
            "--expire-lead",
            "1",
            "--data-root",
        ])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .env_remove("LEASEHOLD_ADMIN_TOKEN")
        .env_remove("LEASEHOLD_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    assert_printed(
        &stdout,
        &[
            "sink (generator)",
            "healthz",
            "heartbeat @50%",
            "checkout @50%",
            "contended",
            "open 300",
            "hold 300",
            "expire 300",
            "heartbeats/s / healthz req/s",
            "simultaneous expiries cleared in",
        ],
    );
    let rows = error_free_rows(&json);
    assert!(rows.len() >= 9, "{rows:?}");
    let contended = rows.iter().find(|r| r["scenario"] == "contended").unwrap();
    assert!(contended["denials"].as_u64().unwrap() > 0, "{contended}");
    let checkout = rows.iter().find(|r| r["scenario"] == "checkout").unwrap();
    assert!(checkout["server_peak_rss_mb"].as_f64().unwrap() > 0.0);
    // The spawned servers' data folders were removed.
    let left = files_besides(dir.path(), &json);
    assert!(left.is_empty(), "{left:?}");
}

/// The arguments of a brief `bench mass-end` (a few hundred sessions, short windows).
fn mass_end_args(kinds: &str) -> Vec<String> {
    [
        "bench",
        "mass-end",
        "--mass-end-kinds",
        kinds,
        "--million",
        "300",
        "--million-users",
        "5",
        "--concurrency",
        "8",
        "--expire-heartbeaters",
        "10",
        "--expire-heartbeat-rate",
        "100",
        "--mass-end-checkout-rate",
        "20",
        "--mass-end-before",
        "0.5",
        "--mass-end-settle",
        "0.3",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Checks a `bench mass-end` run's output: each kind's figures printed with no session of the
/// ended license answered live, and its rows free of errors.
fn check_mass_end(stdout: &str, json: &Path, kinds: &[&str]) {
    for kind in kinds {
        assert_printed(
            stdout,
            &[
                &format!("mass-end {kind}: open 300 on A"),
                &format!("mass-end {kind}: B heartbeats"),
                &format!("mass-end {kind}: B checkouts"),
                &format!("mass-end {kind} (300 sessions"),
            ],
        );
    }
    assert_eq!(
        stdout
            .matches("sampled sessions answered live after the call: 0 ")
            .count(),
        kinds.len(),
        "{stdout}"
    );
    let rows = error_free_rows(json);
    assert_eq!(rows.len(), 3 * kinds.len(), "{rows:?}");
    for row in rows
        .iter()
        .filter(|r| r["scenario"].as_str().unwrap().ends_with("checkouts"))
    {
        let extra = &row["extra"];
        assert_eq!(extra["sampled_live_after_call"], 0, "{row}");
        assert!(extra["all_ended_on_disk_secs"].as_f64().is_some(), "{row}");
        assert!(extra["open_p99_ms"].as_f64().unwrap() > 0.0, "{row}");
    }
}

#[test]
fn bench_mass_end_runs_each_kind_briefly() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.jsonl");
    let out = Command::new(BIN)
        .args(mass_end_args("license-end,revoke-all,deactivate"))
        .args(["--spawn-server", "--data-root"])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .env_remove("LEASEHOLD_ADMIN_TOKEN")
        .env_remove("LEASEHOLD_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed:
{stdout}
{stderr}"
    );
    check_mass_end(&stdout, &json, &["license-end", "revoke-all", "deactivate"]);
    let left = files_besides(dir.path(), &json);
    assert!(left.is_empty(), "{left:?}");
}

/// `bench mass-end` on three PostgreSQL nodes: a revoke of every session, briefly.
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_mass_end_runs_on_three_postgres_nodes_briefly() {
    let Some(url) = crate::pg::base_url("bench mass-end smoke") else {
        return;
    };
    let _slot = crate::pg::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.jsonl");
    let out = tokio::process::Command::new(BIN)
        .args(mass_end_args("revoke-all"))
        .args([
            "--database-url",
            &url,
            "--nodes",
            "3",
            "--mass-end-heartbeats-elsewhere",
            "--data-root",
        ])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .env_remove("LEASEHOLD_ADMIN_TOKEN")
        .env_remove("LEASEHOLD_URL")
        .env_remove("LEASEHOLD_DATABASE_URL")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed:
{stdout}
{stderr}"
    );
    check_mass_end(&stdout, &json, &["revoke-all"]);
    assert!(stdout.contains("(300 sessions, 3 node(s))"), "{stdout}");
}

/// `bench pg`: three nodes on a fresh PostgreSQL database and the pgbench reference, briefly;
/// no errors, the ratios printed, and the bench's databases dropped afterwards.
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_pg_runs_three_nodes_against_pgbench_briefly() {
    let Some(url) = crate::pg::base_url("bench pg smoke") else {
        return;
    };
    // The run starts three nodes and pgbench's clients: not next to another multi-node test.
    let _slot = crate::pg::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.jsonl");
    let out = tokio::process::Command::new(BIN)
        .args([
            "bench",
            "pg",
            "--database-url",
            &url,
            "--nodes",
            "3",
            "--concurrency",
            "8",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--sessions",
            "50",
            "--data-root",
        ])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .env_remove("LEASEHOLD_ADMIN_TOKEN")
        .env_remove("LEASEHOLD_URL")
        .env_remove("LEASEHOLD_DATABASE_URL")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    assert_printed(
        &stdout,
        &[
            "pgbench hot row",
            "pg checkout (3 nodes)",
            "pg heartbeat (3 nodes)",
            "PostgreSQL 3 nodes checkout cycles/s / pgbench hot-row tps",
            "PostgreSQL 3 nodes heartbeats/s",
        ],
    );
    let rows = error_free_rows(&json);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        assert!(row["ops_per_sec"].as_f64().unwrap() > 0.0, "{row}");
    }
    let checkout = rows
        .iter()
        .find(|r| r["scenario"] == "pg checkout (3 nodes)")
        .unwrap();
    assert_eq!(checkout["extra"]["nodes"], 3, "{checkout}");
    assert!(checkout["server_cpu_us_per_op"].as_f64().unwrap() > 0.0);
    // The databases the bench created are gone, and so are the nodes' data folders.
    let name = stdout
        .split_whitespace()
        .find(|w| w.starts_with("lh_bench_"))
        .unwrap()
        .to_owned();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE $1")
        .bind(format!("{name}%"))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "{name} was not dropped");
    let files = files_besides(dir.path(), &json);
    assert!(files.is_empty(), "{files:?}");
}

/// `bench pg-hold`: 2,000 sessions over three PostgreSQL nodes held for 2 s at their
/// interval, then expiring at once; no errors, the figures printed and the database dropped.
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_pg_hold_holds_and_expires_sessions_on_three_nodes_briefly() {
    let Some(url) = crate::pg::base_url("bench pg-hold smoke") else {
        return;
    };
    let _slot = crate::pg::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.jsonl");
    let out = tokio::process::Command::new(BIN)
        .args([
            "bench",
            "pg-hold",
            "--database-url",
            &url,
            "--nodes",
            "3",
            "--concurrency",
            "8",
            "--million",
            "2000",
            "--million-users",
            "20",
            "--hold-secs",
            "2",
            "--hold-interval",
            "2",
            "--expire-lead",
            "1",
            "--data-root",
        ])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .env_remove("LEASEHOLD_ADMIN_TOKEN")
        .env_remove("LEASEHOLD_URL")
        .env_remove("LEASEHOLD_DATABASE_URL")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    assert_printed(
        &stdout,
        &[
            "pg open 2000",
            "pg hold 2000",
            "PostgreSQL 3 nodes, 2000 live sessions held at",
            "node RSS",
            "all expiring at once",
        ],
    );
    let rows = error_free_rows(&json);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let hold = rows
        .iter()
        .find(|r| r["scenario"] == "pg hold 2000")
        .unwrap();
    assert_eq!(
        hold["extra"]["node_rss_mb"].as_array().unwrap().len(),
        3,
        "{hold}"
    );
    assert!(
        hold["extra"]["sessions_table"]["total_mb"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{hold}"
    );
    assert!(
        hold["extra"]["total_cpu_us_per_op"].as_f64().is_some(),
        "{hold}"
    );
    assert!(
        !stdout.contains("rows all ended after > 120 s"),
        "the sessions were not cleared:\n{stdout}"
    );
    let name = stdout
        .split_whitespace()
        .find(|w| w.starts_with("lh_bench_"))
        .unwrap()
        .to_owned();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE $1")
        .bind(format!("{name}%"))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "{name} was not dropped");
}

fn assert_printed(stdout: &str, expected: &[&str]) {
    for e in expected {
        assert!(stdout.contains(e), "no {e:?} in:\n{stdout}");
    }
}

/// The bench's JSON lines, each asserted to have answered operations and no errors.
fn error_free_rows(json: &Path) -> Vec<serde_json::Value> {
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for row in &rows {
        assert_eq!(row["errors"], 0, "{row}");
        assert!(row["ops"].as_u64().unwrap() > 0, "{row}");
    }
    rows
}

/// What the bench left in `dir` besides its JSON file.
fn files_besides(dir: &Path, json: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path() != json)
        .collect()
}
