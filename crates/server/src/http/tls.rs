//! HTTPS: rustls (ring provider; TLS 1.2 and 1.3), HTTP/2 and HTTP/1.1 offered by ALPN, and a
//! certificate that can be replaced while the server runs.
//!
//! The certificate chain and key are PEM files (`tls_cert`, `tls_key`). The server reads them
//! again on SIGHUP, and whenever their contents change (checked every `tls_watch_interval`):
//! a valid new pair (the key must match the certificate) is swapped in for new handshakes;
//! connections already open keep the certificate they were made with and are not dropped. A
//! pair that does not load (a half-written file, a key of another certificate) is logged once
//! and the current certificate stays; the next change is tried again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{anyhow, Context};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::metrics as m;

/// The certificate of new handshakes, replaceable.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        )
    }
}

/// The server's TLS: the acceptor, and what reloading needs.
pub struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    provider: Arc<CryptoProvider>,
    cert_path: PathBuf,
    key_path: PathBuf,
    /// The file contents last tried (loaded or refused), so an unchanged pair is not parsed
    /// again and a bad one is logged once.
    last_seen: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the pair; fails with a message naming the file and what is wrong with it.
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (contents, key) = read_pair(&provider, cert_path, key_path)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            provider,
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            last_seen: Mutex::new(contents),
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files; swaps in the pair when it changed (or `force`) and loads. `Ok(true)`:
    /// a new certificate is in use.
    pub fn reload(&self, force: bool) -> anyhow::Result<bool> {
        let cert = read(&self.cert_path)?;
        let key = read(&self.key_path)?;
        let contents = [cert.as_slice(), key.as_slice()].concat();
        {
            let mut last = self
                .last_seen
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !force && *last == contents {
                return Ok(false);
            }
            *last = contents;
        }
        let loaded = certified_key(&self.provider, &cert, &key, &self.cert_path, &self.key_path);
        match loaded {
            Ok(key) => {
                *self
                    .current
                    .0
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(key);
                m::tls_reload("ok");
                Ok(true)
            }
            Err(e) => {
                m::tls_reload("failed");
                Err(e)
            }
        }
    }

    /// Reloads on SIGHUP and when the files change, until `stop` turns true.
    pub async fn watch(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let sighup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let sighup = std::future::pending::<Option<()>>();
            let force = tokio::select! {
                _ = tick.tick() => false,
                _ = sighup => true,
                _ = stop.changed() => return,
            };
            match self.reload(force) {
                Ok(true) => tracing::info!(
                    cert = %self.cert_path.display(),
                    trigger = if force { "SIGHUP" } else { "file change" },
                    "TLS certificate reloaded; new connections use it, open ones keep theirs"
                ),
                Ok(false) => {}
                Err(e) => tracing::error!(
                    error = %format!("{e:#}"),
                    "TLS certificate not reloaded; the current one stays in use"
                ),
            }
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Reads and loads the pair: its file contents and the certified key.
fn read_pair(
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
) -> anyhow::Result<(Vec<u8>, CertifiedKey)> {
    let cert = read(cert_path)?;
    let key = read(key_path)?;
    let certified = certified_key(provider, &cert, &key, cert_path, key_path)?;
    Ok(([cert.as_slice(), key.as_slice()].concat(), certified))
}

/// A certificate chain and its private key, checked to belong together.
fn certified_key(
    provider: &CryptoProvider,
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: not a PEM certificate chain: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(anyhow!(
            "{}: no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            cert_path.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        anyhow!(
            "{}: no private key (expected a PEM PKCS#8, PKCS#1 or SEC1 key): {e}",
            key_path.display()
        )
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| anyhow!("{}: unsupported private key: {e}", key_path.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        anyhow!(
            "{} is not the key of the certificate in {}: {e}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok(certified)
}
