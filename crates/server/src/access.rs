//! Who may touch what: the tenant checks every call makes before it reads or changes anything.
//! Another tenant's records are answered 404 (their existence is not revealed); a token of the
//! wrong kind is 403.

use leasehold_proto::UserKind;
use leasehold_store::{Account, License, Principal, Session};

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The user or service user behind a session-holding token.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub account_id: &'a str,
    pub username: &'a str,
    pub kind: UserKind,
}

/// The caller as a session holder: a user token or a service access token.
pub fn session_holder(auth: &Auth) -> ApiResult<Holder<'_>> {
    match &auth.0 {
        Principal::User {
            account_id,
            username,
        } => Ok(Holder {
            account_id,
            username,
            kind: UserKind::Interactive,
        }),
        Principal::ServiceAccess {
            account_id,
            username,
        } => Ok(Holder {
            account_id,
            username,
            kind: UserKind::Service,
        }),
        _ => Err(ApiError::Forbidden(
            "sessions are opened with a user token or a service access token, not an admin token"
                .into(),
        )),
    }
}

/// Root or any account admin (calls that are not about one account, such as the plan list).
pub fn require_admin_token(auth: &Auth) -> ApiResult<()> {
    if matches!(auth.0, Principal::Root | Principal::AccountAdmin { .. }) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this call needs an account admin token".into(),
        ))
    }
}

/// The account whose audit log the caller reads: an account admin its own (403 when it names
/// another), root any (`None`: every account).
pub fn audit_account(auth: &Auth, asked: Option<String>) -> ApiResult<Option<String>> {
    match (&auth.0, asked) {
        (Principal::Root, asked) => Ok(asked),
        (Principal::AccountAdmin { account_id }, None) => Ok(Some(account_id.clone())),
        (Principal::AccountAdmin { .. }, Some(asked)) => {
            auth.require_account_admin(&asked)?;
            Ok(Some(asked))
        }
        _ => Err(ApiError::Forbidden(
            "the audit log is read with an account admin token".into(),
        )),
    }
}

/// A license the caller administers; 404 for other tenants' licenses, 403 for tokens that
/// administer nothing.
pub async fn admin_license(state: &AppState, auth: &Auth, id: &str) -> ApiResult<License> {
    require_admin_token(auth)?;
    state
        .store
        .get_license(id)
        .await?
        .filter(|l| auth.administers(&l.account_id))
        .ok_or_else(|| ApiError::NotFound("license".into()))
}

/// An account the caller administers: 403 for another account's admin, 404 when missing.
pub async fn admin_account(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Account> {
    auth.require_account_admin(id)?;
    state
        .store
        .get_account(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("account".into()))
}

/// A license of the session holder's own account (404 for any other).
pub async fn holder_license(state: &AppState, holder: Holder<'_>, id: &str) -> ApiResult<License> {
    state
        .store
        .get_license(id)
        .await?
        .filter(|l| l.account_id == holder.account_id)
        .ok_or_else(|| ApiError::NotFound("license".into()))
}

/// A session of the caller: other tenants get 404, other users of the account 403.
pub async fn owned_session(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Session> {
    let holder = session_holder(auth)?;
    let found = state
        .store
        .get_session(id)
        .await?
        .filter(|s| &*s.session.account_id == holder.account_id)
        .ok_or_else(|| ApiError::NotFound("session".into()))?;
    if found.session.username != holder.username {
        return Err(not_owner());
    }
    Ok(found.session)
}

/// The refusal of a call on another user's session.
pub fn not_owner() -> ApiError {
    ApiError::Forbidden("the session belongs to another user".into())
}
