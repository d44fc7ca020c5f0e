//! The C ABI (`leasehold-ffi`, linked here as a Rust library) called as a C program would,
//! against the real server: one client shared by racing threads, per-thread errors with the
//! server's codes, callbacks (told of a revoke, freeing their own seat, never running after
//! `leasehold_seat_free`), a wait in the queue, a seat outliving its client, the options,
//! client credentials and a CA file over HTTPS, and offline verification with a saved JWKS.

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use leasehold::*;
use leasehold_client::proto::{CreateLicense, OnFull, PutUser, UserKind};

use crate::kit::*;
use crate::support::ServerProcess;
use crate::tls::{start_tls, write_files, TestCa};

fn cstr(text: &str) -> CString {
    CString::new(text).unwrap()
}

/// The last error of a thread: message, server code, HTTP status.
type LastError = (String, Option<String>, u16);

/// The last error of this thread.
fn last_error() -> LastError {
    let text = |p: *const c_char| {
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned())
    };
    (
        text(leasehold_last_error_message()).unwrap_or_default(),
        text(leasehold_last_error_code()),
        leasehold_last_error_http_status(),
    )
}

/// Takes a string the library handed over.
fn take(text: *mut c_char) -> Option<String> {
    if text.is_null() {
        return None;
    }
    let owned = unsafe { CStr::from_ptr(text) }.to_str().unwrap().to_owned();
    unsafe { leasehold_string_free(text) };
    Some(owned)
}

/// A client handle, freed on drop.
struct ClientHandle(*mut LeaseholdClient);
unsafe impl Send for ClientHandle {}
unsafe impl Sync for ClientHandle {}
impl Drop for ClientHandle {
    fn drop(&mut self) {
        unsafe { leasehold_client_free(self.0) };
    }
}

fn client(url: &str, token: &str) -> ClientHandle {
    let mut handle = ptr::null_mut();
    let result = unsafe {
        leasehold_client_new(
            cstr(url).as_ptr(),
            cstr(token).as_ptr(),
            ptr::null(),
            &mut handle,
        )
    };
    assert_eq!(result, LeaseholdResult::Ok, "{:?}", last_error());
    ClientHandle(handle)
}

/// A seat handle, freed on drop.
struct SeatHandle(*mut LeaseholdSeat);
unsafe impl Send for SeatHandle {}
unsafe impl Sync for SeatHandle {}
impl Drop for SeatHandle {
    fn drop(&mut self) {
        unsafe { leasehold_seat_free(self.0) };
    }
}

fn checkout(
    client: &ClientHandle,
    license_id: &str,
    instance_id: &str,
    options: Option<LeaseholdCheckoutOptions>,
) -> Result<SeatHandle, (LeaseholdResult, LastError)> {
    let mut seat = ptr::null_mut();
    let options_ptr = options.as_ref().map_or(ptr::null(), |o| o as *const _);
    let result = unsafe {
        leasehold_checkout(
            client.0,
            cstr(license_id).as_ptr(),
            cstr("pc-1").as_ptr(),
            cstr(instance_id).as_ptr(),
            options_ptr,
            &mut seat,
        )
    };
    match result {
        LeaseholdResult::Ok => Ok(SeatHandle(seat)),
        other => Err((other, last_error())),
    }
}

fn state(seat: &SeatHandle) -> LeaseholdSeatState {
    unsafe { leasehold_seat_get_state(seat.0) }
}

fn session_id(seat: &SeatHandle) -> String {
    unsafe { CStr::from_ptr(leasehold_seat_session_id(seat.0)) }
        .to_str()
        .unwrap()
        .to_owned()
}

/// Blocking calls run off the test's runtime thread, as C callers' threads are.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_threads_on_one_client_take_exactly_the_free_seats_and_each_hears_its_own_error() {
    // Arrange: 3 seats, 8 threads sharing one client handle.
    let kit = Kit::start();
    let tenant = kit.tenant(license(3)).await;
    let bob = tenant.user_token("bob").await;
    let shared = Arc::new(client(kit.url(), &bob));
    let start = Arc::new(Barrier::new(8));

    // Act: all check out at once.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (shared, start, license_id) =
                (shared.clone(), start.clone(), tenant.license_id.clone());
            std::thread::spawn(move || {
                start.wait();
                checkout(&shared, &license_id, &format!("app-{i}"), None)
            })
        })
        .collect();
    let outcomes: Vec<_> = blocking(move || {
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    })
    .await;

    // Assert: 3 seats, 5 refusals, each explained on its own thread.
    let (seats, refused): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(Result::is_ok);
    assert_eq!(seats.len(), 3);
    for outcome in refused {
        let Err((result, (message, code, status))) = outcome else {
            unreachable!()
        };
        assert_eq!(result, LeaseholdResult::NoSeatAvailable);
        assert_eq!(code.as_deref(), Some("no_seat_available"));
        assert_eq!(status, 409);
        assert!(
            message.contains("seats of the license are in use"),
            "{message}"
        );
    }
    assert_eq!(tenant.in_use().await, 3);
    // Freeing the seats returns them, from a thread that knows nothing of tokio (as a C
    // program's).
    std::thread::spawn(move || drop(seats)).join().unwrap();
    assert_eq!(tenant.in_use().await, 0);
}

#[tokio::test]
async fn errors_say_which_argument_or_what_the_server_said() {
    let kit = Kit::start();
    let tenant = kit.tenant(license(1)).await;
    let bob = tenant.user_token("bob").await;
    let url = kit.url().to_owned();
    let license_id = tenant.license_id.clone();
    blocking(move || {
        // A NULL argument, unknown flags, a bad URL, an unreadable CA file.
        let good = client(&url, &bob);
        let mut seat = ptr::null_mut();
        let r = unsafe {
            leasehold_checkout(
                good.0,
                ptr::null(),
                cstr("d").as_ptr(),
                cstr("i").as_ptr(),
                ptr::null(),
                &mut seat,
            )
        };
        assert_eq!(r, LeaseholdResult::InvalidArgument);
        assert_eq!(last_error().0, "license_id is NULL");
        assert!(seat.is_null(), "out-parameters are written only on success");
        let flags = LeaseholdCheckoutOptions {
            flags: 0x80,
            ..Default::default()
        };
        let (r, (message, ..)) = checkout(&good, &license_id, "i", Some(flags))
            .err()
            .unwrap();
        assert_eq!(r, LeaseholdResult::InvalidArgument);
        assert!(message.contains("unknown checkout flags 0x80"), "{message}");
        let mut handle = ptr::null_mut();
        let r = unsafe {
            leasehold_client_new(
                cstr("ftp://x").as_ptr(),
                cstr("t").as_ptr(),
                ptr::null(),
                &mut handle,
            )
        };
        assert_eq!(r, LeaseholdResult::Config);
        assert!(last_error().0.contains("not an http(s) URL"));
        let r = unsafe {
            leasehold_client_new(
                cstr(&url).as_ptr(),
                cstr("t").as_ptr(),
                cstr("/nonexistent/ca.pem").as_ptr(),
                &mut handle,
            )
        };
        assert_eq!(r, LeaseholdResult::Config);
        assert!(last_error().0.contains("/nonexistent/ca.pem"));
        assert!(handle.is_null());

        // The server's refusals: an unknown license, a bad token.
        let (r, (_, code, status)) = checkout(&good, "lic_unknown", "i", None).err().unwrap();
        assert_eq!(
            (r, code.as_deref(), status),
            (LeaseholdResult::Api, Some("not_found"), 404)
        );
        let stranger = client(&url, "not-a-token");
        let (r, (_, code, status)) = checkout(&stranger, &license_id, "i", None).err().unwrap();
        assert_eq!(
            (r, code.as_deref(), status),
            (LeaseholdResult::Api, Some("unauthorized"), 401)
        );

        // Nobody listening: a transport error, no code.
        let port = crate::support::free_port();
        let nowhere = client(&format!("http://127.0.0.1:{port}"), &bob);
        let (r, (message, code, status)) =
            checkout(&nowhere, &license_id, "i", None).err().unwrap();
        assert_eq!(
            (r, code, status),
            (LeaseholdResult::Transport, None, 0),
            "{message}"
        );

        // A success clears the last error.
        let seat = checkout(&good, &license_id, "i", None).unwrap();
        assert_eq!(last_error().0, "");
        drop(seat);
    })
    .await;
}

/// What a callback heard.
struct Heard {
    tx: mpsc::Sender<(LeaseholdSeatState, Option<String>, Option<String>)>,
    /// The seat to free from inside the callback, if any.
    free: *mut LeaseholdSeat,
}

unsafe extern "C" fn record(
    user_data: *mut c_void,
    state: LeaseholdSeatState,
    reason: *const c_char,
) {
    let heard = unsafe { &*(user_data as *const Heard) };
    let reason = (!reason.is_null()).then(|| {
        unsafe { CStr::from_ptr(reason) }
            .to_str()
            .unwrap()
            .to_owned()
    });
    let mut end = None;
    if !heard.free.is_null() {
        let p = unsafe { leasehold_seat_end_reason(heard.free) };
        end = (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned());
        // Allowed from inside the callback: the seat's own release and free.
        assert_eq!(
            unsafe { leasehold_seat_release(heard.free) },
            LeaseholdResult::Ok
        );
        unsafe { leasehold_seat_free(heard.free) };
    }
    heard.tx.send((state, reason, end)).unwrap();
}

#[tokio::test]
async fn a_callback_hears_a_revoke_and_may_release_and_free_its_own_seat() {
    // Arrange: heartbeats every second (3 s inactivity timeout).
    let kit = Kit::start();
    let tenant = kit
        .tenant(CreateLicense {
            inactivity_timeout_secs: Some(3),
            ..license(1)
        })
        .await;
    let bob = tenant.user_token("bob").await;
    let (url, license_id) = (kit.url().to_owned(), tenant.license_id.clone());
    let seat = blocking(move || {
        let handle = client(&url, &bob);
        checkout(&handle, &license_id, "cb", None).unwrap()
    })
    .await;
    let (tx, rx) = mpsc::channel();
    // Leaked: the callback frees its own seat, so nothing tells this thread when the callback
    // has returned, and the receiver below wakes while the callback may still be inside
    // `tx.send`. Dropping `heard` then was a use-after-free (CI: SIGSEGV in `send`).
    let heard: &'static Heard = Box::leak(Box::new(Heard { tx, free: seat.0 }));
    let result = unsafe {
        leasehold_seat_set_callback(seat.0, Some(record), heard as *const Heard as *mut c_void)
    };
    assert_eq!(result, LeaseholdResult::Ok);
    let sid = session_id(&seat);
    std::mem::forget(seat); // the callback frees it

    // Act
    tenant.admin.close_session(&sid).await.unwrap();

    // Assert
    let (state, reason, end) = blocking(move || rx.recv_timeout(SOON).unwrap()).await;
    assert_eq!(state, LeaseholdSeatState::Lost);
    assert_eq!(reason.as_deref(), Some("session ended (revoked)"));
    assert_eq!(end.as_deref(), Some("revoked"));
}

unsafe extern "C" fn slow(
    user_data: *mut c_void,
    _state: LeaseholdSeatState,
    _reason: *const c_char,
) {
    let done = unsafe { &*(user_data as *const AtomicBool) };
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, Ordering::SeqCst);
}

#[tokio::test]
async fn release_is_told_to_the_callback_and_free_waits_for_a_running_callback() {
    let kit = Kit::start();
    let tenant = kit.tenant(license(1)).await;
    let bob = tenant.user_token("bob").await;
    let (url, license_id) = (kit.url().to_owned(), tenant.license_id.clone());
    blocking(move || {
        let handle = client(&url, &bob);
        // Released: the callback hears RELEASED with no reason.
        let seat = checkout(&handle, &license_id, "a", None).unwrap();
        let (tx, rx) = mpsc::channel();
        let heard = Box::new(Heard {
            tx,
            free: ptr::null_mut(),
        });
        unsafe {
            leasehold_seat_set_callback(
                seat.0,
                Some(record),
                &*heard as *const Heard as *mut c_void,
            )
        };
        assert_eq!(
            unsafe { leasehold_seat_release(seat.0) },
            LeaseholdResult::Ok
        );
        assert_eq!(state(&seat), LeaseholdSeatState::Released);
        assert_eq!(
            rx.recv_timeout(SOON).unwrap(),
            (LeaseholdSeatState::Released, None, None)
        );
        // Releasing again succeeds; the seat stays readable until freed.
        assert_eq!(
            unsafe { leasehold_seat_release(seat.0) },
            LeaseholdResult::Ok
        );
        assert!(take(unsafe { leasehold_seat_lease(seat.0) }).is_some());
        drop(seat);

        // A slow callback running while the seat is freed: free returns after it.
        let seat = checkout(&handle, &license_id, "b", None).unwrap();
        let done = Box::new(AtomicBool::new(false));
        unsafe {
            leasehold_seat_set_callback(
                seat.0,
                Some(slow),
                &*done as *const AtomicBool as *mut c_void,
            )
        };
        assert_eq!(
            unsafe { leasehold_seat_release(seat.0) },
            LeaseholdResult::Ok
        );
        std::thread::sleep(Duration::from_millis(100)); // the callback is running now
        drop(seat);
        assert!(
            done.load(Ordering::SeqCst),
            "free returned while the callback ran"
        );
    })
    .await;
}

#[tokio::test]
async fn a_queued_checkout_waits_for_the_seat_and_polling_sees_it_kept() {
    // Arrange: one seat, queueing, 2 s inactivity timeout.
    let kit = Kit::start();
    let tenant = kit
        .tenant(CreateLicense {
            on_full: Some(OnFull::Queue),
            inactivity_timeout_secs: Some(2),
            ..license(1)
        })
        .await;
    let bob = tenant.user_token("bob").await;
    let (url, license_id) = (kit.url().to_owned(), tenant.license_id.clone());
    blocking(move || {
        let handle = Arc::new(client(&url, &bob));
        let first = checkout(&handle, &license_id, "first", None).unwrap();

        // Act: a second checkout waits up to 20 s; the first seat is released after 1 s.
        let waiter = {
            let (handle, license_id) = (handle.clone(), license_id.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let options = LeaseholdCheckoutOptions {
                    wait_secs: 20,
                    ..Default::default()
                };
                (
                    checkout(&handle, &license_id, "second", Some(options)),
                    started.elapsed(),
                )
            })
        };
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            unsafe { leasehold_seat_release(first.0) },
            LeaseholdResult::Ok
        );
        let (second, waited) = waiter.join().unwrap();

        // Assert: granted after the release, then kept past the inactivity timeout.
        let second = second.unwrap();
        assert!(waited >= Duration::from_millis(900), "{waited:?}");
        let mut now = LeaseholdSeatState::Released;
        let r = unsafe { leasehold_seat_wait(second.0, 3_000, &mut now) };
        assert_eq!((r, now), (LeaseholdResult::Ok, LeaseholdSeatState::Active));
        assert_eq!(
            unsafe { leasehold_seat_lost_kind(second.0) },
            LeaseholdLostKind::None
        );
        assert!(take(unsafe { leasehold_seat_lost_reason(second.0) }).is_none());
    })
    .await;
}

#[tokio::test]
async fn a_seat_outlives_its_client_and_honours_the_heartbeat_interval_option() {
    // Arrange: a 60 s inactivity timeout (the server would advise 20 s heartbeats).
    let kit = Kit::start();
    let tenant = kit.tenant(license(1)).await;
    let bob = tenant.user_token("bob").await;
    let (url, license_id) = (kit.url().to_owned(), tenant.license_id.clone());
    let seat = blocking(move || {
        let handle = client(&url, &bob);
        let options = LeaseholdCheckoutOptions {
            heartbeat_interval_ms: 200,
            flags: LEASEHOLD_CHECKOUT_VERIFY_LEASE,
            ..Default::default()
        };
        checkout(&handle, &license_id, "outlives", Some(options)).unwrap()
        // the client handle is freed here
    })
    .await;
    let first_expiry = unsafe { leasehold_seat_expires_at(seat.0) };

    // Act: wait past a second of heartbeats every 200 ms.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // Assert: still active, the expiry moved by the heartbeats, the seat held on the server.
    assert_eq!(state(&seat), LeaseholdSeatState::Active);
    assert!(unsafe { leasehold_seat_expires_at(seat.0) } > first_expiry);
    assert_eq!(tenant.in_use().await, 1);
    blocking(move || {
        let seat = seat;
        assert_eq!(
            unsafe { leasehold_seat_release(seat.0) },
            LeaseholdResult::Ok
        )
    })
    .await;
    assert_eq!(tenant.in_use().await, 0);
}

#[tokio::test]
async fn leases_verify_offline_against_a_saved_jwks_and_tampering_is_caught() {
    let kit = Kit::start();
    let tenant = kit.tenant(license(1)).await;
    let bob = tenant.user_token("bob").await;
    let (url, license_id) = (kit.url().to_owned(), tenant.license_id.clone());
    blocking(move || {
        let handle = client(&url, &bob);
        let seat = checkout(&handle, &license_id, "verify", None).unwrap();
        let mut jwks = ptr::null_mut();
        assert_eq!(
            unsafe { leasehold_client_fetch_jwks(handle.0, &mut jwks) },
            LeaseholdResult::Ok
        );
        let jwks = take(jwks).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, &jwks).unwrap();
        drop(handle);

        let mut verifier = ptr::null_mut();
        let r = unsafe {
            leasehold_verifier_from_file(cstr(file.to_str().unwrap()).as_ptr(), 0, &mut verifier)
        };
        assert_eq!(r, LeaseholdResult::Ok);
        let lease = take(unsafe { leasehold_seat_lease(seat.0) }).unwrap();
        let now = unsafe { leasehold_seat_expires_at(seat.0) } - 60;
        let mut claims = ptr::null_mut();
        let r =
            unsafe { leasehold_verifier_verify(verifier, cstr(&lease).as_ptr(), now, &mut claims) };
        assert_eq!(r, LeaseholdResult::Ok, "{:?}", last_error());
        let c = unsafe { &*claims };
        let text = |p: *mut c_char| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned();
        assert_eq!(text(c.subject), "bob");
        assert_eq!(text(c.session_id), session_id(&seat));
        assert_eq!(text(c.license_id), license_id);
        assert_eq!(
            (text(c.kind), text(c.device_id), text(c.instance_id)),
            ("interactive".into(), "pc-1".into(), "verify".into())
        );
        assert!(c.expires_at > now && c.issued_at <= c.expires_at);
        unsafe { leasehold_lease_claims_free(claims) };

        // A flipped payload character, or a time past the expiry: LEASE_INVALID, why in the message.
        let mut tampered = lease.clone().into_bytes();
        let i = lease.find('.').unwrap() + 5;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let r = unsafe {
            leasehold_verifier_verify(verifier, cstr(&tampered).as_ptr(), now, ptr::null_mut())
        };
        assert_eq!(r, LeaseholdResult::LeaseInvalid);
        let r = unsafe {
            leasehold_verifier_verify(
                verifier,
                cstr(&lease).as_ptr(),
                now + 3_600,
                ptr::null_mut(),
            )
        };
        assert_eq!(r, LeaseholdResult::LeaseInvalid);
        assert!(last_error().0.contains("expired"), "{:?}", last_error());
        unsafe { leasehold_verifier_free(verifier) };

        // A leeway accepts it shortly after; a key set that is not one is refused.
        let mut lenient = ptr::null_mut();
        assert_eq!(
            unsafe { leasehold_verifier_new(cstr(&jwks).as_ptr(), 7_200, &mut lenient) },
            LeaseholdResult::Ok
        );
        let r = unsafe {
            leasehold_verifier_verify(lenient, cstr(&lease).as_ptr(), now + 3_600, ptr::null_mut())
        };
        assert_eq!(r, LeaseholdResult::Ok);
        unsafe { leasehold_verifier_free(lenient) };
        let mut bad = ptr::null_mut();
        assert_eq!(
            unsafe { leasehold_verifier_new(cstr("{\"keys\":[]}").as_ptr(), 0, &mut bad) },
            LeaseholdResult::Decode
        );
        assert_eq!(
            unsafe { leasehold_verifier_new(cstr("nope").as_ptr(), 0, &mut bad) },
            LeaseholdResult::Decode
        );
        let missing = cstr("/nonexistent/jwks.json");
        assert_eq!(
            unsafe { leasehold_verifier_from_file(missing.as_ptr(), 0, &mut bad) },
            LeaseholdResult::Config
        );
        assert!(bad.is_null());
    })
    .await;
}

#[tokio::test]
async fn a_service_user_checks_out_over_https_trusting_only_the_given_ca() {
    // Arrange: an HTTPS server with a certificate of a test CA, and a service user.
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(dir.path(), &ca, &ca.leaf());
    let data = tempfile::tempdir().unwrap();
    let server: ServerProcess = start_tls(data.path(), &files, "warn");
    let kit = Kit::with_server(server, data);
    let root = leasehold_client::Client::builder(kit.url())
        .bearer_token(ROOT)
        .ca_file(&files.ca)
        .unwrap()
        .build()
        .unwrap();
    let tenant = kit.tenant_with(&root, license(1)).await;
    let svc = tenant
        .admin
        .put_user(
            &tenant.account_id,
            "erp",
            &PutUser {
                kind: UserKind::Service,
                active: None,
            },
        )
        .await
        .unwrap();
    let (client_id, secret) = (svc.client_id.unwrap(), svc.client_secret.unwrap());
    let (url, license_id, ca_path) = (
        kit.url().to_owned(),
        tenant.license_id.clone(),
        files.ca.clone(),
    );

    blocking(move || {
        let new = |ca: Option<&str>| {
            let ca = ca.map(cstr);
            let mut handle = ptr::null_mut();
            let r = unsafe {
                leasehold_client_new_with_client_credentials(
                    cstr(&url).as_ptr(),
                    cstr(&client_id).as_ptr(),
                    cstr(&secret).as_ptr(),
                    ca.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
                    &mut handle,
                )
            };
            assert_eq!(r, LeaseholdResult::Ok);
            ClientHandle(handle)
        };
        // With the CA file: the token is obtained, the seat taken.
        let trusting = new(Some(ca_path.to_str().unwrap()));
        let seat = checkout(&trusting, &license_id, "svc", None).unwrap();
        assert_eq!(state(&seat), LeaseholdSeatState::Active);
        assert_eq!(
            unsafe { leasehold_seat_release(seat.0) },
            LeaseholdResult::Ok
        );
        // Without it, the system's roots do not know the test CA: a transport (TLS) error.
        let system_roots = new(None);
        let (r, (message, ..)) = checkout(&system_roots, &license_id, "svc", None)
            .err()
            .unwrap();
        assert_eq!(r, LeaseholdResult::Transport, "{message}");
    })
    .await;
}

#[tokio::test]
async fn a_borrowed_seat_is_saved_checked_offline_refused_once_reclaimed_and_returned() {
    // Arrange: a license that lends seats for up to 2 days.
    let kit = Kit::start();
    let tenant = kit
        .tenant(CreateLicense {
            max_borrow_days: Some(2),
            ..license(2)
        })
        .await;
    let bob = tenant.user_token("bob").await;
    let (url, license_id) = (kit.url().to_owned(), tenant.license_id.clone());
    let admin_token = tenant.admin_token.clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seat.lease");
    let seat_file = cstr(path.to_str().unwrap());
    #[allow(clippy::disallowed_methods)] // the test's own reading of the wall clock
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let until = now + 86_400;

    let session = blocking(move || {
        let handle = client(&url, &bob);
        // Past the policy: refused with the server's code.
        let r = unsafe {
            leasehold_borrow(
                handle.0,
                cstr(&license_id).as_ptr(),
                cstr("laptop").as_ptr(),
                cstr("b0").as_ptr(),
                now + 3 * 86_400,
                seat_file.as_ptr(),
            )
        };
        assert_eq!(r, LeaseholdResult::Api);
        assert_eq!(last_error().1.as_deref(), Some("borrow_too_long"));
        // Act: borrow for a day, saved to the file.
        let r = unsafe {
            leasehold_borrow(
                handle.0,
                cstr(&license_id).as_ptr(),
                cstr("laptop").as_ptr(),
                cstr("b1").as_ptr(),
                until,
                seat_file.as_ptr(),
            )
        };
        assert_eq!(r, LeaseholdResult::Ok, "{:?}", last_error());

        // Assert: offline, valid on its device until its expiry, with its claims.
        let mut claims = ptr::null_mut();
        let r = unsafe {
            leasehold_borrowed_seat_check(
                seat_file.as_ptr(),
                cstr("laptop").as_ptr(),
                now,
                &mut claims,
            )
        };
        assert_eq!(r, LeaseholdResult::Ok, "{:?}", last_error());
        let c = unsafe { &*claims };
        let session = unsafe { CStr::from_ptr(c.session_id) }
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(c.expires_at, until);
        unsafe { leasehold_lease_claims_free(claims) };
        for (device, at) in [("laptop", until), ("desktop", now)] {
            let r = unsafe {
                leasehold_borrowed_seat_check(
                    seat_file.as_ptr(),
                    cstr(device).as_ptr(),
                    at,
                    ptr::null_mut(),
                )
            };
            assert_eq!(r, LeaseholdResult::LeaseInvalid, "{device} at {at}");
        }
        let r = unsafe {
            leasehold_borrowed_seat_check_online(
                handle.0,
                seat_file.as_ptr(),
                cstr("laptop").as_ptr(),
                now,
            )
        };
        assert_eq!(r, LeaseholdResult::Ok, "{:?}", last_error());
        session
    })
    .await;
    assert_eq!(tenant.in_use().await, 1);

    // Act: the admin reclaims it (a lost laptop).
    tenant.admin.close_session(&session).await.unwrap();
    assert_eq!(tenant.in_use().await, 0);

    let url = kit.url().to_owned();
    let bob = kit
        .client(&admin_token)
        .create_user_token(&tenant.account_id, "bob")
        .await
        .unwrap()
        .token;
    blocking(move || {
        let handle = client(&url, &bob);
        let seat_file = cstr(path.to_str().unwrap());
        // Assert: still valid offline by its signature, refused online as revoked...
        let r = unsafe {
            leasehold_borrowed_seat_check(
                seat_file.as_ptr(),
                cstr("laptop").as_ptr(),
                now,
                ptr::null_mut(),
            )
        };
        assert_eq!(r, LeaseholdResult::Ok);
        let r = unsafe {
            leasehold_borrowed_seat_check_online(
                handle.0,
                seat_file.as_ptr(),
                cstr("laptop").as_ptr(),
                now,
            )
        };
        assert_eq!(r, LeaseholdResult::LeaseInvalid);
        assert!(last_error().0.contains("reclaimed"), "{:?}", last_error());
        // ...and returning it is nothing to return: the file goes.
        let r = unsafe { leasehold_borrowed_seat_return(handle.0, seat_file.as_ptr()) };
        assert_eq!(r, LeaseholdResult::Ok, "{:?}", last_error());
        assert!(!path.exists());
    })
    .await;
}
