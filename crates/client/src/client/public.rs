//! The public endpoints, which need no credentials (health, the lease-signing keys, the
//! OpenAPI document, metrics), and the [`LeaseVerifier`] built from the keys and cached in
//! the client.

use std::sync::Arc;

use leasehold_proto::Jwks;
use reqwest::Method;

use super::{lock, Client};
use crate::error::{ClientError, Result};
use crate::verify::LeaseVerifier;

impl Client {
    /// `GET /.well-known/jwks.json`: the server's public lease-signing keys.
    pub async fn jwks(&self) -> Result<Jwks> {
        let mut request = self.request(Method::GET, &[".well-known", "jwks.json"])?;
        request.authenticated = false;
        self.call(request).await
    }

    /// `GET /healthz`: succeeds when the server answers 2xx.
    pub async fn healthz(&self) -> Result<()> {
        let mut request = self.request(Method::GET, &["healthz"])?;
        request.authenticated = false;
        self.execute(request).await.map(drop)
    }

    /// `GET /openapi.json`: the server's OpenAPI document.
    pub async fn openapi(&self) -> Result<serde_json::Value> {
        let mut request = self.request(Method::GET, &["openapi.json"])?;
        request.authenticated = false;
        self.call(request).await
    }

    /// `GET /metrics`: Prometheus metrics, as text.
    pub async fn metrics(&self) -> Result<String> {
        let mut request = self.request(Method::GET, &["metrics"])?;
        request.authenticated = false;
        let bytes = self.execute(request).await?.body;
        String::from_utf8(bytes).map_err(|e| ClientError::Decode(format!("metrics: {e}")))
    }

    /// A [`LeaseVerifier`] for this server's keys: fetched from `/.well-known/jwks.json` on
    /// first use, then cached in this client (and its clones).
    pub async fn lease_verifier(&self) -> Result<Arc<LeaseVerifier>> {
        if let Some(verifier) = self.cached_verifier() {
            return Ok(verifier);
        }
        self.refresh_lease_verifier().await
    }

    /// Fetches the key set again and replaces the cached [`LeaseVerifier`] (after the server
    /// rotated its key, say).
    pub async fn refresh_lease_verifier(&self) -> Result<Arc<LeaseVerifier>> {
        let jwks = self.jwks().await?;
        let verifier = Arc::new(LeaseVerifier::from_jwks(&jwks)?);
        *lock(&self.inner.verifier) = Some(verifier.clone());
        Ok(verifier)
    }

    fn cached_verifier(&self) -> Option<Arc<LeaseVerifier>> {
        lock(&self.inner.verifier).clone()
    }
}
