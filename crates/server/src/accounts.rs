//! The application layer of accounts and their users: creating accounts (with their admin
//! token), creating and updating users (a service user's client secret is minted here and shown
//! once), personal tokens, and the OAuth2 client-credentials exchange of service users.

use leasehold_core::Username;
use leasehold_proto as proto;
use leasehold_proto::{EndReason, UserKind};
use leasehold_store::origin;
use leasehold_store::{Account, Credential, Principal, SessionEvent, User};

use crate::access;
use crate::auth::{hash_token, new_public_id, new_token, secret_matches, Auth};
use crate::error::{ApiError, ApiResult};
use crate::metrics as m;
use crate::state::AppState;

/// A new account and its admin token (shown once).
pub struct CreatedAccount {
    pub account: Account,
    pub admin_token: String,
}

/// A user after `put_user`: whether it was created, and a new service user's client secret
/// (shown once).
pub struct PutUser {
    pub user: User,
    pub created: bool,
    pub client_secret: Option<String>,
}

/// A service user's access token and its lifetime.
pub struct AccessToken {
    pub token: String,
    pub expires_in: u64,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Creates an account (root only) with its admin token.
#[tracing::instrument(skip(state, auth))]
pub async fn create_account(
    state: &AppState,
    auth: &Auth,
    name: &str,
) -> ApiResult<CreatedAccount> {
    auth.require_root()?;
    let name = name.trim();
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
    Ok(CreatedAccount {
        account,
        admin_token,
    })
}

/// Creates a user or updates its `active` flag; a user's kind never changes. Deactivating a
/// user ends its live sessions everywhere (`user_deactivated`).
#[tracing::instrument(skip(state, auth, req))]
pub async fn put_user(
    state: &AppState,
    auth: &Auth,
    account_id: &str,
    username: &str,
    req: proto::PutUser,
) -> ApiResult<PutUser> {
    access::admin_account(state, auth, account_id).await?;
    let username = Username::parse(username)?;
    let existing = state.store.get_user(account_id, username.as_str()).await?;
    let mut client_secret = None;
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
                    client_secret = Some(s);
                    (Some(new_public_id("lh_cid_")), Some(hash))
                }
                UserKind::Interactive => (None, None),
            };
            User {
                account_id: account_id.to_owned(),
                username: username.into_string(),
                kind: req.kind,
                active: req.active.unwrap_or(true),
                client_id,
                client_secret_hash,
                created_at: state.clock.now(),
            }
        }
    };
    // One store step: a deactivation ends the user's sessions atomically with it (decided
    // and durable when it answers; the ends themselves land in the background).
    let put = state
        .with_now(|now| origin::scope(auth.origin(), state.store.put_user(user.clone(), now)))
        .await?;
    // Account-wide: the ends span the user's licenses, counted without a license label.
    m::ended_n("", EndReason::UserDeactivated, u64::from(put.ended));
    if !user.active {
        let event = SessionEvent::user_ended(&user.account_id, &user.username);
        crate::events::raise(state, event).await;
    }
    let created = put.created;
    Ok(PutUser {
        user,
        created,
        client_secret,
    })
}

/// A user of an account the caller administers (`username` in any case).
pub async fn get_user(
    state: &AppState,
    auth: &Auth,
    account_id: &str,
    username: &str,
) -> ApiResult<User> {
    access::admin_account(state, auth, account_id).await?;
    let username = lookup_name(username)?;
    state
        .store
        .get_user(account_id, username.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound("user".into()))
}

/// A username to look up, folded to lowercase like every username; one that cannot be a
/// username names no user (404).
pub fn lookup_name(username: &str) -> ApiResult<Username> {
    Username::parse(username).map_err(|_| ApiError::NotFound("user".into()))
}

/// The account's users, by username.
pub async fn list_users(state: &AppState, auth: &Auth, account_id: &str) -> ApiResult<Vec<User>> {
    access::admin_account(state, auth, account_id).await?;
    Ok(state.store.list_users(account_id).await?)
}

/// A new personal token for an interactive user (service users use client credentials).
#[tracing::instrument(skip(state, auth))]
pub async fn create_user_token(
    state: &AppState,
    auth: &Auth,
    account_id: &str,
    username: &str,
) -> ApiResult<String> {
    let user = get_user(state, auth, account_id, username).await?;
    if user.kind == UserKind::Service {
        return Err(ApiError::Unprocessable(
            "service users authenticate with client credentials at /v1/oauth/token".into(),
        ));
    }
    let token = new_token("lh_usr_");
    let credential = Credential {
        hash: hash_token(&token),
        principal: Principal::User {
            account_id: account_id.to_owned(),
            username: user.username,
        },
        expires_at: None,
    };
    let put = state.store.put_credential(credential, state.clock.now());
    origin::scope(auth.origin(), put).await?;
    Ok(token)
}

/// The OAuth2 client-credentials grant: a service user's id and secret for an access token.
#[tracing::instrument(skip(state, client_secret))]
pub async fn client_credentials(
    state: &AppState,
    client_id: &str,
    client_secret: &str,
) -> ApiResult<AccessToken> {
    let user = state.store.find_user_by_client_id(client_id).await?;
    let user = match user {
        Some(u)
            if u.client_secret_hash
                .as_ref()
                .is_some_and(|h| secret_matches(client_secret, h)) =>
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
    let now = state.clock.now();
    state
        .store
        .put_credential(
            Credential {
                hash: hash_token(&token),
                principal: Principal::ServiceAccess {
                    account_id: user.account_id,
                    username: user.username,
                },
                expires_at: Some(now.plus_secs(ttl)),
            },
            now,
        )
        .await?;
    Ok(AccessToken {
        token,
        expires_in: ttl,
    })
}
