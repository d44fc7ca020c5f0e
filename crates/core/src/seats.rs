//! The seat rule: may this user open one more session on this license right now?
//!
//! A license has `seats` slots. Each reserved user is guaranteed one slot; everyone else shares
//! the remaining `seats - reserved` first come, first served. A reserved user's first live
//! session sits in their reserved slot; their further sessions use the shared pool. So:
//!
//! `shared_in_use = live_sessions - reserved_holders` (reserved users holding >= 1 session),
//! and a user may open iff they are reserved with no live session, or `shared_in_use` is below
//! `seats - reserved`. Total live sessions then never exceed `seats`.

use leasehold_proto::LicenseModel;

use crate::clock::Timestamp;
use crate::error::RuleError;
use crate::license::{Inactive, LicenseTerms};
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
    /// `registered_users`: whether the asking user is active on the license.
    pub user_active_on_license: bool,
    /// `registered_users`: users active on the license.
    pub active_users: u32,
    /// `node_locked`: whether the asking device is activated on the license.
    pub device_activated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenDecision {
    /// Take the user's reserved slot.
    GrantReserved,
    /// Take a slot of the shared pool; `overdraft` when it is beyond the purchased seats.
    GrantShared { overdraft: bool },
    /// Refused, with the rule that refused.
    Deny(RuleError),
}

impl OpenDecision {
    pub fn is_grant(&self) -> bool {
        !matches!(self, OpenDecision::Deny(_))
    }

    pub fn is_overdraft(&self) -> bool {
        matches!(self, OpenDecision::GrantShared { overdraft: true })
    }
}

/// Why a license is not active, as a message.
pub fn inactive_message(why: Inactive) -> String {
    match why {
        Inactive::NotYetStarted => "the license is not valid yet (before its starts_at)".into(),
        Inactive::Expired => "the license has expired (past its expires_at)".into(),
        Inactive::Suspended => "the license is suspended".into(),
    }
}

/// Decides whether `user` may open a new session at `now` (re-opens of an existing live
/// session of the same client instance are handled before, and take no new slot).
///
/// In order: the validity window, the model's gate (active user, activated device), the
/// per-user limit, then the seat count of the model.
pub fn decide_open(
    terms: &LicenseTerms,
    user: &Username,
    view: SeatView,
    now: Timestamp,
) -> OpenDecision {
    if let Err(why) = terms.availability(now) {
        return OpenDecision::Deny(RuleError::LicenseNotActive(inactive_message(why)));
    }
    match terms.model {
        LicenseModel::RegisteredUsers if !view.user_active_on_license => {
            return OpenDecision::Deny(RuleError::UserNotActive(format!(
                "{user} is not an active user of this license"
            )));
        }
        LicenseModel::NodeLocked if !view.device_activated => {
            return OpenDecision::Deny(RuleError::DeviceNotActivated(String::new()));
        }
        _ => {}
    }
    if let Some(max) = terms.max_sessions_per_user {
        if view.user_live_sessions >= max {
            return OpenDecision::Deny(RuleError::UserSessionLimit {
                user: user.to_string(),
                max,
            });
        }
    }
    // Seats delegated to local servers are not this license's to grant while they are away.
    let capacity = terms.capacity(now);
    let no_seat = || OpenDecision::Deny(RuleError::NoSeatAvailable { seats: capacity });
    match terms.model {
        LicenseModel::ConcurrentSessions => {
            if terms.reserved.contains(user) && view.user_live_sessions == 0 {
                return OpenDecision::GrantReserved;
            }
            let reserved = terms.reserved.len() as u64;
            let purchased = u64::from(capacity);
            let shared_capacity =
                (purchased + u64::from(terms.overdraft_seats())).saturating_sub(reserved);
            let shared_in_use =
                u64::from(view.live_sessions).saturating_sub(u64::from(view.reserved_holders));
            if shared_in_use < shared_capacity {
                OpenDecision::GrantShared {
                    overdraft: u64::from(view.live_sessions) >= purchased,
                }
            } else {
                no_seat()
            }
        }
        LicenseModel::RegisteredUsers => {
            // Sessions never outnumber the active users (nor the seats, after a downgrade).
            if view.live_sessions < view.active_users.min(capacity) {
                OpenDecision::GrantShared { overdraft: false }
            } else {
                no_seat()
            }
        }
        LicenseModel::NodeLocked => OpenDecision::GrantShared { overdraft: false },
    }
}

/// Strict first come, first served on a queueing license: a free seat belongs to the clients
/// already waiting, so a newcomer may take it only when nobody waits. Reserved users with no
/// session take their own reserved slot and never wait behind anyone.
pub fn must_queue(terms: &LicenseTerms, decision: &OpenDecision, waiting: usize) -> bool {
    match decision {
        OpenDecision::GrantReserved => false,
        OpenDecision::GrantShared { .. } => {
            terms.on_full == leasehold_proto::OnFull::Queue && waiting > 0
        }
        OpenDecision::Deny(RuleError::NoSeatAvailable { .. }) => {
            terms.on_full == leasehold_proto::OnFull::Queue
        }
        OpenDecision::Deny(_) => false,
    }
}

/// `registered_users`: may one more user become active? (`already_active` users are fine.)
pub fn decide_user_activation(
    terms: &LicenseTerms,
    active_users: u32,
    already_active: bool,
    now: Timestamp,
) -> Result<(), RuleError> {
    if terms.model != LicenseModel::RegisteredUsers {
        return Err(RuleError::Invalid(format!(
            "users are registered on registered_users licenses; this one is {}",
            terms.model.as_str()
        )));
    }
    // Slots delegated to a local server are not this license's while they are away.
    let max = terms.capacity(now);
    if already_active || active_users < max {
        Ok(())
    } else {
        Err(RuleError::ActiveUsersExhausted { max })
    }
}

/// `node_locked`: may one more device be activated? (Re-activating one is fine.)
pub fn decide_device_activation(
    terms: &LicenseTerms,
    activated: u32,
    already_activated: bool,
    now: Timestamp,
) -> Result<(), RuleError> {
    if terms.model != LicenseModel::NodeLocked {
        return Err(RuleError::Invalid(format!(
            "devices are activated on node_locked licenses; this one is {}",
            terms.model.as_str()
        )));
    }
    let max = terms.capacity(now);
    if already_activated || activated < max {
        Ok(())
    } else {
        Err(RuleError::ActivationsExhausted { max })
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
        active_users: std::collections::BTreeSet<Username>,
        devices: std::collections::BTreeSet<String>,
        /// The device the next open comes from.
        device: String,
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
                user_active_on_license: self.active_users.contains(who),
                active_users: self.active_users.len() as u32,
                device_activated: self.devices.contains(&self.device),
            }
        }

        fn open(&mut self, terms: &LicenseTerms, who: &str, now: Timestamp) -> OpenDecision {
            let who = user(who);
            let d = decide_open(terms, &who, self.view(terms, &who, now), now);
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
    const SHARED: OpenDecision = OpenDecision::GrantShared { overdraft: false };

    fn is_no_seat(d: &OpenDecision) -> bool {
        matches!(d, OpenDecision::Deny(RuleError::NoSeatAvailable { .. }))
    }

    #[test]
    fn a_reserved_user_gets_in_even_when_the_shared_pool_is_full() {
        let t = terms(3, &["boss"]);
        let mut m = Model::default();
        assert_eq!(m.open(&t, "a", T0), SHARED);
        assert_eq!(m.open(&t, "b", T0), SHARED);
        // Shared pool (3 - 1 reserved = 2) is full: c is refused, boss still gets in.
        assert!(is_no_seat(&m.open(&t, "c", T0)));
        assert_eq!(m.open(&t, "boss", T0), OpenDecision::GrantReserved);
        assert_eq!(m.live(T0), 3);
        // boss's second session would need the shared pool, which is full.
        assert!(is_no_seat(&m.open(&t, "boss", T0)));
    }

    #[test]
    fn a_reserved_users_extra_sessions_use_the_shared_pool() {
        let t = terms(3, &["boss"]);
        let mut m = Model::default();
        assert_eq!(m.open(&t, "boss", T0), OpenDecision::GrantReserved);
        assert_eq!(m.open(&t, "boss", T0), SHARED);
        assert_eq!(m.open(&t, "boss", T0), SHARED);
        assert!(is_no_seat(&m.open(&t, "a", T0)));
        assert_eq!(m.live(T0), 3);
    }

    #[test]
    fn reservations_do_not_bypass_inactivity() {
        let t = terms(2, &["boss"]);
        let mut m = Model::default();
        m.open(&t, "boss", T0);
        m.open(&t, "a", T0);
        assert!(is_no_seat(&m.open(&t, "b", T0)));
        // 61 s later every session has idled out: the seats are free again.
        let later = T0.plus_secs(61);
        assert_eq!(m.live(later), 0);
        assert_eq!(m.open(&t, "b", later), SHARED);
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
                    assert!(decide_open(&t, &user(r), v, T0).is_grant());
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
        assert!(is_no_seat(&m.open(&smaller, "d", T0)));
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;
    use crate::plans::PlanCatalog;
    use leasehold_proto::{CreateLicense, PatchLicense};

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn terms(
        model: LicenseModel,
        seats: i64,
        extra: impl FnOnce(&mut CreateLicense),
    ) -> LicenseTerms {
        let mut req = CreateLicense {
            account_id: "a".into(),
            product: "p".into(),
            model,
            seats: Some(seats),
            inactivity_timeout_secs: Some(60),
            ..Default::default()
        };
        extra(&mut req);
        LicenseTerms::from_create(&req, &PlanCatalog::default()).unwrap()
    }

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    fn view(live: u32, user_live: u32) -> SeatView {
        SeatView {
            live_sessions: live,
            user_live_sessions: user_live,
            ..Default::default()
        }
    }

    #[test]
    fn registered_users_open_only_while_active_and_never_beyond_the_active_count() {
        let t = terms(LicenseModel::RegisteredUsers, 3, |_| {});
        let inactive = SeatView {
            active_users: 2,
            ..view(0, 0)
        };
        assert_eq!(
            decide_open(&t, &user("eve"), inactive, T0),
            OpenDecision::Deny(RuleError::UserNotActive(
                "eve is not an active user of this license".into()
            ))
        );
        // Two active users: one of them may hold both sessions (two devices)...
        let active = |live, own| SeatView {
            user_active_on_license: true,
            active_users: 2,
            ..view(live, own)
        };
        assert!(decide_open(&t, &user("ann"), active(0, 0), T0).is_grant());
        assert!(decide_open(&t, &user("ann"), active(1, 1), T0).is_grant());
        // ...but the total never exceeds the two active users.
        assert_eq!(
            decide_open(&t, &user("bob"), active(2, 0), T0),
            OpenDecision::Deny(RuleError::NoSeatAvailable { seats: 3 })
        );
    }

    #[test]
    fn activating_users_beyond_the_seats_is_refused() {
        let t = terms(LicenseModel::RegisteredUsers, 2, |_| {});
        assert!(decide_user_activation(&t, 0, false, T0).is_ok());
        assert!(decide_user_activation(&t, 1, false, T0).is_ok());
        assert_eq!(
            decide_user_activation(&t, 2, false, T0),
            Err(RuleError::ActiveUsersExhausted { max: 2 })
        );
        // Re-activating an active user is idempotent.
        assert!(decide_user_activation(&t, 2, true, T0).is_ok());
        let floating = terms(LicenseModel::ConcurrentSessions, 2, |_| {});
        assert!(matches!(
            decide_user_activation(&floating, 0, false, T0),
            Err(RuleError::Invalid(_))
        ));
    }

    #[test]
    fn node_locked_licenses_need_an_activated_device_and_count_nothing_else() {
        let t = terms(LicenseModel::NodeLocked, 2, |_| {});
        assert_eq!(
            decide_open(&t, &user("ann"), view(0, 0), T0),
            OpenDecision::Deny(RuleError::DeviceNotActivated(String::new()))
        );
        let on_device = SeatView {
            device_activated: true,
            ..view(50, 10)
        };
        assert!(decide_open(&t, &user("ann"), on_device, T0).is_grant());
        assert!(decide_device_activation(&t, 1, false, T0).is_ok());
        assert_eq!(
            decide_device_activation(&t, 2, false, T0),
            Err(RuleError::ActivationsExhausted { max: 2 })
        );
        assert!(decide_device_activation(&t, 2, true, T0).is_ok());
    }

    #[test]
    fn the_per_user_limit_applies_before_the_seats() {
        let t = terms(LicenseModel::ConcurrentSessions, 10, |r| {
            r.max_sessions_per_user = Some(2)
        });
        assert!(decide_open(&t, &user("ann"), view(3, 1), T0).is_grant());
        assert_eq!(
            decide_open(&t, &user("ann"), view(3, 2), T0),
            OpenDecision::Deny(RuleError::UserSessionLimit {
                user: "ann".into(),
                max: 2
            })
        );
        assert!(decide_open(&t, &user("bob"), view(3, 0), T0).is_grant());
    }

    #[test]
    fn overdraft_sessions_are_granted_beyond_the_seats_and_marked() {
        let t = terms(LicenseModel::ConcurrentSessions, 10, |r| {
            r.overdraft_percent = Some(10)
        });
        assert_eq!(t.overdraft_seats(), 1);
        assert_eq!(
            decide_open(&t, &user("a"), view(9, 0), T0),
            OpenDecision::GrantShared { overdraft: false }
        );
        assert_eq!(
            decide_open(&t, &user("a"), view(10, 0), T0),
            OpenDecision::GrantShared { overdraft: true }
        );
        assert!(matches!(
            decide_open(&t, &user("a"), view(11, 0), T0),
            OpenDecision::Deny(RuleError::NoSeatAvailable { .. })
        ));
        let t = terms(LicenseModel::ConcurrentSessions, 3, |r| {
            r.overdraft_seats = Some(2)
        });
        assert!(decide_open(&t, &user("a"), view(4, 0), T0).is_overdraft());
        assert!(!decide_open(&t, &user("a"), view(5, 0), T0).is_grant());
        // Percentages round up: 15 % of 3 seats is 1 seat.
        let t = terms(LicenseModel::ConcurrentSessions, 3, |r| {
            r.overdraft_percent = Some(15)
        });
        assert_eq!(t.overdraft_seats(), 1);
    }

    #[test]
    fn the_validity_window_and_suspension_refuse_new_sessions() {
        let t = terms(LicenseModel::ConcurrentSessions, 5, |r| {
            r.starts_at = Some(T0.plus_secs(100).to_offset());
            r.expires_at = Some(T0.plus_secs(200).to_offset());
        });
        let not_active =
            |d: OpenDecision| matches!(d, OpenDecision::Deny(RuleError::LicenseNotActive(_)));
        assert!(not_active(decide_open(&t, &user("a"), view(0, 0), T0)));
        assert!(decide_open(&t, &user("a"), view(0, 0), T0.plus_secs(100)).is_grant());
        assert!(not_active(decide_open(
            &t,
            &user("a"),
            view(0, 0),
            T0.plus_secs(200)
        )));
        let suspended = t
            .apply_patch(
                &PatchLicense {
                    suspended: Some(true),
                    ..Default::default()
                },
                &PlanCatalog::default(),
            )
            .unwrap();
        assert!(not_active(decide_open(
            &suspended,
            &user("a"),
            view(0, 0),
            T0.plus_secs(150)
        )));
    }

    #[test]
    fn a_downgrade_below_the_sessions_in_use_refuses_until_under_the_limit() {
        let t = terms(LicenseModel::ConcurrentSessions, 5, |_| {});
        let smaller = t
            .apply_patch(
                &PatchLicense {
                    seats: Some(2),
                    ..Default::default()
                },
                &PlanCatalog::default(),
            )
            .unwrap();
        assert!(!decide_open(&smaller, &user("a"), view(4, 0), T0).is_grant());
        assert!(!decide_open(&smaller, &user("a"), view(2, 0), T0).is_grant());
        assert!(decide_open(&smaller, &user("a"), view(1, 0), T0).is_grant());
    }

    #[test]
    fn queueing_is_first_come_first_served_but_reserved_users_never_wait() {
        let t = terms(LicenseModel::ConcurrentSessions, 2, |r| {
            r.on_full = Some(leasehold_proto::OnFull::Queue);
            r.reserved = vec!["boss".into()];
            r.max_queue_wait_secs = Some(60);
        });
        let shared = OpenDecision::GrantShared { overdraft: false };
        let full = OpenDecision::Deny(RuleError::NoSeatAvailable { seats: 2 });
        // A free seat with nobody waiting: take it.
        assert!(!must_queue(&t, &shared, 0));
        // A free seat while others wait: it is theirs, queue behind them.
        assert!(must_queue(&t, &shared, 3));
        assert!(must_queue(&t, &full, 0));
        // The reserved slot is never queued for.
        assert!(!must_queue(&t, &OpenDecision::GrantReserved, 3));
        // Other refusals are answered at once.
        assert!(!must_queue(
            &t,
            &OpenDecision::Deny(RuleError::LicenseNotActive("x".into())),
            3
        ));
        // Waits are capped by the license, and zero on a deny license.
        assert_eq!(t.queue_wait_secs(Some(600)), 60);
        assert_eq!(t.queue_wait_secs(None), 0);
        let deny = terms(LicenseModel::ConcurrentSessions, 2, |_| {});
        assert_eq!(deny.queue_wait_secs(Some(30)), 0);
        assert!(!must_queue(&deny, &full, 0));
    }

    #[test]
    fn model_specific_terms_are_checked() {
        let plans = PlanCatalog::default();
        let mut req = CreateLicense {
            account_id: "a".into(),
            product: "p".into(),
            model: LicenseModel::NodeLocked,
            seats: Some(3),
            reserved: vec!["ann".into()],
            ..Default::default()
        };
        assert!(matches!(
            LicenseTerms::from_create(&req, &plans),
            Err(RuleError::Invalid(_))
        ));
        req.reserved.clear();
        req.overdraft_seats = Some(1);
        assert!(matches!(
            LicenseTerms::from_create(&req, &plans),
            Err(RuleError::Invalid(_))
        ));
        req.model = LicenseModel::ConcurrentSessions;
        req.overdraft_percent = Some(10);
        assert!(matches!(
            LicenseTerms::from_create(&req, &plans),
            Err(RuleError::Invalid(_))
        ));
        req.overdraft_percent = None;
        req.starts_at = Some(T0.to_offset());
        req.expires_at = Some(T0.to_offset());
        assert!(matches!(
            LicenseTerms::from_create(&req, &plans),
            Err(RuleError::Invalid(_))
        ));
        req.max_sessions_per_user = Some(0);
        req.expires_at = None;
        assert!(matches!(
            LicenseTerms::from_create(&req, &plans),
            Err(RuleError::Invalid(_))
        ));
    }
}
