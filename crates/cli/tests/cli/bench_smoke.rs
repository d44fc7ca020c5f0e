//! A short run of `leasehold bench` (a few seconds, small numbers) so the command cannot rot:
//! every scenario runs against a server it spawns itself, and none reports an error.

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
    for expected in [
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
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() >= 9, "{rows:?}");
    for row in &rows {
        assert_eq!(row["errors"], 0, "{row}");
        assert!(row["ops"].as_u64().unwrap() > 0, "{row}");
    }
    let contended = rows.iter().find(|r| r["scenario"] == "contended").unwrap();
    assert!(contended["denials"].as_u64().unwrap() > 0, "{contended}");
    let checkout = rows.iter().find(|r| r["scenario"] == "checkout").unwrap();
    assert!(checkout["server_peak_rss_mb"].as_f64().unwrap() > 0.0);
    // The spawned servers' data folders were removed.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path() != json)
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
