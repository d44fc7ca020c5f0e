//! Checking out a seat: [`Client::checkout`] and the [`LeaseGuard`] it returns, which holds an
//! open session, keeps it alive from a background task and gives the seat back when released
//! or dropped. The life cycle is documented on [`LeaseGuard`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold_proto::{EndReason, ErrorCode, Heartbeat, OpenSession, Session};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::client::{lock, Client};
use crate::clock::{Clock, SystemClock};
use crate::error::{ClientError, Result};
use crate::verify::LeaseVerifier;

/// After the session's expiry has passed, the last heartbeat may take this long to answer
/// (it only tells why the session ended).
const LAST_TRY_GRACE: Duration = Duration::from_secs(2);

/// Never heartbeat more often than this, whatever the clocks say (unless the interval itself
/// is shorter). Small enough that a session with a 1 s inactivity timeout is renewed well before
/// it expires (a 1 s floor scheduled its heartbeat right at the expiry, where it lost the race
/// against the server's reaper), large enough that a clock ahead of the server's cannot turn
/// the loop into a busy spin.
const MIN_HEARTBEAT_SPACING: Duration = Duration::from_millis(250);

/// The state of a checked-out seat, as published by [`LeaseGuard::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStatus {
    /// The session is open and being kept alive.
    Active,
    /// The seat is gone; the application should stop using the licensed feature. Final.
    Lost {
        /// Why the seat was lost.
        reason: LostReason,
    },
    /// The seat was given back with [`LeaseGuard::release`] or by dropping the guard. Final.
    Released,
}

impl LeaseStatus {
    /// True while the session is open.
    pub fn is_active(&self) -> bool {
        matches!(self, LeaseStatus::Active)
    }
}

/// Why a seat was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// The server said 410 `session_ended`, with this reason (revoked by an admin, absolute
    /// lifetime reached, inactivity, user deactivated, license expired...).
    Ended(EndReason),
    /// The server could not be reached (or answered 503) until the session's `expires_at`
    /// had passed.
    Expired,
    /// A heartbeat was refused with another error, such as 401 (token revoked) or 404.
    Rejected {
        /// HTTP status.
        status: u16,
        /// The server's error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The server sent a lease that does not verify.
    LeaseInvalid(String),
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LostReason::Ended(reason) => write!(f, "session ended ({})", reason.as_str()),
            LostReason::Expired => f.write_str("server unreachable until the session expired"),
            LostReason::Rejected {
                status,
                code,
                message,
            } => write!(f, "heartbeat refused: {status} {code}: {message}"),
            LostReason::LeaseInvalid(why) => write!(f, "invalid lease: {why}"),
        }
    }
}

/// Options of [`Client::checkout_with`]. `CheckoutOptions::default()` is what
/// [`Client::checkout`] uses.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct CheckoutOptions {
    /// When the license queues (`on_full: "queue"`) and is full, wait up to this many seconds
    /// for a seat (sent as `wait_secs`).
    pub wait_secs: Option<u64>,
    /// Heartbeat at this interval instead of the server-advised `heartbeat_interval_secs`
    /// (tests use short intervals).
    pub heartbeat_interval: Option<Duration>,
    /// Verify the session's leases (at checkout and on each heartbeat) with this verifier.
    pub verifier: Option<Arc<LeaseVerifier>>,
    /// Verify leases with the client's cached key set ([`Client::lease_verifier`]) when no
    /// `verifier` is given.
    pub verify_leases: bool,
    /// Wall clock used to turn `expires_at` into a deadline and to check lease expiry.
    /// Default: [`SystemClock`].
    pub clock: Option<Arc<dyn Clock>>,
    /// Do not subscribe to the session's event stream: rely on heartbeats alone (a revoke is
    /// then noticed at the next heartbeat instead of within a second or two).
    pub without_events: bool,
}

impl CheckoutOptions {
    /// Default options.
    pub fn new() -> Self {
        CheckoutOptions::default()
    }

    /// Waits up to `secs` seconds for a seat when the license queues.
    pub fn wait_secs(mut self, secs: u64) -> Self {
        self.wait_secs = Some(secs);
        self
    }

    /// Overrides the server-advised heartbeat interval.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = Some(interval);
        self
    }

    /// Verifies leases with `verifier`.
    pub fn verifier(mut self, verifier: Arc<LeaseVerifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Verifies leases with the server's key set, fetched once and cached by the client.
    pub fn verify_leases(mut self) -> Self {
        self.verify_leases = true;
        self
    }

    /// Uses another wall clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Relies on heartbeats alone, without the session's event stream.
    pub fn without_events(mut self) -> Self {
        self.without_events = true;
        self
    }
}

/// State shared by the guard and its background tasks (heartbeats, events).
pub(crate) struct Shared {
    /// The session, with `expires_at` and `lease` updated by each heartbeat, and
    /// `heartbeat_interval_secs` by the event stream's `license_changed`.
    pub(crate) session: Mutex<Session>,
    pub(crate) status: watch::Sender<LeaseStatus>,
    /// Told when `heartbeat_interval_secs` changed, so that a shorter cadence applies at once.
    pub(crate) cadence: tokio::sync::Notify,
}

impl Shared {
    /// Moves to a final status unless one was already reached.
    pub(crate) fn finish(&self, status: LeaseStatus) {
        self.status.send_if_modified(|current| {
            if current.is_active() {
                *current = status;
                true
            } else {
                false
            }
        });
    }
}

/// A checked-out seat: an open session kept alive by a background task.
///
/// ```text
///   checkout ──► Active ──(heartbeat 200: new expires_at, maybe a new lease)──► Active
///                  │
///                  ├──(event stream: revoked / ended with its reason)───────► Lost { Ended(reason) }
///                  ├──(410 session_ended: revoked, lifetime, inactivity...)──► Lost { Ended(reason) }
///                  ├──(no answer / 503 until expires_at has passed)───────────► Lost { Expired }
///                  ├──(other 4xx: token revoked, session unknown...)──────────► Lost { Rejected }
///                  ├──(new lease fails verification)──────────────────────────► Lost { LeaseInvalid }
///                  └──(release().await, or drop)──────────────────────────────► Released
/// ```
///
/// The background task heartbeats every `heartbeat_interval_secs` (as the server advises, or as
/// overridden in [`CheckoutOptions`]), and at the latest when a third of the time to the
/// session's expiry has passed (short inactivity timeouts), so that a failed heartbeat leaves
/// time for retries. Once the held lease is past half its life, a heartbeat asks for a re-signed one
/// (`?lease=true`), which [`LeaseGuard::lease`] then returns. A failed heartbeat that may
/// succeed later (transport error, 503) is retried with backoff until the session's
/// `expires_at` has passed; past it the seat is gone (the server never lets a session outlive
/// its expiry) and the status becomes [`LostReason::Expired`]. `Lost` and `Released` are
/// final: the task stops.
///
/// Besides, unless [`CheckoutOptions::without_events`], a second task holds the session's
/// event stream (`GET /v1/sessions/{id}/events`): a revoke or another end reaches the guard
/// within a second or two instead of at the next heartbeat, and a `license_changed` event
/// brings the license's new heartbeat cadence. Heartbeats stay the truth: when the stream is
/// refused (a proxy that blocks streaming, an older server) the guard goes on with heartbeats
/// alone, silently; when it is cut, it is reopened with backoff.
///
/// Dropping the guard stops the heartbeats and returns the seat in the background when a tokio
/// runtime is still running; [`LeaseGuard::release`] does it reliably and reports errors. If
/// neither happens (the process crashes), the seat is reclaimed when the session expires.
#[must_use = "dropping the guard returns the seat at once"]
pub struct LeaseGuard {
    client: Client,
    session_id: String,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
    /// The event stream's task (none without events).
    events_task: Option<JoinHandle<()>>,
    /// Set once the seat was given back (or `release` tried to), so `Drop` does nothing.
    returned: bool,
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("session_id", &self.session_id)
            .field("status", &*self.shared.status.borrow())
            .finish_non_exhaustive()
    }
}

impl LeaseGuard {
    /// The session, with the latest `expires_at` and `lease`.
    pub fn session(&self) -> Session {
        lock(&self.shared.session).clone()
    }

    /// The session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The latest signed lease (compact JWT); heartbeats may replace it with a fresh one.
    pub fn lease(&self) -> Option<String> {
        lock(&self.shared.session).lease.clone()
    }

    /// When the session expires unless it is kept alive, as of the latest heartbeat.
    pub fn expires_at(&self) -> OffsetDateTime {
        lock(&self.shared.session).expires_at
    }

    /// The current status.
    pub fn status(&self) -> LeaseStatus {
        self.shared.status.borrow().clone()
    }

    /// True while the session is open and kept alive.
    pub fn is_active(&self) -> bool {
        self.shared.status.borrow().is_active()
    }

    /// A receiver of status changes: `Active` until the seat is lost or released.
    pub fn subscribe(&self) -> watch::Receiver<LeaseStatus> {
        self.shared.status.subscribe()
    }

    /// Waits until the seat is lost and says why. Waits forever while the seat stays active.
    pub async fn lost(&self) -> LostReason {
        let mut status = self.subscribe();
        loop {
            if let LeaseStatus::Lost { reason } = &*status.borrow_and_update() {
                return reason.clone();
            }
            if status.changed().await.is_err() {
                // The sender lives in `self.shared`, so it cannot be gone while `self` is
                // borrowed; never report a loss that did not happen.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops the heartbeats and closes the session (`DELETE /v1/sessions/{id}`), freeing the
    /// seat. A session that had already ended (410, or 404) counts as released.
    pub async fn release(mut self) -> Result<()> {
        self.stop_tasks();
        self.returned = true;
        let outcome = match self.client.close_session(&self.session_id).await {
            Ok(()) => Ok(()),
            Err(err) if err.is_session_ended() || err.code() == Some(ErrorCode::NotFound) => Ok(()),
            Err(err) => Err(err),
        };
        self.shared.finish(LeaseStatus::Released);
        outcome
    }
}

impl LeaseGuard {
    fn stop_tasks(&mut self) {
        for task in [self.task.take(), self.events_task.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.stop_tasks();
        if self.returned {
            return;
        }
        let already_ended = matches!(
            &*self.shared.status.borrow(),
            LeaseStatus::Lost {
                reason: LostReason::Ended(_)
            }
        );
        self.shared.finish(LeaseStatus::Released);
        if already_ended {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let client = self.client.clone();
                let session_id = std::mem::take(&mut self.session_id);
                runtime.spawn(async move {
                    match client.close_session(&session_id).await {
                        Ok(()) => tracing::debug!(session_id, "seat returned on drop"),
                        Err(err) => tracing::debug!(
                            session_id,
                            error = %err,
                            "could not return the seat on drop; it frees when the session expires"
                        ),
                    }
                });
            }
            Err(_) => tracing::warn!(
                session_id = %self.session_id,
                "lease guard dropped outside a tokio runtime; the seat frees when the session expires"
            ),
        }
    }
}

impl Client {
    /// Checks out a seat: opens a session for this device and application instance and keeps
    /// it alive in the background. See [`LeaseGuard`].
    ///
    /// Fails like [`Client::open_session`], notably with 409
    /// [`no_seat_available`](ErrorCode::NoSeatAvailable) when the license is full.
    pub async fn checkout(
        &self,
        license_id: &str,
        device_id: &str,
        instance_id: &str,
    ) -> Result<LeaseGuard> {
        self.checkout_with(
            license_id,
            device_id,
            instance_id,
            CheckoutOptions::default(),
        )
        .await
    }

    /// [`Client::checkout`] with options: waiting in a queue, lease verification, heartbeat
    /// interval, clock.
    pub async fn checkout_with(
        &self,
        license_id: &str,
        device_id: &str,
        instance_id: &str,
        options: CheckoutOptions,
    ) -> Result<LeaseGuard> {
        let clock = options
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(SystemClock));
        // Fetch the keys first, so that a failure does not leave a session behind.
        let verifier = match options.verifier {
            Some(verifier) => Some(verifier),
            None if options.verify_leases => Some(self.lease_verifier().await?),
            None => None,
        };

        let session = self
            .open_session(&OpenSession {
                license_id: license_id.to_owned(),
                device_id: device_id.to_owned(),
                instance_id: instance_id.to_owned(),
                wait_secs: options.wait_secs,
                borrow_until: None,
            })
            .await?;

        if let Some(verifier) = &verifier {
            if let Err(err) = check_lease(
                verifier,
                session.lease.as_deref(),
                &session,
                clock.now_unix(),
            ) {
                if let Err(close_err) = self.close_session(&session.id).await {
                    tracing::debug!(error = %close_err, "could not close the session with a bad lease");
                }
                return Err(err);
            }
        }

        let interval = options
            .heartbeat_interval
            .unwrap_or_else(|| Duration::from_secs(session.heartbeat_interval_secs.max(1)));
        let deadline = local_deadline(session.expires_at, clock.as_ref(), interval);
        let fixed_interval = options.heartbeat_interval;
        let session_id = session.id.clone();
        let (status, _) = watch::channel(LeaseStatus::Active);
        let shared = Arc::new(Shared {
            session: Mutex::new(session),
            status,
            cadence: tokio::sync::Notify::new(),
        });
        let heartbeater = Heartbeater {
            client: self.clone(),
            shared: shared.clone(),
            session_id: session_id.clone(),
            fixed_interval,
            clock,
            verifier,
        };
        let span = tracing::debug_span!("lease_heartbeat", session_id = %session_id);
        let task = tokio::spawn(heartbeater.run(deadline).instrument(span));
        let events_task = (!options.without_events).then(|| {
            let listener = crate::events::Listener::new(self.clone(), shared.clone(), &session_id);
            let span = tracing::debug_span!("lease_events", session_id = %session_id);
            tokio::spawn(listener.run().instrument(span))
        });
        tracing::debug!(session_id, license_id, "seat checked out");

        Ok(LeaseGuard {
            client: self.clone(),
            session_id,
            shared,
            task: Some(task),
            events_task,
            returned: false,
        })
    }
}

/// Verifies a lease and checks that it is this session's.
fn check_lease(
    verifier: &LeaseVerifier,
    lease: Option<&str>,
    session: &Session,
    now_unix: i64,
) -> Result<()> {
    let lease =
        lease.ok_or_else(|| ClientError::LeaseInvalid("the server sent no lease".to_owned()))?;
    let claims = verifier.verify(lease, now_unix)?;
    if claims.sid != session.id || claims.lic != session.license_id {
        return Err(ClientError::LeaseInvalid(format!(
            "lease is for session {} of license {}, not {} of {}",
            claims.sid, claims.lic, session.id, session.license_id
        )));
    }
    Ok(())
}

/// The monotonic instant matching the wall-clock `expires_at`.
///
/// Right after the server extended the session the expiry cannot really be in the past; if the
/// clocks say so, this machine's clock is ahead of the server's, and the deadline is pushed to
/// a little later so that the heartbeat loop does not spin.
fn local_deadline(expires_at: OffsetDateTime, clock: &dyn Clock, interval: Duration) -> Instant {
    let now = Instant::now();
    let remaining = Duration::try_from(expires_at - clock.now()).unwrap_or(Duration::ZERO);
    let floor = interval.min(MIN_HEARTBEAT_SPACING);
    if remaining < floor {
        tracing::warn!(
            %expires_at,
            "the session expires sooner than expected: is this machine's clock ahead of the server's?"
        );
    }
    now + remaining.max(floor)
}

/// When to send the next heartbeat: after the interval, but before a third of the time left
/// has passed (so that a heartbeat that fails still leaves time for retries before the
/// session expires), and never after the deadline.
fn next_heartbeat(now: Instant, deadline: Instant, interval: Duration) -> Instant {
    let third_left = deadline.saturating_duration_since(now) / 3;
    let floor = interval.min(MIN_HEARTBEAT_SPACING);
    (now + interval.min(third_left.max(floor))).min(deadline)
}

/// When to ask for a re-signed lease: once the lease received at `now`, valid until
/// `deadline`, is past half its life.
fn lease_renewal(now: Instant, deadline: Instant) -> Instant {
    now + deadline.saturating_duration_since(now) / 2
}

/// The background task of a [`LeaseGuard`].
struct Heartbeater {
    client: Client,
    shared: Arc<Shared>,
    session_id: String,
    /// The interval of [`CheckoutOptions::heartbeat_interval`]; none: the license's, as last
    /// heard (at checkout, or from the event stream).
    fixed_interval: Option<Duration>,
    clock: Arc<dyn Clock>,
    verifier: Option<Arc<LeaseVerifier>>,
}

impl Heartbeater {
    /// The heartbeat interval now.
    fn interval(&self) -> Duration {
        self.fixed_interval.unwrap_or_else(|| {
            Duration::from_secs(lock(&self.shared.session).heartbeat_interval_secs.max(1))
        })
    }

    async fn run(self, mut deadline: Instant) {
        let mut failures: u32 = 0;
        let start = Instant::now();
        let mut next = next_heartbeat(start, deadline, self.interval());
        let mut renew_lease_at = lease_renewal(start, deadline);
        // The event stream may end the seat first: then this task stops too.
        let mut status = self.shared.status.subscribe();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                _ = status.wait_for(|s| !s.is_active()) => return,
                () = self.shared.cadence.notified() => {
                    // The license's cadence changed: a shorter one applies from now.
                    next = next.min(Instant::now() + self.interval());
                    continue;
                }
            }
            let renew_lease = Instant::now() >= renew_lease_at;
            // Past the deadline only a quick answer matters: the session is gone either way.
            let limit = deadline.max(Instant::now() + LAST_TRY_GRACE);
            let heartbeat = self.client.heartbeat_with(&self.session_id, renew_lease);
            let outcome = tokio::time::timeout_at(limit, heartbeat)
                .await
                .unwrap_or_else(|_| {
                    Err(ClientError::Transport(
                        "no heartbeat answer before the session expired".to_owned(),
                    ))
                });
            let now = Instant::now();
            match outcome {
                Ok(heartbeat) => match self.accept(heartbeat) {
                    Ok((new_deadline, got_lease)) => {
                        failures = 0;
                        deadline = new_deadline;
                        next = next_heartbeat(now, deadline, self.interval());
                        if got_lease {
                            renew_lease_at = lease_renewal(now, deadline);
                        }
                    }
                    Err(reason) => return self.lose(reason),
                },
                Err(err) if err.is_session_ended() => {
                    let reason = err.end_reason().unwrap_or(EndReason::Unknown);
                    return self.lose(LostReason::Ended(reason));
                }
                // A 2xx the SDK cannot read probably did extend the session: keep trying,
                // the deadline bounds it.
                Err(err) if err.is_retryable() || matches!(err, ClientError::Decode(_)) => {
                    if now >= deadline {
                        return self.lose(LostReason::Expired);
                    }
                    failures = failures.saturating_add(1);
                    let wait = self
                        .client
                        .retry_policy()
                        .backoff(failures)
                        .min(self.interval());
                    next = (now + wait).min(deadline);
                    tracing::warn!(error = %err, failures, "heartbeat failed, will retry");
                }
                Err(ClientError::Api {
                    status,
                    code,
                    message,
                    ..
                }) => {
                    return self.lose(LostReason::Rejected {
                        status,
                        code,
                        message,
                    })
                }
                Err(ClientError::LeaseInvalid(why)) => {
                    return self.lose(LostReason::LeaseInvalid(why))
                }
                Err(err) => {
                    return self.lose(LostReason::Rejected {
                        status: 0,
                        code: ErrorCode::Unknown,
                        message: err.to_string(),
                    })
                }
            }
        }
    }

    /// Records a successful heartbeat; answers the new deadline and whether a new lease came.
    fn accept(&self, heartbeat: Heartbeat) -> std::result::Result<(Instant, bool), LostReason> {
        let mut session = lock(&self.shared.session);
        let got_lease = heartbeat.lease.is_some();
        if let Some(lease) = heartbeat.lease {
            if let Some(verifier) = &self.verifier {
                check_lease(verifier, Some(&lease), &session, self.clock.now_unix())
                    .map_err(|err| LostReason::LeaseInvalid(err.to_string()))?;
            }
            session.lease = Some(lease);
        }
        session.expires_at = heartbeat.expires_at;
        drop(session);
        tracing::trace!(expires_at = %heartbeat.expires_at, "heartbeat accepted");
        let deadline = local_deadline(heartbeat.expires_at, self.clock.as_ref(), self.interval());
        Ok((deadline, got_lease))
    }

    fn lose(&self, reason: LostReason) {
        tracing::warn!(%reason, "seat lost");
        self.shared.finish(LeaseStatus::Lost { reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_follow_the_interval_while_expiry_is_far() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(1200);
        assert_eq!(
            next_heartbeat(now, deadline, Duration::from_secs(60)),
            now + Duration::from_secs(60)
        );
    }

    #[test]
    fn heartbeats_come_within_a_third_of_the_time_left_when_expiry_is_near() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(45);
        assert_eq!(
            next_heartbeat(now, deadline, Duration::from_secs(60)),
            now + Duration::from_secs(15)
        );
        // ...but not more often than every 250 ms, and never after the deadline.
        let deadline = now + Duration::from_millis(200);
        assert_eq!(
            next_heartbeat(now, deadline, Duration::from_secs(60)),
            deadline
        );
        let deadline = now + Duration::from_millis(400);
        assert_eq!(
            next_heartbeat(now, deadline, Duration::from_secs(60)),
            now + Duration::from_millis(250)
        );
    }

    #[test]
    fn a_one_second_session_is_renewed_well_before_it_expires() {
        // inactivity_timeout_secs = 1: the server advises a 1 s interval and the session
        // expires 1 s after each heartbeat; the heartbeat must not wait for the expiry.
        let now = Instant::now();
        let deadline = now + Duration::from_millis(990);
        let next = next_heartbeat(now, deadline, Duration::from_secs(1));
        assert_eq!(next, now + Duration::from_millis(330));
    }

    #[test]
    fn short_test_intervals_are_honoured() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        assert_eq!(
            next_heartbeat(now, deadline, Duration::from_millis(50)),
            now + Duration::from_millis(50)
        );
    }

    #[test]
    fn the_deadline_follows_expires_at_on_the_given_clock() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap();
        let clock = crate::clock::FixedClock::new(t0);
        let before = Instant::now();
        let deadline = local_deadline(
            t0 + time::Duration::seconds(30),
            &clock,
            Duration::from_secs(10),
        );
        let left = deadline - before;
        assert!(left >= Duration::from_secs(30) && left < Duration::from_secs(31));
        // A clock ahead of the server's does not make the deadline the past.
        let deadline = local_deadline(
            t0 - time::Duration::seconds(30),
            &clock,
            Duration::from_secs(10),
        );
        assert!(deadline > before);
    }

    #[test]
    fn lost_reasons_read_well() {
        assert_eq!(
            LostReason::Ended(EndReason::Revoked).to_string(),
            "session ended (revoked)"
        );
        assert!(LostReason::Expired.to_string().contains("unreachable"));
    }
}
