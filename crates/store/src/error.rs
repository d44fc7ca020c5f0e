//! The store's error type: what a backend answers when it cannot do what was asked.

use leasehold_core::RuleError;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such record (404 `not_found`).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The record exists already (409 `conflict`).
    #[error("{0}")]
    Conflict(String),
    /// A licensing rule refused the operation (mapped by the rule error's kind).
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// The backend cannot be reached or failed to persist (503 `store_unavailable`).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The transaction lost a race with another (a deadlock or a serialization failure) and
    /// was rolled back: run again, it may succeed. The store retries it itself a few times;
    /// what is left is answered as unavailable (503 `store_unavailable`).
    #[error("storage contended: {0}")]
    Contended(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}
