//! Handlers of seat protocol v1. Each one is thin: authorize, parse, call the store (where the
//! licensing rules run), shape the answer. Errors go through `ApiError`.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use leasehold_core::{LicenseTerms, Username, ValidatedId};
use leasehold_proto as proto;
use leasehold_proto::{EndReason, ErrorBody, UserKind};
use leasehold_store::{
    Account, Admission, Credential, Grant, License, OpenRequest, OwnedHeartbeat, Principal,
    QueueTicket, Session, Store, User,
};
use serde::Deserialize;
use std::sync::Arc;

use super::{ApiForm, ApiJson, ApiPath, AppState};
use crate::auth::{hash_token, new_public_id, new_token, secret_matches, Auth};
use crate::clock::to_offset;
use crate::error::{ApiError, ApiResult};
use crate::lease::ISSUER;
use crate::metrics as m;

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A session id: a UUID whose first 48 bits are the opening millisecond (the UUIDv7 layout)
/// and whose other 74 bits are random. Sessions opened close in time get ids that sort close
/// together, so the database appends them at the end of its session B-tree instead of on a
/// random page: a group commit writes a few pages, not one per session.
fn new_session_id(now: leasehold_core::Timestamp) -> String {
    let random = *uuid::Uuid::new_v4().as_bytes();
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&random[6..]);
    uuid::Builder::from_unix_timestamp_millis(u64::try_from(now.millis()).unwrap_or(0), &tail)
        .into_uuid()
        .to_string()
}

fn license_view(license: &License) -> proto::License {
    let t = &license.terms;
    proto::License {
        id: license.id.clone(),
        account_id: license.account_id.clone(),
        product: t.product.clone(),
        model: license.model,
        seats: t.seats,
        plan: t.plan().map(str::to_owned),
        extra_seats: t.extra_seats(),
        reserved: t.reserved.iter().map(|u| u.to_string()).collect(),
        inactivity_timeout_secs: t.inactivity_timeout_secs,
        service_session_lifetime_secs: t.service_session_lifetime_secs,
        interactive_session_lifetime_secs: t.interactive_session_lifetime_secs,
        on_full: t.on_full,
        max_queue_wait_secs: t.max_queue_wait_secs,
        max_sessions_per_user: t.max_sessions_per_user,
        overdraft: t.overdraft_seats(),
        starts_at: t.starts_at.map(to_offset),
        expires_at: t.expires_at.map(to_offset),
        suspended: t.suspended,
        created_at: to_offset(license.created_at),
        usage: None,
    }
}

fn session_view(s: &Session, lease: Option<String>) -> proto::Session {
    proto::Session {
        id: s.id.clone(),
        license_id: s.license_id.to_string(),
        username: s.username.clone(),
        kind: s.kind,
        device_id: s.device_id.clone(),
        instance_id: s.instance_id.clone(),
        opened_at: to_offset(s.clock.opened_at),
        expires_at: to_offset(s.clock.expires_at),
        heartbeat_interval_secs: s.heartbeat_interval_secs,
        overdraft: s.overdraft,
        lease,
    }
}

fn usage_view(u: &leasehold_store::UsageStats) -> proto::Usage {
    proto::Usage {
        seats: u.seats,
        in_use: u.in_use,
        available: u.seats.saturating_sub(u.in_use),
        overdraft_in_use: u.overdraft_in_use,
        activations: u.activations,
    }
}

fn sign_lease(state: &AppState, s: &Session) -> String {
    state.signer.sign(&proto::LeaseClaims {
        iss: ISSUER.into(),
        sub: s.username.clone(),
        sid: s.id.clone(),
        lic: s.license_id.to_string(),
        kind: s.kind,
        device_id: s.device_id.clone(),
        instance_id: s.instance_id.clone(),
        iat: state.clock.now().secs(),
        exp: s.clock.expires_at.secs(),
    })
}

/// A license the caller administers; 404 for other tenants' licenses (their existence is not
/// revealed), 403 for tokens that administer nothing.
async fn admin_license(state: &AppState, auth: &Auth, id: &str) -> ApiResult<License> {
    if !matches!(auth.0, Principal::Root | Principal::AccountAdmin { .. }) {
        return Err(ApiError::Forbidden(
            "this call needs an account admin token".into(),
        ));
    }
    state
        .store
        .get_license(id)
        .await?
        .filter(|l| auth.administers(&l.account_id))
        .ok_or_else(|| ApiError::NotFound("license".into()))
}

/// An account the caller administers: 403 for another account's admin, 404 when missing.
async fn admin_account(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Account> {
    auth.require_account_admin(id)?;
    state
        .store
        .get_account(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("account".into()))
}

#[utoipa::path(
    post, path = "/v1/accounts", tag = "accounts",
    request_body = proto::CreateAccount,
    responses((status = 201, body = proto::AccountCreated), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn create_account(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<proto::CreateAccount>,
) -> ApiResult<(StatusCode, Json<proto::AccountCreated>)> {
    auth.require_root()?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "name must be 1 to 200 printable characters".into(),
        ));
    }
    let account = Account {
        id: new_id(),
        name: name.to_owned(),
        created_at: state.clock.now(),
    };
    let admin_token = new_token("lh_adm_");
    let credential = Credential {
        hash: hash_token(&admin_token),
        principal: Principal::AccountAdmin {
            account_id: account.id.clone(),
        },
        expires_at: None,
    };
    state
        .store
        .create_account(account.clone(), credential)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(proto::AccountCreated {
            id: account.id,
            name: account.name,
            admin_token,
        }),
    ))
}

#[utoipa::path(
    post, path = "/v1/licenses", tag = "licenses",
    request_body = proto::CreateLicense,
    responses((status = 201, body = proto::License), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, description = "plan_cap_exceeded", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn create_license(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<proto::CreateLicense>,
) -> ApiResult<(StatusCode, Json<proto::License>)> {
    admin_account(&state, &auth, &req.account_id).await?;
    let terms = LicenseTerms::from_create(&req, &state.plans)?;
    let license = License {
        id: new_id(),
        account_id: req.account_id.clone(),
        model: req.model,
        terms,
        created_at: state.clock.now(),
    };
    state.store.create_license(license.clone()).await?;
    Ok((StatusCode::CREATED, Json(license_view(&license))))
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    responses((status = 200, body = proto::License), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_license(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::License>> {
    let license = admin_license(&state, &auth, &id).await?;
    let usage = state.store.usage(&id, state.clock.now()).await?;
    let mut view = license_view(&license);
    view.usage = Some(usage_view(&usage));
    Ok(Json(view))
}

#[utoipa::path(
    patch, path = "/v1/licenses/{id}", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    request_body = proto::PatchLicense,
    responses((status = 200, body = proto::License), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn patch_license(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<proto::PatchLicense>,
) -> ApiResult<Json<proto::License>> {
    let mut license = admin_license(&state, &auth, &id).await?;
    license.terms = license.terms.apply_patch(&patch, &state.plans)?;
    state
        .store
        .update_license(license.clone(), state.clock.now())
        .await?;
    Ok(Json(license_view(&license)))
}

#[utoipa::path(
    put, path = "/v1/accounts/{id}/users/{username}", tag = "users",
    params(("id" = String, Path, description = "Account id"), ("username" = String, Path)),
    request_body = proto::PutUser,
    responses((status = 200, body = proto::User), (status = 201, description = "Created; a service user's client_secret is shown only here", body = proto::User), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn put_user(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((account_id, username)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<proto::PutUser>,
) -> ApiResult<(StatusCode, Json<proto::User>)> {
    admin_account(&state, &auth, &account_id).await?;
    let username = Username::parse(&username)?;
    let existing = state.store.get_user(&account_id, username.as_str()).await?;
    let mut secret = None;
    let user = match existing {
        Some(mut user) => {
            if user.kind != req.kind {
                return Err(ApiError::Conflict(format!(
                    "user {username} is a {} user; its kind cannot change",
                    user.kind.as_str()
                )));
            }
            if let Some(active) = req.active {
                user.active = active;
            }
            user
        }
        None => {
            let (client_id, client_secret_hash) = match req.kind {
                UserKind::Service => {
                    let s = new_token("lh_sec_");
                    let hash = hash_token(&s);
                    secret = Some(s);
                    (Some(new_public_id("lh_cid_")), Some(hash))
                }
                UserKind::Interactive => (None, None),
            };
            User {
                account_id: account_id.clone(),
                username: username.into_string(),
                kind: req.kind,
                active: req.active.unwrap_or(true),
                client_id,
                client_secret_hash,
                created_at: state.clock.now(),
            }
        }
    };
    let created = state.store.put_user(user.clone()).await?;
    if !user.active {
        // An inactive user holds no seat anywhere.
        let ended = state
            .store
            .end_user_sessions(
                &account_id,
                &user.username,
                EndReason::UserDeactivated,
                state.clock.now(),
            )
            .await?;
        for _ in &ended {
            m::ended(EndReason::UserDeactivated);
        }
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut view = user_view(&user);
    view.client_secret = secret;
    Ok((status, Json(view)))
}

fn user_view(user: &User) -> proto::User {
    proto::User {
        account_id: user.account_id.clone(),
        username: user.username.clone(),
        kind: user.kind,
        active: user.active,
        client_id: user.client_id.clone(),
        client_secret: None,
        created_at: to_offset(user.created_at),
    }
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/users/{username}", tag = "users",
    params(("id" = String, Path, description = "Account id"), ("username" = String, Path)),
    responses((status = 200, body = proto::User), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_user(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((account_id, username)): ApiPath<(String, String)>,
) -> ApiResult<Json<proto::User>> {
    admin_account(&state, &auth, &account_id).await?;
    let user = state
        .store
        .get_user(&account_id, &username)
        .await?
        .ok_or_else(|| ApiError::NotFound("user".into()))?;
    Ok(Json(user_view(&user)))
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/users", tag = "users",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = proto::UserList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_users(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(account_id): ApiPath<String>,
) -> ApiResult<Json<proto::UserList>> {
    admin_account(&state, &auth, &account_id).await?;
    let users = state.store.list_users(&account_id).await?;
    Ok(Json(proto::UserList {
        users: users.iter().map(user_view).collect(),
    }))
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/licenses", tag = "licenses",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = proto::LicenseList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_licenses(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(account_id): ApiPath<String>,
) -> ApiResult<Json<proto::LicenseList>> {
    admin_account(&state, &auth, &account_id).await?;
    let licenses = state.store.list_licenses(&account_id).await?;
    Ok(Json(proto::LicenseList {
        licenses: licenses.iter().map(license_view).collect(),
    }))
}

#[utoipa::path(
    post, path = "/v1/accounts/{id}/users/{username}/tokens", tag = "users",
    params(("id" = String, Path, description = "Account id"), ("username" = String, Path)),
    responses((status = 201, body = proto::TokenCreated), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, description = "service users use client credentials", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn create_user_token(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((account_id, username)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<proto::TokenCreated>)> {
    admin_account(&state, &auth, &account_id).await?;
    let user = state
        .store
        .get_user(&account_id, &username)
        .await?
        .ok_or_else(|| ApiError::NotFound("user".into()))?;
    if user.kind == UserKind::Service {
        return Err(ApiError::Unprocessable(
            "service users authenticate with client credentials at /v1/oauth/token".into(),
        ));
    }
    let token = new_token("lh_usr_");
    state
        .store
        .put_credential(Credential {
            hash: hash_token(&token),
            principal: Principal::User {
                account_id,
                username: user.username,
            },
            expires_at: None,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(proto::TokenCreated { token })))
}

/// Client credentials from HTTP Basic (RFC 6749 section 2.3.1), if present.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

#[utoipa::path(
    post, path = "/v1/oauth/token", tag = "oauth",
    request_body(content = proto::OAuthTokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = proto::OAuthToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "user_inactive", body = ErrorBody)),
)]
pub async fn oauth_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiForm(req): ApiForm<proto::OAuthTokenRequest>,
) -> ApiResult<impl IntoResponse> {
    if req.grant_type != "client_credentials" {
        return Err(ApiError::BadRequest(format!(
            "unsupported grant_type {:?}: only client_credentials is supported",
            req.grant_type
        )));
    }
    let (client_id, client_secret) = match (
        basic_credentials(&headers),
        req.client_id,
        req.client_secret,
    ) {
        (Some(basic), _, _) => basic,
        (None, Some(id), Some(secret)) => (id, secret),
        _ => {
            return Err(ApiError::Unauthorized(
                "client authentication needs client_id and client_secret".into(),
            ))
        }
    };
    let user = state.store.find_user_by_client_id(&client_id).await?;
    let user = match user {
        Some(u)
            if u.client_secret_hash
                .as_ref()
                .is_some_and(|h| secret_matches(&client_secret, h)) =>
        {
            u
        }
        _ => return Err(ApiError::Unauthorized("invalid client credentials".into())),
    };
    if !user.active {
        return Err(ApiError::UserInactive(user.username));
    }
    let token = new_token("lh_acc_");
    let ttl = state.access_token_ttl_secs;
    state
        .store
        .put_credential(Credential {
            hash: hash_token(&token),
            principal: Principal::ServiceAccess {
                account_id: user.account_id,
                username: user.username,
            },
            expires_at: Some(state.clock.now().plus_secs(ttl)),
        })
        .await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(proto::OAuthToken {
            access_token: token,
            token_type: "Bearer".into(),
            expires_in: ttl,
        }),
    ))
}

/// The user or service user behind a session-holding token.
fn session_holder(auth: &Auth) -> ApiResult<(&str, &str, UserKind)> {
    match &auth.0 {
        Principal::User {
            account_id,
            username,
        } => Ok((account_id, username, UserKind::Interactive)),
        Principal::ServiceAccess {
            account_id,
            username,
        } => Ok((account_id, username, UserKind::Service)),
        _ => Err(ApiError::Forbidden(
            "sessions are opened with a user token or a service access token, not an admin token"
                .into(),
        )),
    }
}

#[utoipa::path(
    post, path = "/v1/sessions", tag = "sessions",
    request_body = proto::OpenSession,
    responses(
        (status = 201, description = "Opened: occupies one seat", body = proto::Session),
        (status = 200, description = "This client instance's live session, returned again", body = proto::Session),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "no_seat_available", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn open_session(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<proto::OpenSession>,
) -> ApiResult<(StatusCode, Json<proto::Session>)> {
    let (account_id, username, kind) = session_holder(&auth)?;
    let device_id = ValidatedId::parse("device_id", &req.device_id)?;
    let instance_id = ValidatedId::parse("instance_id", &req.instance_id)?;
    let license = state
        .store
        .get_license(&req.license_id)
        .await?
        .filter(|l| l.account_id == account_id)
        .ok_or_else(|| ApiError::NotFound("license".into()))?;
    let user = state
        .store
        .get_user(account_id, username)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the token's user no longer exists".into()))?;
    if !user.active {
        return Err(ApiError::UserInactive(user.username));
    }
    let request = OpenRequest {
        new_id: new_session_id(state.clock.now()),
        license_id: license.id.clone(),
        username: user.username,
        kind,
        device_id: device_id.into_string(),
        instance_id: instance_id.into_string(),
    };
    let wait = license.terms.queue_wait_secs(req.wait_secs);
    let admitted = match state
        .store
        .admit(request, wait > 0, state.clock.now())
        .await
    {
        Ok(Admission::Opened(opened)) => Ok(opened),
        Ok(Admission::Queued(ticket)) => wait_for_seat(&state, &license.id, ticket, wait).await,
        Err(e) => Err(ApiError::from(e)),
    };
    let opened = match admitted {
        Ok(opened) => opened,
        Err(e) => {
            if matches!(e, ApiError::NoSeat { .. }) {
                m::denied(&license.id);
            }
            return Err(e);
        }
    };
    let status = if opened.created {
        m::opened();
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let lease = sign_lease(&state, &opened.session);
    Ok((status, Json(session_view(&opened.session, Some(lease)))))
}

/// A place in a license's queue, held by a waiting request. If the request goes away (the
/// client disconnected), the place is given up, and a seat granted at that very moment is
/// handed back: no seat is ever held by nobody.
struct QueuePlace {
    store: Arc<dyn Store>,
    clock: Arc<dyn crate::clock::Clock>,
    license_id: String,
    ticket: u64,
    granted: Option<tokio::sync::oneshot::Receiver<Result<Grant, leasehold_store::StoreError>>>,
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        let Some(mut granted) = self.granted.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, clock) = (self.store.clone(), self.clock.clone());
        let (license_id, ticket) = (self.license_id.clone(), self.ticket);
        runtime.spawn(async move {
            let _ = store.leave_queue(&license_id, ticket).await;
            if let Ok(Ok(grant)) = granted.try_recv() {
                let id = grant.opened.session.id.clone();
                if grant.wait_durable().await.is_ok() {
                    let _ = store.end_session(&id, EndReason::Logout, clock.now()).await;
                }
            }
        });
    }
}

/// Waits up to `wait_secs` for the queue to grant a seat. The wait is a network timeout, so it
/// runs on the runtime's timer; the licensing decisions inside the store use the clock.
async fn wait_for_seat(
    state: &AppState,
    license_id: &str,
    ticket: QueueTicket,
    wait_secs: u64,
) -> ApiResult<leasehold_store::Opened> {
    let started = std::time::Instant::now();
    let mut place = QueuePlace {
        store: state.store.clone(),
        clock: state.clock.clone(),
        license_id: license_id.to_owned(),
        ticket: ticket.ticket,
        granted: Some(ticket.granted),
    };
    let timeout = std::time::Duration::from_secs(wait_secs);
    let outcome = match place.granted.as_mut() {
        Some(rx) => tokio::time::timeout(timeout, rx).await,
        None => return Err(ApiError::Internal("queue place without a receiver".into())),
    };
    let grant = match outcome {
        Ok(received) => {
            place.granted = None;
            received
        }
        Err(_elapsed) => {
            if state.store.leave_queue(license_id, ticket.ticket).await? {
                place.granted = None;
                m::queue_wait(started.elapsed(), false);
                return Err(ApiError::NoSeat {
                    message: format!("no seat was freed within the {wait_secs} s wait"),
                    queue_timeout: true,
                });
            }
            // Granted just as the wait ended: take the seat.
            match place.granted.take() {
                Some(rx) => rx.await,
                None => return Err(ApiError::Internal("queue place without a receiver".into())),
            }
        }
    };
    let grant = grant
        .map_err(|_| ApiError::StoreUnavailable("the queue was dropped".into()))?
        .map_err(ApiError::from)?;
    m::queue_wait(started.elapsed(), true);
    Ok(grant.wait_durable().await?)
}

/// Checks that the caller owns the session: other tenants get 404, other users 403.
async fn owned_session(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Session> {
    let (account_id, username, _) = session_holder(auth)?;
    let found = state
        .store
        .get_session(id)
        .await?
        .filter(|s| &*s.session.account_id == account_id)
        .ok_or_else(|| ApiError::NotFound("session".into()))?;
    if found.session.username != username {
        return Err(ApiError::Forbidden(
            "the session belongs to another user".into(),
        ));
    }
    Ok(found.session)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatQuery {
    /// Ask for a lease re-signed with the new expiry (signing costs CPU: ask when the held
    /// lease is past half its life, not on every heartbeat).
    #[serde(default)]
    pub lease: bool,
}

#[utoipa::path(
    post, path = "/v1/sessions/{id}/heartbeat", tag = "sessions",
    params(("id" = String, Path, description = "Session id"), HeartbeatQuery),
    responses((status = 200, body = proto::Heartbeat), (status = 404, body = ErrorBody), (status = 410, description = "session_ended, with reason", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    query: Result<Query<HeartbeatQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<proto::Heartbeat>> {
    let Query(query) = query.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    if query.lease {
        // A re-signed lease needs the whole session record.
        owned_session(&state, &auth, &id).await?;
        let session = state.store.heartbeat(&id, state.clock.now()).await?;
        m::heartbeat();
        return Ok(Json(proto::Heartbeat {
            expires_at: to_offset(session.clock.expires_at),
            lease: Some(sign_lease(&state, &session)),
        }));
    }
    // The common heartbeat: ownership and the new expiry in one store call, nothing copied.
    let (account_id, username, _) = session_holder(&auth)?;
    let expires_at = match state
        .store
        .heartbeat_owned(&id, account_id, username, state.clock.now())
        .await?
    {
        OwnedHeartbeat::Beat(at) => at,
        OwnedHeartbeat::NotOwner => {
            return Err(ApiError::Forbidden(
                "the session belongs to another user".into(),
            ))
        }
    };
    m::heartbeat();
    Ok(Json(proto::Heartbeat {
        expires_at: to_offset(expires_at),
        lease: None,
    }))
}

#[utoipa::path(
    delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 204, description = "Logged out (owner) or revoked (account admin); the seat is free"), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn close_session(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let reason = match &auth.0 {
        Principal::Root | Principal::AccountAdmin { .. } => {
            // Only the tenant's own sessions can be revoked; others do not exist for it.
            state
                .store
                .get_session(&id)
                .await?
                .filter(|s| auth.administers(&s.session.account_id))
                .ok_or_else(|| ApiError::NotFound("session".into()))?;
            EndReason::Revoked
        }
        _ => {
            owned_session(&state, &auth, &id).await?;
            EndReason::Logout
        }
    };
    state
        .store
        .end_session(&id, reason, state.clock.now())
        .await?;
    m::ended(reason);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/sessions", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    responses((status = 200, body = proto::SessionList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::SessionList>> {
    admin_license(&state, &auth, &id).await?;
    let sessions = state
        .store
        .list_live_sessions(&id, state.clock.now())
        .await?;
    Ok(Json(proto::SessionList {
        sessions: sessions.iter().map(|s| session_view(s, None)).collect(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Start of the period (RFC 3339); this version reports since server start.
    pub from: Option<String>,
    /// End of the period (RFC 3339).
    pub to: Option<String>,
    /// `hour`, `day` or `month`.
    pub bucket: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/usage", tag = "licenses",
    params(("id" = String, Path, description = "License id"), UsageQuery),
    responses((status = 200, body = proto::UsageReport), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn license_usage(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<proto::UsageReport>> {
    let Query(query) = query.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    for (name, value) in [("from", &query.from), ("to", &query.to)] {
        if let Some(v) = value {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map_err(|_| ApiError::Unprocessable(format!("{name} must be an RFC 3339 time")))?;
        }
    }
    if let Some(b) = &query.bucket {
        if !matches!(b.as_str(), "hour" | "day" | "month") {
            return Err(ApiError::Unprocessable(
                "bucket must be hour, day or month".into(),
            ));
        }
    }
    admin_license(&state, &auth, &id).await?;
    let u = state.store.usage(&id, state.clock.now()).await?;
    Ok(Json(proto::UsageReport {
        license_id: id,
        now: usage_view(&u),
        high_water: u.high_water,
        low_water: u.low_water,
        denials: u.denials,
        since: to_offset(u.since),
    }))
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
    pub event: String,
    pub session_id: Option<String>,
    pub username: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditLog {
    pub events: Vec<AuditEntry>,
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/audit", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    responses((status = 200, description = "The append-only audit log of the license, oldest first (at most 10000 events)", body = AuditLog), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn license_audit(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AuditLog>> {
    admin_license(&state, &auth, &id).await?;
    let events = state.store.audit_log(&id, 10_000).await?;
    Ok(Json(AuditLog {
        events: events
            .into_iter()
            .map(|e| AuditEntry {
                at: to_offset(e.at),
                event: e.event,
                session_id: e.session_id,
                username: e.username,
                detail: e.detail,
            })
            .collect(),
    }))
}

#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "leases",
    responses((status = 200, description = "Public keys that verify signed leases", body = proto::Jwks))
)]
pub async fn jwks(State(state): State<AppState>) -> Json<proto::Jwks> {
    Json(state.signer.jwks())
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The server is up")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let body = m::render(&state).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.as_str().to_owned(),
    )
}

pub async fn no_route() -> ApiError {
    ApiError::NotFound("route".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[utoipa::path(
    get, path = "/v1/plans", tag = "licenses",
    responses((status = 200, description = "The configured plans", body = Vec<proto::PlanInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_plans(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<Json<Vec<proto::PlanInfo>>> {
    if !matches!(auth.0, Principal::Root | Principal::AccountAdmin { .. }) {
        return Err(ApiError::Forbidden(
            "this call needs an account admin token".into(),
        ));
    }
    Ok(Json(
        state
            .plans
            .iter()
            .map(|(name, p)| proto::PlanInfo {
                name: name.clone(),
                base_seats: p.base_seats,
                max_seats: p.max_seats,
            })
            .collect(),
    ))
}

fn license_user_view(u: &leasehold_store::LicenseUser) -> proto::LicenseUser {
    proto::LicenseUser {
        license_id: u.license_id.clone(),
        username: u.username.clone(),
        active: u.active,
        updated_at: to_offset(u.updated_at),
    }
}

#[utoipa::path(
    put, path = "/v1/licenses/{id}/users/{username}", tag = "licenses",
    params(("id" = String, Path, description = "License id (a registered_users license)"), ("username" = String, Path)),
    request_body = proto::PutLicenseUser,
    responses(
        (status = 200, body = proto::LicenseUser), (status = 201, body = proto::LicenseUser),
        (status = 404, body = ErrorBody),
        (status = 409, description = "active_users_exhausted", body = ErrorBody),
        (status = 422, description = "not a registered_users license", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn put_license_user(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((id, username)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<proto::PutLicenseUser>,
) -> ApiResult<(StatusCode, Json<proto::LicenseUser>)> {
    let license = admin_license(&state, &auth, &id).await?;
    let username = Username::parse(&username)?;
    state
        .store
        .get_user(&license.account_id, username.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound("user".into()))?;
    let (change, created) = state
        .store
        .set_license_user(&id, username.as_str(), req.active, state.clock.now())
        .await?;
    for _ in &change.ended {
        m::ended(EndReason::UserDeactivated);
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(license_user_view(&change.user))))
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/users", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    responses((status = 200, body = proto::LicenseUserList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_license_users(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::LicenseUserList>> {
    let license = admin_license(&state, &auth, &id).await?;
    let users = state.store.list_license_users(&id).await?;
    Ok(Json(proto::LicenseUserList {
        active: users.iter().filter(|u| u.active).count() as u32,
        max_active: license.terms.seats,
        users: users.iter().map(license_user_view).collect(),
    }))
}

fn device_view(d: &leasehold_store::DeviceActivation) -> proto::Device {
    proto::Device {
        license_id: d.license_id.clone(),
        fingerprint: d.fingerprint.clone(),
        name: d.name.clone(),
        activated_at: to_offset(d.activated_at),
    }
}

#[utoipa::path(
    post, path = "/v1/licenses/{id}/devices", tag = "licenses",
    params(("id" = String, Path, description = "License id (a node_locked license)")),
    request_body = proto::ActivateDevice,
    responses(
        (status = 201, description = "Activated", body = proto::Device),
        (status = 200, description = "Already activated", body = proto::Device),
        (status = 404, body = ErrorBody),
        (status = 409, description = "activations_exhausted", body = ErrorBody),
        (status = 422, description = "not a node_locked license", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn activate_device(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<proto::ActivateDevice>,
) -> ApiResult<(StatusCode, Json<proto::Device>)> {
    admin_license(&state, &auth, &id).await?;
    let fingerprint = ValidatedId::parse("fingerprint", &req.fingerprint)?;
    if req.name.len() > 200 || req.name.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "name must be at most 200 printable characters".into(),
        ));
    }
    let (device, created) = state
        .store
        .activate_device(
            &id,
            fingerprint.as_str(),
            req.name.trim(),
            state.clock.now(),
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(device_view(&device))))
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/devices", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    responses((status = 200, body = proto::DeviceList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_devices(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::DeviceList>> {
    let license = admin_license(&state, &auth, &id).await?;
    let devices = state.store.list_devices(&id).await?;
    Ok(Json(proto::DeviceList {
        devices: devices.iter().map(device_view).collect(),
        max_devices: license.terms.seats,
    }))
}

#[utoipa::path(
    delete, path = "/v1/licenses/{id}/devices/{fingerprint}", tag = "licenses",
    params(("id" = String, Path, description = "License id"), ("fingerprint" = String, Path)),
    responses((status = 204, description = "Deactivated; the device's live sessions ended (device_deactivated)"), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn deactivate_device(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((id, fingerprint)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    admin_license(&state, &auth, &id).await?;
    let ended = state
        .store
        .deactivate_device(&id, &fingerprint, state.clock.now())
        .await?;
    for _ in &ended {
        m::ended(EndReason::DeviceDeactivated);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/users/{username}/sessions", tag = "users",
    params(("id" = String, Path, description = "Account id"), ("username" = String, Path)),
    responses((status = 200, description = "The user's live sessions on every license of the account", body = proto::SessionList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_user_sessions(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((account_id, username)): ApiPath<(String, String)>,
) -> ApiResult<Json<proto::SessionList>> {
    admin_account(&state, &auth, &account_id).await?;
    state
        .store
        .get_user(&account_id, &username)
        .await?
        .ok_or_else(|| ApiError::NotFound("user".into()))?;
    let sessions = state
        .store
        .list_user_sessions(&account_id, &username, state.clock.now())
        .await?;
    Ok(Json(proto::SessionList {
        sessions: sessions.iter().map(|s| session_view(s, None)).collect(),
    }))
}

#[utoipa::path(
    get, path = "/v1/licenses/{id}/queue", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    responses((status = 200, description = "Clients waiting for a seat, in order. Account admins see every waiter; a user or service token sees only its own waiting requests (with their positions in the whole queue).", body = proto::QueueList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn license_queue(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::QueueList>> {
    let own: Option<String> = match &auth.0 {
        Principal::Root | Principal::AccountAdmin { .. } => {
            admin_license(&state, &auth, &id).await?;
            None
        }
        _ => {
            let (account_id, username, _) = session_holder(&auth)?;
            state
                .store
                .get_license(&id)
                .await?
                .filter(|l| l.account_id == account_id)
                .ok_or_else(|| ApiError::NotFound("license".into()))?;
            Some(username.to_owned())
        }
    };
    let now = state.clock.now();
    let waiting = state.store.list_queue(&id, now).await?;
    let length = waiting.len() as u32;
    Ok(Json(proto::QueueList {
        waiting: waiting
            .into_iter()
            .filter(|w| own.as_ref().is_none_or(|u| &w.username == u))
            .map(|w| proto::QueueEntry {
                position: w.position,
                username: w.username,
                device_id: w.device_id,
                instance_id: w.instance_id,
                waiting_since: to_offset(w.since),
                waited_secs: (now.millis() - w.since.millis()).max(0) as u64 / 1000,
            })
            .collect(),
        length,
    }))
}
