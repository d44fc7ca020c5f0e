//! The HTTP client: one typed method per route of the seat protocol, bearer or OAuth2
//! client-credentials authentication, and retries (see [`RetryPolicy`]).
//!
//! This module builds a [`Client`] (its settings, [`ClientBuilder`], the base URL). The routes
//! are grouped by who calls them: `sessions` (the seat protocol an application speaks) and
//! `events` (a session's event stream),
//! `admin` (accounts, licenses, users, devices, usage), `public` (health, keys, metrics and
//! the lease verifier built from the keys). `auth` holds the credentials and the service
//! user's access token; `transport` sends a request, retrying per the policy.

mod admin;
mod auth;
mod delegations;
mod events;
mod public;
mod sessions;
mod transport;
mod usage;
mod webhooks;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Url;

use crate::error::{error_chain, ClientError, Result};
use crate::retry::RetryPolicy;
use crate::verify::LeaseVerifier;
pub use admin::{DeviceActivation, UsageQuery};
use auth::{Auth, ClientCredentials};
pub use events::{SessionEvents, SessionStreamEvent};

/// Default timeout of one HTTP request (a queued `open_session` gets `wait_secs` on top).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default timeout for opening a TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an unused pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one Leasehold server.
///
/// Cheap to clone: clones share the connection pool, the access token of a service user and
/// the cached key set. All methods are `async` and need a tokio runtime.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    auth: Auth,
    retry: RetryPolicy,
    timeout: Duration,
    verifier: Mutex<Option<Arc<LeaseVerifier>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.inner.auth {
            Auth::None => "none".to_owned(),
            Auth::Bearer(_) => "bearer token".to_owned(),
            Auth::ClientCredentials(cc) => format!("client credentials of {}", cc.client_id),
        };
        f.debug_struct("Client")
            .field("base_url", &self.inner.base.as_str())
            .field("auth", &auth)
            .field("retry", &self.inner.retry)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`] with non-default settings. Start with [`Client::builder`].
#[must_use]
pub struct ClientBuilder {
    base_url: String,
    auth: Auth,
    retry: RetryPolicy,
    timeout: Duration,
    connect_timeout: Duration,
    http: Option<reqwest::Client>,
    /// PEM certificates to trust instead of the system's roots.
    ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Authenticates every request with `Authorization: Bearer <token>` (an admin token or a
    /// user token).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.auth = Auth::Bearer(token.into());
        self
    }

    /// Authenticates as a service user: an access token is obtained from `POST /v1/oauth/token`
    /// on first use and renewed before it expires (and once more when a request gets a 401).
    pub fn client_credentials(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.auth = Auth::ClientCredentials(ClientCredentials {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            token: tokio::sync::Mutex::new(None),
        });
        self
    }

    /// How failed requests are retried. Default: [`RetryPolicy::default`].
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Timeout of one HTTP request. Default: [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Timeout for opening a connection. Default: [`DEFAULT_CONNECT_TIMEOUT`]. Ignored when an
    /// HTTP client is given with [`ClientBuilder::http_client`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Uses this `reqwest::Client` (for proxies, a shared pool...). The TLS settings of this
    /// builder ([`ClientBuilder::ca_pem`]) do not apply to it.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// HTTPS: trusts the certificates of this PEM bundle (a private CA, or the server's own
    /// self-signed certificate) *instead of* the system's trust store, as `curl --cacert`
    /// does. Without it, `https://` URLs are checked against the system's roots
    /// (`/etc/ssl/certs` and the like). [`ClientBuilder::build`] fails with
    /// [`ClientError::Config`] when the bundle holds no certificate.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// [`ClientBuilder::ca_pem`] with the bundle read from a file.
    pub fn ca_file(self, path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| {
            ClientError::Config(format!("cannot read the CA file {}: {e}", path.display()))
        })?;
        Ok(self.ca_pem(pem))
    }

    /// Builds the client. Fails with [`ClientError::Config`] when the base URL is not an
    /// absolute `http` or `https` URL.
    pub fn build(self) -> Result<Client> {
        let base = parse_base_url(&self.base_url)?;
        let http = match self.http {
            Some(http) => http,
            None => {
                let mut http = reqwest::Client::builder()
                    .connect_timeout(self.connect_timeout)
                    // Below the server's idle timeout (60 s by default): a pooled connection is
                    // dropped here before the server closes it under a request.
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .user_agent(concat!("leasehold-client/", env!("CARGO_PKG_VERSION")));
                if let Some(pem) = &self.ca_pem {
                    let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                        ClientError::Config(format!("CA bundle: {}", error_chain(&e)))
                    })?;
                    if certs.is_empty() {
                        return Err(ClientError::Config(
                            "the CA bundle holds no PEM certificate".into(),
                        ));
                    }
                    http = http.tls_built_in_root_certs(false);
                    for cert in certs {
                        http = http.add_root_certificate(cert);
                    }
                }
                http.build()
                    .map_err(|e| ClientError::Config(error_chain(&e)))?
            }
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                auth: self.auth,
                retry: self.retry,
                timeout: self.timeout,
                verifier: Mutex::new(None),
            }),
        })
    }
}

fn parse_base_url(base_url: &str) -> Result<Url> {
    let url = Url::parse(base_url)
        .map_err(|e| ClientError::Config(format!("base URL {base_url:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(ClientError::Config(format!(
            "base URL {base_url:?} is not an http(s) URL"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::Config(format!(
            "base URL {base_url:?} must not have a query or fragment"
        )));
    }
    Ok(url)
}

impl Client {
    /// A client without credentials (for `healthz`, `jwks` and the like).
    pub fn new(base_url: &str) -> Result<Client> {
        Client::builder(base_url).build()
    }

    /// A client that sends `Authorization: Bearer <token>` (an admin token or a user token).
    pub fn with_token(base_url: &str, token: impl Into<String>) -> Result<Client> {
        Client::builder(base_url).bearer_token(token).build()
    }

    /// A client for a service user: obtains an access token with the OAuth2 client-credentials
    /// grant on first use and renews it by itself.
    pub fn with_client_credentials(
        base_url: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Result<Client> {
        Client::builder(base_url)
            .client_credentials(client_id, client_secret)
            .build()
    }

    /// A builder for other settings (retry policy, timeouts, own `reqwest::Client`).
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            auth: Auth::None,
            retry: RetryPolicy::default(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            http: None,
            ca_pem: None,
        }
    }

    /// A client for the same server with the same settings and connection pool, authenticating
    /// with `token` instead. Handy for an admin that creates a user token and then acts as that
    /// user.
    pub fn with_bearer_token(&self, token: impl Into<String>) -> Client {
        Client {
            inner: Arc::new(Inner {
                http: self.inner.http.clone(),
                base: self.inner.base.clone(),
                auth: Auth::Bearer(token.into()),
                retry: self.inner.retry.clone(),
                timeout: self.inner.timeout,
                verifier: Mutex::new(None),
            }),
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        self.inner.base.as_str()
    }

    /// The retry policy in use.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }
}

/// Locks a std mutex, recovering from poisoning (the data are plain values that a panic
/// cannot leave half-written).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_must_be_http_or_https() {
        assert!(Client::new("http://localhost:8080").is_ok());
        assert!(Client::new("https://lic.example.com/prefix/").is_ok());
        for bad in [
            "",
            "localhost:8080",
            "ftp://x",
            "mailto:a@b",
            "http://x/?a=b",
        ] {
            assert!(
                matches!(Client::new(bad), Err(ClientError::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_a_configuration_error() {
        let err = Client::builder("https://x")
            .ca_pem(b"not pem".to_vec())
            .build();
        assert!(matches!(err, Err(ClientError::Config(_))), "{err:?}");
        let err = Client::builder("https://x").ca_file("/nonexistent/ca.pem");
        assert!(matches!(err, Err(ClientError::Config(m)) if m.contains("/nonexistent/ca.pem")));
    }

    #[test]
    fn debug_output_does_not_show_secrets() {
        let client = Client::with_client_credentials("http://x", "svc_1", "s3cret").unwrap();
        let text = format!("{client:?}");
        assert!(text.contains("svc_1") && !text.contains("s3cret"), "{text}");
        let client = Client::with_token("http://x", "tok_abc").unwrap();
        assert!(!format!("{client:?}").contains("tok_abc"));
    }
}
