//! Routes of sessions: open, heartbeat, close (`/v1/sessions…`).

use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use leasehold_proto as proto;
use leasehold_proto::ErrorBody;
use serde::Deserialize;

use crate::auth::Auth;
use crate::clock::to_offset;
use crate::error::ApiResult;
use crate::http::conn::LongLived;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::sized_json::SizedJson;
use crate::http::views;
use crate::state::AppState;
use crate::{events, sessions};

#[utoipa::path(
    post, path = "/v1/sessions", tag = "sessions",
    request_body = proto::OpenSession,
    responses(
        (status = 201, description = "Opened: occupies one seat", body = proto::Session),
        (status = 200, description = "This client instance's live session, returned again", body = proto::Session),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 400, description = "borrow_until with wait_secs", body = ErrorBody),
        (status = 409, description = "no_seat_available; for a borrow (`borrow_until`): borrow_not_allowed, borrow_too_long, borrow_limit_reached", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn open_session(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<proto::OpenSession>,
) -> ApiResult<(StatusCode, SizedJson<proto::Session>)> {
    let open = sessions::open(&state, &auth, req).await?;
    let status = if open.opened.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    // The session's fields take ~300 bytes besides its lease, the ids ~200 at most.
    let capacity = 512 + open.lease.len();
    Ok((
        status,
        SizedJson {
            value: views::session(&open.opened.session, Some(open.lease)),
            capacity,
        },
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
    ApiQuery(query): ApiQuery<HeartbeatQuery>,
) -> ApiResult<Json<proto::Heartbeat>> {
    let beat = sessions::heartbeat(&state, &auth, &id, query.lease).await?;
    Ok(Json(proto::Heartbeat {
        expires_at: to_offset(beat.expires_at),
        lease: beat.lease,
    }))
}

#[utoipa::path(
    delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 204, description = "Logged out (owner) or revoked (account admin); the seat is free. A borrowed seat is returned (owner) or reclaimed (account admin): its lease is listed at /v1/licenses/{id}/revoked-leases until it expires"), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn close_session(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    sessions::close(&state, &auth, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/sessions/{id}/events", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "Server-Sent Events until the session ends: `open` (a StreamOpened), `license_changed` (a LicenseChanged), and last `revoked` or `ended` (a StreamEnded); `: keep-alive` comments every `event_keepalive_secs` (15 s). Heartbeats stay the truth: a client that cannot stream still heartbeats.", content_type = "text/event-stream", body = String),
        (status = 403, description = "another user's session", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 410, description = "session_ended, with reason", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn session_events(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let stream = events::subscribe(&state, &auth, &id).await?;
    let events = futures_util::stream::unfold(stream, |mut stream| async move {
        let item = stream.next().await?;
        let event = Event::default().event(item.event).data(item.data);
        Some((Ok::<_, Infallible>(event), stream))
    });
    let keep_alive = KeepAlive::new()
        .interval(state.event_keepalive)
        .text("keep-alive");
    let mut response = Sse::new(events).keep_alive(keep_alive).into_response();
    // The answer is a stream: the connection stays busy (no idle timeout) until it ends.
    response.extensions_mut().insert(LongLived);
    Ok(response)
}
