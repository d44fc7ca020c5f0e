//! The admission procedure both backends run around the seat rule of `leasehold-core`: the seat
//! view a backend's counts give, the verdict on an open (grant, queue or refuse, with the
//! refusal as the client sees it), and the audit events of admissions, session ends and
//! license and device changes. Pure: no I/O, no locks, time passed in. The rules themselves
//! (`decide_open`, `must_queue`) stay in core; this module says what a backend does with their
//! answers, so that SQLite and PostgreSQL admit alike and write the same audit log.
//!
//! ```text
//!   newcomer ──decide──► must_queue? ── yes, may wait ──────► Queue (joins the queue)
//!                            │        └─ yes, may not wait ─► Refuse(no_seat_available), a denial
//!                            └─ no ─► Grant ────────────────► Grant { overdraft }
//!                                     Deny(rule) ───────────► Refuse(rule naming the device),
//!                                                             a denial if no_seat_available
//!   queue head ──decide──► no seat ─────────────────────────► Queue (stays; its license's queue
//!                                                             stops here)
//!                          Deny(rule) ──────────────────────► Refuse(rule naming the device)
//!                          Grant ───────────────────────────► Grant { overdraft }
//! ```
//!
//! A refused newcomer gets a `denied` event; a granted one an `opened` event whose detail is
//! its kind, then ` overdraft` when it took a seat beyond the purchased ones, then ` queued`
//! when it waited for it.

use leasehold_core::seats::must_queue;
use leasehold_core::{
    check_borrow, decide_borrow, decide_open, LicenseTerms, OpenDecision, RuleError, SeatView,
    SessionClock, Timestamp, Username,
};
use leasehold_proto::EndReason;

use crate::origin::{self, Origin};
use crate::records::{AuditEvent, License, OpenRequest, Session};
use crate::usage;

/// What a backend counts of one license at the moment of deciding, expired sessions already
/// reclaimed. SQLite answers from memory; PostgreSQL from what its open batch read under the
/// license's lock.
pub trait SeatCounts {
    /// The license's current terms.
    fn terms(&self) -> &LicenseTerms;
    /// Live sessions on the license.
    fn live_sessions(&self) -> u32;
    /// Live sessions of one user on the license.
    fn user_live_sessions(&self, username: &str) -> u32;
    /// `registered_users`: users active on the license.
    fn active_users(&self) -> u32;
    /// `registered_users`: whether the user is active on the license.
    fn user_active(&self, username: &str) -> bool;
    /// `node_locked`: whether the device is activated on the license.
    fn device_activated(&self, device_id: &str) -> bool;
}

/// The account-level active flag of the user asking (`None`: no such user), checked in the
/// same atomic step as the seat decision, so that an open can never overtake a deactivation
/// that was acknowledged before it.
pub fn user_may_open(active: Option<bool>, username: &str) -> Result<(), RuleError> {
    match active {
        Some(true) => Ok(()),
        _ => Err(RuleError::UserNotActive(format!(
            "user {username} is inactive"
        ))),
    }
}

/// The seat rule's view of a license for one asking client (user and device).
pub fn seat_view(counts: &impl SeatCounts, username: &str, device_id: &str) -> SeatView {
    // A reserved user's first session sits in their reserved slot: the rule needs how many
    // reserved users hold one, per the terms of now (a reservation may have been added since).
    let reserved_holders = counts
        .terms()
        .reserved
        .iter()
        .filter(|u| counts.user_live_sessions(u.as_str()) > 0)
        .count() as u32;
    SeatView {
        live_sessions: counts.live_sessions(),
        reserved_holders,
        user_live_sessions: counts.user_live_sessions(username),
        user_active_on_license: counts.user_active(username),
        active_users: counts.active_users(),
        device_activated: counts.device_activated(device_id),
    }
}

/// The seat rule's decision on a new session of `user` from `device_id` at `now`.
pub fn decide(
    counts: &impl SeatCounts,
    user: &Username,
    device_id: &str,
    now: Timestamp,
) -> OpenDecision {
    decide_open(
        counts.terms(),
        user,
        seat_view(counts, user.as_str(), device_id),
        now,
    )
}

/// What a backend does with an open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Take a seat now; `overdraft` when it is beyond the purchased seats.
    Grant { overdraft: bool },
    /// Wait in the license's queue: a newcomer joins it, a queue head keeps its place.
    Queue,
    /// Refused, as the client is told. A `denial` counts in the license's usage statistics:
    /// a refusal for want of a seat.
    Refuse { refusal: RuleError, denial: bool },
}

/// The verdict on a newcomer (an open that is not waiting yet) given the seat rule's
/// `decision`, how many clients wait in the license's queue, and whether this one may `wait`.
pub fn newcomer_verdict(
    terms: &LicenseTerms,
    decision: OpenDecision,
    waiting: usize,
    wait: bool,
    device_id: &str,
) -> Verdict {
    let decision = if must_queue(terms, &decision, waiting) {
        if wait {
            return Verdict::Queue;
        }
        // A seat owed to the waiters is no seat for a client that will not wait.
        OpenDecision::Deny(RuleError::NoSeatAvailable { seats: terms.seats })
    } else {
        decision
    };
    match decision {
        OpenDecision::Deny(refusal) => refuse(refusal, device_id),
        granted => Verdict::Grant {
            overdraft: granted.is_overdraft(),
        },
    }
}

/// The verdict on the longest waiter of a queue given the seat rule's `decision`: with no seat
/// it keeps waiting (and nobody behind it is served: first come, first served).
pub fn queue_head_verdict(decision: OpenDecision, device_id: &str) -> Verdict {
    match decision {
        OpenDecision::Deny(RuleError::NoSeatAvailable { .. }) => Verdict::Queue,
        OpenDecision::Deny(refusal) => refuse(refusal, device_id),
        granted => Verdict::Grant {
            overdraft: granted.is_overdraft(),
        },
    }
}

fn refuse(refusal: RuleError, device_id: &str) -> Verdict {
    // The rule does not know the device it refused; the client is told which one.
    let refusal = match refusal {
        RuleError::DeviceNotActivated(_) => RuleError::DeviceNotActivated(device_id.to_owned()),
        other => other,
    };
    let denial = matches!(refusal, RuleError::NoSeatAvailable { .. });
    Verdict::Refuse { refusal, denial }
}

/// A borrow's verdict, after the seat's: a granted seat is lent only within the license's
/// borrow policy (`check_borrow`: the period, the user's kind, the license's end; then
/// `decide_borrow` over `borrowed_now`, the license's live borrows the backend counts in the
/// same atomic step, asked only for a granted borrow). A borrow the policy refuses is refused
/// for that even when no seat is free (the request itself is wrong, whatever the seats). A
/// refused borrow is no denial. An ordinary open's verdict passes unchanged.
pub fn borrow_verdict(
    verdict: Verdict,
    terms: &LicenseTerms,
    req: &OpenRequest,
    now: Timestamp,
    borrowed_now: impl FnOnce() -> u32,
) -> Verdict {
    let Some(until) = req.borrow_until else {
        return verdict;
    };
    let policy = check_borrow(terms, req.kind, now, until);
    let refused = |refusal| Verdict::Refuse {
        refusal,
        denial: false,
    };
    match (verdict, policy) {
        (Verdict::Grant { overdraft }, Ok(())) => match decide_borrow(terms, borrowed_now()) {
            Ok(()) => Verdict::Grant { overdraft },
            Err(refusal) => refused(refusal),
        },
        (Verdict::Grant { .. } | Verdict::Queue, Err(refusal)) => refused(refusal),
        (
            Verdict::Refuse {
                refusal: RuleError::NoSeatAvailable { .. },
                ..
            },
            Err(refusal),
        ) => refused(refusal),
        (verdict, _) => verdict,
    }
}

/// The timing of a session granted for `req` at `now`: a borrowed seat's, or an ordinary one's.
pub fn new_clock(req: &OpenRequest, terms: &LicenseTerms, now: Timestamp) -> SessionClock {
    match req.borrow_until {
        Some(until) => SessionClock::borrow(terms, now, until),
        None => SessionClock::open(req.kind, terms, now),
    }
}

/// Whether a client instance's live session answers a re-open of `req`: a borrow is answered
/// only by a borrowed session, an ordinary open only by an ordinary one (an instance holding
/// an online seat borrows from another instance, or returns it first).
pub fn reopen_matches(existing: &SessionClock, req: &OpenRequest) -> Result<(), RuleError> {
    match (existing.is_borrowed(), req.borrow_until.is_some()) {
        (true, false) => Err(RuleError::BorrowNotAllowed(
            "this client instance holds a borrowed seat: open from another instance, or return              the borrow first"
                .into(),
        )),
        (false, true) => Err(RuleError::BorrowNotAllowed(
            "this client instance holds an online seat: borrow from another instance, or close              that session first"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// How an opened session got its seat, as its `opened` event tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenedVia {
    /// At once, on its own request.
    Request,
    /// Granted to it as the longest waiter of the license's queue.
    Queue,
}

/// The `opened` event of a new session; its detail is the session's kind, ` overdraft` when it
/// took an overdraft seat, ` queued` when it waited for its seat. `origin`: the open request's.
pub fn opened(session: &Session, at: Timestamp, via: OpenedVia, origin: Origin) -> AuditEvent {
    let mut detail = session.kind.as_str().to_owned();
    if session.overdraft {
        detail.push_str(" overdraft");
    }
    if via == OpenedVia::Queue {
        detail.push_str(" queued");
    }
    if session.clock.is_borrowed() {
        detail.push_str(" borrowed");
    }
    session_event(session, at, "opened", detail, origin)
}

/// The `ended` event of a session; its detail is the reason, its origin the current request's
/// when a call ended it (`origin::of_end`).
pub fn ended(session: &Session, at: Timestamp, reason: EndReason) -> AuditEvent {
    let origin = origin::of_end(reason);
    session_event(session, at, "ended", reason.as_str().to_owned(), origin)
}

fn session_event(
    session: &Session,
    at: Timestamp,
    event: &str,
    detail: String,
    origin: Origin,
) -> AuditEvent {
    AuditEvent {
        at,
        account_id: session.account_id.to_string(),
        license_id: session.license_id.to_string(),
        session_id: Some(session.id.clone()),
        username: Some(session.username.clone()),
        event: event.into(),
        detail: Some(detail),
        origin,
    }
}

/// The `denied` event of a refused open; its detail is the refusal's error code, its origin
/// the open request's.
pub fn denied(
    license: &License,
    username: &str,
    refusal: &RuleError,
    at: Timestamp,
    origin: Origin,
) -> AuditEvent {
    AuditEvent {
        at,
        account_id: license.account_id.clone(),
        license_id: license.id.clone(),
        session_id: None,
        username: Some(username.to_owned()),
        event: "denied".into(),
        detail: Some(refusal.code().as_str().into()),
        origin,
    }
}

/// The `queued` event of an open that waits in the license's queue; its session id is the
/// id the session gets when the queue grants it a seat (its `opened` event then says
/// ` queued`), its detail the user's kind, its origin the open request's.
pub fn queued(license: &License, req: &OpenRequest, at: Timestamp) -> AuditEvent {
    AuditEvent {
        at,
        account_id: license.account_id.clone(),
        license_id: license.id.clone(),
        session_id: Some(req.new_id.clone()),
        username: Some(req.username.clone()),
        event: "queued".into(),
        detail: Some(req.kind.as_str().to_owned()),
        origin: (*req.origin).clone(),
    }
}

/// The `license_created` event, at the license's creation; its detail is its seats
/// (`seats=N`), the capacity the usage series follow.
pub fn license_created(license: &License) -> AuditEvent {
    AuditEvent {
        detail: Some(usage::seats_detail(license.terms.seats)),
        ..license_event(license, license.created_at, "license_created")
    }
}

/// The `license_updated` event of a change of the license's terms; its detail is its seats.
pub fn license_updated(license: &License, at: Timestamp) -> AuditEvent {
    AuditEvent {
        detail: Some(usage::seats_detail(license.terms.seats)),
        ..license_event(license, at, "license_updated")
    }
}

/// The `sessions_revoked` event of a revoke of every live session of the license; its detail
/// is how many (each also gets its own `ended` event as its end lands).
pub fn sessions_revoked(license: &License, count: u32, at: Timestamp) -> AuditEvent {
    AuditEvent {
        detail: Some(count.to_string()),
        ..license_event(license, at, "sessions_revoked")
    }
}

pub(crate) fn license_event(license: &License, at: Timestamp, event: &str) -> AuditEvent {
    AuditEvent {
        at,
        account_id: license.account_id.clone(),
        license_id: license.id.clone(),
        session_id: None,
        username: None,
        event: event.into(),
        detail: None,
        origin: origin::current(),
    }
}

/// The `device_activated` event of a `node_locked` license; its detail is the fingerprint.
pub fn device_activated(
    account_id: &str,
    license_id: &str,
    fingerprint: &str,
    at: Timestamp,
) -> AuditEvent {
    device_event(account_id, license_id, fingerprint, at, "device_activated")
}

/// The `device_deactivated` event of a `node_locked` license; its detail is the fingerprint.
pub fn device_deactivated(
    account_id: &str,
    license_id: &str,
    fingerprint: &str,
    at: Timestamp,
) -> AuditEvent {
    device_event(
        account_id,
        license_id,
        fingerprint,
        at,
        "device_deactivated",
    )
}

fn device_event(
    account_id: &str,
    license_id: &str,
    fingerprint: &str,
    at: Timestamp,
    event: &str,
) -> AuditEvent {
    AuditEvent {
        at,
        account_id: account_id.to_owned(),
        license_id: license_id.to_owned(),
        session_id: None,
        username: None,
        event: event.into(),
        detail: Some(fingerprint.to_owned()),
        origin: origin::current(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use leasehold_core::{PlanCatalog, SessionClock};
    use leasehold_proto::{CreateLicense, LicenseModel, OnFull, UserKind};

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn terms(
        model: LicenseModel,
        seats: i64,
        extra: impl FnOnce(&mut CreateLicense),
    ) -> LicenseTerms {
        let mut req = CreateLicense {
            account_id: "acme".into(),
            product: "cad".into(),
            model,
            seats: Some(seats),
            inactivity_timeout_secs: Some(60),
            ..Default::default()
        };
        extra(&mut req);
        LicenseTerms::from_create(&req, &PlanCatalog::default()).unwrap()
    }

    fn queueing(req: &mut CreateLicense) {
        req.on_full = Some(OnFull::Queue);
        req.max_queue_wait_secs = Some(60);
    }

    /// A license's counts as a backend keeps them: live sessions per user, registrations.
    struct Counts {
        terms: LicenseTerms,
        per_user: BTreeMap<String, u32>,
        active: BTreeSet<String>,
        devices: BTreeSet<String>,
    }

    impl Counts {
        fn new(terms: LicenseTerms) -> Self {
            Counts {
                terms,
                per_user: BTreeMap::new(),
                active: BTreeSet::new(),
                devices: BTreeSet::new(),
            }
        }

        /// Decides an open of `user` and takes the seat when granted, as a backend does.
        fn open(&mut self, user: &str, waiting: usize, wait: bool) -> Verdict {
            let decision = decide(self, &Username::parse(user).unwrap(), "pc-1", T0);
            let verdict = newcomer_verdict(&self.terms, decision, waiting, wait, "pc-1");
            if let Verdict::Grant { .. } = verdict {
                *self.per_user.entry(user.to_owned()).or_default() += 1;
            }
            verdict
        }
    }

    impl SeatCounts for Counts {
        fn terms(&self) -> &LicenseTerms {
            &self.terms
        }
        fn live_sessions(&self) -> u32 {
            self.per_user.values().sum()
        }
        fn user_live_sessions(&self, username: &str) -> u32 {
            self.per_user.get(username).copied().unwrap_or(0)
        }
        fn active_users(&self) -> u32 {
            self.active.len() as u32
        }
        fn user_active(&self, username: &str) -> bool {
            self.active.contains(username)
        }
        fn device_activated(&self, device_id: &str) -> bool {
            self.devices.contains(device_id)
        }
    }

    const GRANT: Verdict = Verdict::Grant { overdraft: false };

    fn no_seat(seats: u32) -> Verdict {
        Verdict::Refuse {
            refusal: RuleError::NoSeatAvailable { seats },
            denial: true,
        }
    }

    fn session(kind: UserKind, overdraft: bool) -> Session {
        let t = terms(LicenseModel::ConcurrentSessions, 2, |_| {});
        Session {
            id: "s-1".into(),
            license_id: Arc::from("lic"),
            account_id: Arc::from("acme"),
            username: "ann".into(),
            kind,
            device_id: "pc-1".into(),
            instance_id: "app".into(),
            clock: SessionClock::open(kind, &t, T0),
            heartbeat_interval_secs: 20,
            overdraft,
        }
    }

    fn license(t: LicenseTerms) -> License {
        License {
            id: "lic".into(),
            account_id: "acme".into(),
            model: t.model,
            terms: t,
            created_at: T0,
        }
    }

    #[test]
    fn the_view_counts_reserved_holders_by_the_terms_of_now() {
        let mut c = Counts::new(terms(LicenseModel::ConcurrentSessions, 5, |r| {
            r.reserved = vec!["boss".into(), "cfo".into()];
        }));
        c.per_user.insert("boss".into(), 2);
        c.per_user.insert("ann".into(), 1);
        c.devices.insert("pc-1".into());
        let view = seat_view(&c, "ann", "pc-1");
        assert_eq!(
            view,
            SeatView {
                live_sessions: 3,
                reserved_holders: 1,
                user_live_sessions: 1,
                user_active_on_license: false,
                active_users: 0,
                device_activated: true,
            }
        );
        assert_eq!(seat_view(&c, "cfo", "pc-2").user_live_sessions, 0);
        assert!(!seat_view(&c, "cfo", "pc-2").device_activated);
    }

    #[test]
    fn a_full_license_refuses_and_counts_a_denial() {
        let mut c = Counts::new(terms(LicenseModel::ConcurrentSessions, 2, |_| {}));
        assert_eq!(c.open("ann", 0, false), GRANT);
        assert_eq!(c.open("bob", 0, false), GRANT);
        // Full: refused for want of a seat, which the usage statistics count.
        assert_eq!(c.open("eve", 0, false), no_seat(2));
        // Asking to wait changes nothing on a license that does not queue.
        assert_eq!(c.open("eve", 0, true), no_seat(2));
        assert_eq!(c.live_sessions(), 2);
    }

    #[test]
    fn a_queueing_license_queues_those_who_wait_and_refuses_the_others() {
        let mut c = Counts::new(terms(LicenseModel::ConcurrentSessions, 1, queueing));
        assert_eq!(c.open("ann", 0, true), GRANT);
        // Full: a client that waits joins the queue, one that does not is refused.
        assert_eq!(c.open("bob", 0, true), Verdict::Queue);
        assert_eq!(c.open("eve", 1, false), no_seat(1));
        // A seat frees while bob waits: it is his, a newcomer queues behind him or is refused.
        c.per_user.clear();
        assert_eq!(c.open("eve", 1, true), Verdict::Queue);
        assert_eq!(c.open("eve", 1, false), no_seat(1));
        // Nobody waits: the free seat goes to whoever asks.
        assert_eq!(c.open("eve", 0, false), GRANT);
    }

    #[test]
    fn a_reserved_user_with_no_session_never_waits() {
        let mut c = Counts::new(terms(LicenseModel::ConcurrentSessions, 2, |r| {
            queueing(r);
            r.reserved = vec!["boss".into()];
        }));
        assert_eq!(c.open("ann", 0, true), GRANT);
        assert_eq!(c.open("bob", 0, true), Verdict::Queue);
        // The shared pool is full and three wait, yet the reserved slot is the boss's.
        assert_eq!(c.open("boss", 3, true), GRANT);
        // The boss's second session needs the shared pool: it waits like anyone.
        assert_eq!(c.open("boss", 3, true), Verdict::Queue);
    }

    #[test]
    fn an_overdraft_grant_is_marked_in_the_verdict_and_the_opened_event() {
        let mut c = Counts::new(terms(LicenseModel::ConcurrentSessions, 2, |r| {
            r.overdraft_seats = Some(1);
        }));
        assert_eq!(c.open("ann", 0, false), GRANT);
        assert_eq!(c.open("bob", 0, false), GRANT);
        assert_eq!(c.open("eve", 0, false), Verdict::Grant { overdraft: true });
        assert_eq!(c.open("joe", 0, false), no_seat(2));

        let event = opened(
            &session(UserKind::Service, true),
            T0,
            OpenedVia::Request,
            Origin::default(),
        );
        assert_eq!(event.detail.as_deref(), Some("service overdraft"));
        let event = opened(
            &session(UserKind::Interactive, true),
            T0,
            OpenedVia::Queue,
            Origin::default(),
        );
        assert_eq!(
            event.detail.as_deref(),
            Some("interactive overdraft queued")
        );
        let event = opened(
            &session(UserKind::Interactive, false),
            T0,
            OpenedVia::Queue,
            Origin::default(),
        );
        assert_eq!(event.detail.as_deref(), Some("interactive queued"));
        assert_eq!(
            (event.event.as_str(), event.session_id.as_deref()),
            ("opened", Some("s-1"))
        );
        assert_eq!(event.username.as_deref(), Some("ann"));
    }

    #[test]
    fn a_device_refusal_names_the_device_and_is_no_denial() {
        let mut c = Counts::new(terms(LicenseModel::NodeLocked, 2, |_| {}));
        let refused = Verdict::Refuse {
            refusal: RuleError::DeviceNotActivated("pc-1".into()),
            denial: false,
        };
        assert_eq!(c.open("ann", 0, false), refused);
        let decision = decide(&c, &Username::parse("ann").unwrap(), "pc-9", T0);
        assert_eq!(
            queue_head_verdict(decision, "pc-9"),
            Verdict::Refuse {
                refusal: RuleError::DeviceNotActivated("pc-9".into()),
                denial: false,
            }
        );
        c.devices.insert("pc-1".into());
        assert_eq!(c.open("ann", 0, false), GRANT);
    }

    #[test]
    fn other_refusals_are_answered_at_once_even_to_those_who_wait() {
        let mut c = Counts::new(terms(LicenseModel::RegisteredUsers, 2, queueing));
        assert_eq!(
            c.open("eve", 0, true),
            Verdict::Refuse {
                refusal: RuleError::UserNotActive(
                    "eve is not an active user of this license".into()
                ),
                denial: false,
            }
        );
    }

    #[test]
    fn a_queue_head_waits_for_a_seat_and_is_told_other_refusals() {
        let t = terms(LicenseModel::ConcurrentSessions, 1, queueing);
        let full = OpenDecision::Deny(RuleError::NoSeatAvailable { seats: 1 });
        assert_eq!(queue_head_verdict(full, "pc-1"), Verdict::Queue);
        let suspended = OpenDecision::Deny(RuleError::LicenseNotActive("suspended".into()));
        assert_eq!(
            queue_head_verdict(suspended, "pc-1"),
            Verdict::Refuse {
                refusal: RuleError::LicenseNotActive("suspended".into()),
                denial: false,
            }
        );
        let c = Counts::new(t);
        let decision = decide(&c, &Username::parse("bob").unwrap(), "pc-1", T0);
        assert_eq!(queue_head_verdict(decision, "pc-1"), GRANT);
    }

    #[test]
    fn events_name_their_license_session_and_detail() {
        let lic = license(terms(LicenseModel::ConcurrentSessions, 2, |_| {}));
        let refusal = RuleError::NoSeatAvailable { seats: 2 };
        let at = T0.plus_secs(5);
        assert_eq!(
            denied(&lic, "eve", &refusal, at, Origin::default()),
            AuditEvent {
                at,
                account_id: "acme".into(),
                license_id: "lic".into(),
                session_id: None,
                username: Some("eve".into()),
                event: "denied".into(),
                detail: Some("no_seat_available".into()),
                origin: Origin::default(),
            }
        );
        let created = license_created(&lic);
        assert_eq!(
            (created.at, created.event.as_str()),
            (T0, "license_created")
        );
        // The seats, which the usage series follow as the capacity.
        let seats = format!("seats={}", lic.terms.seats);
        assert_eq!((created.username, created.detail), (None, Some(seats)));
        let updated = license_updated(&lic, at);
        assert_eq!(
            (updated.at, updated.event.as_str()),
            (at, "license_updated")
        );

        let on = device_activated("acme", "lic", "fp-1", at);
        assert_eq!(on.event, "device_activated");
        assert_eq!(on.detail.as_deref(), Some("fp-1"));
        let off = device_deactivated("acme", "lic", "fp-1", at);
        assert_eq!(off.event, "device_deactivated");
        assert_eq!((off.license_id.as_str(), off.session_id), ("lic", None));

        let end = ended(
            &session(UserKind::Interactive, false),
            at,
            EndReason::Inactivity,
        );
        assert_eq!(end.event, "ended");
        assert_eq!(end.detail.as_deref(), Some("inactivity"));
        assert_eq!(end.session_id.as_deref(), Some("s-1"));
    }

    #[test]
    fn a_borrow_is_granted_within_its_policy_and_refused_past_it_even_when_full() {
        // Arrange: 3 seats lent for up to 2 days, at most 1 away.
        let t = terms(LicenseModel::ConcurrentSessions, 3, |r| {
            r.max_borrow_days = Some(2);
            r.max_borrowed_seats = Some(1);
        });
        let borrow = |until: Timestamp| OpenRequest {
            new_id: "s".into(),
            license_id: "lic".into(),
            username: "bob".into(),
            kind: UserKind::Interactive,
            device_id: "laptop".into(),
            instance_id: "b".into(),
            borrow_until: Some(until),
            origin: Box::default(),
        };
        let grant = || Verdict::Grant { overdraft: false };
        let full = || Verdict::Refuse {
            refusal: RuleError::NoSeatAvailable { seats: 3 },
            denial: true,
        };
        let day = T0.plus_secs(86_400);

        // Act + Assert: within the policy; the limit counted only for a granted borrow.
        assert_eq!(borrow_verdict(grant(), &t, &borrow(day), T0, || 0), grant());
        assert!(matches!(
            borrow_verdict(grant(), &t, &borrow(day), T0, || 1),
            Verdict::Refuse {
                refusal: RuleError::BorrowLimitReached { limit: 1 },
                denial: false
            }
        ));
        assert_eq!(
            borrow_verdict(full(), &t, &borrow(day), T0, || panic!("not counted")),
            full()
        );
        // Past the policy: refused for that, full or not.
        let long = borrow(T0.plus_secs(3 * 86_400));
        for verdict in [grant(), full(), Verdict::Queue] {
            assert!(matches!(
                borrow_verdict(verdict, &t, &long, T0, || 0),
                Verdict::Refuse {
                    refusal: RuleError::BorrowTooLong(_),
                    denial: false
                }
            ));
        }
        // An ordinary open passes unchanged; its clock is an ordinary one.
        let plain = OpenRequest {
            borrow_until: None,
            origin: Box::default(),
            ..borrow(day)
        };
        assert_eq!(borrow_verdict(grant(), &t, &plain, T0, || 9), grant());
        assert!(!new_clock(&plain, &t, T0).is_borrowed());
        assert_eq!(new_clock(&borrow(day), &t, T0).expires_at, day);
    }
}
