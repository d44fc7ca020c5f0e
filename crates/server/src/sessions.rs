//! The application layer of sessions: open (with the queue wait), heartbeat, close, the revoke
//! of every session of a license, and the listings of live sessions and waiters, with lease
//! signing. HTTP handlers call these and only
//! shape the answer; the seat decision itself is made atomically inside the store.

use leasehold_store::origin;
use std::time::{Duration, Instant};

use leasehold_core::{Timestamp, ValidatedId};
use leasehold_proto as proto;
use leasehold_proto::EndReason;
use leasehold_store::{
    Admission, Grant, OpenRequest, Opened, OwnedHeartbeat, Principal, QueueTicket, QueuedRequest,
    Session, SessionEvent, StoreError,
};
use tokio::sync::oneshot;

use crate::access::{self, Holder};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::lease::ISSUER;
use crate::metrics as m;
use crate::state::AppState;

/// An opened (or re-opened) session and its signed lease.
pub struct OpenedSession {
    pub opened: Opened,
    pub lease: String,
}

/// A heartbeat's answer: the new expiry, and a re-signed lease when asked for.
pub struct Beat {
    pub expires_at: Timestamp,
    pub lease: Option<String>,
}

/// The waiters of a license's queue as the caller may see them.
pub struct QueueView {
    /// Waiters in order (a session holder sees only its own).
    pub waiting: Vec<QueuedRequest>,
    /// How many wait in all.
    pub length: u32,
    pub now: Timestamp,
}

/// A session id: a UUID whose first 48 bits are the opening millisecond (the UUIDv7 layout)
/// and whose other 74 bits are random. Sessions opened close in time get ids that sort close
/// together, so the database appends them at the end of its session B-tree instead of on a
/// random page: a group commit writes a few pages, not one per session.
fn new_session_id(now: Timestamp) -> String {
    let random = *uuid::Uuid::new_v4().as_bytes();
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&random[6..]);
    uuid::Builder::from_unix_timestamp_millis(u64::try_from(now.millis()).unwrap_or(0), &tail)
        .into_uuid()
        .to_string()
}

/// The session's lease: an EdDSA JWT that expires with the session.
pub fn sign_lease(state: &AppState, s: &Session) -> String {
    state.signer.sign(&proto::LeaseClaims {
        iss: ISSUER.into(),
        sub: s.username.clone(),
        sid: s.id.clone(),
        lic: s.license_id.to_string(),
        kind: s.kind,
        device_id: s.device_id.clone(),
        instance_id: s.instance_id.clone(),
        iat: state.clock.now().secs(),
        exp: s.clock.expires_at.secs(),
        borrowed: s.clock.is_borrowed(),
    })
}

/// Opens a session for the caller (or returns its client instance's live one), waiting in the
/// license's queue when the license queues and the caller asked to wait.
#[tracing::instrument(skip_all, fields(license_id = %req.license_id, session_id = tracing::field::Empty))]
pub async fn open(
    state: &AppState,
    auth: &Auth,
    req: proto::OpenSession,
) -> ApiResult<OpenedSession> {
    let holder = access::session_holder(auth)?;
    let device_id = ValidatedId::parse("device_id", &req.device_id)?;
    let instance_id = ValidatedId::parse("instance_id", &req.instance_id)?;
    let license = access::holder_license(state, holder, &req.license_id).await?;
    let user = state
        .store
        .get_user(holder.account_id, holder.username)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the token's user no longer exists".into()))?;
    if !user.active {
        return Err(ApiError::UserInactive(user.username));
    }
    let borrow_until = crate::borrow::requested(req.borrow_until, req.wait_secs)?;
    let request = OpenRequest {
        new_id: new_session_id(state.clock.now()),
        license_id: license.id.clone(),
        username: user.username,
        kind: holder.kind,
        device_id: device_id.into_string(),
        instance_id: instance_id.into_string(),
        borrow_until,
        origin: Box::new(auth.origin()),
    };
    let wait = license.terms.queue_wait_secs(req.wait_secs);
    let admitted = match state
        .with_now(|now| state.store.admit(request, wait > 0, now))
        .await
    {
        Ok(Admission::Opened(opened)) => Ok(opened),
        Ok(Admission::Queued(ticket)) => {
            crate::events::queue_moved(state, &license.id, holder.account_id, holder.username);
            let waited = wait_for_seat(state, &license.id, holder, ticket, wait).await;
            crate::events::queue_moved(state, &license.id, holder.account_id, holder.username);
            waited
        }
        Err(e) => Err(ApiError::from(e)),
    };
    let opened = match admitted {
        Ok(opened) => opened,
        Err(e) => {
            if matches!(e, ApiError::NoSeat { .. }) {
                m::denied(&license.id);
            }
            return Err(e);
        }
    };
    if opened.created {
        m::opened(&license.id);
    }
    tracing::Span::current().record("session_id", opened.session.id.as_str());
    let lease = sign_lease(state, &opened.session);
    Ok(OpenedSession { opened, lease })
}

/// A place in a license's queue, held by a waiting request. If the request goes away (the
/// client disconnected), the place is given up, and a seat granted at that very moment is
/// handed back: no seat is ever held by nobody.
struct QueuePlace {
    state: AppState,
    license_id: String,
    /// The waiter (its streams hear that it left).
    account_id: String,
    username: String,
    ticket: u64,
    granted: Option<oneshot::Receiver<Result<Grant, StoreError>>>,
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        let Some(mut granted) = self.granted.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let state = self.state.clone();
        let (license_id, ticket) = (self.license_id.clone(), self.ticket);
        let (account_id, username) = (self.account_id.clone(), self.username.clone());
        runtime.spawn(async move {
            let _ = state.store.leave_queue(&license_id, ticket).await;
            crate::events::queue_moved(&state, &license_id, &account_id, &username);
            if let Ok(Ok(grant)) = granted.try_recv() {
                let id = grant.opened.session.id.clone();
                if grant.wait_durable().await.is_ok() {
                    let _ = state
                        .with_now(|now| state.store.end_session(&id, EndReason::Logout, now))
                        .await;
                }
            }
        });
    }
}

/// Waits up to `wait_secs` for the queue to grant a seat. The wait is a network timeout, so it
/// runs on the runtime's timer; the licensing decisions inside the store use the clock.
#[tracing::instrument(skip_all, fields(license_id, ticket = ticket.ticket, position = ticket.position))]
async fn wait_for_seat(
    state: &AppState,
    license_id: &str,
    holder: Holder<'_>,
    ticket: QueueTicket,
    wait_secs: u64,
) -> ApiResult<Opened> {
    let started = Instant::now();
    let mut place = QueuePlace {
        state: state.clone(),
        license_id: license_id.to_owned(),
        account_id: holder.account_id.to_owned(),
        username: holder.username.to_owned(),
        ticket: ticket.ticket,
        granted: Some(ticket.granted),
    };
    let timeout = Duration::from_secs(wait_secs);
    let outcome = match place.granted.as_mut() {
        Some(rx) => tokio::time::timeout(timeout, rx).await,
        None => return Err(ApiError::Internal("queue place without a receiver".into())),
    };
    let grant = match outcome {
        Ok(received) => {
            place.granted = None;
            received
        }
        Err(_elapsed) => {
            if state.store.leave_queue(license_id, ticket.ticket).await? {
                place.granted = None;
                m::queue_wait(started.elapsed(), false);
                return Err(ApiError::NoSeat {
                    message: format!("no seat was freed within the {wait_secs} s wait"),
                    queue_timeout: true,
                });
            }
            // Granted just as the wait ended: take the seat.
            match place.granted.take() {
                Some(rx) => rx.await,
                None => return Err(ApiError::Internal("queue place without a receiver".into())),
            }
        }
    };
    let grant = grant
        .map_err(|_| ApiError::StoreUnavailable("the queue was dropped".into()))?
        .map_err(ApiError::from)?;
    m::queue_wait(started.elapsed(), true);
    Ok(grant.wait_durable().await?)
}

/// Slides the expiry of one of the caller's sessions; with `with_lease`, re-signs its lease.
/// The hot path: its span is at debug level.
#[tracing::instrument(level = "debug", skip(state, auth))]
pub async fn heartbeat(
    state: &AppState,
    auth: &Auth,
    session_id: &str,
    with_lease: bool,
) -> ApiResult<Beat> {
    if with_lease {
        // A re-signed lease needs the whole session record.
        access::owned_session(state, auth, session_id).await?;
        let session = state
            .with_now(|now| state.store.heartbeat(session_id, now))
            .await?;
        m::heartbeat();
        return Ok(Beat {
            expires_at: session.clock.expires_at,
            lease: Some(sign_lease(state, &session)),
        });
    }
    // The common heartbeat: ownership and the new expiry in one store call, nothing copied.
    let Holder {
        account_id,
        username,
        ..
    } = access::session_holder(auth)?;
    let expires_at = match state
        .with_now(|now| {
            state
                .store
                .heartbeat_owned(session_id, account_id, username, now)
        })
        .await?
    {
        OwnedHeartbeat::Beat(at) => at,
        OwnedHeartbeat::NotOwner => return Err(access::not_owner()),
    };
    m::heartbeat();
    Ok(Beat {
        expires_at,
        lease: None,
    })
}

/// Ends a session: a logout by its owner, or a revoke by an admin of its account (for a
/// borrowed seat: a return, or a reclaim). Answers why it ended.
#[tracing::instrument(skip(state, auth))]
pub async fn close(state: &AppState, auth: &Auth, session_id: &str) -> ApiResult<EndReason> {
    // A borrowed seat's end is a return (owner) or a reclaim (admin): see `borrow`.
    let (reason, license_id) = match &auth.0 {
        Principal::Root | Principal::AccountAdmin { .. } => {
            // Only the tenant's own sessions can be revoked; others do not exist for it.
            let found = state
                .store
                .get_session(session_id)
                .await?
                .filter(|s| auth.administers(&s.session.account_id))
                .ok_or_else(|| ApiError::NotFound("session".into()))?;
            let reason = crate::borrow::end_reason(&found.session, true);
            (reason, found.session.license_id)
        }
        _ => {
            let session = access::owned_session(state, auth, session_id).await?;
            (
                crate::borrow::end_reason(&session, false),
                session.license_id,
            )
        }
    };
    state
        .with_now(|now| {
            origin::scope(
                auth.origin(),
                state.store.end_session(session_id, reason, now),
            )
        })
        .await?;
    m::ended(&license_id, reason);
    crate::events::raise(state, SessionEvent::session_ended(session_id)).await;
    Ok(reason)
}

/// Revokes every live session of a license the caller administers, as one decision: durable
/// when this answers, and none of them is live from then on; their ends land in the background
/// (see `Store::revoke_license_sessions`). Answers how many.
#[tracing::instrument(skip(state, auth))]
pub async fn revoke_all(state: &AppState, auth: &Auth, license_id: &str) -> ApiResult<u32> {
    access::admin_license(state, auth, license_id).await?;
    let revoked = state
        .with_now(|now| {
            origin::scope(
                auth.origin(),
                state.store.revoke_license_sessions(license_id, now),
            )
        })
        .await?;
    m::ended_n(license_id, EndReason::Revoked, u64::from(revoked));
    crate::events::raise(state, SessionEvent::license_ended(license_id)).await;
    tracing::info!(revoked, "revoked every session of the license");
    Ok(revoked)
}

/// The live sessions of a license the caller administers.
#[tracing::instrument(skip(state, auth))]
pub async fn license_sessions(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
) -> ApiResult<Vec<Session>> {
    access::admin_license(state, auth, license_id).await?;
    Ok(state
        .store
        .list_live_sessions(license_id, state.clock.now())
        .await?)
}

/// The live sessions of one user on every license of the account.
#[tracing::instrument(skip(state, auth))]
pub async fn user_sessions(
    state: &AppState,
    auth: &Auth,
    account_id: &str,
    username: &str,
) -> ApiResult<Vec<Session>> {
    access::admin_account(state, auth, account_id).await?;
    let username = crate::accounts::lookup_name(username)?;
    state
        .store
        .get_user(account_id, username.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound("user".into()))?;
    Ok(state
        .store
        .list_user_sessions(account_id, username.as_str(), state.clock.now())
        .await?)
}

/// The license's queue: every waiter for its admins, a holder's own waiting requests (with
/// their positions in the whole queue) for a user or service token.
#[tracing::instrument(skip(state, auth))]
pub async fn queue(state: &AppState, auth: &Auth, license_id: &str) -> ApiResult<QueueView> {
    let own: Option<String> = match &auth.0 {
        Principal::Root | Principal::AccountAdmin { .. } => {
            access::admin_license(state, auth, license_id).await?;
            None
        }
        _ => {
            let holder = access::session_holder(auth)?;
            access::holder_license(state, holder, license_id).await?;
            Some(holder.username.to_owned())
        }
    };
    let now = state.clock.now();
    let waiting = state.store.list_queue(license_id, now).await?;
    let length = waiting.len() as u32;
    Ok(QueueView {
        waiting: waiting
            .into_iter()
            .filter(|w| own.as_ref().is_none_or(|u| &w.username == u))
            .collect(),
        length,
        now,
    })
}
