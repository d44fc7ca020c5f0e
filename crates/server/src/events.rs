//! The application layer of session event streams (`GET /v1/sessions/{id}/events`): who may
//! watch a session, what a stream sends, and raising the events other calls cause.
//!
//! ```text
//!   subscribe (owner's token; 410 if already ended) ──► open ──► waits on its hub Watch
//!        ├─(woken: session/license/user event) ─► re-read the session ─► live: wait again
//!        │                                                             └► ended: revoked | ended (final)
//!        ├─(woken: license changed) ─► license_changed, then the same re-read
//!        ├─(woken: a queue of its user moved) ─► queue (its owner's waiting requests), if they changed
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
//! is logged, not answered: the change stands, and heartbeats still tell the client. A queue
//! that moved (a waiter joined, was served, or left) raises `queue_moved` on the topic of each
//! user waiting in it (and of the one who stopped waiting): only their streams wake, never
//! every stream of the license.

use std::collections::{BTreeSet, VecDeque};
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

/// A license's queue moved (`user` joined, was served or left it): raises a queue event for
/// every user waiting in it, and for `user`, in the background (the caller's answer does not
/// wait for it).
pub fn queue_moved(state: &AppState, license_id: &str, account_id: &str, user: &str) {
    let state = state.clone();
    let (license_id, account_id, user) = (
        license_id.to_owned(),
        account_id.to_owned(),
        user.to_owned(),
    );
    tokio::spawn(async move {
        let waiting = match state.store.list_queue(&license_id, state.clock.now()).await {
            Ok(waiting) => waiting,
            Err(e) => {
                tracing::debug!(error = %e, %license_id, "cannot read the queue to raise its move");
                Vec::new()
            }
        };
        let mut users: BTreeSet<String> = waiting.into_iter().map(|w| w.username).collect();
        users.insert(user);
        for username in users {
            raise(
                &state,
                SessionEvent::queue_changed_for(&account_id, &username),
            )
            .await;
        }
    });
}

/// A session being watched for its owner.
pub struct SessionStream {
    state: AppState,
    subscription: Subscription,
    session_id: String,
    license_id: String,
    username: String,
    /// The owner's waiting requests (ticket, position) and the queue's length as last sent
    /// (`None`: none sent, or the owner was not waiting).
    queue_sent: Option<(Vec<(u64, u32)>, u32)>,
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
        username: session.username,
        queue_sent: None,
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
            if changes.queue_changed {
                self.queue_changed().await;
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

    /// The owner's waiting requests in the license's queue, sent when they changed (and
    /// once more when the owner stops waiting).
    async fn queue_changed(&mut self) {
        let now = self.state.clock.now();
        let waiting = match self.state.store.list_queue(&self.license_id, now).await {
            Ok(waiting) => waiting,
            Err(e) => {
                tracing::debug!(error = %e, license_id = %self.license_id, "event stream cannot read the queue");
                return;
            }
        };
        let length = waiting.len() as u32;
        let own: Vec<_> = waiting
            .into_iter()
            .filter(|w| w.username == self.username)
            .collect();
        let key: Vec<(u64, u32)> = own.iter().map(|w| (w.ticket, w.position)).collect();
        let unchanged = match &self.queue_sent {
            Some((sent, sent_length)) => *sent == key && *sent_length == length,
            None => key.is_empty(),
        };
        if unchanged {
            return;
        }
        self.queue_sent = (!key.is_empty()).then_some((key, length));
        let list = proto::QueueList {
            waiting: own
                .into_iter()
                .map(|w| proto::QueueEntry {
                    position: w.position,
                    waited_secs: (now.millis() - w.since.millis()).max(0) as u64 / 1000,
                    waiting_since: to_offset(w.since),
                    username: w.username,
                    device_id: w.device_id,
                    instance_id: w.instance_id,
                })
                .collect(),
            length,
        };
        self.pending.push_back(item(stream_events::QUEUE, &list));
    }

    fn finish(&mut self, reason: EndReason) {
        let name = match reason {
            EndReason::Revoked | EndReason::Reclaimed => stream_events::REVOKED,
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
