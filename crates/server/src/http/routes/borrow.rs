//! Routes of offline borrowing: the revoked-lease list of a license. (A borrow is an open with
//! `borrow_until`, its return or reclaim a `DELETE /v1/sessions/{id}`: see `crate::borrow`.)

use axum::extract::State;
use axum::Json;
use leasehold_proto as proto;
use leasehold_proto::ErrorBody;

use crate::auth::Auth;
use crate::borrow;
use crate::error::ApiResult;
use crate::http::extract::ApiPath;
use crate::http::views;
use crate::state::AppState;

#[utoipa::path(
    get, path = "/v1/licenses/{id}/revoked-leases", tag = "licenses",
    params(("id" = String, Path, description = "License id")),
    responses(
        (status = 200, description = "Borrow leases that no longer hold a seat though they have not expired (reclaimed, revoked, returned early, or ended with the license or the user), until their `lease_expires_at`. Clients holding a borrow lease check this list whenever they are online. Account admins and the license's own users may read it.", body = proto::RevokedLeaseList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn revoked_leases(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<proto::RevokedLeaseList>> {
    let leases = borrow::revoked_leases(&state, &auth, &id).await?;
    Ok(Json(views::revoked_leases(&id, leases)))
}
