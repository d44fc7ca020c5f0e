//! A license's alerts (issue 17): the seat threshold (a percentage of the seats in use) and
//! the denial rate (denials within an hour), part of its terms; and the level a count is at
//! against them, which the server's dispatcher compares with the level last raised to raise
//! each crossing once (`license.threshold`, `license.full`, `license.denials`).

use leasehold_proto::LicenseAlerts;
use serde::{Deserialize, Serialize};

use crate::error::{RuleError, RuleResult};

/// Most denials per hour an alert may name.
pub const MAX_DENIALS_PER_HOUR: i64 = 1_000_000;

/// The alerts of a license; none set by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alerts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denials_per_hour: Option<u32>,
}

fn threshold(v: i64) -> RuleResult<u32> {
    if !(1..=100).contains(&v) {
        return Err(RuleError::Invalid(format!(
            "alerts.threshold_percent must be between 1 and 100, got {v}"
        )));
    }
    Ok(v as u32)
}

fn denials(v: i64) -> RuleResult<u32> {
    if !(1..=MAX_DENIALS_PER_HOUR).contains(&v) {
        return Err(RuleError::Invalid(format!(
            "alerts.denials_per_hour must be between 1 and {MAX_DENIALS_PER_HOUR}, got {v}"
        )));
    }
    Ok(v as u32)
}

impl Alerts {
    /// The alerts of a create request (`0` is refused there: leave the field out).
    pub fn from_request(req: Option<&LicenseAlerts>) -> RuleResult<Self> {
        let Some(req) = req else {
            return Ok(Alerts::default());
        };
        Ok(Alerts {
            threshold_percent: req.threshold_percent.map(threshold).transpose()?,
            denials_per_hour: req.denials_per_hour.map(denials).transpose()?,
        })
    }

    /// These alerts changed by a patch: a field set replaces (`0` removes), absent keeps.
    pub fn patched(self, patch: &LicenseAlerts) -> RuleResult<Self> {
        let mut next = self;
        match patch.threshold_percent {
            Some(0) => next.threshold_percent = None,
            Some(v) => next.threshold_percent = Some(threshold(v)?),
            None => {}
        }
        match patch.denials_per_hour {
            Some(0) => next.denials_per_hour = None,
            Some(v) => next.denials_per_hour = Some(denials(v)?),
            None => {}
        }
        Ok(next)
    }

    pub fn is_empty(&self) -> bool {
        self.threshold_percent.is_none() && self.denials_per_hour.is_none()
    }

    /// As the API shows them; `None` when no alert is set.
    pub fn view(&self) -> Option<LicenseAlerts> {
        (!self.is_empty()).then(|| LicenseAlerts {
            threshold_percent: self.threshold_percent.map(i64::from),
            denials_per_hour: self.denials_per_hour.map(i64::from),
        })
    }

    /// Whether `in_use` of `seats` is at or above the threshold (`None`: no threshold set).
    pub fn above_threshold(&self, in_use: u32, seats: u32) -> Option<bool> {
        let pct = u64::from(self.threshold_percent?);
        Some(seats > 0 && u64::from(in_use) * 100 >= pct * u64::from(seats))
    }

    /// Whether `denials` within the last hour reach the alert (`None`: no alert set).
    pub fn denials_reached(&self, denials: u64) -> Option<bool> {
        Some(denials >= u64::from(self.denials_per_hour?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_is_a_percentage_of_the_seats_reached_from_below() {
        let a = Alerts {
            threshold_percent: Some(80),
            ..Alerts::default()
        };
        assert_eq!(a.above_threshold(7, 10), Some(false));
        assert_eq!(a.above_threshold(8, 10), Some(true));
        assert_eq!(a.above_threshold(10, 10), Some(true));
        assert_eq!(a.above_threshold(0, 0), Some(false));
        assert_eq!(Alerts::default().above_threshold(10, 10), None);
    }

    #[test]
    fn requests_are_checked_and_a_patch_of_zero_removes_an_alert() {
        let bad = LicenseAlerts {
            threshold_percent: Some(101),
            denials_per_hour: None,
        };
        assert!(Alerts::from_request(Some(&bad)).is_err());
        let zero = LicenseAlerts {
            threshold_percent: None,
            denials_per_hour: Some(0),
        };
        assert!(Alerts::from_request(Some(&zero)).is_err());
        let set = Alerts::from_request(Some(&LicenseAlerts {
            threshold_percent: Some(90),
            denials_per_hour: Some(5),
        }))
        .unwrap();
        let next = set.patched(&zero).unwrap();
        assert_eq!(next.threshold_percent, Some(90));
        assert_eq!(next.denials_per_hour, None);
        assert_eq!(next.denials_reached(100), None);
        assert_eq!(set.denials_reached(4), Some(false));
        assert_eq!(set.denials_reached(5), Some(true));
    }
}
