//! Wire types of the Leasehold seat protocol v1: request and response bodies and the error body,
//! shared by the server, the Rust SDK and the CLI so that all three agree on every field.
//!
//! Times are RFC 3339 UTC strings on the wire (`time::OffsetDateTime` here). Request bodies
//! reject unknown fields so that a typo is a clear 400/422 instead of a silently ignored option.

mod accounts;
mod delegations;
mod error;
mod leases;
mod licenses;
mod oauth;
mod sessions;
mod usage;
mod webhooks;

pub use accounts::*;
pub use delegations::*;
pub use error::*;
pub use leases::*;
pub use licenses::*;
pub use oauth::*;
pub use sessions::*;
pub use usage::*;
pub use webhooks::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_as_their_stable_strings() {
        for code in [
            ErrorCode::Unauthorized,
            ErrorCode::NoSeatAvailable,
            ErrorCode::SessionEnded,
            ErrorCode::InvalidRequest,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn unknown_error_codes_decode_as_unknown() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"from_the_future","message":"x"}}"#).unwrap();
        assert_eq!(body.error.code, ErrorCode::Unknown);
    }

    #[test]
    fn open_session_rejects_unknown_fields() {
        let err = serde_json::from_str::<OpenSession>(
            r#"{"license_id":"a","device_id":"b","instance_id":"c","bogus":1}"#,
        );
        assert!(err.is_err());
    }
}
