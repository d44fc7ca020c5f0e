//! Leasehold licensing rules: pure functions over license and session state, with the current
//! time passed in as an argument. No I/O, no clock reads: storage backends and the server call
//! these functions so that every backend enforces exactly the same rules.

pub mod alerts;
pub mod borrow;
pub mod clock;
pub mod delegation;
pub mod error;
pub mod license;
pub mod names;
pub mod plans;
pub mod seats;
pub mod session;

pub use alerts::Alerts;
pub use borrow::{check_borrow, decide_borrow, BorrowPolicy};
pub use clock::Timestamp;
pub use error::{RuleError, RuleResult};
pub use license::{LicenseTerms, SeatSpec};
pub use names::{Username, ValidatedId};
pub use plans::{Plan, PlanCatalog};
pub use seats::{decide_open, OpenDecision, SeatView};
pub use session::{SessionClock, SessionState};
