//! License terms: how many seats a license has, who holds reserved seats and how long sessions
//! live. Terms are built from a create request or by applying a patch, and are always valid.

use std::collections::BTreeSet;

use leasehold_proto::{CreateLicense, LicenseModel, OnFull, PatchLicense};
use serde::{Deserialize, Serialize};

use crate::alerts::Alerts;
use crate::borrow::BorrowPolicy;
use crate::clock::Timestamp;
use crate::delegation::{Delegated, DelegatedFrom};
use crate::error::{RuleError, RuleResult};
use crate::names::{Username, ValidatedId};
use crate::plans::PlanCatalog;

/// Default sliding inactivity timeout of sessions: 20 minutes.
pub const DEFAULT_INACTIVITY_TIMEOUT_SECS: u64 = 1200;
/// Default absolute lifetime of service sessions: 1 hour.
pub const DEFAULT_SERVICE_LIFETIME_SECS: u64 = 3600;
/// Upper bound of any timeout: 10 years, so that expiry arithmetic never overflows.
pub const MAX_TIMEOUT_SECS: u64 = 10 * 365 * 24 * 3600;
/// Default longest wait in a license's queue: 5 minutes.
pub const DEFAULT_MAX_QUEUE_WAIT_SECS: u64 = 300;
/// Upper bound of a queue wait: 1 hour.
pub const MAX_QUEUE_WAIT_SECS: u64 = 3600;
/// Upper bound of seats of one license.
pub const MAX_SEATS: u32 = 10_000_000;
/// The default heartbeat cadence is a third of the inactivity timeout, but never longer than
/// this: a crashed client's seat then goes at most one timeout after its last heartbeat, and
/// a live client's heartbeat is never more than a minute old (the default 20-minute timeout
/// advises 60 s, not 400 s).
pub const MAX_DEFAULT_HEARTBEAT_INTERVAL_SECS: u64 = 60;

/// Where the seat count comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeatSpec {
    Direct(u32),
    Plan { plan: String, extra_seats: u32 },
}

/// Sessions allowed beyond the purchased seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overdraft {
    #[default]
    None,
    Seats(u32),
    /// A percentage of the seats, rounded up.
    Percent(u32),
}

/// Why a license does not accept new sessions right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inactive {
    NotYetStarted,
    Expired,
    Suspended,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseTerms {
    #[serde(default)]
    pub model: LicenseModel,
    pub product: String,
    pub seat_spec: SeatSpec,
    /// Effective seats, resolved from `seat_spec` against the plan catalog.
    pub seats: u32,
    pub reserved: BTreeSet<Username>,
    pub inactivity_timeout_secs: u64,
    pub service_session_lifetime_secs: u64,
    pub interactive_session_lifetime_secs: Option<u64>,
    pub on_full: OnFull,
    #[serde(default = "default_max_queue_wait")]
    pub max_queue_wait_secs: u64,
    #[serde(default)]
    pub max_sessions_per_user: Option<u32>,
    #[serde(default)]
    pub overdraft: Overdraft,
    #[serde(default)]
    pub starts_at: Option<Timestamp>,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub suspended: bool,
    /// How often clients should heartbeat, when set apart from the inactivity timeout (shorter
    /// than it); `None`: the default cadence (`heartbeat_interval_secs()`).
    #[serde(default)]
    pub heartbeat_interval_secs: Option<u64>,
    /// Offline borrowing; `None` (the default): the license lends no seats.
    #[serde(default)]
    pub borrow: Option<BorrowPolicy>,
    /// Alerts near the seat cap and on denials (`crate::alerts`); none by default.
    #[serde(default, skip_serializing_if = "Alerts::is_empty")]
    pub alerts: Alerts,
    /// Seats delegated to local servers (dark sites), live or not (see `delegation`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegations: Vec<Delegated>,
    /// On a local server: the delegation this license was imported from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated_from: Option<DelegatedFrom>,
}

fn default_max_queue_wait() -> u64 {
    DEFAULT_MAX_QUEUE_WAIT_SECS
}

fn queue_wait(value: i64) -> RuleResult<u64> {
    if !(1..=MAX_QUEUE_WAIT_SECS as i64).contains(&value) {
        return Err(RuleError::Invalid(format!(
            "max_queue_wait_secs must be between 1 and {MAX_QUEUE_WAIT_SECS}, got {value}"
        )));
    }
    Ok(value as u64)
}

fn percent(value: i64) -> RuleResult<u32> {
    if !(0..=1000).contains(&value) {
        return Err(RuleError::Invalid(format!(
            "overdraft_percent must be between 0 and 1000, got {value}"
        )));
    }
    Ok(value as u32)
}

fn overdraft_from(seats: Option<i64>, pct: Option<i64>) -> RuleResult<Option<Overdraft>> {
    Ok(match (seats, pct) {
        (Some(_), Some(_)) => {
            return Err(RuleError::Invalid(
                "give either overdraft_seats or overdraft_percent, not both".into(),
            ))
        }
        (Some(0), None) | (None, Some(0)) => Some(Overdraft::None),
        (Some(n), None) => Some(Overdraft::Seats(count("overdraft_seats", n, 0)?)),
        (None, Some(p)) => Some(Overdraft::Percent(percent(p)?)),
        (None, None) => None,
    })
}

fn per_user_limit(value: i64, zero_clears: bool) -> RuleResult<Option<u32>> {
    if value == 0 && zero_clears {
        return Ok(None);
    }
    Ok(Some(count("max_sessions_per_user", value, 1)?))
}

fn count(field: &str, value: i64, min: i64) -> RuleResult<u32> {
    if value < min || value > i64::from(MAX_SEATS) {
        return Err(RuleError::Invalid(format!(
            "{field} must be between {min} and {MAX_SEATS}, got {value}"
        )));
    }
    Ok(value as u32)
}

fn timeout(field: &str, value: i64) -> RuleResult<u64> {
    if value < 1 || value as u64 > MAX_TIMEOUT_SECS {
        return Err(RuleError::Invalid(format!(
            "{field} must be between 1 and {MAX_TIMEOUT_SECS} seconds, got {value}"
        )));
    }
    Ok(value as u64)
}

fn reserved_set(names: &[String]) -> RuleResult<BTreeSet<Username>> {
    let mut set = BTreeSet::new();
    for name in names {
        let user = Username::parse(name)?;
        if !set.insert(user) {
            return Err(RuleError::Invalid(format!(
                "reserved user {name:?} is listed twice"
            )));
        }
    }
    Ok(set)
}

impl LicenseTerms {
    pub fn from_create(req: &CreateLicense, plans: &PlanCatalog) -> RuleResult<Self> {
        let seat_spec = match (&req.plan, req.seats) {
            (Some(_), Some(_)) => {
                return Err(RuleError::Invalid(
                    "give either seats or plan (+ extra_seats), not both".into(),
                ))
            }
            (None, None) => {
                return Err(RuleError::Invalid(
                    "a license needs seats, or a plan (+ extra_seats)".into(),
                ))
            }
            (None, Some(seats)) => {
                if req.extra_seats.is_some() {
                    return Err(RuleError::Invalid(
                        "extra_seats applies only to a license on a plan".into(),
                    ));
                }
                SeatSpec::Direct(count("seats", seats, 1)?)
            }
            (Some(plan), None) => SeatSpec::Plan {
                plan: plan.clone(),
                extra_seats: count("extra_seats", req.extra_seats.unwrap_or(0), 0)?,
            },
        };
        let terms = LicenseTerms {
            product: ValidatedId::parse("product", &req.product)?.into_string(),
            seats: 0,
            seat_spec,
            reserved: reserved_set(&req.reserved)?,
            inactivity_timeout_secs: req
                .inactivity_timeout_secs
                .map(|v| timeout("inactivity_timeout_secs", v))
                .transpose()?
                .unwrap_or(DEFAULT_INACTIVITY_TIMEOUT_SECS),
            service_session_lifetime_secs: req
                .service_session_lifetime_secs
                .map(|v| timeout("service_session_lifetime_secs", v))
                .transpose()?
                .unwrap_or(DEFAULT_SERVICE_LIFETIME_SECS),
            interactive_session_lifetime_secs: req
                .interactive_session_lifetime_secs
                .map(|v| timeout("interactive_session_lifetime_secs", v))
                .transpose()?,
            on_full: req.on_full.unwrap_or_default(),
            max_queue_wait_secs: req
                .max_queue_wait_secs
                .map(queue_wait)
                .transpose()?
                .unwrap_or(DEFAULT_MAX_QUEUE_WAIT_SECS),
            model: req.model,
            max_sessions_per_user: req
                .max_sessions_per_user
                .map(|v| per_user_limit(v, false))
                .transpose()?
                .flatten(),
            overdraft: overdraft_from(req.overdraft_seats, req.overdraft_percent)?
                .unwrap_or_default(),
            starts_at: req.starts_at.map(Timestamp::from_offset),
            expires_at: req.expires_at.map(Timestamp::from_offset),
            suspended: false,
            heartbeat_interval_secs: req
                .heartbeat_interval_secs
                .map(|v| timeout("heartbeat_interval_secs", v))
                .transpose()?,
            borrow: match req.max_borrow_days {
                Some(days) => {
                    BorrowPolicy::from_settings(days, req.max_borrowed_seats, req.borrow_lowwater)?
                }
                None if req.max_borrowed_seats.is_some() || req.borrow_lowwater.is_some() => {
                    return Err(RuleError::Invalid(
                        "max_borrowed_seats and borrow_lowwater need max_borrow_days".into(),
                    ))
                }
                None => None,
            },
            alerts: Alerts::from_request(req.alerts.as_ref())?,
            delegations: Vec::new(),
            delegated_from: None,
        };
        terms.resolved(plans)
    }

    /// Applies a patch; the result is validated as a whole (e.g. reserved users <= seats).
    pub fn apply_patch(&self, patch: &PatchLicense, plans: &PlanCatalog) -> RuleResult<Self> {
        let mut next = self.clone();
        if let Some(product) = &patch.product {
            next.product = ValidatedId::parse("product", product)?.into_string();
        }
        match (&patch.plan, patch.seats) {
            (Some(_), Some(_)) => {
                return Err(RuleError::Invalid(
                    "give either seats or plan (+ extra_seats), not both".into(),
                ))
            }
            (None, Some(seats)) => {
                if patch.extra_seats.is_some() {
                    return Err(RuleError::Invalid(
                        "extra_seats applies only to a license on a plan".into(),
                    ));
                }
                next.seat_spec = SeatSpec::Direct(count("seats", seats, 1)?);
            }
            (Some(plan), None) => {
                let extra = match (patch.extra_seats, &self.seat_spec) {
                    (Some(extra), _) => count("extra_seats", extra, 0)?,
                    (None, SeatSpec::Plan { extra_seats, .. }) => *extra_seats,
                    (None, SeatSpec::Direct(_)) => 0,
                };
                next.seat_spec = SeatSpec::Plan {
                    plan: plan.clone(),
                    extra_seats: extra,
                };
            }
            (None, None) => {
                if let Some(extra) = patch.extra_seats {
                    match &mut next.seat_spec {
                        SeatSpec::Plan { extra_seats, .. } => {
                            *extra_seats = count("extra_seats", extra, 0)?
                        }
                        SeatSpec::Direct(_) => {
                            return Err(RuleError::Invalid(
                                "extra_seats applies only to a license on a plan".into(),
                            ))
                        }
                    }
                }
            }
        }
        if let Some(reserved) = &patch.reserved {
            next.reserved = reserved_set(reserved)?;
        }
        if let Some(v) = patch.inactivity_timeout_secs {
            next.inactivity_timeout_secs = timeout("inactivity_timeout_secs", v)?;
        }
        if let Some(v) = patch.service_session_lifetime_secs {
            next.service_session_lifetime_secs = timeout("service_session_lifetime_secs", v)?;
        }
        if let Some(v) = patch.interactive_session_lifetime_secs {
            next.interactive_session_lifetime_secs =
                Some(timeout("interactive_session_lifetime_secs", v)?);
        }
        if let Some(on_full) = patch.on_full {
            next.on_full = on_full;
        }
        if let Some(v) = patch.max_queue_wait_secs {
            next.max_queue_wait_secs = queue_wait(v)?;
        }
        if let Some(v) = patch.max_sessions_per_user {
            next.max_sessions_per_user = per_user_limit(v, true)?;
        }
        if let Some(o) = overdraft_from(patch.overdraft_seats, patch.overdraft_percent)? {
            next.overdraft = o;
        }
        if let Some(at) = patch.starts_at {
            next.starts_at = Some(Timestamp::from_offset(at));
        }
        if let Some(at) = patch.expires_at {
            next.expires_at = Some(Timestamp::from_offset(at));
        }
        if let Some(suspended) = patch.suspended {
            next.suspended = suspended;
        }
        if let Some(v) = patch.heartbeat_interval_secs {
            // 0 goes back to the default cadence.
            next.heartbeat_interval_secs = match v {
                0 => None,
                v => Some(timeout("heartbeat_interval_secs", v)?),
            };
        }
        if patch.max_borrow_days.is_some()
            || patch.max_borrowed_seats.is_some()
            || patch.borrow_lowwater.is_some()
        {
            // Unset parts keep their value; `max_borrow_days: 0` turns borrowing off.
            let current = self.borrow;
            let days = match (patch.max_borrow_days, current) {
                (Some(d), _) => d,
                (None, Some(p)) => i64::from(p.max_days),
                (None, None) => {
                    return Err(RuleError::Invalid(
                        "max_borrowed_seats and borrow_lowwater need max_borrow_days".into(),
                    ))
                }
            };
            let (seats, lowwater) = if days == 0 {
                (patch.max_borrowed_seats, patch.borrow_lowwater)
            } else {
                (
                    match patch.max_borrowed_seats {
                        // 0 removes the limit of its own.
                        Some(0) => None,
                        Some(n) => Some(n),
                        None => current.and_then(|p| p.max_seats).map(i64::from),
                    },
                    patch
                        .borrow_lowwater
                        .or(current.map(|p| i64::from(p.lowwater))),
                )
            };
            next.borrow = BorrowPolicy::from_settings(days, seats, lowwater)?;
        }
        if let Some(alerts) = &patch.alerts {
            next.alerts = next.alerts.patched(alerts)?;
        }
        next.resolved(plans)
    }

    /// Resolves the effective seat count and checks the terms as a whole.
    fn resolved(mut self, plans: &PlanCatalog) -> RuleResult<Self> {
        self.seats = match &self.seat_spec {
            SeatSpec::Direct(seats) => *seats,
            SeatSpec::Plan { plan, extra_seats } => {
                let p = plans.get(plan)?;
                let requested = p.base_seats.saturating_add(*extra_seats);
                if requested > p.max_seats {
                    return Err(RuleError::PlanCapExceeded {
                        plan: plan.clone(),
                        cap: p.max_seats,
                        requested,
                    });
                }
                requested
            }
        };
        if self.seats == 0 {
            return Err(RuleError::Invalid(
                "a license needs at least one seat".into(),
            ));
        }
        if self.model != LicenseModel::ConcurrentSessions {
            if !self.reserved.is_empty() {
                return Err(RuleError::Invalid(format!(
                    "reserved seats apply to concurrent_sessions licenses, not {}",
                    self.model.as_str()
                )));
            }
            if self.overdraft != Overdraft::None {
                return Err(RuleError::Invalid(format!(
                    "overdraft applies to concurrent_sessions licenses, not {}",
                    self.model.as_str()
                )));
            }
        }
        if let (Some(start), Some(end)) = (self.starts_at, self.expires_at) {
            if start >= end {
                return Err(RuleError::Invalid(
                    "starts_at must be before expires_at".into(),
                ));
            }
        }
        if let Some(interval) = self.heartbeat_interval_secs {
            if interval >= self.inactivity_timeout_secs {
                return Err(RuleError::Invalid(format!(
                    "heartbeat_interval_secs ({interval}) must be shorter than \
                     inactivity_timeout_secs ({}): a session would expire between two heartbeats",
                    self.inactivity_timeout_secs
                )));
            }
        }
        if self.reserved.len() as u64 > u64::from(self.seats) {
            return Err(RuleError::Invalid(format!(
                "{} reserved users do not fit in {} seats",
                self.reserved.len(),
                self.seats
            )));
        }
        Ok(self)
    }

    pub fn plan(&self) -> Option<&str> {
        match &self.seat_spec {
            SeatSpec::Plan { plan, .. } => Some(plan),
            SeatSpec::Direct(_) => None,
        }
    }

    pub fn extra_seats(&self) -> u32 {
        match &self.seat_spec {
            SeatSpec::Plan { extra_seats, .. } => *extra_seats,
            SeatSpec::Direct(_) => 0,
        }
    }

    /// How long an opener asking to wait `requested` seconds may wait: 0 unless the license
    /// queues, and never more than its maximum.
    pub fn queue_wait_secs(&self, requested: Option<u64>) -> u64 {
        match self.on_full {
            OnFull::Queue => requested.unwrap_or(0).min(self.max_queue_wait_secs),
            OnFull::Deny => 0,
        }
    }

    /// Sessions allowed beyond `seats`.
    pub fn overdraft_seats(&self) -> u32 {
        match self.overdraft {
            Overdraft::None => 0,
            Overdraft::Seats(n) => n,
            Overdraft::Percent(p) => {
                let extra = (u64::from(self.seats) * u64::from(p)).div_ceil(100);
                extra.min(u64::from(MAX_SEATS)) as u32
            }
        }
    }

    /// Whether the license accepts new sessions at `now`.
    pub fn availability(&self, now: Timestamp) -> Result<(), Inactive> {
        if self.suspended {
            return Err(Inactive::Suspended);
        }
        if self.starts_at.is_some_and(|start| now < start) {
            return Err(Inactive::NotYetStarted);
        }
        if self.expires_at.is_some_and(|end| now >= end) {
            return Err(Inactive::Expired);
        }
        Ok(())
    }

    /// How often a client should heartbeat: the license's own cadence when set; otherwise a
    /// third of the inactivity timeout, at most `MAX_DEFAULT_HEARTBEAT_INTERVAL_SECS` and at
    /// least 1 s.
    pub fn heartbeat_interval_secs(&self) -> u64 {
        self.heartbeat_interval_secs.unwrap_or_else(|| {
            (self.inactivity_timeout_secs / 3).clamp(1, MAX_DEFAULT_HEARTBEAT_INTERVAL_SECS)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_proto::LicenseModel;

    fn create(seats: Option<i64>, plan: Option<&str>, extra: Option<i64>) -> CreateLicense {
        CreateLicense {
            account_id: "acc".into(),
            product: "cad".into(),
            model: LicenseModel::ConcurrentSessions,
            seats,
            plan: plan.map(str::to_owned),
            extra_seats: extra,
            ..Default::default()
        }
    }

    #[test]
    fn plan_seats_are_base_plus_extra() {
        let plans = PlanCatalog::default();
        let t =
            LicenseTerms::from_create(&create(None, Some("small-business-basic"), Some(4)), &plans)
                .unwrap();
        assert_eq!(t.seats, 7);
        let t =
            LicenseTerms::from_create(&create(None, Some("small-business-advanced"), None), &plans)
                .unwrap();
        assert_eq!(t.seats, 5);
    }

    #[test]
    fn plan_cap_refuses_extra_seats_above_it() {
        let plans = PlanCatalog::default();
        let ok = LicenseTerms::from_create(
            &create(None, Some("small-business-basic"), Some(32)),
            &plans,
        );
        assert_eq!(ok.unwrap().seats, 35);
        let err = LicenseTerms::from_create(
            &create(None, Some("small-business-basic"), Some(33)),
            &plans,
        );
        assert_eq!(
            err,
            Err(RuleError::PlanCapExceeded {
                plan: "small-business-basic".into(),
                cap: 35,
                requested: 36
            })
        );
        // The cap also holds when extra seats are added later.
        let t =
            LicenseTerms::from_create(&create(None, Some("small-business-advanced"), None), &plans)
                .unwrap();
        let patch = PatchLicense {
            extra_seats: Some(31),
            ..Default::default()
        };
        assert!(matches!(
            t.apply_patch(&patch, &plans),
            Err(RuleError::PlanCapExceeded { .. })
        ));
    }

    #[test]
    fn zero_negative_and_ambiguous_seats_are_invalid() {
        let plans = PlanCatalog::default();
        for req in [
            create(Some(0), None, None),
            create(Some(-3), None, None),
            create(None, None, None),
            create(Some(3), Some("small-business-basic"), None),
            create(Some(3), None, Some(1)),
            create(None, Some("small-business-basic"), Some(-1)),
        ] {
            assert!(matches!(
                LicenseTerms::from_create(&req, &plans),
                Err(RuleError::Invalid(_))
            ));
        }
        assert_eq!(
            LicenseTerms::from_create(&create(None, Some("gold"), None), &plans),
            Err(RuleError::UnknownPlan("gold".into()))
        );
    }

    #[test]
    fn reserved_users_must_fit_in_the_seats_and_be_distinct() {
        let plans = PlanCatalog::default();
        let mut req = create(Some(1), None, None);
        req.reserved = vec!["a".into(), "b".into()];
        assert!(LicenseTerms::from_create(&req, &plans).is_err());
        req.seats = Some(2);
        assert!(LicenseTerms::from_create(&req, &plans).is_ok());
        req.reserved = vec!["a".into(), "a".into()];
        assert!(LicenseTerms::from_create(&req, &plans).is_err());
    }

    #[test]
    fn timeouts_accept_one_second_and_refuse_zero() {
        let plans = PlanCatalog::default();
        let mut req = create(Some(1), None, None);
        req.inactivity_timeout_secs = Some(1);
        let t = LicenseTerms::from_create(&req, &plans).unwrap();
        assert_eq!(t.inactivity_timeout_secs, 1);
        assert_eq!(t.heartbeat_interval_secs(), 1);
        req.inactivity_timeout_secs = Some(0);
        assert!(LicenseTerms::from_create(&req, &plans).is_err());
        let t = LicenseTerms::from_create(&create(Some(1), None, None), &plans).unwrap();
        assert_eq!(t.inactivity_timeout_secs, 1200);
        assert_eq!(t.service_session_lifetime_secs, 3600);
    }

    #[test]
    fn heartbeat_cadence_defaults_to_a_third_of_the_timeout_at_most_a_minute() {
        let plans = PlanCatalog::default();
        let mut req = create(Some(1), None, None);
        // The default 20-minute timeout: 60 s, not 400 s.
        let t = LicenseTerms::from_create(&req, &plans).unwrap();
        assert_eq!(t.heartbeat_interval_secs(), 60);
        req.inactivity_timeout_secs = Some(90);
        let t = LicenseTerms::from_create(&req, &plans).unwrap();
        assert_eq!(t.heartbeat_interval_secs(), 30);
        req.inactivity_timeout_secs = Some(2);
        assert_eq!(
            LicenseTerms::from_create(&req, &plans)
                .unwrap()
                .heartbeat_interval_secs(),
            1
        );
    }

    #[test]
    fn heartbeat_cadence_is_set_apart_from_the_timeout_and_shorter_than_it() {
        let plans = PlanCatalog::default();
        let mut req = create(Some(1), None, None);
        req.heartbeat_interval_secs = Some(5);
        let t = LicenseTerms::from_create(&req, &plans).unwrap();
        assert_eq!(t.heartbeat_interval_secs(), 5);
        assert_eq!(t.inactivity_timeout_secs, 1200);
        // Equal to or longer than the timeout: a session would expire between two beats.
        req.inactivity_timeout_secs = Some(5);
        let err = LicenseTerms::from_create(&req, &plans).unwrap_err();
        assert!(
            matches!(&err, RuleError::Invalid(m) if m.contains("shorter than")),
            "{err:?}"
        );
        req.heartbeat_interval_secs = Some(0);
        assert!(LicenseTerms::from_create(&req, &plans).is_err());
        // A patch sets it, 0 brings back the default, and a shorter timeout is checked
        // against it.
        let patch = |hb: Option<i64>, timeout: Option<i64>| PatchLicense {
            heartbeat_interval_secs: hb,
            inactivity_timeout_secs: timeout,
            ..Default::default()
        };
        let t = t.apply_patch(&patch(Some(10), None), &plans).unwrap();
        assert_eq!(t.heartbeat_interval_secs(), 10);
        assert!(t.apply_patch(&patch(None, Some(10)), &plans).is_err());
        let t = t.apply_patch(&patch(Some(0), Some(30)), &plans).unwrap();
        assert_eq!(t.heartbeat_interval_secs, None);
        assert_eq!(t.heartbeat_interval_secs(), 10);
        // Terms stored before the field existed read as the default cadence.
        let mut json = serde_json::to_value(&t).unwrap();
        json.as_object_mut()
            .unwrap()
            .remove("heartbeat_interval_secs");
        let old: LicenseTerms = serde_json::from_value(json).unwrap();
        assert_eq!(old.heartbeat_interval_secs(), 10);
    }
}
