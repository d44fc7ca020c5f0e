//! Routes of the account-wide audit log: `GET /v1/audit` (a page as JSON, JSON lines or CSV).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use leasehold_proto::ErrorBody;

use crate::audit::{self, AuditRequest};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::http::audit_formats::{self, AccountAuditPage, Format};
use crate::http::extract::ApiQuery;
use crate::state::AppState;

/// The query of `GET /v1/audit` (documentation; read by `audit_request`, which takes `event`
/// more than once).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AuditParams {
    /// Root only: the events of this account (an account admin may name only its own).
    account_id: Option<String>,
    /// Events of this license.
    license_id: Option<String>,
    /// Events of this user.
    username: Option<String>,
    /// Kinds of events (any of them): repeat the parameter or separate kinds with commas.
    #[param(inline, explode = true, style = Form)]
    event: Option<Vec<EventKind>>,
    /// Events at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Events before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// Events per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `json` (the default), `jsonl` or `csv`; without it, `Accept: application/x-ndjson` or
    /// `text/csv` choose an export.
    #[param(inline)]
    format: Option<FormatParam>,
}

/// A kind of audit event.
#[derive(Debug, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum EventKind {
    Opened,
    Ended,
    Denied,
    Queued,
    LicenseCreated,
    LicenseUpdated,
    SessionsRevoked,
    DeviceActivated,
    DeviceDeactivated,
    UserCreated,
    UserUpdated,
    TokenIssued,
    LicenseUserActivated,
    LicenseUserDeactivated,
    DelegationCreated,
    DelegationRenewed,
    DelegationReturned,
    DelegationReported,
}

/// How the page is written.
#[derive(Debug, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum FormatParam {
    Json,
    Jsonl,
    Csv,
}

/// The query string as an `AuditRequest` and the `format` parameter: unknown parameters, and
/// any but `event` given twice, are 422.
fn audit_request(pairs: Vec<(String, String)>) -> ApiResult<(AuditRequest, Option<String>)> {
    let mut req = AuditRequest::default();
    let mut format = None;
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "event" => {
                req.events.push(value);
                continue;
            }
            "account_id" => &mut req.account_id,
            "license_id" => &mut req.license_id,
            "username" => &mut req.username,
            "from" => &mut req.from,
            "to" => &mut req.to,
            "limit" => &mut req.limit,
            "cursor" => &mut req.cursor,
            "format" => &mut format,
            _ => {
                return Err(ApiError::Unprocessable(format!(
                    "unknown query parameter {name:?}"
                )))
            }
        };
        if slot.replace(value).is_some() {
            return Err(ApiError::Unprocessable(format!(
                "query parameter {name:?} is given more than once"
            )));
        }
    }
    Ok((req, format))
}

#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    params(AuditParams),
    responses(
        (status = 200, description = "A page of the append-only audit log, oldest first (in the order events were written): an account admin's own account, or (root) every account. `next_cursor` (in the JSON body, and the `x-next-cursor` header of every format) reads on after the last event read; `has_more` (`x-has-more`) says whether more events matched already.",
            headers(("x-next-cursor" = String, description = "The cursor that reads on after this page (absent when no event has been read)"), ("x-has-more" = bool, description = "Whether more events matched already")),
            content(
                (AccountAuditPage = "application/json"),
                (String = "application/x-ndjson", example = json!("{\"at\":\"2026-01-01T00:00:00Z\",\"account_id\":\"…\",\"license_id\":\"…\",\"event\":\"opened\",\"session_id\":\"…\",\"username\":\"bob\",\"detail\":\"interactive\",\"actor\":\"user:bob\",\"request_id\":\"…\",\"client_addr\":\"192.0.2.7\"}\n")),
                (String = "text/csv", example = json!("at,account_id,license_id,event,session_id,username,detail,actor,request_id,client_addr\r\n"))
            )),
        (status = 400, description = "unknown_event_kind: an `event` names no kind of event; invalid_cursor: a cursor this server did not give out; invalid_request: a malformed `Authorization` header", body = ErrorBody),
        (status = 403, description = "not an admin token, or an account admin naming another account", body = ErrorBody),
        (status = 422, description = "invalid_request: an unknown, repeated or malformed parameter (limit outside 1-1000, a time not RFC 3339, from after to, an unknown format, a username that cannot be one, an id with control characters)", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn account_audit(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let (req, format) = audit_request(pairs)?;
    let format = Format::choose(format.as_deref(), &headers)?;
    let page = audit::page(&state, &auth, req).await?;
    audit_formats::respond(page, format)
}
