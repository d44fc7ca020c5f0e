//! Authentication: no credentials, a bearer token, or a service user's client credentials,
//! exchanged for an access token (`POST /v1/oauth/token`) that is cached and renewed before it
//! expires, or once more when the server refuses it.

use std::time::Duration;

use leasehold_proto::OAuthToken;
use reqwest::Method;
use tokio::time::Instant;

use super::transport::{decode, Body};
use super::Client;
use crate::error::{ClientError, Result};

/// How requests authenticate.
pub(super) enum Auth {
    None,
    Bearer(String),
    ClientCredentials(ClientCredentials),
}

/// A service user's credentials and the access token last obtained with them.
pub(super) struct ClientCredentials {
    pub(super) client_id: String,
    pub(super) client_secret: String,
    /// Held while a token is being fetched, so concurrent requests wait for one fetch.
    pub(super) token: tokio::sync::Mutex<Option<CachedToken>>,
}

/// An access token and when to renew it.
pub(super) struct CachedToken {
    access_token: String,
    /// When to fetch a new one: somewhat before the server's `expires_in` runs out.
    renew_at: Instant,
}

impl Client {
    /// `POST /v1/oauth/token`: exchanges a service user's client credentials for an access
    /// token (RFC 6749 client-credentials grant, form-encoded, secret in the body).
    ///
    /// [`Client::with_client_credentials`] does this by itself; call it directly only to
    /// manage tokens yourself.
    pub async fn oauth_token(&self, client_id: &str, client_secret: &str) -> Result<OAuthToken> {
        let mut request = self.request(Method::POST, &["v1", "oauth", "token"])?;
        request.authenticated = false;
        request.body = Body::Form(vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", client_id.to_owned()),
            ("client_secret", client_secret.to_owned()),
        ]);
        // Straight to the retry loop: going through `execute` would ask for a token again.
        let answer = self.execute_with(&request, None).await?;
        let token: OAuthToken = decode("POST /v1/oauth/token", &answer.body)?;
        if !token.token_type.eq_ignore_ascii_case("bearer") {
            return Err(ClientError::Decode(format!(
                "token_type {:?} is not Bearer",
                token.token_type
            )));
        }
        Ok(token)
    }

    /// The bearer token to send, if any. For a service user: the cached access token, or a
    /// new one when it is due for renewal or equals `refused` (the token a 401 was for).
    pub(super) async fn access_token(&self, refused: Option<&str>) -> Result<Option<String>> {
        let cc = match &self.inner.auth {
            Auth::None => return Ok(None),
            Auth::Bearer(token) => return Ok(Some(token.clone())),
            Auth::ClientCredentials(cc) => cc,
        };
        let mut cached = cc.token.lock().await;
        if let Some(token) = cached.as_ref() {
            let refused_now = refused == Some(token.access_token.as_str());
            if !refused_now && Instant::now() < token.renew_at {
                return Ok(Some(token.access_token.clone()));
            }
        }
        let fetched_at = Instant::now();
        let token = self.oauth_token(&cc.client_id, &cc.client_secret).await?;
        let lifetime = Duration::from_secs(token.expires_in);
        tracing::debug!(expires_in = token.expires_in, "obtained an access token");
        *cached = Some(CachedToken {
            access_token: token.access_token.clone(),
            renew_at: fetched_at + lifetime.saturating_sub(renewal_margin(lifetime)),
        });
        Ok(Some(token.access_token))
    }
}

/// How long before `expires_in` runs out a service user's token is renewed: a tenth of its
/// lifetime, at most a minute.
fn renewal_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_a_tenth_of_their_life_early_but_at_most_a_minute() {
        assert_eq!(
            renewal_margin(Duration::from_secs(100)),
            Duration::from_secs(10)
        );
        assert_eq!(
            renewal_margin(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(renewal_margin(Duration::ZERO), Duration::ZERO);
    }
}
