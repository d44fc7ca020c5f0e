//! The application layer of session event streams (`GET /v1/sessions/{id}/events`): who may
//! watch a session, what a stream sends, and raising the events other calls cause.
//!
//! ```text
//!   subscribe (owner's token; 410 if already ended) ──► open ──► waits on its hub Watch
//!        ├─(woken: session/license/user event) ─► re-read the session ─► live: wait again
//!        │                                                             └► ended: revoked | ended (final)
//!        ├─(woken: license changed) ─► license_changed, then the same re-read
//!        ├─(its known expiry passed, checked every keep-alive) ─► the same re-read
//!        └─(server stopping) ─► the stream ends without a final event (the client reconnects)
//! ```
//!
//! Events are hints: a stream always re-reads its session from the store before it says the
//! session ended, so it never claims an end the store did not keep. A stream costs no task
//! of its own: it runs only when the connection polls it, woken by its hub `Watch` or by one
//! timer (its session's known expiry, at most one keep-alive period away). Ends that no call
//! raises (inactivity, lifetime, the license's end) are found when that expiry passes: the
//! session is read then, at most once per keep-alive period while it stays past its expiry.
//!
//! Raising: a call that ended or changed something (`close`, `revoke_all`, deactivations,
//! license updates) raises the event once its change is durable (`raise`). A failure to raise
//! is logged, not answered: the change stands, and heartbeats still tell the client.

use std::collections::VecDeque;
use std::time::Duration;

use leasehold_core::{SessionState, Timestamp};
use leasehold_proto as proto;
use leasehold_proto::{stream_events, EndReason};
use leasehold_store::{SessionEvent, Subscription};

use crate::access;
use crate::auth::Auth;
use crate::clock::to_offset;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// While a session is past its expiry but not yet ended in the store (the reaper runs every
/// 200 ms), it is read again this often.
const PAST_EXPIRY_RECHECK: Duration = Duration::from_millis(200);
/// After a failed read, the next try comes this much later.
const READ_RETRY: Duration = Duration::from_secs(1);

/// One event of a stream: its name (`proto::stream_events`) and its JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamItem {
    pub event: &'static str,
    pub data: String,
}

/// Raises `event` for the streams of every node, once the change it reports is durable.
pub async fn raise(state: &AppState, event: SessionEvent) {
    if let Err(e) = state.store.publish(event.clone()).await {
        tracing::warn!(error = %e, ?event, "could not raise a session event; clients learn it at their next heartbeat");
    }
}

/// A session being watched for its owner.
pub struct SessionStream {
    state: AppState,
    subscription: Subscription,
    session_id: String,
    license_id: String,
    /// The session's expiry as last read.
    expires_at: Timestamp,
    /// Read the session again at the next turn.
    recheck: bool,
    /// When a read failed: try again after `READ_RETRY`.
    retry: bool,
    pending: VecDeque<StreamItem>,
    done: bool,
}

/// Starts watching one of the caller's sessions: 404 for another tenant's or an unknown
/// session, 403 for another user's, 410 `session_ended` (with the reason) once it has ended.
#[tracing::instrument(skip(state, auth))]
pub async fn subscribe(
    state: &AppState,
    auth: &Auth,
    session_id: &str,
) -> ApiResult<SessionStream> {
    let holder = access::session_holder(auth)?;
    let found = state
        .store
        .get_session(session_id)
        .await?
        .filter(|s| &*s.session.account_id == holder.account_id)
        .ok_or_else(|| ApiError::NotFound("session".into()))?;
    if found.session.username != holder.username {
        return Err(access::not_owner());
    }
    if let SessionState::Ended(reason) = found.state {
        return Err(ApiError::SessionEnded(reason));
    }
    let session = found.session;
    // Registered before the stream's first read: an end from now on wakes it.
    let subscription = state.store.event_hub().subscribe(
        &session.id,
        &session.license_id,
        &session.account_id,
        &session.username,
    );
    let opened = proto::StreamOpened {
        session_id: session.id.clone(),
        expires_at: to_offset(session.clock.expires_at),
        heartbeat_interval_secs: session.heartbeat_interval_secs,
    };
    let mut pending = VecDeque::new();
    pending.push_back(item(stream_events::OPEN, &opened));
    crate::metrics::event_stream_opened();
    Ok(SessionStream {
        state: state.clone(),
        subscription,
        session_id: session.id,
        license_id: session.license_id.to_string(),
        expires_at: session.clock.expires_at,
        recheck: true,
        retry: false,
        pending,
        done: false,
    })
}

fn item<T: serde::Serialize>(event: &'static str, data: &T) -> StreamItem {
    StreamItem {
        event,
        data: serde_json::to_string(data).unwrap_or_else(|_| "{}".into()),
    }
}

impl SessionStream {
    /// The next event; `None` once the stream is over (after the final event, or when the
    /// server stops).
    pub async fn next(&mut self) -> Option<StreamItem> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            if std::mem::take(&mut self.recheck) {
                self.read_session().await;
                continue;
            }
            let nap = self.nap();
            tokio::select! {
                () = self.subscription.woken() => {}
                () = tokio::time::sleep(nap) => {}
            }
            let changes = self.subscription.changes();
            if changes.closed {
                self.done = true;
                continue;
            }
            if changes.license_changed {
                self.license_changed().await;
            }
            let now = self.state.clock.now();
            self.recheck = changes.ended
                || changes.license_changed
                || std::mem::take(&mut self.retry)
                || now >= self.expires_at;
        }
    }

    /// How long to wait for a wake-up before looking at the expiry again.
    fn nap(&self) -> Duration {
        if self.retry {
            return READ_RETRY;
        }
        let left = self.expires_at.millis() - self.state.clock.now().millis();
        if left <= 0 {
            return PAST_EXPIRY_RECHECK;
        }
        Duration::from_millis(left as u64).min(self.state.event_keepalive)
    }

    /// Reads the session: an end is the stream's final event; a live session's expiry is
    /// noted.
    async fn read_session(&mut self) {
        match self.state.store.get_session(&self.session_id).await {
            Ok(Some(found)) => match found.state {
                SessionState::Ended(reason) => self.finish(reason),
                SessionState::Live => self.expires_at = found.session.clock.expires_at,
            },
            // Sessions are never deleted; say it ended rather than watch nothing.
            Ok(None) => self.finish(EndReason::Unknown),
            Err(e) => {
                tracing::debug!(error = %e, session_id = %self.session_id, "event stream cannot read its session; retrying");
                self.retry = true;
            }
        }
    }

    async fn license_changed(&mut self) {
        match self.state.store.get_license(&self.license_id).await {
            Ok(Some(license)) => {
                let t = &license.terms;
                let changed = proto::LicenseChanged {
                    license_id: license.id.clone(),
                    seats: t.seats,
                    inactivity_timeout_secs: t.inactivity_timeout_secs,
                    heartbeat_interval_secs: t.heartbeat_interval_secs(),
                    expires_at: t.expires_at.map(to_offset),
                    suspended: t.suspended,
                };
                self.pending
                    .push_back(item(stream_events::LICENSE_CHANGED, &changed));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, license_id = %self.license_id, "event stream cannot read its license");
            }
        }
    }

    fn finish(&mut self, reason: EndReason) {
        let name = match reason {
            EndReason::Revoked => stream_events::REVOKED,
            _ => stream_events::ENDED,
        };
        let ended = proto::StreamEnded {
            session_id: self.session_id.clone(),
            reason,
        };
        self.pending.push_back(item(name, &ended));
        self.done = true;
    }
}

impl Drop for SessionStream {
    fn drop(&mut self) {
        crate::metrics::event_stream_closed();
    }
}
