//! Offline lease verification: a verifier built from a saved JWKS (the server's
//! `/.well-known/jwks.json`, as text or as a file) checks a lease's EdDSA signature and expiry
//! with no network, and hands out its claims.

use std::ffi::c_char;

use leasehold_client::proto::Jwks;
use leasehold_client::{LeaseClaims, LeaseVerifier};

use crate::error::{boundary, guarded, Failure, LeaseholdResult};
use crate::strings::{owned, required, write_out};

/// Verifies leases offline against a set of public keys (opaque). Immutable: usable from any
/// number of threads at once.
pub struct LeaseholdVerifier {
    verifier: LeaseVerifier,
}

/// The claims of a verified lease (`leasehold_verifier_verify`,
/// `leasehold_borrowed_seat_check`). Every string is owned by the claims; free the whole
/// struct with `leasehold_lease_claims_free`.
#[repr(C)]
pub struct LeaseholdLeaseClaims {
    /// Who signed it (`"leasehold"`).
    pub issuer: *mut c_char,
    /// The username holding the session.
    pub subject: *mut c_char,
    /// The session id.
    pub session_id: *mut c_char,
    /// The license id.
    pub license_id: *mut c_char,
    /// `"interactive"` or `"service"`.
    pub kind: *mut c_char,
    /// The device the session was opened for.
    pub device_id: *mut c_char,
    /// The application instance the session was opened for.
    pub instance_id: *mut c_char,
    /// When the lease was signed, seconds since the Unix epoch.
    pub issued_at: i64,
    /// When the lease expires, seconds since the Unix epoch.
    pub expires_at: i64,
}

fn new_verifier(
    jwks_json: &str,
    leeway_secs: u64,
    out: *mut *mut LeaseholdVerifier,
) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::invalid("verifier_out is NULL"));
    }
    let jwks: Jwks = serde_json::from_str(jwks_json).map_err(|e| {
        Failure::new(
            LeaseholdResult::Decode,
            format!("the JWKS is not a key set: {e}"),
        )
    })?;
    let verifier = LeaseVerifier::from_jwks(&jwks)?.with_leeway(leeway_secs);
    let handle = Box::new(LeaseholdVerifier { verifier });
    // SAFETY: checked non-NULL; the caller promises it is writable.
    unsafe { write_out(out, Box::into_raw(handle), "verifier_out") }
}

/// A verifier from a key set in JSON (as `/.well-known/jwks.json` serves it and
/// `leasehold_client_fetch_jwks` returns it). `leeway_secs` accepts leases that far past their
/// expiry (clock skew); 0 for none.
///
/// Fails with `LEASEHOLD_RESULT_DECODE` when the text is not a key set or holds no usable
/// Ed25519 key. On success `*verifier_out` is owned by the caller: free it with
/// `leasehold_verifier_free`.
///
/// # Safety
/// `jwks_json` is NUL-terminated UTF-8 (borrowed for the call); `verifier_out` is writable.
#[no_mangle]
pub unsafe extern "C" fn leasehold_verifier_new(
    jwks_json: *const c_char,
    leeway_secs: u64,
    verifier_out: *mut *mut LeaseholdVerifier,
) -> LeaseholdResult {
    boundary("leasehold_verifier_new", || {
        // SAFETY: per this function's contract.
        let jwks_json = unsafe { required(jwks_json, "jwks_json") }?;
        new_verifier(jwks_json, leeway_secs, verifier_out)
    })
}

/// `leasehold_verifier_new` with the key set read from the file at `path` (a saved
/// `jwks.json`). Fails with `LEASEHOLD_RESULT_CONFIG` when the file cannot be read.
///
/// # Safety
/// As for `leasehold_verifier_new`.
#[no_mangle]
pub unsafe extern "C" fn leasehold_verifier_from_file(
    path: *const c_char,
    leeway_secs: u64,
    verifier_out: *mut *mut LeaseholdVerifier,
) -> LeaseholdResult {
    boundary("leasehold_verifier_from_file", || {
        // SAFETY: per this function's contract.
        let path = unsafe { required(path, "path") }?;
        let json = std::fs::read_to_string(path).map_err(|e| {
            Failure::new(
                LeaseholdResult::Config,
                format!("cannot read the JWKS file {path}: {e}"),
            )
        })?;
        new_verifier(&json, leeway_secs, verifier_out)
    })
}

/// Verifies `lease` (a compact JWT) offline: its signature by a key of the set and its expiry
/// at `now_unix_secs` (seconds since the Unix epoch, e.g. `time(NULL)`). Fails with
/// `LEASEHOLD_RESULT_LEASE_INVALID` (the message says why: bad signature, unknown key, expired...).
///
/// `claims_out` may be NULL (only the verdict is wanted); otherwise, on success, `*claims_out` is
/// new claims owned by the caller: free them with `leasehold_lease_claims_free`.
///
/// # Safety
/// `verifier` is a live verifier; `lease` is NUL-terminated UTF-8; `claims_out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn leasehold_verifier_verify(
    verifier: *const LeaseholdVerifier,
    lease: *const c_char,
    now_unix_secs: i64,
    claims_out: *mut *mut LeaseholdLeaseClaims,
) -> LeaseholdResult {
    boundary("leasehold_verifier_verify", || {
        // SAFETY: per this function's contract.
        let verifier =
            unsafe { verifier.as_ref() }.ok_or_else(|| Failure::invalid("verifier is NULL"))?;
        let lease = unsafe { required(lease, "lease") }?;
        let claims = verifier.verifier.verify(lease, now_unix_secs)?;
        // SAFETY: `claims_out` is NULL or writable, per this function's contract.
        unsafe { claims_to_c(&claims, claims_out) }
    })
}

/// Hands `claims` to C through `out` (nothing when `out` is NULL).
///
/// # Safety
/// `out` is NULL or writable.
pub(crate) unsafe fn claims_to_c(
    claims: &LeaseClaims,
    out: *mut *mut LeaseholdLeaseClaims,
) -> Result<(), Failure> {
    if out.is_null() {
        return Ok(());
    }
    let claims = Box::new(LeaseholdLeaseClaims {
        issuer: owned(&claims.iss),
        subject: owned(&claims.sub),
        session_id: owned(&claims.sid),
        license_id: owned(&claims.lic),
        kind: owned(claims.kind.as_str()),
        device_id: owned(&claims.device_id),
        instance_id: owned(&claims.instance_id),
        issued_at: claims.iat,
        expires_at: claims.exp,
    });
    // SAFETY: checked non-NULL; the caller promises it is writable.
    unsafe { write_out(out, Box::into_raw(claims), "claims_out") }
}

/// Frees claims returned by `leasehold_verifier_verify` or `leasehold_borrowed_seat_check`,
/// strings included. NULL is ignored.
///
/// # Safety
/// `claims` is NULL or claims from this library, not freed before (nor their strings).
#[no_mangle]
pub unsafe extern "C" fn leasehold_lease_claims_free(claims: *mut LeaseholdLeaseClaims) {
    if claims.is_null() {
        return;
    }
    guarded((), || {
        // SAFETY: the caller gives the claims back; they came from `Box::into_raw`, and each
        // string from `CString::into_raw`.
        let claims = unsafe { Box::from_raw(claims) };
        for text in [
            claims.issuer,
            claims.subject,
            claims.session_id,
            claims.license_id,
            claims.kind,
            claims.device_id,
            claims.instance_id,
        ] {
            unsafe { crate::strings::leasehold_string_free(text) };
        }
    });
}

/// Frees the verifier. NULL is ignored.
///
/// # Safety
/// `verifier` is NULL or a live verifier, not used again after this call.
#[no_mangle]
pub unsafe extern "C" fn leasehold_verifier_free(verifier: *mut LeaseholdVerifier) {
    if verifier.is_null() {
        return;
    }
    guarded((), || {
        // SAFETY: the caller gives the verifier back; it came from `Box::into_raw`.
        drop(unsafe { Box::from_raw(verifier) });
    });
}
