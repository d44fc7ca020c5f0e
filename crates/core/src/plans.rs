//! Plans: named seat packages (base seats, cap on base + extra seats). Plans are configuration,
//! not code: the catalog is built from the server's TOML file, with two shipped defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{RuleError, RuleResult};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Seats included in the plan.
    pub base_seats: u32,
    /// Most seats a license on this plan may have, extra seats included.
    pub max_seats: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanCatalog {
    plans: BTreeMap<String, Plan>,
}

impl Default for PlanCatalog {
    /// The shipped plans: `small-business-basic` (3 seats, cap 35) and
    /// `small-business-advanced` (5 seats, cap 35).
    fn default() -> Self {
        let mut plans = BTreeMap::new();
        plans.insert(
            "small-business-basic".to_owned(),
            Plan {
                base_seats: 3,
                max_seats: 35,
            },
        );
        plans.insert(
            "small-business-advanced".to_owned(),
            Plan {
                base_seats: 5,
                max_seats: 35,
            },
        );
        PlanCatalog { plans }
    }
}

impl PlanCatalog {
    /// The defaults, overridden and extended by `configured` (same name replaces a default).
    pub fn with_overrides(configured: BTreeMap<String, Plan>) -> RuleResult<Self> {
        let mut catalog = PlanCatalog::default();
        for (name, plan) in configured {
            if plan.base_seats > plan.max_seats {
                return Err(RuleError::Invalid(format!(
                    "plan {name}: base_seats ({}) is above max_seats ({})",
                    plan.base_seats, plan.max_seats
                )));
            }
            catalog.plans.insert(name, plan);
        }
        Ok(catalog)
    }

    pub fn get(&self, name: &str) -> RuleResult<&Plan> {
        self.plans
            .get(name)
            .ok_or_else(|| RuleError::UnknownPlan(name.to_owned()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Plan)> {
        self.plans.iter()
    }
}
