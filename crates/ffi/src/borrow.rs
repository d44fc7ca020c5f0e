//! Borrowed seats from C: a seat borrowed for offline use until a chosen instant and saved to a
//! file (the lease and the server's keys, as the Rust SDK's `BorrowedSeat` and `leasehold
//! borrow --out` write it), checked offline with no network, checked against the server's
//! revoked-lease list when online, and returned early.
//!
//! A borrow lease stays valid by its signature until its expiry, even after its seat went back
//! early (returned, or reclaimed by an admin for a lost device): call
//! `leasehold_borrowed_seat_check_online` whenever the server can be reached.

use std::ffi::c_char;

use leasehold_client::BorrowedSeat;

use crate::client::LeaseholdClient;
use crate::error::{boundary, Failure, LeaseholdResult};
use crate::strings::required;
use crate::verify::{claims_to_c, LeaseholdLeaseClaims};

fn load(path: &str) -> Result<BorrowedSeat, Failure> {
    Ok(BorrowedSeat::load(std::path::Path::new(path))?)
}

fn live_client<'a>(client: *const LeaseholdClient) -> Result<&'a LeaseholdClient, Failure> {
    // SAFETY: the callers' contracts: `client` is NULL or a live client.
    unsafe { client.as_ref() }.ok_or_else(|| Failure::invalid("client is NULL"))
}

/// Borrows a seat of `license_id` for offline use until `until_unix_secs` (seconds since the
/// Unix epoch) and saves it to the file at `path`. The license's borrow policy decides: the
/// server's code is in `leasehold_last_error_code` (`borrow_not_allowed`, `borrow_too_long`,
/// `borrow_limit_reached`, `no_seat_available`). The seat is held with no heartbeat until then,
/// and frees itself at that instant.
///
/// # Safety
/// `client` is a live client; the strings are NUL-terminated UTF-8, borrowed for the call.
#[no_mangle]
pub unsafe extern "C" fn leasehold_borrow(
    client: *const LeaseholdClient,
    license_id: *const c_char,
    device_id: *const c_char,
    instance_id: *const c_char,
    until_unix_secs: i64,
    path: *const c_char,
) -> LeaseholdResult {
    boundary("leasehold_borrow", || {
        let client = live_client(client)?;
        // SAFETY: per this function's contract.
        let license_id = unsafe { required(license_id, "license_id") }?.to_owned();
        let device_id = unsafe { required(device_id, "device_id") }?.to_owned();
        let instance_id = unsafe { required(instance_id, "instance_id") }?.to_owned();
        let path = unsafe { required(path, "path") }?;
        let until = time::OffsetDateTime::from_unix_timestamp(until_unix_secs)
            .map_err(|e| Failure::invalid(format!("until_unix_secs: {e}")))?;
        let sdk = client.client.clone();
        let seat = client.runtime.block_on(async move {
            sdk.borrow(&license_id, &device_id, &instance_id, until)
                .await
        })??;
        if let Err(err) = seat.save(std::path::Path::new(path)) {
            // A seat nobody can use must not stay taken: give it back.
            let sdk = client.client.clone();
            let back = seat.clone();
            let _ = client
                .runtime
                .block_on(async move { sdk.return_borrowed(&back).await });
            return Err(err.into());
        }
        Ok(())
    })
}

/// Checks the borrowed seat saved at `path` with no network: the lease's signature against the
/// saved keys, that it is a borrow lease bound to `device_id`, and not expired at
/// `now_unix_secs`. Fails with `LEASEHOLD_RESULT_LEASE_INVALID` (the message says why).
///
/// `claims_out` may be NULL; otherwise, on success, `*claims_out` is new claims owned by the
/// caller: free them with `leasehold_lease_claims_free`.
///
/// # Safety
/// The strings are NUL-terminated UTF-8, borrowed for the call; `claims_out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn leasehold_borrowed_seat_check(
    path: *const c_char,
    device_id: *const c_char,
    now_unix_secs: i64,
    claims_out: *mut *mut LeaseholdLeaseClaims,
) -> LeaseholdResult {
    boundary("leasehold_borrowed_seat_check", || {
        // SAFETY: per this function's contract.
        let path = unsafe { required(path, "path") }?;
        let device_id = unsafe { required(device_id, "device_id") }?;
        let claims = load(path)?.verify_offline(device_id, now_unix_secs)?;
        // SAFETY: `claims_out` is NULL or writable, per this function's contract.
        unsafe { claims_to_c(&claims, claims_out) }
    })
}

/// `leasehold_borrowed_seat_check`, then the license's revoked-lease list on the server: a
/// seat returned or reclaimed (a lost device) fails with `LEASEHOLD_RESULT_LEASE_INVALID`
/// ("revoked lease: ..."). An unreachable server fails as a transport error: the offline check
/// stands then, and the caller decides.
///
/// # Safety
/// `client` is a live client; the strings are NUL-terminated UTF-8, borrowed for the call.
#[no_mangle]
pub unsafe extern "C" fn leasehold_borrowed_seat_check_online(
    client: *const LeaseholdClient,
    path: *const c_char,
    device_id: *const c_char,
    now_unix_secs: i64,
) -> LeaseholdResult {
    boundary("leasehold_borrowed_seat_check_online", || {
        let client = live_client(client)?;
        // SAFETY: per this function's contract.
        let path = unsafe { required(path, "path") }?;
        let device_id = unsafe { required(device_id, "device_id") }?.to_owned();
        let seat = load(path)?;
        let sdk = client.client.clone();
        client.runtime.block_on(async move {
            sdk.check_borrowed(&seat, &device_id, now_unix_secs)
                .await
                .map(drop)
        })??;
        Ok(())
    })
}

/// Gives the borrowed seat saved at `path` back early (it is free at once), then removes the
/// file. A seat that had ended already (reclaimed, expired) is nothing to return: its file is
/// removed too, and the call succeeds.
///
/// # Safety
/// `client` is a live client (with the borrowing user's token); `path` is NUL-terminated UTF-8.
#[no_mangle]
pub unsafe extern "C" fn leasehold_borrowed_seat_return(
    client: *const LeaseholdClient,
    path: *const c_char,
) -> LeaseholdResult {
    boundary("leasehold_borrowed_seat_return", || {
        let client = live_client(client)?;
        // SAFETY: per this function's contract.
        let path = unsafe { required(path, "path") }?;
        let seat = load(path)?;
        let sdk = client.client.clone();
        let returned = client
            .runtime
            .block_on(async move { sdk.return_borrowed(&seat).await })?;
        match returned {
            Ok(()) => {}
            Err(err) if err.is_session_ended() => {}
            Err(err) => return Err(err.into()),
        }
        std::fs::remove_file(path).map_err(|e| {
            Failure::new(
                LeaseholdResult::Config,
                format!("the seat was returned, but {path} could not be removed: {e}"),
            )
        })
    })
}
