//! Offline borrowing: a license's borrow policy (off unless set), the rule on a borrow request
//! (how long, by whom, before the license ends) and the rule on how many seats may be away at
//! once. Pure: the time is passed in, the count of live borrows comes from the store.
//!
//! ```text
//!   borrow(until) ──policy off / service user──────────────► refused: borrow_not_allowed
//!        │        ──until <= now, past max_borrow_days,
//!        │          or past the license's end ─────────────► refused: borrow_too_long
//!        │        ──borrowed now >= borrow_limit ───────────► refused: borrow_limit_reached
//!        └─ the seat rule grants ─► Live, no heartbeat, expires at `until`
//!              ├─ owner returns early ──────────────────────► Ended(returned)
//!              ├─ admin reclaims (or revokes, mass ends) ───► Ended(reclaimed | …): listed
//!              │                                               as a revoked lease until `until`
//!              └─ now >= until ─────────────────────────────► Ended(borrow_ended)
//! ```
//!
//! The limit on borrowed seats is the tighter of `max_borrowed_seats` and `seats -
//! borrow_lowwater` (FlexNet's `BORROW_LOWWATER`: seats that stay online, never borrowed).

use leasehold_proto::UserKind;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{RuleError, RuleResult};
use crate::license::LicenseTerms;

/// Upper bound of `max_borrow_days`: one year.
pub const MAX_BORROW_DAYS: u32 = 366;

const DAY_SECS: u64 = 24 * 3600;

/// How a license lends seats for offline use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BorrowPolicy {
    /// The longest borrow, in days (1 to `MAX_BORROW_DAYS`).
    pub max_days: u32,
    /// Most seats borrowed at once; `None`: no limit of its own.
    #[serde(default)]
    pub max_seats: Option<u32>,
    /// Seats that must stay online: never borrowed (`BORROW_LOWWATER`).
    #[serde(default)]
    pub lowwater: u32,
}

impl BorrowPolicy {
    /// The policy from its three settings; `max_days` 0 turns borrowing off (`None`).
    pub fn from_settings(
        max_days: i64,
        max_seats: Option<i64>,
        lowwater: Option<i64>,
    ) -> RuleResult<Option<Self>> {
        if max_days == 0 {
            if max_seats.is_some() || lowwater.is_some() {
                return Err(RuleError::Invalid(
                    "max_borrowed_seats and borrow_lowwater need max_borrow_days above 0".into(),
                ));
            }
            return Ok(None);
        }
        if !(1..=i64::from(MAX_BORROW_DAYS)).contains(&max_days) {
            return Err(RuleError::Invalid(format!(
                "max_borrow_days must be between 0 (off) and {MAX_BORROW_DAYS}, got {max_days}"
            )));
        }
        let count = |field: &str, v: i64| -> RuleResult<u32> {
            u32::try_from(v).map_err(|_| {
                RuleError::Invalid(format!(
                    "{field} must be between 0 and {}, got {v}",
                    u32::MAX
                ))
            })
        };
        Ok(Some(BorrowPolicy {
            max_days: max_days as u32,
            max_seats: max_seats
                .map(|v| count("max_borrowed_seats", v))
                .transpose()?,
            lowwater: lowwater
                .map(|v| count("borrow_lowwater", v))
                .transpose()?
                .unwrap_or(0),
        }))
    }

    /// Most seats of a license of `seats` that may be borrowed at once.
    pub fn limit(&self, seats: u32) -> u32 {
        let online_floor = seats.saturating_sub(self.lowwater);
        self.max_seats.map_or(online_floor, |m| m.min(online_floor))
    }
}

/// Whether a user of `kind` may borrow a seat of a license under `terms` at `now` until
/// `until`: borrowing is on, the user is interactive (a service's backend does not go offline),
/// `until` is after `now`, within `max_days`, and not after the license's end.
pub fn check_borrow(
    terms: &LicenseTerms,
    kind: UserKind,
    now: Timestamp,
    until: Timestamp,
) -> RuleResult<()> {
    let Some(policy) = terms.borrow else {
        return Err(RuleError::BorrowNotAllowed(
            "this license does not allow borrowing (max_borrow_days is not set)".into(),
        ));
    };
    if kind == UserKind::Service {
        return Err(RuleError::BorrowNotAllowed(
            "service users cannot borrow seats: only interactive users go offline".into(),
        ));
    }
    if until <= now {
        return Err(RuleError::BorrowTooLong(
            "borrow_until must be in the future".into(),
        ));
    }
    let longest = now.plus_secs(u64::from(policy.max_days) * DAY_SECS);
    if until > longest {
        return Err(RuleError::BorrowTooLong(format!(
            "this license lends seats for at most {} days",
            policy.max_days
        )));
    }
    if terms.expires_at.is_some_and(|end| until > end) {
        return Err(RuleError::BorrowTooLong(
            "borrow_until is after the license's end".into(),
        ));
    }
    Ok(())
}

/// Whether one more seat may be borrowed while `borrowed_now` are: within the policy's limit.
pub fn decide_borrow(terms: &LicenseTerms, borrowed_now: u32) -> RuleResult<()> {
    let Some(policy) = terms.borrow else {
        return Err(RuleError::BorrowNotAllowed(
            "this license does not allow borrowing (max_borrow_days is not set)".into(),
        ));
    };
    let limit = policy.limit(terms.seats);
    if borrowed_now >= limit {
        return Err(RuleError::BorrowLimitReached { limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plans::PlanCatalog;
    use leasehold_proto::{CreateLicense, LicenseModel};

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn terms(seats: i64, borrow: Option<BorrowPolicy>) -> LicenseTerms {
        let req = CreateLicense {
            account_id: "a".into(),
            product: "p".into(),
            model: LicenseModel::ConcurrentSessions,
            seats: Some(seats),
            ..Default::default()
        };
        let mut t = LicenseTerms::from_create(&req, &PlanCatalog::default()).unwrap();
        t.borrow = borrow;
        t
    }

    fn policy(max_days: u32, max_seats: Option<u32>, lowwater: u32) -> Option<BorrowPolicy> {
        Some(BorrowPolicy {
            max_days,
            max_seats,
            lowwater,
        })
    }

    #[test]
    fn borrowing_is_off_unless_the_license_sets_it() {
        let t = terms(5, None);
        let err = check_borrow(&t, UserKind::Interactive, T0, T0.plus_secs(60)).unwrap_err();
        assert!(matches!(err, RuleError::BorrowNotAllowed(_)));
        assert!(matches!(
            decide_borrow(&t, 0),
            Err(RuleError::BorrowNotAllowed(_))
        ));
    }

    #[test]
    fn a_borrow_is_refused_past_its_longest_period_or_the_license_end() {
        let mut t = terms(5, policy(3, None, 0));
        let ok = T0.plus_secs(3 * DAY_SECS);
        assert_eq!(check_borrow(&t, UserKind::Interactive, T0, ok), Ok(()));
        let long = check_borrow(&t, UserKind::Interactive, T0, ok.plus_millis(1));
        assert!(matches!(long, Err(RuleError::BorrowTooLong(_))));
        let past = check_borrow(&t, UserKind::Interactive, T0, T0);
        assert!(matches!(past, Err(RuleError::BorrowTooLong(_))));
        t.expires_at = Some(T0.plus_secs(DAY_SECS));
        let after_end = check_borrow(&t, UserKind::Interactive, T0, T0.plus_secs(2 * DAY_SECS));
        assert!(matches!(after_end, Err(RuleError::BorrowTooLong(_))));
        // Time walks on: the same `until` is within the period a day later.
        let later = T0.plus_secs(DAY_SECS);
        t.expires_at = None;
        let until = T0.plus_secs(4 * DAY_SECS);
        assert!(check_borrow(&t, UserKind::Interactive, T0, until).is_err());
        assert_eq!(
            check_borrow(&t, UserKind::Interactive, later, until),
            Ok(())
        );
    }

    #[test]
    fn service_users_do_not_borrow() {
        let t = terms(5, policy(3, None, 0));
        let err = check_borrow(&t, UserKind::Service, T0, T0.plus_secs(60)).unwrap_err();
        assert!(matches!(err, RuleError::BorrowNotAllowed(_)));
    }

    #[test]
    fn the_tighter_of_max_borrowed_seats_and_lowwater_limits_borrows() {
        // 5 seats, 2 must stay online: 3 may be away.
        let t = terms(5, policy(3, None, 2));
        assert_eq!(decide_borrow(&t, 2), Ok(()));
        assert_eq!(
            decide_borrow(&t, 3),
            Err(RuleError::BorrowLimitReached { limit: 3 })
        );
        // At most 1 away, however many stay online.
        let t = terms(5, policy(3, Some(1), 2));
        assert_eq!(decide_borrow(&t, 0), Ok(()));
        assert_eq!(
            decide_borrow(&t, 1),
            Err(RuleError::BorrowLimitReached { limit: 1 })
        );
        // A lowwater above the seats lends nothing.
        let t = terms(2, policy(3, None, 5));
        assert_eq!(
            decide_borrow(&t, 0),
            Err(RuleError::BorrowLimitReached { limit: 0 })
        );
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(BorrowPolicy::from_settings(0, None, None), Ok(None));
        assert!(BorrowPolicy::from_settings(0, Some(1), None).is_err());
        assert!(BorrowPolicy::from_settings(367, None, None).is_err());
        assert!(BorrowPolicy::from_settings(-1, None, None).is_err());
        assert!(BorrowPolicy::from_settings(3, Some(-1), None).is_err());
        assert_eq!(
            BorrowPolicy::from_settings(3, Some(2), Some(1)),
            Ok(policy(3, Some(2), 1))
        );
    }
}
