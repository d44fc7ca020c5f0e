//! The statuses every route can answer because of what it takes, added to the OpenAPI
//! document once all routes are registered, so no route can forget one:
//!
//! | the route takes | it may answer |
//! |---|---|
//! | anything | 414 (request target too long) |
//! | a bearer token | 400 (malformed `Authorization`), 401 (with `WWW-Authenticate`), 403, 429 (with `Retry-After`), 503 |
//! | an optional bearer token (`/metrics`) | the same but 403 only where documented |
//! | a JSON body | 400, 408, 413, 415, 422 |
//! | path parameters | 400 (undecodable bytes), 404 |
//! | query parameters | 422 |
//!
//! Statuses a route documents itself (with its own description) are kept. The token endpoint
//! documents all of its statuses itself: its errors have the RFC 6749 shape.

use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder};

/// Routes that document every status themselves.
const SELF_DOCUMENTED: &[&str] = &["/v1/oauth/token"];

/// Adds the statuses of the table in the module doc to every operation of `doc`.
pub fn complete(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        if SELF_DOCUMENTED.contains(&path.as_str()) {
            continue;
        }
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            complete_operation(operation);
        }
    }
}

fn complete_operation(op: &mut Operation) {
    let (bearer, optional) = security(op);
    let params = op.parameters.as_deref().unwrap_or_default();
    let has_path = params.iter().any(|p| p.parameter_in == ParameterIn::Path);
    let has_query = params.iter().any(|p| p.parameter_in == ParameterIn::Query);
    let has_body = op.request_body.is_some();

    let mut add: Vec<(u16, &str)> = vec![(
        414,
        "uri_too_long: the path and query are longer than max_uri_bytes",
    )];
    if bearer {
        add.extend([
            (400, "invalid_request: a malformed Authorization header, or an unreadable request"),
            (401, "unauthorized: no bearer token, or an unknown or expired one"),
            (429, "rate_limited: too many failed authentications from this address or with this token"),
            (503, "store_unavailable: the store cannot answer now; retry"),
        ]);
        if !optional {
            add.push((403, "forbidden: the token may not do this"));
        }
    }
    if has_body {
        add.extend([
            (400, "invalid_request: the body is not valid JSON"),
            (408, "request_timeout: the body did not arrive within body_read_timeout"),
            (413, "payload_too_large: the body is larger than max_body_bytes"),
            (415, "unsupported_media_type: the body is not application/json in UTF-8"),
            (422, "invalid_request: the body is not an object of the documented shape, or breaks a rule"),
        ]);
    }
    if has_path {
        add.extend([
            (
                400,
                "invalid_request: a path segment is not valid percent-encoded UTF-8",
            ),
            (
                404,
                "not_found: no such resource, or not visible to this token",
            ),
        ]);
    }
    if has_query {
        add.push((
            422,
            "invalid_request: an unknown or malformed query parameter",
        ));
    }
    for (status, description) in add {
        let key = status.to_string();
        match op.responses.responses.get_mut(&key) {
            // Documented by the route: keep its description, add the header it must name.
            Some(RefOr::T(response)) => {
                if let Some((name, header)) = required_header(status) {
                    response.headers.entry(name.to_owned()).or_insert(header);
                }
            }
            Some(RefOr::Ref(_)) => {}
            None => {
                op.responses
                    .responses
                    .insert(key, RefOr::T(error_response(status, description)));
            }
        }
    }
}

/// Whether the operation takes a bearer token, and whether it is optional.
fn security(op: &Operation) -> (bool, bool) {
    let Some(requirements) = &op.security else {
        return (false, false);
    };
    let empty = |r: &utoipa::openapi::security::SecurityRequirement| {
        serde_json::to_value(r).is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()))
    };
    let bearer = requirements.iter().any(|r| !empty(r));
    let optional = requirements.iter().any(empty);
    (bearer, optional)
}

fn error_response(status: u16, description: &str) -> utoipa::openapi::Response {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
    );
    if let Some((name, header)) = required_header(status) {
        response = response.header(name, header);
    }
    response.build()
}

/// The header an answer with this status always carries.
fn required_header(status: u16) -> Option<(&'static str, Header)> {
    match status {
        401 => Some((
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String).build())
                .description(Some(
                    "Bearer realm=\"leasehold\", with error=\"invalid_token\" when a token was presented",
                ))
                .build(),
        )),
        429 => Some((
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer).build())
                .description(Some("Seconds to wait before authenticating again"))
                .build(),
        )),
        _ => None,
    }
}
