//! Strings across the boundary: reading the caller's NUL-terminated UTF-8 arguments (borrowed
//! for the call only), handing out strings the caller owns, and `leasehold_string_free`, the
//! one way to give them back.

use std::ffi::{c_char, CStr, CString};

use crate::error::{c_string_lossy, guarded, Failure};

/// A required string argument: not NULL, UTF-8.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid for `'a`.
pub(crate) unsafe fn required<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Failure> {
    match unsafe { text(ptr, name) }? {
        None => Err(Failure::invalid(format!("{name} is NULL"))),
        Some("") => Err(Failure::invalid(format!("{name} is empty"))),
        Some(text) => Ok(text),
    }
}

/// An optional string argument: NULL (or an empty string) is `None`; otherwise UTF-8.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid for `'a`.
pub(crate) unsafe fn optional<'a>(
    ptr: *const c_char,
    name: &str,
) -> Result<Option<&'a str>, Failure> {
    Ok(unsafe { text(ptr, name) }?.filter(|text| !text.is_empty()))
}

/// A string argument that may be NULL; UTF-8 when not.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid for `'a`.
unsafe fn text<'a>(ptr: *const c_char, name: &str) -> Result<Option<&'a str>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller promises a valid NUL-terminated string.
    let text = unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| Failure::invalid(format!("{name} is not UTF-8")))?;
    Ok(Some(text))
}

/// A string the caller will own (and free with `leasehold_string_free`).
pub(crate) fn owned(text: &str) -> *mut c_char {
    c_string_lossy(text).into_raw()
}

/// Writes `value` to the out-parameter `out`.
///
/// # Safety
/// `out` is NULL or valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T, name: &str) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::invalid(format!("{name} is NULL")));
    }
    // SAFETY: checked non-NULL; the caller promises it is writable.
    unsafe { out.write(value) };
    Ok(())
}

/// Frees a string returned by this library (`leasehold_seat_lease`, `leasehold_client_fetch_jwks`,
/// `leasehold_seat_lost_reason`...). NULL is ignored.
///
/// # Safety
/// `text` is NULL or a string this library returned as owned by the caller, not freed before.
/// Never pass a string the documentation says the library keeps (the last-error strings,
/// `leasehold_seat_session_id`, names).
#[no_mangle]
pub unsafe extern "C" fn leasehold_string_free(text: *mut c_char) {
    if text.is_null() {
        return;
    }
    guarded((), || {
        // SAFETY: the caller promises it came from `CString::into_raw` in this library.
        drop(unsafe { CString::from_raw(text) });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked() {
        let ok = c"abc";
        assert_eq!(unsafe { required(ok.as_ptr(), "x") }.unwrap(), "abc");
        let err = unsafe { required(std::ptr::null(), "license_id") }.unwrap_err();
        assert_eq!(err.message, "license_id is NULL");
        let bad = b"\xff\xfe\0";
        let err = unsafe { required(bad.as_ptr().cast(), "token") }.unwrap_err();
        assert_eq!(err.message, "token is not UTF-8");
        assert_eq!(unsafe { optional(c"".as_ptr(), "ca_file") }.unwrap(), None);
        let err = unsafe { required(c"".as_ptr(), "device_id") }.unwrap_err();
        assert_eq!(err.message, "device_id is empty");
        let text = owned("hello");
        unsafe { leasehold_string_free(text) };
        unsafe { leasehold_string_free(std::ptr::null_mut()) };
    }
}
