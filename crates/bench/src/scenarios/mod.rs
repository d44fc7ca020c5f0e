//! The scenarios, by how they run: `short` (healthz, heartbeat, checkout, contended and the
//! sink, in rounds on one server), `million` (hold and expire: a million sessions on a fresh
//! server), `pg` (several nodes on one PostgreSQL against pgbench), `mass` (one license's
//! mass end while another license works, on fresh servers) and `usage` (a year of usage
//! series queried by hour).

pub(crate) mod mass;
pub(crate) mod million;
pub(crate) mod pg;
pub(crate) mod pg_hold;
pub(crate) mod short;
pub(crate) mod usage;

use std::sync::Arc;

use crate::load::{Held, Job};

/// Splits sessions over `workers` heartbeat jobs (each heartbeats its share round-robin).
fn split(held: Vec<Held>, workers: usize) -> Vec<Job> {
    let mut parts: Vec<Vec<Held>> = (0..workers.max(1)).map(|_| Vec::new()).collect();
    let n = parts.len();
    for (i, h) in held.into_iter().enumerate() {
        parts[i % n].push(h);
    }
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| Job::Heartbeat(Arc::new(p)))
        .collect()
}
