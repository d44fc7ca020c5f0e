//! The same test bodies on PostgreSQL: with `LEASEHOLD_TEST_STORE=postgres`, `spawn_app()`
//! serves from a fresh PostgreSQL database (created in the server that
//! `LEASEHOLD_TEST_DATABASE_URL` points at) instead of SQLite. A restarted app that reuses its
//! data folder reuses its database too, as a restarted node would.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;

use sqlx::Connection;

const MARKER: &str = "test-database-url";

/// The database URL the app in `data_dir` must use, or `None` to run on SQLite.
pub async fn database_url_for(data_dir: &Path) -> Option<String> {
    if std::env::var("LEASEHOLD_TEST_STORE").as_deref() != Ok("postgres") {
        return None;
    }
    let marker = data_dir.join(MARKER);
    if let Ok(url) = std::fs::read_to_string(&marker) {
        return Some(url);
    }
    let base = std::env::var("LEASEHOLD_TEST_DATABASE_URL")
        .expect("LEASEHOLD_TEST_STORE=postgres needs LEASEHOLD_TEST_DATABASE_URL");
    let name = test_database_name(&base);
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    let url = with_database(&base, &name);
    std::fs::write(&marker, &url).unwrap();
    Some(url)
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
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
