//! Results and errors at the C boundary: the [`LeaseholdResult`] every fallible function
//! returns, the thread-local "last error" (message, server code, HTTP status) that explains a
//! failure, and [`boundary`], which runs the body of every entry point under `catch_unwind` so
//! that no panic ever unwinds into C.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use leasehold_client::{ClientError, ErrorCode};

/// What a fallible function of this library returns. `LEASEHOLD_RESULT_OK` (0) is success;
/// anything else is a failure, explained by `leasehold_last_error_message()` (and, for an
/// answer of the server, `leasehold_last_error_code()` and `leasehold_last_error_http_status()`).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseholdResult {
    /// Success.
    Ok = 0,
    /// An argument is unusable: NULL where a value is required, a string that is not UTF-8,
    /// unknown flag bits.
    InvalidArgument = 1,
    /// The client is configured wrongly: a URL that is not an absolute http(s) URL, a CA file
    /// that cannot be read or holds no certificate.
    Config = 2,
    /// The server could not be reached (connection refused, DNS, TLS, timeout), after the
    /// retries.
    Transport = 3,
    /// The server refused the request: `leasehold_last_error_code()` has its stable code
    /// (`"unauthorized"`, `"not_found"`, `"license_not_active"`...), and
    /// `leasehold_last_error_http_status()` the status.
    Api = 4,
    /// 409 `no_seat_available`: every seat of the license is taken (after waiting, when a wait
    /// was asked for). An API error singled out because applications branch on it.
    NoSeatAvailable = 5,
    /// The server's answer, or a JWKS given to the library, could not be read.
    Decode = 6,
    /// A lease failed verification: malformed, unknown key, bad signature, expired.
    LeaseInvalid = 7,
    /// A bug inside the library (a Rust panic, caught at the boundary). The message says
    /// where; the handle involved should be freed.
    Internal = 8,
}

/// A failure on its way to the caller: the result code and what the last-error functions
/// will tell.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) result: LeaseholdResult,
    pub(crate) message: String,
    pub(crate) code: Option<&'static str>,
    pub(crate) http_status: u16,
}

impl Failure {
    pub(crate) fn new(result: LeaseholdResult, message: impl Into<String>) -> Failure {
        Failure {
            result,
            message: message.into(),
            code: None,
            http_status: 0,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(LeaseholdResult::InvalidArgument, message)
    }
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Failure {
        let message = err.to_string();
        match err {
            ClientError::Api { status, code, .. } => Failure {
                result: if code == ErrorCode::NoSeatAvailable {
                    LeaseholdResult::NoSeatAvailable
                } else {
                    LeaseholdResult::Api
                },
                message,
                code: Some(code.as_str()),
                http_status: status,
            },
            ClientError::Transport(_) => Failure::new(LeaseholdResult::Transport, message),
            ClientError::Decode(_) => Failure::new(LeaseholdResult::Decode, message),
            ClientError::LeaseInvalid(_) | ClientError::LeaseRevoked(_) => {
                Failure::new(LeaseholdResult::LeaseInvalid, message)
            }
            ClientError::Config(_) => Failure::new(LeaseholdResult::Config, message),
        }
    }
}

/// The last failure of a fallible call on this thread, as C strings that stay valid until the
/// next fallible call on the same thread.
struct LastError {
    message: CString,
    code: Option<CString>,
    http_status: u16,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<LastError>> = const { RefCell::new(None) };
}

fn set_last_error(failure: Option<Failure>) {
    let last = failure.map(|f| LastError {
        message: c_string_lossy(&f.message),
        code: f.code.map(c_string_lossy),
        http_status: f.http_status,
    });
    // `try_with`: during thread teardown the slot may be gone; then there is no one to tell.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = last);
}

/// A C string of `text`, without the NUL bytes it may hold (a C string cannot).
pub(crate) fn c_string_lossy(text: &str) -> CString {
    CString::new(text.replace('\0', "")).unwrap_or_default()
}

/// Runs the body of a fallible entry point: records its failure (or clears the last error on
/// success) and turns a panic into [`LeaseholdResult::Internal`] instead of unwinding into C.
pub(crate) fn boundary(what: &str, body: impl FnOnce() -> Result<(), Failure>) -> LeaseholdResult {
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Err(Failure::new(
            LeaseholdResult::Internal,
            format!("internal error in {what}: {why}"),
        ))
    });
    match outcome {
        Ok(()) => {
            set_last_error(None);
            LeaseholdResult::Ok
        }
        Err(failure) => {
            let result = failure.result;
            set_last_error(Some(failure));
            result
        }
    }
}

/// Runs the body of an infallible entry point (accessors, free functions) under
/// `catch_unwind`: a panic gives `fallback` instead of unwinding into C. The last error is
/// left alone.
pub(crate) fn guarded<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// The message of the last failed call on this thread, or NULL when the last fallible call on
/// this thread succeeded (or none was made).
///
/// The string belongs to the library: do not free it. It stays valid until the next fallible
/// call (one returning a `leasehold_result`) on the same thread.
#[no_mangle]
pub extern "C" fn leasehold_last_error_message() -> *const c_char {
    guarded(std::ptr::null(), || {
        LAST_ERROR
            .try_with(|slot| {
                slot.borrow()
                    .as_ref()
                    .map_or(std::ptr::null(), |e| e.message.as_ptr())
            })
            .unwrap_or(std::ptr::null())
    })
}

/// The server's stable error code of the last failed call on this thread (`"no_seat_available"`,
/// `"unauthorized"`, `"not_found"`...), or NULL when the failure was not an answer of the
/// server (or there was none).
///
/// The string belongs to the library: do not free it. Valid until the next fallible call on the
/// same thread.
#[no_mangle]
pub extern "C" fn leasehold_last_error_code() -> *const c_char {
    guarded(std::ptr::null(), || {
        LAST_ERROR
            .try_with(|slot| {
                slot.borrow()
                    .as_ref()
                    .and_then(|e| e.code.as_ref())
                    .map_or(std::ptr::null(), |c| c.as_ptr())
            })
            .unwrap_or(std::ptr::null())
    })
}

/// The HTTP status of the last failed call on this thread when the server answered it (409,
/// 401...), else 0.
#[no_mangle]
pub extern "C" fn leasehold_last_error_http_status() -> u16 {
    guarded(0, || {
        LAST_ERROR
            .try_with(|slot| slot.borrow().as_ref().map_or(0, |e| e.http_status))
            .unwrap_or(0)
    })
}

/// The name of a result code (`"ok"`, `"no_seat_available"`...), for logs. A static string: do
/// not free it. Never NULL (`"unknown"` for a value that is not a result code).
#[no_mangle]
pub extern "C" fn leasehold_result_name(result: i32) -> *const c_char {
    guarded(c"unknown".as_ptr(), || result_name(result).as_ptr())
}

fn result_name(result: i32) -> &'static std::ffi::CStr {
    match result {
        0 => c"ok",
        1 => c"invalid_argument",
        2 => c"config",
        3 => c"transport",
        4 => c"api",
        5 => c"no_seat_available",
        6 => c"decode",
        7 => c"lease_invalid",
        8 => c"internal",
        _ => c"unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last_message() -> Option<String> {
        let ptr = leasehold_last_error_message();
        (!ptr.is_null()).then(|| unsafe { CStr::from_ptr(ptr) }.to_str().unwrap().to_owned())
    }

    #[test]
    fn a_panic_becomes_an_internal_error_with_its_message() {
        let result = boundary("leasehold_test", || panic!("boom"));
        assert_eq!(result, LeaseholdResult::Internal);
        let message = last_message().unwrap();
        assert!(
            message.contains("leasehold_test") && message.contains("boom"),
            "{message}"
        );
        // A formatted panic message (a String payload) is kept too.
        let n = 7;
        boundary("leasehold_test", || panic!("boom {n}"));
        assert!(last_message().unwrap().contains("boom 7"));
        assert_eq!(guarded(42, || panic!("boom")), 42);
    }

    #[test]
    fn success_clears_the_last_error_and_errors_are_per_thread() {
        boundary("t", || Err(Failure::invalid("bad")));
        assert_eq!(last_message().as_deref(), Some("bad"));
        std::thread::spawn(|| assert_eq!(last_message(), None))
            .join()
            .unwrap();
        assert_eq!(boundary("t", || Ok(())), LeaseholdResult::Ok);
        assert_eq!(last_message(), None);
    }

    #[test]
    fn api_errors_keep_the_servers_code_and_status() {
        let err = ClientError::Api {
            status: 409,
            code: ErrorCode::NoSeatAvailable,
            message: "all 2 seats of the license are in use".into(),
            reason: None,
            queue_timeout: false,
        };
        assert_eq!(
            boundary("t", || Err(err.into())),
            LeaseholdResult::NoSeatAvailable
        );
        let code = unsafe { CStr::from_ptr(leasehold_last_error_code()) };
        assert_eq!(code.to_str().unwrap(), "no_seat_available");
        assert_eq!(leasehold_last_error_http_status(), 409);
        assert!(last_message().unwrap().contains("all 2 seats"));
    }

    #[test]
    fn every_result_has_a_name() {
        for code in 0..=8 {
            let name = unsafe { CStr::from_ptr(leasehold_result_name(code)) };
            assert_ne!(name.to_str().unwrap(), "unknown", "{code}");
        }
        let name = unsafe { CStr::from_ptr(leasehold_result_name(99)) };
        assert_eq!(name.to_str().unwrap(), "unknown");
        assert_eq!(c_string_lossy("a\0b").to_str().unwrap(), "ab");
    }
}
