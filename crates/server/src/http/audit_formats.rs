//! The three answers of `GET /v1/audit`: a JSON page, JSON lines (one event per line) and CSV
//! (a header row, then one event per row; RFC 4180 quoting), chosen by `format` or `Accept`.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use leasehold_store::AuditEntry;

use crate::audit::AuditPage;
use crate::clock::to_offset;
use crate::error::{ApiError, ApiResult};

/// The headers that carry the next page's cursor and whether more events matched, in every
/// format (the JSON page has them in its body as `next_cursor` and `has_more` too).
pub const NEXT_CURSOR_HEADER: &str = "x-next-cursor";
pub const HAS_MORE_HEADER: &str = "x-has-more";
pub const JSONL: &str = "application/x-ndjson";
pub const CSV: &str = "text/csv";

/// One event of the account-wide audit log.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AccountAuditEvent {
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
    pub account_id: String,
    pub license_id: String,
    /// `opened`, `ended`, `denied`, `license_created`, `license_updated`, `sessions_revoked`,
    /// `device_activated` or `device_deactivated`.
    pub event: String,
    pub session_id: Option<String>,
    pub username: Option<String>,
    /// `opened`: the session's kind and notes (`overdraft`, `queued`, `borrowed`); `ended`:
    /// the reason; `denied`: the refusal's code; `sessions_revoked`: how many; device events:
    /// the fingerprint.
    pub detail: Option<String>,
    /// Who made the change (`root`, `admin:<account>`, `user:<name>`, `service:<name>`);
    /// absent for what time does (expiries), background work and older events.
    pub actor: Option<String>,
    /// The `x-request-id` of the request that made it.
    pub request_id: Option<String>,
    /// The client address of that request.
    pub client_addr: Option<String>,
}

/// A page of the account-wide audit log, oldest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AccountAuditPage {
    pub events: Vec<AccountAuditEvent>,
    /// The `cursor` that reads on after this page (after the events read so far: absent only
    /// when none has been read).
    pub next_cursor: Option<String>,
    /// Whether more events matched already (the next page is not empty).
    pub has_more: bool,
}

/// How the answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    JsonLines,
    Csv,
}

impl Format {
    /// The `format` parameter if given (`json`, `jsonl`, `csv`; anything else is 422), else
    /// the first of JSON lines or CSV that `Accept` names, else JSON.
    pub fn choose(param: Option<&str>, headers: &HeaderMap) -> ApiResult<Format> {
        match param {
            Some("json") => return Ok(Format::Json),
            Some("jsonl") => return Ok(Format::JsonLines),
            Some("csv") => return Ok(Format::Csv),
            Some(_) => {
                return Err(ApiError::Unprocessable(
                    "format must be json, jsonl or csv".into(),
                ))
            }
            None => {}
        }
        let accept = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        for media in accept {
            match media.as_str() {
                JSONL => return Ok(Format::JsonLines),
                CSV => return Ok(Format::Csv),
                "application/json" => return Ok(Format::Json),
                _ => {}
            }
        }
        Ok(Format::Json)
    }
}

fn event_view(entry: AuditEntry) -> AccountAuditEvent {
    let e = entry.event;
    AccountAuditEvent {
        at: to_offset(e.at),
        account_id: e.account_id,
        license_id: e.license_id,
        event: e.event,
        session_id: e.session_id,
        username: e.username,
        detail: e.detail,
        actor: e.origin.actor,
        request_id: e.origin.request_id,
        client_addr: e.origin.client_addr,
    }
}

/// The page in `format`, with `x-next-cursor` (when there is one) and `x-has-more`.
pub fn respond(page: AuditPage, format: Format) -> ApiResult<Response> {
    let next = page.next_cursor;
    let has_more = page.has_more;
    let events = page.entries.into_iter().map(event_view);
    let mut response = match format {
        Format::Json => Json(AccountAuditPage {
            events: events.collect(),
            next_cursor: next.clone(),
            has_more,
        })
        .into_response(),
        Format::JsonLines => {
            let mut body = String::new();
            for e in events {
                body.push_str(
                    &serde_json::to_string(&e).map_err(|e| ApiError::Internal(e.to_string()))?,
                );
                body.push('\n');
            }
            ([(header::CONTENT_TYPE, JSONL)], body).into_response()
        }
        Format::Csv => {
            let mut body =
                String::from(
                "at,account_id,license_id,event,session_id,username,detail,actor,request_id,client_addr\r\n",
            );
            for e in events {
                csv_row(&mut body, &e)?;
            }
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
        }
    };
    if let Some(cursor) = next {
        let value =
            HeaderValue::from_str(&cursor).map_err(|e| ApiError::Internal(e.to_string()))?;
        response.headers_mut().insert(NEXT_CURSOR_HEADER, value);
    }
    response.headers_mut().insert(
        HAS_MORE_HEADER,
        HeaderValue::from_static(if has_more { "true" } else { "false" }),
    );
    Ok(response)
}

fn csv_row(out: &mut String, e: &AccountAuditEvent) -> ApiResult<()> {
    let at =
        e.at.format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    let fields = [
        Some(at.as_str()),
        Some(e.account_id.as_str()),
        Some(e.license_id.as_str()),
        Some(e.event.as_str()),
        e.session_id.as_deref(),
        e.username.as_deref(),
        e.detail.as_deref(),
        e.actor.as_deref(),
        e.request_id.as_deref(),
        e.client_addr.as_deref(),
    ];
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, field.unwrap_or_default());
    }
    out.push_str("\r\n");
    Ok(())
}

/// A CSV field, quoted (with its quotes doubled) when it holds a comma, a quote or a line
/// break (RFC 4180 section 2), or starts or ends with a space.
pub(crate) fn csv_field(out: &mut String, field: &str) {
    let needs_quotes =
        field.contains([',', '"', '\n', '\r']) || field.starts_with(' ') || field.ends_with(' ');
    if needs_quotes {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(s: &str) -> String {
        let mut out = String::new();
        csv_field(&mut out, s);
        out
    }

    #[test]
    fn csv_fields_with_commas_quotes_or_line_breaks_are_quoted() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field(""), "");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("cr\rhere"), "\"cr\rhere\"");
    }

    #[test]
    fn the_format_parameter_wins_over_accept() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/csv"));
        assert_eq!(
            Format::choose(Some("jsonl"), &headers).ok(),
            Some(Format::JsonLines)
        );
        assert_eq!(Format::choose(None, &headers).ok(), Some(Format::Csv));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/x-ndjson;q=0.9, */*"),
        );
        assert_eq!(Format::choose(None, &headers).ok(), Some(Format::JsonLines));
        assert_eq!(
            Format::choose(None, &HeaderMap::new()).ok(),
            Some(Format::Json)
        );
        assert!(Format::choose(Some("xml"), &headers).is_err());
    }
}
