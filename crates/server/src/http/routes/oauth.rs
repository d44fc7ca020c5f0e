//! The OAuth2 token endpoint (RFC 6749 client credentials): `/v1/oauth/token`.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use leasehold_proto as proto;
use leasehold_proto::ErrorBody;

use crate::accounts;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::ApiForm;
use crate::state::AppState;

/// Client credentials from HTTP Basic (RFC 6749 section 2.3.1), if present.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

#[utoipa::path(
    post, path = "/v1/oauth/token", tag = "oauth",
    request_body(content = proto::OAuthTokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = proto::OAuthToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "user_inactive", body = ErrorBody)),
)]
pub async fn oauth_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiForm(req): ApiForm<proto::OAuthTokenRequest>,
) -> ApiResult<impl IntoResponse> {
    if req.grant_type != "client_credentials" {
        return Err(ApiError::BadRequest(format!(
            "unsupported grant_type {:?}: only client_credentials is supported",
            req.grant_type
        )));
    }
    let (client_id, client_secret) = match (
        basic_credentials(&headers),
        req.client_id,
        req.client_secret,
    ) {
        (Some(basic), _, _) => basic,
        (None, Some(id), Some(secret)) => (id, secret),
        _ => {
            return Err(ApiError::Unauthorized(
                "client authentication needs client_id and client_secret".into(),
            ))
        }
    };
    let token = accounts::client_credentials(&state, &client_id, &client_secret).await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(proto::OAuthToken {
            access_token: token.token,
            token_type: "Bearer".into(),
            expires_in: token.expires_in,
        }),
    ))
}
