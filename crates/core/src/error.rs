//! The rule layer's error type: each variant is a refusal a client can act on.

use leasehold_proto::{EndReason, ErrorCode};
use thiserror::Error;

pub type RuleResult<T> = Result<T, RuleError>;

/// `no_seat_available`'s message, in words that fit the count.
fn no_seat_message(seats: u32) -> String {
    match seats {
        0 => "the license has no seats".to_owned(),
        1 => "the license's only seat is in use".to_owned(),
        n => format!("all {n} seats of the license are in use"),
    }
}

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
    #[error("{}", no_seat_message(*.seats))]
    NoSeatAvailable { seats: u32 },
    /// The user already holds the most sessions allowed per user (409 `user_session_limit`).
    #[error("{user} already holds {max} sessions, the most this license allows per user")]
    UserSessionLimit { user: String, max: u32 },
    /// Outside the validity window or suspended (409 `license_not_active`).
    #[error("{0}")]
    LicenseNotActive(String),
    /// The user may not open sessions on this license (403 `user_inactive`).
    #[error("{0}")]
    UserNotActive(String),
    /// `node_locked`: the device is not activated (403 `device_not_activated`).
    #[error("device {0:?} is not activated on this license")]
    DeviceNotActivated(String),
    /// `registered_users`: every active-user slot is taken (409 `active_users_exhausted`).
    #[error("all {max} active-user slots of the license are taken")]
    ActiveUsersExhausted { max: u32 },
    /// `node_locked`: every device activation is taken (409 `activations_exhausted`).
    #[error("all {max} device activations of the license are taken")]
    ActivationsExhausted { max: u32 },
    /// Borrowing is off on the license, or not for this user (409 `borrow_not_allowed`).
    #[error("{0}")]
    BorrowNotAllowed(String),
    /// `borrow_until` is past the policy's longest borrow, the license's end, or not in the
    /// future (409 `borrow_too_long`).
    #[error("{0}")]
    BorrowTooLong(String),
    /// As many seats as the policy lends are borrowed already (409 `borrow_limit_reached`).
    #[error("{limit} seats of this license may be borrowed at once, and all of them are")]
    BorrowLimitReached { limit: u32 },
    /// The session has ended (410 `session_ended`).
    #[error("the session has ended ({})", .0.as_str())]
    SessionEnded(EndReason),
    /// Fewer free seats than a delegation asks for (409 `not_enough_free_seats`).
    #[error("{asked} seats were asked for, {free} are free")]
    NotEnoughFreeSeats { free: u32, asked: u32 },
    /// The license has no such delegation (404 `not_found`).
    #[error("delegation {0} not found")]
    DelegationUnknown(String),
    /// A delegation file whose signature or content does not verify (422
    /// `delegation_signature_invalid`).
    #[error("{0}")]
    DelegationSignatureInvalid(String),
    /// A delegation bound to another server's key (422 `delegation_wrong_server`).
    #[error("{0}")]
    DelegationWrongServer(String),
    /// Past the delegation's `expires_at` (409 `delegation_expired`).
    #[error("{0}")]
    DelegationExpired(String),
    /// Before the delegation's `not_before` (409 `delegation_not_yet_valid`).
    #[error("{0}")]
    DelegationNotYetValid(String),
    /// An older sequence than the one imported (409 `delegation_superseded`).
    #[error("{0}")]
    DelegationSuperseded(String),
    /// The delegation was returned (409 `delegation_returned`).
    #[error("{0}")]
    DelegationReturned(String),
}

impl RuleError {
    /// The stable error code clients see for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            RuleError::Invalid(_) | RuleError::UnknownPlan(_) => ErrorCode::InvalidRequest,
            RuleError::PlanCapExceeded { .. } => ErrorCode::PlanCapExceeded,
            RuleError::NoSeatAvailable { .. } => ErrorCode::NoSeatAvailable,
            RuleError::UserSessionLimit { .. } => ErrorCode::UserSessionLimit,
            RuleError::LicenseNotActive(_) => ErrorCode::LicenseNotActive,
            RuleError::UserNotActive(_) => ErrorCode::UserInactive,
            RuleError::DeviceNotActivated(_) => ErrorCode::DeviceNotActivated,
            RuleError::ActiveUsersExhausted { .. } => ErrorCode::ActiveUsersExhausted,
            RuleError::ActivationsExhausted { .. } => ErrorCode::ActivationsExhausted,
            RuleError::SessionEnded(_) => ErrorCode::SessionEnded,
            RuleError::BorrowNotAllowed(_) => ErrorCode::BorrowNotAllowed,
            RuleError::BorrowTooLong(_) => ErrorCode::BorrowTooLong,
            RuleError::BorrowLimitReached { .. } => ErrorCode::BorrowLimitReached,
            RuleError::NotEnoughFreeSeats { .. } => ErrorCode::NotEnoughFreeSeats,
            RuleError::DelegationUnknown(_) => ErrorCode::NotFound,
            RuleError::DelegationSignatureInvalid(_) => ErrorCode::DelegationSignatureInvalid,
            RuleError::DelegationWrongServer(_) => ErrorCode::DelegationWrongServer,
            RuleError::DelegationExpired(_) => ErrorCode::DelegationExpired,
            RuleError::DelegationNotYetValid(_) => ErrorCode::DelegationNotYetValid,
            RuleError::DelegationSuperseded(_) => ErrorCode::DelegationSuperseded,
            RuleError::DelegationReturned(_) => ErrorCode::DelegationReturned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_license_is_described_in_words_that_fit_its_seats() {
        let message = |seats| RuleError::NoSeatAvailable { seats }.to_string();
        assert_eq!(message(0), "the license has no seats");
        assert_eq!(message(1), "the license's only seat is in use");
        assert_eq!(message(2), "all 2 seats of the license are in use");
    }
}
