//! How database errors become `StoreError`s, and which of them are worth a second attempt.

use crate::StoreError;

/// A database failure as the store reports it: a unique violation is a conflict (409), a
/// deadlock or serialization failure is contention (`retry::transaction` runs it again), any
/// other failure (a lost connection, a timeout…) makes the store unavailable (503).
pub(super) fn db_error(e: sqlx::Error) -> StoreError {
    if let Some(d) = e.as_database_error() {
        if d.is_unique_violation() {
            return StoreError::Conflict(d.message().to_owned());
        }
    }
    if is_retryable(&e) {
        return StoreError::Contended(e.to_string());
    }
    StoreError::Unavailable(e.to_string())
}

/// A deadlock (`40P01`) or serialization failure (`40001`): the same transaction run again may
/// succeed.
pub(super) fn is_retryable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}

/// A row refers to a parent that does not exist (e.g. a user of an unknown account).
pub(super) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation())
}

/// A copy of `e`, for every request of a batch that failed with it (`StoreError` is not
/// `Clone`).
pub(super) fn clone_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound(what) => StoreError::NotFound(what),
        StoreError::Conflict(msg) => StoreError::Conflict(msg.clone()),
        StoreError::Rule(rule) => StoreError::Rule(rule.clone()),
        StoreError::Unavailable(msg) => StoreError::Unavailable(msg.clone()),
        StoreError::Contended(msg) => StoreError::Contended(msg.clone()),
    }
}
