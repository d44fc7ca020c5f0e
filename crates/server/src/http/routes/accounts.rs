//! Routes of accounts and their users: `/v1/accounts…`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use leasehold_proto as proto;
use leasehold_proto::ErrorBody;

use crate::accounts;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::views;
use crate::sessions;
use crate::state::AppState;

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
    let created = accounts::create_account(&state, &auth, &req.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(proto::AccountCreated {
            id: created.account.id,
            name: created.account.name,
            admin_token: created.admin_token,
        }),
    ))
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
    let put = accounts::put_user(&state, &auth, &account_id, &username, req).await?;
    let status = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut view = views::user(&put.user);
    view.client_secret = put.client_secret;
    Ok((status, Json(view)))
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
    let user = accounts::get_user(&state, &auth, &account_id, &username).await?;
    Ok(Json(views::user(&user)))
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
    let users = accounts::list_users(&state, &auth, &account_id).await?;
    Ok(Json(proto::UserList {
        users: users.iter().map(views::user).collect(),
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
    let token = accounts::create_user_token(&state, &auth, &account_id, &username).await?;
    Ok((StatusCode::CREATED, Json(proto::TokenCreated { token })))
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
    let sessions = sessions::user_sessions(&state, &auth, &account_id, &username).await?;
    Ok(Json(views::session_list(&sessions)))
}
