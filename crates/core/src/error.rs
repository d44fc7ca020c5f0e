//! The rule layer's error type: each variant is a refusal a client can act on.

use leasehold_proto::EndReason;
use thiserror::Error;

pub type RuleResult<T> = Result<T, RuleError>;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    /// Input breaks a rule of the protocol (400/422 `invalid_request`).
    #[error("{0}")]
    Invalid(String),
    /// Plan cap would be exceeded (409 `plan_cap_exceeded`).
    #[error("plan {plan} allows at most {cap} seats, {requested} were requested")]
    PlanCapExceeded {
        plan: String,
        cap: u32,
        requested: u32,
    },
    /// Unknown plan name (422 `invalid_request`).
    #[error("unknown plan {0:?}")]
    UnknownPlan(String),
    /// Every seat is taken (409 `no_seat_available`).
    #[error("all {seats} seats of the license are in use")]
    NoSeatAvailable { seats: u32 },
    /// The session has ended (410 `session_ended`).
    #[error("the session has ended ({})", .0.as_str())]
    SessionEnded(EndReason),
}
