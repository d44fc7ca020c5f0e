//! Request extractors whose rejections are `ApiError`s, so that every unreadable request gets
//! the documented error shape: JSON bodies, path segments and query strings.
//!
//! `ApiJson` is strict where serde alone is lenient:
//! - the media type must be JSON (`application/json` or `application/*+json`) and its charset,
//!   if named, UTF-8 (RFC 8259 section 8.1): anything else is 415 `unsupported_media_type`;
//! - the body must be a JSON *object*: serde's derived structs also accept an array, filling
//!   the fields by position (`[null, 7]` would set the second field), so anything but `{…}`
//!   is 422 even when it is well-formed JSON;
//! - a number with a zero fraction (`208.0`, `2.08e2`) is the integer it equals, as JSON Schema
//!   (OpenAPI 3.1) defines `type: integer`; `208.5` in an integer field is 422.
//!
//! Syntax errors are 400, well-formed JSON that does not fit the schema is 422, a body over
//! the limit 413, a body that does not arrive in time 408.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;
use crate::http::body::read_limited;
use crate::state::AppState;

/// A JSON object body, deserialized into `T` (see the module doc for what is refused).
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let bytes = read_limited(req.into_body(), state.max_body_bytes).await?;
        parse_object(&bytes).map(ApiJson)
    }
}

/// 415 unless the request says its body is JSON in UTF-8.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let refuse = |what: String| Err(ApiError::UnsupportedMediaType(what));
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return refuse("expected a body with Content-Type: application/json".into());
    };
    let Ok(text) = value.to_str() else {
        return refuse("the Content-Type header is not readable".into());
    };
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !is_json_media_type(essence) {
        return refuse(format!(
            "expected Content-Type: application/json, not {essence:?}"
        ));
    }
    for param in parts {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("charset") {
            let charset = value.trim().trim_matches('"');
            if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("utf8") {
                return refuse(format!(
                    "charset {charset:?} is not supported: JSON bodies are UTF-8"
                ));
            }
        }
    }
    Ok(())
}

/// `application/json` or a structured `application/…+json` type, in any case.
fn is_json_media_type(essence: &str) -> bool {
    if essence.eq_ignore_ascii_case("application/json") {
        return true;
    }
    let n = essence.len();
    n > "application/+json".len()
        && essence
            .get(..12)
            .is_some_and(|p| p.eq_ignore_ascii_case("application/"))
        && essence
            .get(n - 5..)
            .is_some_and(|s| s.eq_ignore_ascii_case("+json"))
}

/// Deserializes a JSON object into `T` (see the module doc).
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first != Some(b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => ApiError::Unprocessable(format!(
                    "the body must be a JSON object, not {}",
                    json_kind(first)
                )),
                Err(e) => ApiError::BadRequest(format!("the body is not valid JSON: {e}")),
            },
        );
    }
    match from_bytes_tracked::<T>(bytes) {
        Ok(value) => Ok(value),
        Err(Refusal::Data(message)) => {
            // Integral numbers written as floats are the integers they equal: try once more
            // with them rewritten (only on this error path, so the usual body costs nothing).
            let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
                return Err(ApiError::Unprocessable(message));
            };
            if !integral_floats_to_integers(&mut value) {
                return Err(ApiError::Unprocessable(message));
            }
            match from_value_tracked::<T>(value) {
                Ok(value) => Ok(value),
                Err(Refusal::Data(message) | Refusal::Syntax(message)) => {
                    Err(ApiError::Unprocessable(message))
                }
            }
        }
        Err(Refusal::Syntax(message)) => Err(ApiError::BadRequest(message)),
    }
}

enum Refusal {
    Syntax(String),
    Data(String),
}

/// Deserializes the body with the path of the failing field in the message
/// (`seats: invalid type…`), refusing trailing characters after the value.
fn from_bytes_tracked<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut deserializer).map_err(tracked)?;
    deserializer
        .end()
        .map_err(|e| Refusal::Syntax(e.to_string()))?;
    Ok(value)
}

/// `from_bytes_tracked` for a parsed value.
fn from_value_tracked<T: DeserializeOwned>(value: Value) -> Result<T, Refusal> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(tracked)
}

fn tracked(e: serde_path_to_error::Error<serde_json::Error>) -> Refusal {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = if path == "." || path.is_empty() {
        inner.to_string()
    } else {
        format!("{path}: {inner}")
    };
    if inner.is_data() {
        Refusal::Data(message)
    } else {
        Refusal::Syntax(message)
    }
}

fn json_kind(first: Option<u8>) -> &'static str {
    match first {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Rewrites every float with a zero fraction that is exactly an integer (within ±2^53) as that
/// integer; answers whether anything changed.
fn integral_floats_to_integers(value: &mut Value) -> bool {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() <= EXACT => {
                *value = if f < 0.0 {
                    Value::from(f as i64)
                } else {
                    Value::from(f as u64)
                };
                true
            }
            _ => false,
        },
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| integral_floats_to_integers(v) | changed),
        Value::Object(fields) => fields
            .values_mut()
            .fold(false, |changed, v| integral_floats_to_integers(v) | changed),
        _ => false,
    }
}

/// `Path<T>` whose rejections (e.g. invalid UTF-8 in a segment) are 400 `invalid_request`.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// `Query<T>` whose rejections (unknown or malformed parameters) are 422 `invalid_request`.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::Unprocessable(rejection.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Patch {
        product: Option<String>,
        seats: Option<i64>,
    }

    #[test]
    fn only_objects_are_bodies() {
        for (body, status) in [
            ("[null, 7]", 422),
            ("7", 422),
            ("\"x\"", 422),
            ("null", 422),
            ("seats=7", 400),
            ("", 400),
            ("{\"seats\": 7", 400),
            ("{\"seats\": 7} x", 400),
        ] {
            let err = parse_object::<Patch>(body.as_bytes()).unwrap_err();
            assert_eq!(err.status_and_code().0.as_u16(), status, "{body:?}: {err}");
        }
        let ok: Patch = parse_object(b" {\"seats\": 7} ").unwrap();
        assert_eq!(ok.seats, Some(7));
    }

    #[test]
    fn integral_floats_are_integers_and_fractions_are_refused() {
        let p: Patch = parse_object(b"{\"seats\": 208.0}").unwrap();
        assert_eq!(p.seats, Some(208));
        let p: Patch = parse_object(b"{\"seats\": 2.08e2}").unwrap();
        assert_eq!(p.seats, Some(208));
        let p: Patch = parse_object(b"{\"seats\": -3.0}").unwrap();
        assert_eq!(p.seats, Some(-3));
        for body in [
            "{\"seats\": 208.5}",
            "{\"seats\": 1e300}",
            "{\"product\": 1.0}",
        ] {
            let err = parse_object::<Patch>(body.as_bytes()).unwrap_err();
            assert_eq!(err.status_and_code().0.as_u16(), 422, "{body}");
        }
        let err = parse_object::<Patch>(b"{\"seats\": 2.5}").unwrap_err();
        assert!(err.to_string().starts_with("seats: "), "{err}");
    }

    #[test]
    fn only_json_in_utf8_is_read() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            require_json(&h)
        };
        for ok in [
            "application/json",
            "Application/JSON; charset=UTF-8",
            "application/json;charset=\"utf-8\"",
            "application/merge-patch+json",
        ] {
            assert!(with(ok).is_ok(), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/json; charset=iso-8859-1",
            "application/json; charset=utf-16",
            "application/jsonx",
            "application/x-www-form-urlencoded",
        ] {
            let err = with(bad).unwrap_err();
            assert_eq!(err.status_and_code().0.as_u16(), 415, "{bad}");
        }
        assert!(require_json(&HeaderMap::new()).is_err());
    }
}
