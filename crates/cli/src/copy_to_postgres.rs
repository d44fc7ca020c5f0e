//! `leasehold copy-to-postgres`: moves a SQLite data folder into PostgreSQL (accounts,
//! credentials, users, licenses, live sessions, audit log and the lease signing key), so an
//! installation that outgrows one machine keeps every seat, token and lease.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use leasehold_server::lease::{KEY_FILE, KEY_SETTING};
use leasehold_server::{Clock, SystemClock};
use leasehold_store::copy::copy_sqlite_to_postgres;
use leasehold_store::postgres::{PgOptions, PgStore};

#[derive(Args, Debug, Clone)]
pub struct CopyArgs {
    /// Data folder of the SQLite server to copy (stop that server first).
    #[arg(long, default_value = leasehold_server::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Target PostgreSQL URL; the database must hold no accounts or licenses yet.
    #[arg(long, env = "LEASEHOLD_DATABASE_URL")]
    pub database_url: String,
}

pub async fn run(args: CopyArgs) -> anyhow::Result<ExitCode> {
    let db_path = args.data_dir.join(leasehold_server::DB_FILE);
    if !db_path.exists() {
        anyhow::bail!(
            "{} does not exist: no SQLite data folder to copy",
            db_path.display()
        );
    }
    // The key travels with the data: leases signed before the move keep verifying.
    let key_path = args.data_dir.join(KEY_FILE);
    let mut extra = Vec::new();
    if key_path.exists() {
        let pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        extra.push((KEY_SETTING.to_owned(), pem));
    } else {
        eprintln!(
            "warning: {} not found: PostgreSQL nodes will sign leases with a new key",
            key_path.display()
        );
    }
    let store = PgStore::connect(&args.database_url, PgOptions::default())
        .await
        .context("connecting to PostgreSQL")?;
    let report = copy_sqlite_to_postgres(&db_path, &store, &extra, SystemClock::new().now())
        .await
        .with_context(|| format!("copying {} into PostgreSQL", db_path.display()))?;
    store.close().await;
    println!(
        "copied {}: {} account(s), {} user(s), {} credential(s), {} license(s), {} license user(s), {} device(s), {} live session(s), {} audit event(s), {} setting(s){}",
        db_path.display(),
        report.accounts,
        report.users,
        report.credentials,
        report.licenses,
        report.license_users,
        report.devices,
        report.live_sessions,
        report.audit_events,
        report.settings,
        if extra.is_empty() { "" } else { ", lease signing key" }
    );
    Ok(ExitCode::SUCCESS)
}
