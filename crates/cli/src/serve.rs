//! `leasehold serve`, `migrate` and `healthcheck`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use leasehold_server::{Application, Config, SystemClock};

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8470].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data folder (database, signing key); created if missing [default: ./leasehold-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file (plans, limits).
    #[arg(long, env = "LEASEHOLD_CONFIG")]
    pub config: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user:password@host/db): several nodes share it
    /// [env: LEASEHOLD_DATABASE_URL; default: embedded SQLite in the data folder].
    #[arg(long)]
    pub database_url: Option<String>,
    /// HTTPS: the certificate chain, PEM (with --tls-key); reloaded on SIGHUP and when the
    /// file changes [env: LEASEHOLD_TLS_CERT; config: tls_cert].
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// HTTPS: the private key of --tls-cert, PEM [env: LEASEHOLD_TLS_KEY; config: tls_key].
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Dark sites: the vendor's public keys (the cloud's `/.well-known/jwks.json` saved to a
    /// file) that imported delegations must be signed with [env: LEASEHOLD_VENDOR_JWKS;
    /// config: vendor_jwks].
    #[arg(long, value_name = "FILE")]
    pub vendor_jwks: Option<PathBuf>,
    /// Dark sites, online mode: the cloud server's URL (with LEASEHOLD_UPSTREAM_TOKEN, an admin
    /// token of the cloud account): renewals fetched and usage reports pushed every
    /// upstream_interval_secs (default 300), files when it cannot be reached [env:
    /// LEASEHOLD_UPSTREAM; config: upstream].
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &self.database_url {
            config.database_url = Some(url.clone());
        }
        if let Some(cert) = &self.tls_cert {
            config.tls_cert = Some(cert.clone());
        }
        if let Some(key) = &self.tls_key {
            config.tls_key = Some(key.clone());
        }
        if let Some(jwks) = &self.vendor_jwks {
            config.vendor_jwks = Some(jwks.clone());
        }
        if let Some(url) = &self.upstream {
            config.upstream = Some(url.clone());
        }
        config.check()?;
        Ok(config)
    }
}

/// Logs to stdout, filtered by `LEASEHOLD_LOG` (default `info`: one access-log line per
/// request, target `leasehold::access`). Colours only on a terminal, and never with `NO_COLOR`.
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEASEHOLD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .try_init();
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let config = args.config()?;
    let data_dir = config.data_dir.clone();
    let app = Application::build(config, Arc::new(SystemClock::new())).await?;
    tracing::info!(
        addr = %app.local_addr(),
        scheme = if app.tls() { "https" } else { "http" },
        data_dir = %data_dir.display(),
        "leasehold is serving"
    );
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

pub async fn migrate(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let config = args.config()?;
    if let Some(url) = &config.database_url {
        let applied = leasehold_store::postgres::migrate_url(url)
            .await
            .context("migrating PostgreSQL")?;
        println!("PostgreSQL: {applied} migration(s) applied");
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let path = config.data_dir.join(leasehold_server::DB_FILE);
    let mut conn = leasehold_store::sqlite::open_connection(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let applied = leasehold_store::sqlite::migrate(&mut conn)?;
    println!("{}: {applied} migration(s) applied", path.display());
    Ok(ExitCode::SUCCESS)
}

pub async fn healthcheck(
    url: &str,
    live: bool,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let path = if live { "livez" } else { "healthz" };
    let url = format!("{}/{path}", url.trim_end_matches('/'));
    let mut http = reqwest::Client::builder();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the CA file {}", path.display()))?;
        http = http.tls_built_in_root_certs(false);
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("reading the CA file {}", path.display()))?
        {
            http = http.add_root_certificate(cert);
        }
    }
    match http.build()?.get(&url).send().await {
        Ok(answer) if answer.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(answer) => {
            let status = answer.status();
            let body = answer.text().await.unwrap_or_default();
            eprintln!("unhealthy: {url} answered {status} {body}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            // reqwest's own message is often just "error sending request": add the causes
            // (a refused connection, a certificate that does not verify...).
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("unhealthy: {url}: {message}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
