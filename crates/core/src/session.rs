//! The life of one session: when it expires, what a heartbeat does, why it ended.
//!
//! ```text
//!   open ──► Live ──heartbeat (now < expires_at)──► Live (expires_at slides, capped by hard_end)
//!             │
//!             ├─ logout / revoke ─────────────────► Ended(logout | revoked)
//!             └─ now >= expires_at ───────────────► Ended(inactivity | lifetime)
//!
//!   borrow(until) ──► Borrowed ──heartbeat──► Borrowed (no slide: expires_at stays `until`)
//!                       ├─ return / reclaim ─► Ended(returned | reclaimed)
//!                       └─ now >= until ─────► Ended(borrow_ended)
//! ```
//! `expires_at = min(last_seen + inactivity_timeout, hard_end, license_end)`, where `hard_end` is
//! the absolute lifetime end (always set for service sessions, optional for interactive ones) and
//! `license_end` the end of the license's validity window. A heartbeat at or after `expires_at`
//! fails and never resurrects the session.
//!
//! A borrowed session (`borrow_until` set) lives offline: its expiry is pinned to
//! `min(borrow_until, license_end)`, heartbeats do not move it, it has no inactivity window and
//! no lifetime of its own. `borrow_until` is a wall-clock instant (the `exp` of the lease its
//! owner carries away): a step of the server's clock does not move it, and neither does a
//! restart; the borrow ends when the wall clock reaches it, as the offline lease does.

use leasehold_proto::{EndReason, UserKind};

use crate::clock::Timestamp;
use crate::error::{RuleError, RuleResult};
use crate::license::LicenseTerms;

/// The timing state of a live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionClock {
    pub opened_at: Timestamp,
    pub expires_at: Timestamp,
    /// Absolute end of life, if the session has one.
    pub hard_end: Option<Timestamp>,
    /// The license's `expires_at` when the expiry was last computed.
    pub license_end: Option<Timestamp>,
    /// Why the session ends if it reaches `license_end` (`LicenseTerms::end_reason`: the
    /// license's, or its delegation's). Not stored: set with `license_end` from the terms.
    pub license_end_reason: EndReason,
    /// A borrowed seat: when the borrow ends (see the module doc).
    pub borrow_until: Option<Timestamp>,
}

/// Whether a session is live or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Live,
    Ended(EndReason),
}

impl SessionClock {
    /// Timing of a session opened at `now` under `terms`.
    pub fn open(kind: UserKind, terms: &LicenseTerms, now: Timestamp) -> Self {
        let hard_end = match kind {
            UserKind::Service => Some(now.plus_secs(terms.service_session_lifetime_secs)),
            UserKind::Interactive => terms
                .interactive_session_lifetime_secs
                .map(|secs| now.plus_secs(secs)),
        };
        SessionClock {
            opened_at: now,
            expires_at: Self::slide(now, terms, hard_end),
            hard_end,
            license_end: terms.expires_at,
            license_end_reason: terms.end_reason(),
            borrow_until: None,
        }
    }

    /// Timing of a seat borrowed at `now` until `until` (the policy was checked:
    /// `crate::borrow::check_borrow`): no inactivity window, no lifetime, it expires at
    /// `until` (or at the license's end, if earlier).
    pub fn borrow(terms: &LicenseTerms, now: Timestamp, until: Timestamp) -> Self {
        SessionClock {
            opened_at: now,
            expires_at: terms.expires_at.map_or(until, |end| end.min(until)),
            hard_end: None,
            license_end: terms.expires_at,
            license_end_reason: terms.end_reason(),
            borrow_until: Some(until),
        }
    }

    /// Whether this is a borrowed seat.
    pub fn is_borrowed(&self) -> bool {
        self.borrow_until.is_some()
    }

    fn slide(now: Timestamp, terms: &LicenseTerms, hard_end: Option<Timestamp>) -> Timestamp {
        let idle_end = now.plus_secs(terms.inactivity_timeout_secs);
        [hard_end, terms.expires_at]
            .into_iter()
            .flatten()
            .fold(idle_end, Timestamp::min)
    }

    /// Brings the expiry forward to a license end set (or moved earlier) after the session
    /// opened. Answers whether `expires_at` changed.
    /// `cap_at_license_end` at the end of `terms`, with the reason sessions end there.
    pub fn cap_at_end_of(&mut self, terms: &LicenseTerms) -> bool {
        self.license_end_reason = terms.end_reason();
        self.cap_at_license_end(terms.expires_at)
    }

    pub fn cap_at_license_end(&mut self, license_end: Option<Timestamp>) -> bool {
        self.license_end = license_end;
        match license_end {
            Some(end) if end < self.expires_at => {
                self.expires_at = end;
                true
            }
            _ => false,
        }
    }

    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }

    /// Why the session ends when it reaches `expires_at`.
    pub fn expiry_reason(&self) -> EndReason {
        if self.license_end.is_some_and(|end| self.expires_at >= end) {
            return self.license_end_reason;
        }
        if self.borrow_until.is_some() {
            return EndReason::BorrowEnded;
        }
        match self.hard_end {
            Some(end) if self.expires_at >= end => EndReason::Lifetime,
            _ => EndReason::Inactivity,
        }
    }

    /// The wall clock stepped by `delta_ms` (an NTP correction, a resumed VM) while the session
    /// was live: it keeps its remaining life, so `expires_at` and `hard_end` move by the step.
    /// The license end is a calendar date and stays where it is: an expiry it capped stays
    /// capped, and a step past it ends the session there. `opened_at` stays as it was read.
    ///
    /// A borrowed seat does not move at all: `borrow_until` is the wall-clock `exp` of the
    /// lease its owner carries, and the borrow ends when the wall clock reaches it.
    pub fn shift_for_clock_step(&mut self, delta_ms: i64) {
        if self.borrow_until.is_some() {
            return;
        }
        let capped = self.license_end == Some(self.expires_at);
        self.hard_end = self
            .hard_end
            .map(|end| Timestamp::from_millis(end.millis().saturating_add(delta_ms)));
        self.expires_at = match self.license_end {
            Some(end) if capped => end,
            Some(end) => {
                Timestamp::from_millis(self.expires_at.millis().saturating_add(delta_ms)).min(end)
            }
            None => Timestamp::from_millis(self.expires_at.millis().saturating_add(delta_ms)),
        };
    }

    /// A live session read back at start, when the wall clock may have gone back while the
    /// server was down: its expiry and lifetime end are brought back to at most what a session
    /// opened at `now` would get, so no session holds its seat past its timeout by more than
    /// the step. Answers whether anything changed.
    ///
    /// A borrowed seat keeps its `borrow_until` (a wall-clock instant, see the module doc): only
    /// a license end earlier than it brings its expiry forward.
    pub fn clamp_at_start(&mut self, kind: UserKind, terms: &LicenseTerms, now: Timestamp) -> bool {
        if let Some(until) = self.borrow_until {
            let pinned = SessionClock::borrow(terms, self.opened_at, until).expires_at;
            if self.expires_at != pinned {
                self.expires_at = pinned;
                self.license_end = terms.expires_at;
                self.license_end_reason = terms.end_reason();
                return true;
            }
            return false;
        }
        let fresh = SessionClock::open(kind, terms, now);
        let mut changed = false;
        if let (Some(end), Some(longest)) = (self.hard_end, fresh.hard_end) {
            if end > longest {
                self.hard_end = Some(longest);
                changed = true;
            }
        }
        if self.expires_at > fresh.expires_at {
            self.expires_at = fresh.expires_at;
            changed = true;
        }
        changed
    }

    /// Records activity at `now`: slides the inactivity window, never past `hard_end`.
    /// Fails with the end reason when the session has already expired.
    pub fn heartbeat(&mut self, terms: &LicenseTerms, now: Timestamp) -> RuleResult<Timestamp> {
        if !self.is_live(now) {
            return Err(RuleError::SessionEnded(self.expiry_reason()));
        }
        self.license_end = terms.expires_at;
        self.license_end_reason = terms.end_reason();
        self.expires_at = match self.borrow_until {
            // A borrowed seat lives offline: activity does not move its end.
            Some(until) => terms.expires_at.map_or(until, |end| end.min(until)),
            None => Self::slide(now, terms, self.hard_end),
        };
        Ok(self.expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plans::PlanCatalog;
    use leasehold_proto::{CreateLicense, LicenseModel};

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn terms(inactivity: i64, service_lifetime: i64) -> LicenseTerms {
        let req = CreateLicense {
            account_id: "a".into(),
            product: "p".into(),
            model: LicenseModel::ConcurrentSessions,
            seats: Some(2),
            inactivity_timeout_secs: Some(inactivity),
            service_session_lifetime_secs: Some(service_lifetime),
            ..Default::default()
        };
        LicenseTerms::from_create(&req, &PlanCatalog::default()).unwrap()
    }

    fn borrowing(inactivity: i64, days: u32) -> LicenseTerms {
        let mut t = terms(inactivity, 3600);
        t.borrow = Some(crate::borrow::BorrowPolicy {
            max_days: days,
            max_seats: None,
            lowwater: 0,
        });
        t
    }

    #[test]
    fn a_borrowed_seat_lives_until_borrow_until_without_heartbeats() {
        // Arrange: a 60 s inactivity timeout; a seat borrowed for 3 days.
        let t = borrowing(60, 3);
        let until = T0.plus_secs(3 * 86_400);
        let mut s = SessionClock::borrow(&t, T0, until);

        // Act + Assert: walk 3 days forward an hour at a time, never a heartbeat: still live.
        let mut now = T0;
        while now.plus_secs(3600) < until {
            now = now.plus_secs(3600);
            assert!(s.is_live(now), "{now:?}");
        }
        // A heartbeat (the owner back online) does not move its end.
        assert_eq!(s.heartbeat(&t, now), Ok(until));
        assert_eq!(s.expires_at, until);
        // It ends at `until`, as a borrow.
        assert!(!s.is_live(until));
        assert_eq!(s.expiry_reason(), EndReason::BorrowEnded);
        assert_eq!(
            s.heartbeat(&t, until),
            Err(RuleError::SessionEnded(EndReason::BorrowEnded))
        );
    }

    #[test]
    fn a_borrow_ends_with_the_license_when_the_license_ends_first() {
        let mut t = borrowing(60, 3);
        let until = T0.plus_secs(86_400);
        let mut s = SessionClock::borrow(&t, T0, until);
        t.expires_at = Some(T0.plus_secs(3600));
        assert!(s.cap_at_license_end(t.expires_at));
        assert_eq!(s.expires_at, T0.plus_secs(3600));
        assert_eq!(s.expiry_reason(), EndReason::LicenseExpired);
    }

    #[test]
    fn a_clock_step_or_a_restart_does_not_move_a_borrow() {
        // Arrange
        let t = borrowing(60, 3);
        let until = T0.plus_secs(86_400);
        let mut s = SessionClock::borrow(&t, T0, until);

        // Act: steps both ways, and a restart with the clock 2 h back.
        s.shift_for_clock_step(7_200_000);
        assert_eq!((s.expires_at, s.borrow_until), (until, Some(until)));
        s.shift_for_clock_step(-7_200_000 * 2);
        assert_eq!(s.expires_at, until);
        let back = Timestamp::from_millis(T0.millis() - 7_200_000);
        assert!(!s.clamp_at_start(UserKind::Interactive, &t, back));

        // Assert: still ends at `until` exactly, not at a 60 s timeout after the restart.
        assert!(s.is_live(until.plus_millis(-1)));
        assert!(!s.is_live(until));
    }

    #[test]
    fn an_idle_interactive_session_expires_after_the_inactivity_timeout() {
        let t = terms(1200, 3600);
        let s = SessionClock::open(UserKind::Interactive, &t, T0);
        assert_eq!(s.expires_at, T0.plus_secs(1200));
        assert!(s.is_live(T0.plus_secs(1199)));
        assert!(!s.is_live(T0.plus_secs(1200)));
        assert_eq!(s.expiry_reason(), EndReason::Inactivity);
    }

    #[test]
    fn heartbeats_slide_the_inactivity_window() {
        let t = terms(60, 3600);
        let mut s = SessionClock::open(UserKind::Interactive, &t, T0);
        let mut now = T0;
        // Walk 10 minutes forward in 50 s steps: the session stays live throughout.
        for _ in 0..12 {
            now = now.plus_secs(50);
            assert_eq!(s.heartbeat(&t, now), Ok(now.plus_secs(60)));
        }
        assert!(s.is_live(now.plus_secs(59)));
        assert!(!s.is_live(now.plus_secs(60)));
    }

    #[test]
    fn service_sessions_end_at_their_lifetime_despite_heartbeats() {
        let t = terms(600, 3600);
        let mut s = SessionClock::open(UserKind::Service, &t, T0);
        let mut now = T0;
        for _ in 0..11 {
            now = now.plus_secs(300);
            s.heartbeat(&t, now).unwrap();
        }
        // 3300 s in: the window would slide to 3900 s but is capped at the 3600 s lifetime.
        assert_eq!(s.expires_at, T0.plus_secs(3600));
        assert_eq!(s.expiry_reason(), EndReason::Lifetime);
        assert_eq!(
            s.heartbeat(&t, T0.plus_secs(3600)),
            Err(RuleError::SessionEnded(EndReason::Lifetime))
        );
    }

    #[test]
    fn a_heartbeat_after_expiry_fails_and_does_not_resurrect() {
        let t = terms(30, 3600);
        let mut s = SessionClock::open(UserKind::Interactive, &t, T0);
        let late = T0.plus_secs(31);
        assert_eq!(
            s.heartbeat(&t, late),
            Err(RuleError::SessionEnded(EndReason::Inactivity))
        );
        assert_eq!(s.expires_at, T0.plus_secs(30));
        assert!(!s.is_live(late));
        // A second try is refused the same way.
        assert!(s.heartbeat(&t, late.plus_secs(1)).is_err());
    }

    #[test]
    fn sessions_end_with_the_license_and_say_so() {
        let mut t = terms(600, 3600);
        t.expires_at = Some(T0.plus_secs(1000));
        let mut s = SessionClock::open(UserKind::Interactive, &t, T0);
        s.heartbeat(&t, T0.plus_secs(500)).unwrap();
        assert_eq!(s.expires_at, T0.plus_secs(1000));
        assert_eq!(s.expiry_reason(), EndReason::LicenseExpired);
        assert_eq!(
            s.heartbeat(&t, T0.plus_secs(1000)),
            Err(RuleError::SessionEnded(EndReason::LicenseExpired))
        );
    }

    #[test]
    fn a_license_end_moved_earlier_caps_live_sessions() {
        let t = terms(600, 3600);
        let mut s = SessionClock::open(UserKind::Interactive, &t, T0);
        assert!(s.cap_at_license_end(Some(T0.plus_secs(100))));
        assert_eq!(s.expires_at, T0.plus_secs(100));
        assert_eq!(s.expiry_reason(), EndReason::LicenseExpired);
        // A later end changes nothing now (heartbeats will slide up to it).
        let mut s = SessionClock::open(UserKind::Interactive, &t, T0);
        assert!(!s.cap_at_license_end(Some(T0.plus_secs(10_000))));
        assert_eq!(s.expiry_reason(), EndReason::Inactivity);
    }

    #[test]
    fn interactive_sessions_may_have_an_optional_lifetime() {
        let mut t = terms(60, 3600);
        t.interactive_session_lifetime_secs = Some(100);
        let mut s = SessionClock::open(UserKind::Interactive, &t, T0);
        s.heartbeat(&t, T0.plus_secs(50)).unwrap();
        assert_eq!(s.expires_at, T0.plus_secs(100));
        assert_eq!(s.expiry_reason(), EndReason::Lifetime);
    }

    #[test]
    fn a_clock_step_keeps_the_remaining_life_of_a_session() {
        // Arrange: an idle session, 300 s into its 1200 s window; a service session's lifetime.
        let t = terms(1200, 3600);
        let mut idle = SessionClock::open(UserKind::Interactive, &t, T0);
        let mut service = SessionClock::open(UserKind::Service, &t, T0);
        let now = T0.plus_secs(300);

        // Act: the wall clock jumps 2 h ahead.
        idle.shift_for_clock_step(7_200_000);
        service.shift_for_clock_step(7_200_000);
        let stepped = now.plus_secs(7200);

        // Assert: 900 s of life left, as before the step; the lifetime moved with it.
        assert!(idle.is_live(stepped));
        assert_eq!(idle.expires_at, stepped.plus_secs(900));
        assert_eq!(service.hard_end, Some(T0.plus_secs(3600 + 7200)));

        // Act: and 2 h back again.
        idle.shift_for_clock_step(-7_200_000);
        assert_eq!(idle.expires_at, now.plus_secs(900));
        assert!(!idle.is_live(now.plus_secs(900)));
    }

    #[test]
    fn a_clock_step_does_not_move_the_license_end() {
        // Arrange: the license ends 600 s after the session opened.
        let mut t = terms(1200, 3600);
        t.expires_at = Some(T0.plus_secs(600));
        let mut capped = SessionClock::open(UserKind::Interactive, &t, T0);
        t.expires_at = Some(T0.plus_secs(1500));
        let mut near = SessionClock::open(UserKind::Interactive, &t, T0);

        // Act
        capped.shift_for_clock_step(-7_200_000);
        near.shift_for_clock_step(7_200_000);

        // Assert: capped stays at the license end; a step past it ends the session there.
        assert_eq!(capped.expires_at, T0.plus_secs(600));
        assert_eq!(near.expires_at, T0.plus_secs(1500));
        assert_eq!(near.expiry_reason(), EndReason::LicenseExpired);
    }

    #[test]
    fn a_session_read_back_after_the_clock_went_back_is_clamped() {
        // Arrange: sessions that got their timing before the wall clock went back 2 h.
        let t = terms(1200, 3600);
        let mut idle = SessionClock::open(UserKind::Interactive, &t, T0);
        let mut service = SessionClock::open(UserKind::Service, &t, T0);
        let back = Timestamp::from_millis(T0.millis() - 7_200_000);

        // Act
        assert!(idle.clamp_at_start(UserKind::Interactive, &t, back));
        assert!(service.clamp_at_start(UserKind::Service, &t, back));

        // Assert: no more than a session opened now would get.
        assert_eq!(idle.expires_at, back.plus_secs(1200));
        assert_eq!(service.hard_end, Some(back.plus_secs(3600)));
        // A clock that went forward (or did not move) changes nothing.
        let mut fine = SessionClock::open(UserKind::Interactive, &t, T0);
        assert!(!fine.clamp_at_start(UserKind::Interactive, &t, T0.plus_secs(60)));
    }
}
