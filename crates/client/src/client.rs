//! The HTTP client: one typed method per route of the seat protocol, bearer or OAuth2
//! client-credentials authentication, and retries (see [`RetryPolicy`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold_proto::{
    AccountCreated, ActivateDevice, CreateAccount, CreateLicense, Device, DeviceList, Heartbeat,
    Jwks, License, LicenseList, LicenseUser, LicenseUserList, OAuthToken, OpenSession,
    PatchLicense, PlanInfo, PutLicenseUser, PutUser, QueueList, Session, SessionList, TokenCreated,
    UsageReport, User, UserList,
};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::error::{error_chain, ClientError, Result};
use crate::retry::RetryPolicy;
use crate::verify::LeaseVerifier;

/// Default timeout of one HTTP request (a queued `open_session` gets `wait_secs` on top).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default timeout for opening a TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

enum Auth {
    None,
    Bearer(String),
    ClientCredentials(ClientCredentials),
}

/// A service user's credentials and the access token last obtained with them.
struct ClientCredentials {
    client_id: String,
    client_secret: String,
    /// Held while a token is being fetched, so concurrent requests wait for one fetch.
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

struct CachedToken {
    access_token: String,
    /// When to fetch a new one: somewhat before the server's `expires_in` runs out.
    renew_at: Instant,
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

    /// Uses this `reqwest::Client` (for proxies, TLS roots, a shared pool...).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Builds the client. Fails with [`ClientError::Config`] when the base URL is not an
    /// absolute `http` or `https` URL.
    pub fn build(self) -> Result<Client> {
        let base = parse_base_url(&self.base_url)?;
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .user_agent(concat!("leasehold-client/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| ClientError::Config(error_chain(&e)))?,
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

/// Filters for [`Client::usage_with`]. All optional; the server picks defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageQuery {
    /// Start of the period.
    pub from: Option<OffsetDateTime>,
    /// End of the period.
    pub to: Option<OffsetDateTime>,
    /// Bucket size of the series, such as `hour`, `day` or `month`.
    pub bucket: Option<String>,
}

impl UsageQuery {
    fn pairs(&self) -> Result<Vec<(&'static str, String)>> {
        let mut pairs = Vec::new();
        for (name, at) in [("from", self.from), ("to", self.to)] {
            if let Some(at) = at {
                let text = at
                    .format(&Rfc3339)
                    .map_err(|e| ClientError::Config(format!("usage query {name}: {e}")))?;
                pairs.push((name, text));
            }
        }
        if let Some(bucket) = &self.bucket {
            pairs.push(("bucket", bucket.clone()));
        }
        Ok(pairs)
    }
}

/// The answer of [`Client::activate_device`].
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceActivation {
    /// The device as the license records it.
    pub device: Device,
    /// True when this call activated the device (201); false when it already was (200). A
    /// request resent after a transport error whose first try did reach the server also
    /// answers false.
    pub created: bool,
}

/// One request as the retry loop sees it: everything needed to send it again.
struct Request {
    method: Method,
    url: Url,
    body: Body,
    /// Sending it twice has the same effect as once, so it may be retried after any
    /// transport error (not only a failed connect).
    idempotent: bool,
    /// Send the client's credentials.
    authenticated: bool,
    timeout: Duration,
}

enum Body {
    Empty,
    Json(Vec<u8>),
    Form(Vec<(&'static str, String)>),
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

    // ----- accounts, licenses, users -------------------------------------------------------

    /// `POST /v1/accounts` (root admin): creates an account. The answer carries the account's
    /// admin token, shown only this once.
    pub async fn create_account(&self, name: &str) -> Result<AccountCreated> {
        let body = CreateAccount {
            name: name.to_owned(),
        };
        let request = self.json_request(Method::POST, &["v1", "accounts"], &body, false)?;
        self.call(request).await
    }

    /// `POST /v1/licenses` (account admin): creates a license.
    pub async fn create_license(&self, license: &CreateLicense) -> Result<License> {
        let request = self.json_request(Method::POST, &["v1", "licenses"], license, false)?;
        self.call(request).await
    }

    /// `GET /v1/licenses/{id}` (account admin): the license and its current usage.
    pub async fn get_license(&self, license_id: &str) -> Result<License> {
        let request = self.request(Method::GET, &["v1", "licenses", license_id])?;
        self.call(request).await
    }

    /// `GET /v1/accounts/{id}/licenses` (account admin): every license of the account, without
    /// usage (ask [`Client::get_license`] for one license's seats in use).
    pub async fn list_licenses(&self, account_id: &str) -> Result<LicenseList> {
        let request = self.request(Method::GET, &["v1", "accounts", account_id, "licenses"])?;
        self.call(request).await
    }

    /// `PATCH /v1/licenses/{id}` (account admin): changes the given fields.
    pub async fn patch_license(&self, license_id: &str, patch: &PatchLicense) -> Result<License> {
        let request =
            self.json_request(Method::PATCH, &["v1", "licenses", license_id], patch, true)?;
        self.call(request).await
    }

    /// `PUT /v1/accounts/{id}/users/{username}` (account admin): creates or updates a user. A
    /// new service user comes back with its `client_id` and `client_secret`, shown only once.
    pub async fn put_user(&self, account_id: &str, username: &str, user: &PutUser) -> Result<User> {
        let request = self.json_request(
            Method::PUT,
            &["v1", "accounts", account_id, "users", username],
            user,
            true,
        )?;
        self.call(request).await
    }

    /// `GET /v1/accounts/{id}/users/{username}` (account admin): one user, with its kind and
    /// whether it is active (never a client secret). 404 when the user does not exist.
    pub async fn get_user(&self, account_id: &str, username: &str) -> Result<User> {
        let request = self.request(
            Method::GET,
            &["v1", "accounts", account_id, "users", username],
        )?;
        self.call(request).await
    }

    /// `GET /v1/accounts/{id}/users` (account admin): every user of the account.
    pub async fn list_users(&self, account_id: &str) -> Result<UserList> {
        let request = self.request(Method::GET, &["v1", "accounts", account_id, "users"])?;
        self.call(request).await
    }

    /// `POST /v1/accounts/{id}/users/{username}/tokens` (account admin): issues a user token.
    pub async fn create_user_token(
        &self,
        account_id: &str,
        username: &str,
    ) -> Result<TokenCreated> {
        let mut request = self.request(
            Method::POST,
            &["v1", "accounts", account_id, "users", username, "tokens"],
        )?;
        request.idempotent = false;
        self.call(request).await
    }

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

    // ----- sessions --------------------------------------------------------------------------

    /// `POST /v1/sessions`: opens a session (takes a seat). Answers with the instance's
    /// existing live session when it already has one. Fails with 409
    /// [`no_seat_available`](leasehold_proto::ErrorCode::NoSeatAvailable) when the license is
    /// full (after waiting up to `wait_secs` when the license queues).
    ///
    /// Most applications want [`Client::checkout`], which also heartbeats.
    pub async fn open_session(&self, open: &OpenSession) -> Result<Session> {
        let mut request = self.json_request(Method::POST, &["v1", "sessions"], open, true)?;
        if let Some(wait) = open.wait_secs {
            request.timeout = request.timeout.saturating_add(Duration::from_secs(wait));
        }
        self.call(request).await
    }

    /// `POST /v1/sessions/{id}/heartbeat`: keeps a session alive. Answers with the new expiry
    /// and possibly a re-signed lease; fails with 410
    /// [`session_ended`](leasehold_proto::ErrorCode::SessionEnded) and a reason once the
    /// session has ended.
    pub async fn heartbeat(&self, session_id: &str) -> Result<Heartbeat> {
        self.heartbeat_with(session_id, false).await
    }

    /// [`Client::heartbeat`], asking with `renew_lease` for a lease re-signed with the new
    /// expiry (`?lease=true`). Signing costs the server CPU: ask when the held lease is past
    /// half its life, as [`LeaseGuard`](crate::LeaseGuard) does, not on every heartbeat.
    pub async fn heartbeat_with(&self, session_id: &str, renew_lease: bool) -> Result<Heartbeat> {
        let mut request =
            self.request(Method::POST, &["v1", "sessions", session_id, "heartbeat"])?;
        // Extending a session twice is extending it once: safe to resend after any transport
        // error (a stale pooled connection after a server restart, say).
        request.idempotent = true;
        if renew_lease {
            request.url.query_pairs_mut().append_pair("lease", "true");
        }
        self.call(request).await
    }

    /// `DELETE /v1/sessions/{id}`: closes a session (the owner logs out, or an account admin
    /// revokes it), freeing its seat.
    pub async fn close_session(&self, session_id: &str) -> Result<()> {
        let request = self.request(Method::DELETE, &["v1", "sessions", session_id])?;
        self.execute(request).await.map(drop)
    }

    /// `GET /v1/licenses/{id}/sessions` (account admin): the license's live sessions.
    pub async fn list_sessions(&self, license_id: &str) -> Result<SessionList> {
        let request = self.request(Method::GET, &["v1", "licenses", license_id, "sessions"])?;
        self.call(request).await
    }

    /// `GET /v1/accounts/{id}/users/{username}/sessions` (account admin): the user's live
    /// sessions on every license of the account. 404 when the user does not exist.
    pub async fn list_user_sessions(
        &self,
        account_id: &str,
        username: &str,
    ) -> Result<SessionList> {
        let request = self.request(
            Method::GET,
            &["v1", "accounts", account_id, "users", username, "sessions"],
        )?;
        self.call(request).await
    }

    /// `PUT /v1/licenses/{id}/users/{username}` (account admin, `registered_users` licenses):
    /// makes the user active or inactive on the license. Deactivating ends the user's sessions
    /// on it and frees an active-user slot; activating fails with 409
    /// [`active_users_exhausted`](leasehold_proto::ErrorCode::ActiveUsersExhausted) when all
    /// slots are taken.
    pub async fn put_license_user(
        &self,
        license_id: &str,
        username: &str,
        active: bool,
    ) -> Result<LicenseUser> {
        let request = self.json_request(
            Method::PUT,
            &["v1", "licenses", license_id, "users", username],
            &PutLicenseUser { active },
            true,
        )?;
        self.call(request).await
    }

    /// `GET /v1/licenses/{id}/users` (account admin): the users registered on a license.
    pub async fn list_license_users(&self, license_id: &str) -> Result<LicenseUserList> {
        let request = self.request(Method::GET, &["v1", "licenses", license_id, "users"])?;
        self.call(request).await
    }

    /// `POST /v1/licenses/{id}/devices` (account admin, `node_locked` licenses): activates a
    /// device, named by its fingerprint (the `device_id` its sessions give). Activating a device
    /// that already is changes nothing (not even its name) and answers it with `created: false`.
    /// Fails with 409
    /// [`activations_exhausted`](leasehold_proto::ErrorCode::ActivationsExhausted) when every
    /// activation of the license is taken, and 422 on a license of another model.
    pub async fn activate_device(
        &self,
        license_id: &str,
        fingerprint: &str,
        name: &str,
    ) -> Result<DeviceActivation> {
        let body = ActivateDevice {
            fingerprint: fingerprint.to_owned(),
            name: name.to_owned(),
        };
        // Activating a device twice is activating it once: safe to resend after any transport
        // error (the second try then answers `created: false`).
        let request = self.json_request(
            Method::POST,
            &["v1", "licenses", license_id, "devices"],
            &body,
            true,
        )?;
        let (status, device) = self.call_with_status(request).await?;
        Ok(DeviceActivation {
            device,
            created: status == StatusCode::CREATED,
        })
    }

    /// `GET /v1/licenses/{id}/devices` (account admin): the devices activated on a license and
    /// the most that may be.
    pub async fn list_devices(&self, license_id: &str) -> Result<DeviceList> {
        let request = self.request(Method::GET, &["v1", "licenses", license_id, "devices"])?;
        self.call(request).await
    }

    /// `DELETE /v1/licenses/{id}/devices/{fingerprint}` (account admin): deactivates a device,
    /// freeing its activation; its live sessions end with reason
    /// [`device_deactivated`](leasehold_proto::EndReason::DeviceDeactivated). 404 when the
    /// device is not activated on the license.
    pub async fn deactivate_device(&self, license_id: &str, fingerprint: &str) -> Result<()> {
        let request = self.request(
            Method::DELETE,
            &["v1", "licenses", license_id, "devices", fingerprint],
        )?;
        self.execute(request).await.map(drop)
    }

    /// `GET /v1/licenses/{id}/queue`: clients waiting for a seat, in order (an account admin
    /// sees all of them, a user only its own requests).
    pub async fn license_queue(&self, license_id: &str) -> Result<QueueList> {
        let request = self.request(Method::GET, &["v1", "licenses", license_id, "queue"])?;
        self.call(request).await
    }

    /// `GET /v1/plans` (account admin): the plans the server is configured with.
    pub async fn list_plans(&self) -> Result<Vec<PlanInfo>> {
        let request = self.request(Method::GET, &["v1", "plans"])?;
        self.call(request).await
    }

    /// `GET /v1/licenses/{id}/usage` (account admin) with the server's default period.
    pub async fn usage(&self, license_id: &str) -> Result<UsageReport> {
        self.usage_with(license_id, &UsageQuery::default()).await
    }

    /// `GET /v1/licenses/{id}/usage?from&to&bucket` (account admin): seats in use, high and
    /// low water marks and denials.
    pub async fn usage_with(&self, license_id: &str, query: &UsageQuery) -> Result<UsageReport> {
        let mut request = self.request(Method::GET, &["v1", "licenses", license_id, "usage"])?;
        let pairs = query.pairs()?;
        if !pairs.is_empty() {
            request.url.query_pairs_mut().extend_pairs(pairs);
        }
        self.call(request).await
    }

    // ----- public endpoints -----------------------------------------------------------------

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

    // ----- lease verification ---------------------------------------------------------------

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

    // ----- plumbing -----------------------------------------------------------------------

    /// The URL of `segments` under the base URL, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.inner.base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| {
                ClientError::Config(format!("base URL {} cannot have a path", self.inner.base))
            })?;
            path.pop_if_empty().extend(segments);
        }
        Ok(url)
    }

    fn request(&self, method: Method, segments: &[&str]) -> Result<Request> {
        let idempotent = method != Method::POST;
        Ok(Request {
            method,
            url: self.url(segments)?,
            body: Body::Empty,
            idempotent,
            authenticated: true,
            timeout: self.inner.timeout,
        })
    }

    fn json_request<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
        idempotent: bool,
    ) -> Result<Request> {
        let json = serde_json::to_vec(body)
            .map_err(|e| ClientError::Config(format!("cannot encode the request body: {e}")))?;
        let mut request = self.request(method, segments)?;
        request.body = Body::Json(json);
        request.idempotent = idempotent;
        Ok(request)
    }

    /// Sends the request and decodes the JSON answer.
    async fn call<T: DeserializeOwned>(&self, request: Request) -> Result<T> {
        self.call_with_status(request).await.map(|(_, value)| value)
    }

    /// [`Client::call`], also answering the (2xx) status, for routes where it carries meaning
    /// (201 created or 200 already there).
    async fn call_with_status<T: DeserializeOwned>(
        &self,
        request: Request,
    ) -> Result<(StatusCode, T)> {
        let what = format!("{} {}", request.method, request.url.path());
        let answer = self.execute(request).await?;
        Ok((answer.status, decode(&what, &answer.body)?))
    }

    /// Sends the request with credentials; a service user whose token is refused (401) gets
    /// one new token and one more try.
    async fn execute(&self, request: Request) -> Result<Answer> {
        if !request.authenticated {
            return self.execute_with(&request, None).await;
        }
        let token = self.access_token(None).await?;
        match self.execute_with(&request, token.as_deref()).await {
            Err(err @ ClientError::Api { status: 401, .. }) => {
                let Auth::ClientCredentials(_) = &self.inner.auth else {
                    return Err(err);
                };
                tracing::debug!("access token refused, obtaining a new one");
                let token = self.access_token(token.as_deref()).await?;
                self.execute_with(&request, token.as_deref()).await
            }
            other => other,
        }
    }

    /// The bearer token to send, if any. For a service user: the cached access token, or a
    /// new one when it is due for renewal or equals `refused` (the token a 401 was for).
    async fn access_token(&self, refused: Option<&str>) -> Result<Option<String>> {
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

    /// Sends the request, retrying per the policy. Answers the status and body of a 2xx answer.
    async fn execute_with(&self, request: &Request, token: Option<&str>) -> Result<Answer> {
        let policy = &self.inner.retry;
        let attempts = policy.attempts();
        let mut attempt = 1;
        loop {
            let failure = match self.send_once(request, token).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            let retry_after = match &failure {
                Failure::Status {
                    status,
                    retry_after,
                    ..
                } if *status == StatusCode::SERVICE_UNAVAILABLE => *retry_after,
                Failure::Transport {
                    retryable: true, ..
                } => None,
                _ => return Err(failure.into_error()),
            };
            if attempt >= attempts {
                return Err(failure.into_error());
            }
            let wait = policy.backoff_after(attempt, retry_after);
            tracing::debug!(
                method = %request.method,
                path = request.url.path(),
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %failure,
                "retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One try: sends the request and reads the whole answer.
    async fn send_once(
        &self,
        request: &Request,
        token: Option<&str>,
    ) -> std::result::Result<Answer, Failure> {
        let mut builder = self
            .inner
            .http
            .request(request.method.clone(), request.url.clone())
            .timeout(request.timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        builder = match &request.body {
            Body::Empty => builder,
            Body::Json(json) => builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(json.clone()),
            Body::Form(pairs) => builder.form(pairs),
        };
        let response = builder.send().await.map_err(|e| Failure::Transport {
            // A connect error means the request never left; anything later may have reached
            // the server, so only idempotent requests are sent again.
            retryable: !e.is_builder()
                && !e.is_redirect()
                && (e.is_connect() || request.idempotent),
            message: error_chain(&e),
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::Transport {
                retryable: request.idempotent,
                message: error_chain(&e),
            })?
            .to_vec();
        if status.is_success() {
            Ok(Answer { status, body })
        } else {
            Err(Failure::Status {
                status,
                body,
                retry_after,
            })
        }
    }
}

/// Decodes a JSON answer; `what` names the call in the error.
fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode(format!("{what}: {e}")))
}

/// How long before `expires_in` runs out a service user's token is renewed: a tenth of its
/// lifetime, at most a minute.
fn renewal_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(60))
}

/// A 2xx answer: its status and body.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

/// One failed try, before it becomes a [`ClientError`].
enum Failure {
    Transport {
        retryable: bool,
        message: String,
    },
    Status {
        status: StatusCode,
        body: Vec<u8>,
        retry_after: Option<Duration>,
    },
}

impl Failure {
    fn into_error(self) -> ClientError {
        match self {
            Failure::Transport { message, .. } => ClientError::Transport(message),
            Failure::Status { status, body, .. } => {
                ClientError::from_response(status.as_u16(), &body)
            }
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport { message, .. } => f.write_str(message),
            Failure::Status { status, .. } => write!(f, "HTTP {status}"),
        }
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
    fn paths_are_joined_under_the_base_and_segments_are_encoded() {
        let client = Client::new("http://localhost:8080").unwrap();
        let url = client
            .url(&["v1", "licenses", "lic 1/../x", "sessions"])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://localhost:8080/v1/licenses/lic%201%2F..%2Fx/sessions"
        );
        let client = Client::new("http://localhost:8080/lh/").unwrap();
        assert_eq!(
            client.url(&["healthz"]).unwrap().as_str(),
            "http://localhost:8080/lh/healthz"
        );
        let client = Client::new("http://localhost:8080/lh").unwrap();
        assert_eq!(
            client.url(&["healthz"]).unwrap().as_str(),
            "http://localhost:8080/lh/healthz"
        );
    }

    #[test]
    fn usage_queries_are_rfc3339() {
        let query = UsageQuery {
            from: Some(OffsetDateTime::from_unix_timestamp(0).unwrap()),
            to: None,
            bucket: Some("hour".into()),
        };
        assert_eq!(
            query.pairs().unwrap(),
            vec![
                ("from", "1970-01-01T00:00:00Z".to_owned()),
                ("bucket", "hour".to_owned())
            ]
        );
    }

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

    #[test]
    fn debug_output_does_not_show_secrets() {
        let client = Client::with_client_credentials("http://x", "svc_1", "s3cret").unwrap();
        let text = format!("{client:?}");
        assert!(text.contains("svc_1") && !text.contains("s3cret"), "{text}");
        let client = Client::with_token("http://x", "tok_abc").unwrap();
        assert!(!format!("{client:?}").contains("tok_abc"));
    }
}
