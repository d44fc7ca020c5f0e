//! The event listener of a [`LeaseGuard`](crate::LeaseGuard): holds the session's event stream
//! so that a revoke (or any other end) reaches the application within a second or two, and
//! follows the license's heartbeat cadence. Heartbeats stay the truth; this only hears sooner.
//!
//! ```text
//!   open stream ──(200 text/event-stream)──► read events ──(revoked / ended)──► Lost { Ended(reason) }
//!      │   ^                                    │  └─(license_changed)──► new heartbeat cadence
//!      │   └──(backoff, at most 30 s)───────────┴─(cut, quiet 45 s, server stopping)
//!      ├──(410 session_ended)──────────────────────────────────────────────────► Lost { Ended(reason) }
//!      ├──(transport error, 503)──► backoff, open again
//!      └──(any other refusal: 4xx, not an event stream)──► stop: heartbeats alone, silently
//! ```

use std::sync::Arc;
use std::time::Duration;

use leasehold_proto::EndReason;

use crate::client::{lock, Client, SessionStreamEvent};
use crate::error::ClientError;
use crate::guard::{LeaseStatus, LostReason, Shared};

/// Longest pause between two tries to open the stream again.
const MAX_REOPEN_PAUSE: Duration = Duration::from_secs(30);
/// A stream quiet this long (no event and no keep-alive comment, which the server sends every
/// 15 s by default) is taken as cut, and opened again.
const QUIET_LIMIT: Duration = Duration::from_secs(45);

/// The event task of one guard.
pub(crate) struct Listener {
    client: Client,
    shared: Arc<Shared>,
    session_id: String,
}

impl Listener {
    pub(crate) fn new(client: Client, shared: Arc<Shared>, session_id: &str) -> Self {
        Listener {
            client,
            shared,
            session_id: session_id.to_owned(),
        }
    }

    fn active(&self) -> bool {
        self.shared.status.borrow().is_active()
    }

    fn lose(&self, reason: EndReason) {
        let reason = LostReason::Ended(reason);
        tracing::warn!(%reason, "seat lost (event stream)");
        self.shared.finish(LeaseStatus::Lost { reason });
    }

    pub(crate) async fn run(self) {
        let mut failures: u32 = 0;
        while self.active() {
            match self.client.session_events(&self.session_id).await {
                Ok(mut events) => loop {
                    match events.next_within(QUIET_LIMIT).await {
                        Ok(Some(SessionStreamEvent::Ended(ended))) => {
                            return self.lose(ended.reason);
                        }
                        Ok(Some(SessionStreamEvent::Opened(_))) => failures = 0,
                        // Positions of the owner's other waiting requests: not this seat's.
                        Ok(Some(SessionStreamEvent::Queue(_))) => {}
                        Ok(Some(SessionStreamEvent::LicenseChanged(changed))) => {
                            lock(&self.shared.session).heartbeat_interval_secs =
                                changed.heartbeat_interval_secs;
                            self.shared.cadence.notify_one();
                        }
                        // Ended without a final event (the server stopping, a proxy's cut):
                        // open it again.
                        Ok(None) => break,
                        Err(err) => {
                            tracing::debug!(error = %err, "event stream cut; opening it again");
                            break;
                        }
                    }
                },
                Err(err) if err.is_session_ended() => {
                    return self.lose(err.end_reason().unwrap_or(EndReason::Unknown));
                }
                Err(err) if err.is_retryable() || matches!(err, ClientError::Transport(_)) => {
                    tracing::debug!(error = %err, "cannot open the event stream; trying again");
                }
                Err(err) => {
                    tracing::debug!(error = %err, "no event stream; heartbeats alone keep the seat");
                    return;
                }
            }
            failures = failures.saturating_add(1);
            let pause = self
                .client
                .retry_policy()
                .backoff(failures)
                .min(MAX_REOPEN_PAUSE);
            tokio::time::sleep(pause).await;
        }
    }
}
