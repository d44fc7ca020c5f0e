//! The seat rule: may this user open one more session on this license right now?
//!
//! A license has `seats` slots. Each reserved user is guaranteed one slot; everyone else shares
//! the remaining `seats - reserved` first come, first served. A reserved user's first live
//! session sits in their reserved slot; their further sessions use the shared pool. So:
//!
//! `shared_in_use = live_sessions - reserved_holders` (reserved users holding >= 1 session),
//! and a user may open iff they are reserved with no live session, or `shared_in_use` is below
//! `seats - reserved`. Total live sessions then never exceed `seats`.

use crate::license::LicenseTerms;
use crate::names::Username;

/// What the store knows about a license's live sessions at the moment of deciding.
/// Expired sessions must already be excluded (reclaimed) by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeatView {
    /// Live sessions on the license.
    pub live_sessions: u32,
    /// Reserved users (per the current terms) holding at least one live session.
    pub reserved_holders: u32,
    /// Live sessions of the user who asks.
    pub user_live_sessions: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenDecision {
    /// Take the user's reserved slot.
    GrantReserved,
    /// Take a slot of the shared pool.
    GrantShared,
    /// Every slot the user may use is taken.
    Deny,
}

impl OpenDecision {
    pub fn is_grant(self) -> bool {
        !matches!(self, OpenDecision::Deny)
    }
}

/// Decides whether `user` may open a new session (re-opens of an existing live session of the
/// same client instance are handled before, and take no new slot).
pub fn decide_open(terms: &LicenseTerms, user: &Username, view: SeatView) -> OpenDecision {
    if terms.reserved.contains(user) && view.user_live_sessions == 0 {
        return OpenDecision::GrantReserved;
    }
    let reserved = terms.reserved.len() as u64;
    let shared_capacity = u64::from(terms.seats).saturating_sub(reserved);
    let shared_in_use =
        u64::from(view.live_sessions).saturating_sub(u64::from(view.reserved_holders));
    if shared_in_use < shared_capacity {
        OpenDecision::GrantShared
    } else {
        OpenDecision::Deny
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plans::PlanCatalog;
    use crate::session::SessionClock;
    use crate::Timestamp;
    use leasehold_proto::{CreateLicense, LicenseModel, UserKind};
    use std::collections::BTreeMap;

    fn terms(seats: i64, reserved: &[&str]) -> LicenseTerms {
        let req = CreateLicense {
            account_id: "a".into(),
            product: "p".into(),
            model: LicenseModel::ConcurrentSessions,
            seats: Some(seats),
            reserved: reserved.iter().map(|s| s.to_string()).collect(),
            inactivity_timeout_secs: Some(60),
            ..Default::default()
        };
        LicenseTerms::from_create(&req, &PlanCatalog::default()).unwrap()
    }

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    /// A tiny model of a license's live sessions, to drive the rule through sequences.
    #[derive(Default)]
    struct Model {
        sessions: Vec<(Username, SessionClock)>,
    }

    impl Model {
        fn view(&self, terms: &LicenseTerms, who: &Username, now: Timestamp) -> SeatView {
            let mut per_user: BTreeMap<&Username, u32> = BTreeMap::new();
            for (u, c) in &self.sessions {
                if c.is_live(now) {
                    *per_user.entry(u).or_default() += 1;
                }
            }
            SeatView {
                live_sessions: per_user.values().sum(),
                reserved_holders: terms
                    .reserved
                    .iter()
                    .filter(|u| per_user.contains_key(u))
                    .count() as u32,
                user_live_sessions: per_user.get(who).copied().unwrap_or(0),
            }
        }

        fn open(&mut self, terms: &LicenseTerms, who: &str, now: Timestamp) -> OpenDecision {
            let who = user(who);
            let d = decide_open(terms, &who, self.view(terms, &who, now));
            if d.is_grant() {
                self.sessions
                    .push((who, SessionClock::open(UserKind::Interactive, terms, now)));
            }
            d
        }

        fn live(&self, now: Timestamp) -> usize {
            self.sessions.iter().filter(|(_, c)| c.is_live(now)).count()
        }
    }

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    #[test]
    fn a_reserved_user_gets_in_even_when_the_shared_pool_is_full() {
        let t = terms(3, &["boss"]);
        let mut m = Model::default();
        assert_eq!(m.open(&t, "a", T0), OpenDecision::GrantShared);
        assert_eq!(m.open(&t, "b", T0), OpenDecision::GrantShared);
        // Shared pool (3 - 1 reserved = 2) is full: c is refused, boss still gets in.
        assert_eq!(m.open(&t, "c", T0), OpenDecision::Deny);
        assert_eq!(m.open(&t, "boss", T0), OpenDecision::GrantReserved);
        assert_eq!(m.live(T0), 3);
        // boss's second session would need the shared pool, which is full.
        assert_eq!(m.open(&t, "boss", T0), OpenDecision::Deny);
    }

    #[test]
    fn a_reserved_users_extra_sessions_use_the_shared_pool() {
        let t = terms(3, &["boss"]);
        let mut m = Model::default();
        assert_eq!(m.open(&t, "boss", T0), OpenDecision::GrantReserved);
        assert_eq!(m.open(&t, "boss", T0), OpenDecision::GrantShared);
        assert_eq!(m.open(&t, "boss", T0), OpenDecision::GrantShared);
        assert_eq!(m.open(&t, "a", T0), OpenDecision::Deny);
        assert_eq!(m.live(T0), 3);
    }

    #[test]
    fn reservations_do_not_bypass_inactivity() {
        let t = terms(2, &["boss"]);
        let mut m = Model::default();
        m.open(&t, "boss", T0);
        m.open(&t, "a", T0);
        assert_eq!(m.open(&t, "b", T0), OpenDecision::Deny);
        // 61 s later every session has idled out: the seats are free again.
        let later = T0.plus_secs(61);
        assert_eq!(m.live(later), 0);
        assert_eq!(m.open(&t, "b", later), OpenDecision::GrantShared);
    }

    #[test]
    fn live_sessions_never_exceed_seats_whatever_the_order() {
        // Exhaustive over small cases: every sequence of openers from a pool of users.
        let users = ["r1", "r2", "a", "b", "c"];
        let t = terms(4, &["r1", "r2"]);
        for seq in 0..(5u32.pow(7)) {
            let mut m = Model::default();
            let mut s = seq;
            for _ in 0..7 {
                let who = users[(s % 5) as usize];
                s /= 5;
                m.open(&t, who, T0);
                assert!(m.live(T0) <= 4);
            }
            // Whatever happened, a reserved user with no session can still get in.
            for r in ["r1", "r2"] {
                let v = m.view(&t, &user(r), T0);
                if v.user_live_sessions == 0 {
                    assert!(decide_open(&t, &user(r), v).is_grant());
                }
            }
        }
    }

    #[test]
    fn shrinking_the_license_below_its_use_refuses_new_opens() {
        let t = terms(3, &[]);
        let mut m = Model::default();
        for u in ["a", "b", "c"] {
            m.open(&t, u, T0);
        }
        let smaller = terms(2, &[]);
        assert_eq!(m.open(&smaller, "d", T0), OpenDecision::Deny);
    }
}
