//! The OAuth2 token endpoint (RFC 6749 client credentials): `/v1/oauth/token`. Its request
//! reading and its RFC-shaped errors are in `http::oauth`.

use axum::extract::State;
use axum::response::Response;
use leasehold_proto as proto;
use leasehold_proto::OAuthErrorBody;

use crate::accounts;
use crate::http::oauth::{self, OAuthError, TokenRequest};
use crate::state::AppState;

#[utoipa::path(
    post, path = "/v1/oauth/token", tag = "oauth",
    request_body(content = proto::OAuthTokenRequest, content_type = "application/x-www-form-urlencoded",
        description = "grant_type=client_credentials; the client authenticates with HTTP Basic (RFC 6749 2.3.1) or client_id and client_secret in the form, not both"),
    responses(
        (status = 200, description = "An access token (`Cache-Control: no-store`, `Pragma: no-cache`)", body = proto::OAuthToken),
        (status = 400, description = "invalid_request, invalid_grant (inactive service user), unsupported_grant_type, invalid_scope", body = OAuthErrorBody),
        (status = 401, description = "invalid_client: no client authentication, unknown client or wrong secret",
            headers(("WWW-Authenticate" = String, description = "Basic realm=\"leasehold\"")), body = OAuthErrorBody),
        (status = 408, description = "invalid_request: the form did not arrive in time", body = OAuthErrorBody),
        (status = 413, description = "invalid_request: the form is too large", body = OAuthErrorBody),
        (status = 429, description = "invalid_client, over the failed-authentication budget of this address or client",
            headers(("Retry-After" = u64, description = "Seconds to wait")), body = OAuthErrorBody),
        (status = 503, description = "temporarily_unavailable: the store cannot answer", body = OAuthErrorBody)),
    security(())
)]
pub async fn oauth_token(
    State(state): State<AppState>,
    request: TokenRequest,
) -> Result<Response, OAuthError> {
    let token = accounts::client_credentials(
        &state,
        &request.client.client_id,
        &request.client.client_secret,
    )
    .await
    .map_err(|e| oauth::refused(&state, &request, e))?;
    Ok(oauth::token_response(proto::OAuthToken {
        access_token: token.token,
        token_type: "Bearer".into(),
        expires_in: token.expires_in,
    }))
}
