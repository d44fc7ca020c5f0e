//! `Application`: builds the server from a `Config` (data folder, store, signing key, root
//! token), binds the listener (port 0 in tests) and runs the router and the reaper until told
//! to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use leasehold_core::PlanCatalog;
use leasehold_store::postgres::{PgOptions, PgStore};
use leasehold_store::sqlite::SqliteStore;
use leasehold_store::{Credential, Principal, Store};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::auth::{hash_token, new_token};
use crate::clock::Clock;
use crate::config::Config;
use crate::http::ratelimit::AuthLimiter;
use crate::http::router;
use crate::http::serve::serve;
use crate::http::tls::Tls;
use crate::lease::LeaseSigner;
use crate::state::{AppState, Shared};

pub const DB_FILE: &str = "leasehold.db";
const ROOT_HASH_SETTING: &str = "root_token_hash";

pub struct Application {
    listener: TcpListener,
    state: AppState,
    config: Config,
    tls: Option<Arc<Tls>>,
    /// The root token generated at first start, if one was (shown once).
    pub generated_root_token: Option<String>,
}

/// A server running in the background (tests, embedding).
pub struct RunningServer {
    pub addr: SocketAddr,
    tls: bool,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// `http://…`, or `https://…` when the server speaks TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, finishes in-flight requests, and waits for the server to end.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.context("server task panicked")?
    }
}

impl Application {
    pub async fn build(mut config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        config.check()?;
        // Before the store opens: its writer and lanes take their metric handles then.
        crate::metrics::install();
        // Before anything else: a certificate that does not load is a configuration error.
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(
                Tls::load(cert, key).context("loading the TLS certificate and key")?,
            )),
            _ => None,
        };
        crate::http::serve::fit_to_descriptor_limit(&mut config.limits);
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data folder {}", config.data_dir.display()))?;
        let plans = PlanCatalog::with_overrides(config.plans.clone())
            .map_err(|e| anyhow::anyhow!("invalid plan configuration: {e}"))?;
        let (store, signer): (Arc<dyn Store>, LeaseSigner) = match &config.database_url {
            // Several nodes share one PostgreSQL: the database holds everything, the key too.
            Some(url) => {
                let node_clock = clock.clone();
                let options = PgOptions {
                    max_connections: config.database_pool_size,
                    node_clock: config.database_clock.then(|| {
                        let read: leasehold_store::postgres::NodeClock =
                            Arc::new(move || node_clock.now());
                        read
                    }),
                    ..PgOptions::default()
                };
                let store = PgStore::connect(url, options)
                    .await
                    .context("connecting to PostgreSQL")?;
                let store: Arc<dyn Store> = Arc::new(store);
                let signer = LeaseSigner::load_or_create_shared(&*store).await?;
                (store, signer)
            }
            None => {
                let db_path = config.data_dir.join(DB_FILE);
                let now = clock.now();
                let path = db_path.clone();
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path, now))
                    .await
                    .context("opening the database")?
                    .with_context(|| format!("opening {}", db_path.display()))?;
                (
                    Arc::new(store),
                    LeaseSigner::load_or_create(&config.data_dir)?,
                )
            }
        };
        let generated_root_token = install_root_token(&*store, &config, clock.now()).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let state = AppState::new(Shared {
            store,
            clock,
            signer,
            plans,
            access_token_ttl_secs: config.access_token_ttl_secs,
            openapi: crate::http::openapi_document()
                .to_json()
                .unwrap_or_else(|_| "{}".into()),
            time_gate: Default::default(),
            max_body_bytes: config.max_body_bytes,
            auth_limiter: AuthLimiter::new(
                config.auth_failures_per_minute_per_address,
                config.auth_failures_per_minute_per_credential,
            ),
            metrics_token_hash: config.metrics_token.as_deref().map(hash_token),
            event_keepalive: config.event_keepalive,
            webhooks: crate::webhooks::Webhooks {
                config: config.webhooks.clone(),
                wake: Default::default(),
            },
            vendor_keys: crate::delegation::load_vendor_keys(config.vendor_jwks.as_deref())?,
        });
        Ok(Application {
            listener,
            state,
            config,
            tls,
            generated_root_token,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let reaper = tokio::spawn(crate::reaper::run(
            self.state.clone(),
            Duration::from_millis(self.config.reaper_interval_ms),
            self.config.audit_retention_days,
        ));
        let dispatcher = tokio::spawn(crate::webhooks::dispatch::run(self.state.clone()));
        let fold = tokio::spawn(crate::usage::run_fold(self.state.clone()));
        let delegation_watch = tokio::spawn(crate::delegation::watch::run(self.state.clone()));
        let delegation_sync = match (&self.config.upstream, &self.config.upstream_token) {
            (Some(url), Some(token)) => Some(tokio::spawn(crate::delegation::sync::run(
                self.state.clone(),
                crate::delegation::sync::Upstream {
                    url: url.clone(),
                    token: token.clone(),
                    interval: self.config.upstream_interval,
                },
            ))),
            _ => None,
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let watcher = self
            .tls
            .clone()
            .map(|tls| tokio::spawn(tls.watch(self.config.tls_watch_interval, stop_rx)));
        // Event streams never finish by themselves: a stop ends them first, so that the
        // graceful stop does not wait for them (their clients reconnect to another node).
        let hub = self.state.store.event_hub().clone();
        let shutdown = async move {
            shutdown.await;
            hub.close();
        };
        let app = router(
            self.state,
            &self.config.limits,
            &self.config.cors_allowed_origins,
        );
        serve(self.listener, app, self.config.limits, self.tls, shutdown).await;
        let _ = stop_tx.send(true);
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        reaper.abort();
        dispatcher.abort();
        fold.abort();
        delegation_watch.abort();
        if let Some(sync) = delegation_sync {
            sync.abort();
        }
        Ok(())
    }

    /// Whether the server speaks HTTPS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Runs in a background task; `stop()` ends it.
    pub fn spawn(self) -> RunningServer {
        let addr = self.local_addr();
        let tls = self.tls();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run_until_stopped(async {
            let _ = rx.await;
        }));
        RunningServer {
            addr,
            tls,
            shutdown: Some(tx),
            task,
        }
    }
}

/// Installs the root admin token: the configured one (replacing any earlier), or a generated
/// one at first start (returned so the caller can show it once). Only its hash is stored.
async fn install_root_token(
    store: &dyn Store,
    config: &Config,
    now: leasehold_core::Timestamp,
) -> anyhow::Result<Option<String>> {
    let previous = store.get_setting(ROOT_HASH_SETTING).await?;
    let (token, generated) = match (&config.admin_token, &previous) {
        (Some(token), _) => (token.clone(), false),
        (None, Some(_)) => return Ok(None),
        (None, None) => (new_token("lh_root_"), true),
    };
    let hash = hash_token(&token);
    let hash_hex = hex::encode(hash);
    if previous.as_deref() == Some(hash_hex.as_str()) {
        return Ok(None);
    }
    store
        .put_credential(
            Credential {
                hash,
                principal: Principal::Root,
                expires_at: None,
            },
            now,
        )
        .await?;
    store.put_setting(ROOT_HASH_SETTING, &hash_hex).await?;
    // A replaced root token stops working: it expires now.
    if let Some(old) = previous.and_then(|h| hex::decode(h).ok()) {
        if let Ok(old) = <[u8; 32]>::try_from(old) {
            store
                .put_credential(
                    Credential {
                        hash: old,
                        principal: Principal::Root,
                        expires_at: Some(leasehold_core::Timestamp::from_millis(0)),
                    },
                    now,
                )
                .await?;
        }
    }
    if generated && config.print_root_token {
        println!("Leasehold root admin token (shown once; only its hash is stored):\n  {token}");
    }
    Ok(generated.then_some(token))
}
