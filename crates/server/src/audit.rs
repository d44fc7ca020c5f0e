//! The application layer of the account-wide audit log (`GET /v1/audit`): who may read which
//! account's events, the filters checked and turned into a store query, and the opaque cursor.
//!
//! A page is read in `seq` order (the order events became durable), after the cursor. The
//! cursor names the last event read; `has_more` says whether more events matched at the time of
//! the read. Events appended meanwhile come after it: a walk from the first page to the last
//! sees every matching event once, and can continue later from its last cursor (a tail).

use base64::Engine;
use leasehold_core::{Timestamp, Username, ValidatedId};
use leasehold_store::{AuditEntry, AuditQuery, AUDIT_EVENT_KINDS};

use crate::access;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Events a page answers unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// Most events a page answers.
pub const MAX_LIMIT: usize = 1000;

/// What the request asked for, as read from the query string (unchecked).
#[derive(Debug, Default)]
pub struct AuditRequest {
    pub account_id: Option<String>,
    pub license_id: Option<String>,
    pub username: Option<String>,
    /// Each `event` parameter as given (one kind, or several separated by commas).
    pub events: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// One page of the log; `next_cursor` reads on after its last event (or after the request's
/// cursor when the page is empty), `has_more` says whether more events matched already.
#[derive(Debug)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// A page of the audit log: an account admin reads its own account's events, root every
/// account's (or one, with `account_id`); any other token is 403.
#[tracing::instrument(skip_all)]
pub async fn page(state: &AppState, auth: &Auth, req: AuditRequest) -> ApiResult<AuditPage> {
    let account_id = access::audit_account(auth, id_filter("account_id", req.account_id)?)?;
    let limit = parse_limit(req.limit.as_deref())?;
    let after_seq = req.cursor.as_deref().map(decode_cursor).transpose()?;
    let from = req
        .from
        .as_deref()
        .map(|v| parse_time("from", v))
        .transpose()?;
    let to = req.to.as_deref().map(|v| parse_time("to", v)).transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::Unprocessable("from must not be after to".into()));
        }
    }
    let query = AuditQuery {
        account_id,
        license_id: id_filter("license_id", req.license_id)?,
        username: req
            .username
            .map(|u| Username::parse(&u).map(Username::into_string))
            .transpose()?,
        events: parse_kinds(&req.events)?,
        from,
        to,
        after_seq,
        // One more than the page: whether there is a next one.
        limit: limit + 1,
    };
    let mut entries = state.store.audit_page(&query).await?;
    let has_more = entries.len() > limit;
    entries.truncate(limit);
    let next_cursor = entries
        .last()
        .map(|e| e.seq)
        .or(after_seq)
        .map(encode_cursor);
    Ok(AuditPage {
        entries,
        next_cursor,
        has_more,
    })
}

/// An id to filter on: printable characters (no id has others; PostgreSQL could not even
/// compare a NUL), else 422.
fn id_filter(name: &str, value: Option<String>) -> ApiResult<Option<String>> {
    value
        .map(|v| ValidatedId::parse(name, &v).map(ValidatedId::into_string))
        .transpose()
        .map_err(ApiError::from)
}

fn parse_limit(value: Option<&str>) -> ApiResult<usize> {
    let Some(v) = value else {
        return Ok(DEFAULT_LIMIT);
    };
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::Unprocessable(format!(
            "limit must be an integer from 1 to {MAX_LIMIT}"
        ))),
    }
}

fn parse_time(name: &str, value: &str) -> ApiResult<Timestamp> {
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ApiError::Unprocessable(format!("{name} must be an RFC 3339 time")))?;
    let millis = t.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(millis)
        .map(Timestamp::from_millis)
        .map_err(|_| ApiError::Unprocessable(format!("{name} is out of range")))
}

/// The kinds named by the `event` parameters (comma lists allowed), without repeats; an
/// unknown kind is 400 `unknown_event_kind`.
fn parse_kinds(values: &[String]) -> ApiResult<Vec<String>> {
    let mut kinds: Vec<String> = Vec::new();
    for kind in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
        if !AUDIT_EVENT_KINDS.contains(&kind) {
            return Err(ApiError::UnknownEventKind(
                kind.to_owned(),
                AUDIT_EVENT_KINDS.join(", "),
            ));
        }
        if !kinds.iter().any(|k| k == kind) {
            kinds.push(kind.to_owned());
        }
    }
    Ok(kinds)
}

/// Version prefix of the cursor's text, so that its form can change.
const CURSOR_PREFIX: &str = "a1.";

fn encode_cursor(seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{seq}"))
}

fn decode_cursor(cursor: &str) -> ApiResult<i64> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(CURSOR_PREFIX)?.parse::<i64>().ok())
        .filter(|seq| *seq >= 0)
        .ok_or(ApiError::InvalidCursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_the_seq_it_was_made_of() {
        for seq in [0, 1, 42, i64::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(seq)).ok(), Some(seq));
        }
    }

    #[test]
    fn a_cursor_the_server_did_not_make_is_refused() {
        for bad in ["", "42", "YTEuLTE", "!!", "YTEuYWJj"] {
            assert!(
                matches!(decode_cursor(bad), Err(ApiError::InvalidCursor)),
                "{bad}"
            );
        }
    }

    #[test]
    fn kinds_come_as_repeats_or_comma_lists_and_unknown_ones_are_refused() {
        let kinds = parse_kinds(&["opened,ended".into(), "denied".into(), "opened".into()]);
        assert_eq!(
            kinds.ok(),
            Some(vec!["opened".into(), "ended".into(), "denied".into()])
        );
        assert!(matches!(
            parse_kinds(&["opened,nope".into()]),
            Err(ApiError::UnknownEventKind(k, _)) if k == "nope"
        ));
        assert!(matches!(
            parse_kinds(&["".into()]),
            Err(ApiError::UnknownEventKind(..))
        ));
    }

    #[test]
    fn limits_outside_one_to_the_maximum_are_refused() {
        assert_eq!(parse_limit(None).ok(), Some(DEFAULT_LIMIT));
        assert_eq!(parse_limit(Some("1000")).ok(), Some(1000));
        for bad in ["0", "1001", "-1", "x", ""] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
