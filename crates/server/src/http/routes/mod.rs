//! The route handlers, one file per resource. Each handler is thin: extract, call the
//! application layer, shape the answer.

pub mod accounts;
pub mod activations;
pub mod audit;
pub mod borrow;
pub mod delegations;
pub mod licenses;
pub mod oauth;
pub mod sessions;
pub mod system;
pub mod usage;
pub mod webhooks;
