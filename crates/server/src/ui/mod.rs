//! The web dashboard at `/ui`: served by this binary with its assets embedded (it works at a
//! dark site), signed in with an account admin token. The pages are a server-rendered shell;
//! the script (`ui/app.js`) draws licenses, sessions, users, usage charts (plain SVG) and the
//! audit log from the JSON API, authenticated by the dashboard's cookie (`cookie.rs`).

pub mod cookie;
pub mod page;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use leasehold_store::{Credential, Principal};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::auth::{authenticate, hash_token, new_token};
use crate::error::ApiError;
use crate::state::AppState;

const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");
/// The largest sign-in form read (a token is under 100 bytes).
const FORM_LIMIT: usize = 4096;

/// The dashboard's routes (HTML and assets: not part of the API's OpenAPI document).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(show))
        .route("/ui/", get(show))
        .route("/ui/login", post(sign_in))
        .route("/ui/logout", post(sign_out))
        .route("/ui/assets/app.js", get(script))
        .route("/ui/assets/app.css", get(style))
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(page::CONTENT_SECURITY_POLICY),
    );
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn see_other(cookie: HeaderValue) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/ui"));
    headers.insert(header::SET_COOKIE, cookie);
    response
}

/// The account a dashboard cookie signs in, if it is valid now.
async fn signed_in_account(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let token = cookie::token(headers)?;
    let credential = state
        .store
        .find_credential(&hash_token(token), state.clock.now())
        .await
        .ok()??;
    match credential.principal {
        Principal::AccountAdmin { account_id } => Some(account_id),
        _ => None,
    }
}

/// `GET /ui`: the dashboard when signed in, the sign-in form otherwise.
async fn show(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(account_id) = signed_in_account(&state, &headers).await else {
        let mut response = html(StatusCode::OK, page::sign_in(None));
        if cookie::token(&headers).is_some() {
            response
                .headers_mut()
                .insert(header::SET_COOKIE, cookie::clear_cookie());
        }
        return response;
    };
    let name = match state.store.get_account(&account_id).await {
        Ok(Some(account)) => account.name,
        _ => account_id.clone(),
    };
    let csrf = cookie::token(&headers)
        .map(cookie::csrf_token)
        .unwrap_or_default();
    html(StatusCode::OK, page::dashboard(&account_id, &name, &csrf))
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

#[derive(Deserialize)]
struct SignOutForm {
    csrf: String,
}

fn peer(connect: Option<ConnectInfo<SocketAddr>>) -> IpAddr {
    connect.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// `POST /ui/login`: an account admin token in, a dashboard session cookie out. Failed tokens
/// count against the same limits as failed bearer tokens.
async fn sign_in(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let connect = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied();
    let Ok(body) = axum::body::to_bytes(body, FORM_LIMIT).await else {
        return html(
            StatusCode::PAYLOAD_TOO_LARGE,
            page::sign_in(Some("The form is too large.")),
        );
    };
    let refuse = |status, message: &str| html(status, page::sign_in(Some(message)));
    if !cookie::same_origin(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "A sign-in from another site is refused.",
        );
    }
    let Ok(form) = serde_urlencoded::from_bytes::<SignInForm>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "Enter an account admin token.");
    };
    let token = form.token.trim();
    if token.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "Enter an account admin token.");
    }
    let principal = match authenticate(&state, peer(connect), token).await {
        Ok(principal) => principal,
        Err(ApiError::RateLimited {
            retry_after_secs, ..
        }) => {
            let message = format!("Too many failed sign-ins: try again in {retry_after_secs} s.");
            return refuse(StatusCode::TOO_MANY_REQUESTS, &message);
        }
        Err(ApiError::InvalidToken(_)) => {
            return refuse(StatusCode::UNAUTHORIZED, "Unknown or expired token.")
        }
        Err(e) => {
            tracing::error!(error = %e, "dashboard sign-in failed");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server cannot sign you in now; try again.",
            );
        }
    };
    let Principal::AccountAdmin { account_id } = principal else {
        return refuse(
            StatusCode::FORBIDDEN,
            "Sign in with an account admin token (the root token manages accounts from the CLI).",
        );
    };
    let ui_token = new_token(cookie::TOKEN_PREFIX);
    let credential = Credential {
        hash: hash_token(&ui_token),
        principal: Principal::AccountAdmin { account_id },
        expires_at: Some(state.clock.now().plus_secs(cookie::SESSION_SECS)),
    };
    if let Err(e) = state
        .store
        .put_credential(credential, state.clock.now())
        .await
    {
        tracing::error!(error = %e, "dashboard sign-in could not be stored");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server cannot sign you in now; try again.",
        );
    }
    see_other(cookie::set_cookie(&ui_token))
}

/// `POST /ui/logout`: expires the session's credential at once (on every node) and clears the
/// cookie. Needs the page's CSRF token, so another site cannot sign you out.
async fn sign_out(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = cookie::token(&headers) else {
        return see_other(cookie::clear_cookie());
    };
    let csrf = serde_urlencoded::from_bytes::<SignOutForm>(&body)
        .map(|f| f.csrf)
        .unwrap_or_default();
    if !cookie::same_origin(&headers) || !cookie::csrf_matches(token, &csrf) {
        return ApiError::CsrfRejected("sign-out without this page's CSRF token".into())
            .into_response();
    }
    let now = state.clock.now();
    let hash = hash_token(token);
    match state.store.find_credential(&hash, now).await {
        Ok(Some(credential)) => {
            let expired = Credential {
                expires_at: Some(now),
                ..credential
            };
            if let Err(e) = state.store.put_credential(expired, now).await {
                return ApiError::from(e).into_response();
            }
        }
        Ok(None) => {}
        Err(e) => return ApiError::from(e).into_response(),
    }
    see_other(cookie::clear_cookie())
}
