//! Client handles: a server URL and credentials (a user token, or a service user's client
//! credentials whose access token the SDK obtains and renews), optionally a CA file for HTTPS,
//! and the runtime their seats run on.

use std::ffi::c_char;
use std::sync::Arc;

use leasehold_client::{Client, ClientBuilder};

use crate::error::{boundary, guarded, Failure, LeaseholdResult};
use crate::runtime::Runtime;
use crate::strings::{optional, owned, required, write_out};

/// A client of one Leasehold server (opaque). Created by `leasehold_client_new` or
/// `leasehold_client_new_with_client_credentials`, freed by `leasehold_client_free`; usable
/// from any number of threads at once.
pub struct LeaseholdClient {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) client: Client,
}

/// Builds a client from `builder` (URL and credentials set) with the CA file, if any.
fn build(
    builder: ClientBuilder,
    ca_file: Option<&str>,
    out: *mut *mut LeaseholdClient,
) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::invalid("client_out is NULL"));
    }
    let builder = match ca_file {
        Some(path) => builder.ca_file(path)?,
        None => builder,
    };
    let runtime = Runtime::new()?;
    // Built inside the runtime: the HTTP stack may look for one when it is set up.
    let client = runtime.block_on(async move { builder.build() })??;
    let handle = Box::new(LeaseholdClient { runtime, client });
    // SAFETY: checked non-NULL; the caller promises it is writable.
    unsafe { write_out(out, Box::into_raw(handle), "client_out") }
}

/// A client that authenticates with a bearer token (a user's personal token; an admin token
/// works too).
///
/// `url`: the server's base URL (`http://127.0.0.1:8470`, `https://licenses.example.com`).
/// `ca_file`: NULL (or "") to verify `https://` servers against the system's trust store, or
/// a PEM file whose certificates are trusted *instead* (a private CA).
///
/// On success `*client_out` is a new client owned by the caller: free it with
/// `leasehold_client_free`. On failure (`LEASEHOLD_RESULT_CONFIG`: a bad URL, an unreadable CA
/// file) it is left untouched. No request is sent yet.
///
/// # Safety
/// The strings are NULL (where allowed) or NUL-terminated UTF-8, borrowed for the call;
/// `client_out` is writable.
#[no_mangle]
pub unsafe extern "C" fn leasehold_client_new(
    url: *const c_char,
    token: *const c_char,
    ca_file: *const c_char,
    client_out: *mut *mut LeaseholdClient,
) -> LeaseholdResult {
    boundary("leasehold_client_new", || {
        // SAFETY: per this function's contract.
        let url = unsafe { required(url, "url") }?;
        let token = unsafe { required(token, "token") }?;
        let ca_file = unsafe { optional(ca_file, "ca_file") }?;
        build(
            Client::builder(url).bearer_token(token),
            ca_file,
            client_out,
        )
    })
}

/// A client for a service user: exchanges `client_id` and `client_secret` for an access token
/// (OAuth2 client credentials) on first use and renews it before it expires. `url`, `ca_file`
/// and ownership as for `leasehold_client_new`.
///
/// # Safety
/// As for `leasehold_client_new`.
#[no_mangle]
pub unsafe extern "C" fn leasehold_client_new_with_client_credentials(
    url: *const c_char,
    client_id: *const c_char,
    client_secret: *const c_char,
    ca_file: *const c_char,
    client_out: *mut *mut LeaseholdClient,
) -> LeaseholdResult {
    boundary("leasehold_client_new_with_client_credentials", || {
        // SAFETY: per this function's contract.
        let url = unsafe { required(url, "url") }?;
        let client_id = unsafe { required(client_id, "client_id") }?;
        let client_secret = unsafe { required(client_secret, "client_secret") }?;
        let ca_file = unsafe { optional(ca_file, "ca_file") }?;
        build(
            Client::builder(url).client_credentials(client_id, client_secret),
            ca_file,
            client_out,
        )
    })
}

/// Fetches the server's lease-signing keys (`/.well-known/jwks.json`) as JSON text: save it, and
/// verify leases offline later with `leasehold_verifier_new`.
///
/// On success `*jwks_out` is a string owned by the caller: free it with `leasehold_string_free`.
///
/// # Safety
/// `client` is a live client; `jwks_out` is writable.
#[no_mangle]
pub unsafe extern "C" fn leasehold_client_fetch_jwks(
    client: *const LeaseholdClient,
    jwks_out: *mut *mut c_char,
) -> LeaseholdResult {
    boundary("leasehold_client_fetch_jwks", || {
        // SAFETY: per this function's contract.
        let client =
            unsafe { client.as_ref() }.ok_or_else(|| Failure::invalid("client is NULL"))?;
        if jwks_out.is_null() {
            return Err(Failure::invalid("jwks_out is NULL"));
        }
        let sdk = client.client.clone();
        let jwks = client.runtime.block_on(async move { sdk.jwks().await })??;
        let json = serde_json::to_string(&jwks).map_err(|e| {
            Failure::new(
                LeaseholdResult::Decode,
                format!("cannot encode the JWKS: {e}"),
            )
        })?;
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { write_out(jwks_out, owned(&json), "jwks_out") }
    })
}

/// Frees the client. Its seats stay valid (they keep heartbeating) until each is freed. NULL
/// is ignored.
///
/// # Safety
/// `client` is NULL or a live client, not used again (by any thread) after this call.
#[no_mangle]
pub unsafe extern "C" fn leasehold_client_free(client: *mut LeaseholdClient) {
    if client.is_null() {
        return;
    }
    guarded((), || {
        // SAFETY: the caller gives the client back; it came from `Box::into_raw`.
        drop(unsafe { Box::from_raw(client) });
    });
}
