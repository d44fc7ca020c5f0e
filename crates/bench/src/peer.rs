//! The peer reference: the same scenarios on Redis + redis-semaphore (Node), run by
//! `bench/redis-semaphore/bench.js` (`--redis-semaphore`) with the same concurrency, its
//! answer printed and appended to `--json` beside the server's rows.

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::measure::Bench;

impl Bench {
    /// Runs the peer reference's script and records its answer.
    pub(crate) async fn peer(
        &mut self,
        scenario: &str,
        rate: Option<f64>,
    ) -> anyhow::Result<Option<Value>> {
        let Some(script) = self.args.redis_semaphore.clone() else {
            return Ok(None);
        };
        let a = &self.args;
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(&script)
            .args(["--scenario", scenario])
            .args(["--concurrency", &a.concurrency.to_string()])
            .args(["--duration", &a.duration.to_string()])
            .args(["--warmup", &a.warmup.to_string()])
            .args(["--seats", &a.seats.to_string()])
            .args(["--redis-url", &a.redis_url])
            .args(["--procs", &a.redis_procs.to_string()])
            .stderr(std::process::Stdio::inherit());
        if let Some(r) = rate {
            cmd.args(["--rate", &r.to_string()]);
        }
        let out = cmd
            .output()
            .await
            .context("running node (is it installed?)")?;
        if !out.status.success() {
            bail!("the redis-semaphore script failed: {}", out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .ok_or_else(|| anyhow!("the redis-semaphore script printed no result"))?;
        let v: Value = serde_json::from_str(line)?;
        let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        println!(
            "{:<22} {:>9.0} ops/s {:>9.0} req/s | p50 {:>6.3} p99 {:>6.3} max {:>7.2} ms | errors {} denials {} | node CPU/op {:.0} µs",
            format!("redis-semaphore {scenario}"),
            f("ops_per_sec"),
            f("requests_per_sec"),
            f("p50_ms"),
            f("p99_ms"),
            f("max_ms"),
            f("errors"),
            f("denials"),
            f("cpu_us_per_op"),
        );
        if let Some(path) = &self.args.json {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(
                file,
                "{}",
                json!({"scenario": format!("redis-semaphore-{scenario}"), "peer": v})
            )?;
        }
        Ok(Some(v))
    }
}
