//! The SDK against the real Leasehold server, started in-process on port 0 with a fresh SQLite
//! data folder and the real clock: checkout guards that outlive several inactivity timeouts,
//! seat return on drop, lease loss after an admin revoke, retries across a server restart,
//! offline verification of real leases, service users and queueing.
//!
//! Times are real, so the tests wait by polling with generous limits (the machine may be
//! loaded) and keep the waits that are the point of a test (outliving a timeout) short.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use leasehold_client::proto::{CreateLicense, LicenseModel, OnFull, PutUser, UserKind};
use leasehold_client::{
    CheckoutOptions, Client, ClientError, Clock, EndReason, ErrorCode, LeaseStatus, LeaseVerifier,
    LostReason, RetryPolicy, SystemClock,
};
use leasehold_server::{Application, Config, RunningServer};
use serde_json::Value;

const ROOT: &str = "root-token-for-sdk-tests-0123456789";

/// Generous bound for anything that should happen "soon" on a loaded machine.
const SOON: Duration = Duration::from_secs(15);

/// A real server in a temporary data folder; it can be stopped and started again on the same
/// folder and address.
pub(crate) struct TestServer {
    running: Option<RunningServer>,
    addr: SocketAddr,
    url: String,
    dir: tempfile::TempDir,
}

impl TestServer {
    pub(crate) async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let running = launch(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0))).await;
        TestServer {
            addr: running.addr,
            url: running.url(),
            running: Some(running),
            dir,
        }
    }

    pub(crate) async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }

    /// Starts a new server on the same data folder and the same address.
    async fn restart(&mut self) {
        self.stop().await;
        self.running = Some(launch(self.dir.path(), self.addr).await);
    }

    fn client(&self, token: &str) -> Client {
        Client::builder(self.url.as_str())
            .bearer_token(token)
            .retry_policy(patient_retries())
            .build()
            .unwrap()
    }

    /// An account, an admin client for it, and a license made from `license` (its
    /// `account_id` is filled in).
    pub(crate) async fn tenant(&self, license: CreateLicense) -> Tenant {
        let root = self.client(ROOT);
        let account = root.create_account("Acme").await.unwrap();
        let admin = self.client(&account.admin_token);
        let license = admin
            .create_license(&CreateLicense {
                account_id: account.id.clone(),
                ..license
            })
            .await
            .unwrap();
        Tenant {
            account_id: account.id,
            admin,
            license_id: license.id,
            url: self.url.clone(),
        }
    }
}

async fn launch(dir: &Path, listen: SocketAddr) -> RunningServer {
    let mut config = Config::new_for_test(dir);
    config.listen = listen;
    config.admin_token = Some(ROOT.into());
    // The old listener of a restarted server may take a moment to let go of the port.
    let mut tries = 0;
    loop {
        match Application::build(
            config.clone(),
            Arc::new(leasehold_server::SystemClock::new()),
        )
        .await
        {
            Ok(app) => return app.spawn(),
            Err(e) if tries < 50 => {
                tries += 1;
                eprintln!("server did not start yet ({e:#}), trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("server did not start: {e:#}"),
        }
    }
}

/// Enough tries to ride out a server restart (several seconds of backoff in all).
fn patient_retries() -> RetryPolicy {
    RetryPolicy::new(30, Duration::from_millis(50), Duration::from_millis(500))
}

pub(crate) struct Tenant {
    account_id: String,
    pub(crate) admin: Client,
    pub(crate) license_id: String,
    url: String,
}

impl Tenant {
    /// An interactive user with a personal token, as a client.
    pub(crate) async fn user(&self, username: &str) -> Client {
        self.admin
            .put_user(
                &self.account_id,
                username,
                &PutUser {
                    kind: UserKind::Interactive,
                    active: None,
                },
            )
            .await
            .unwrap();
        let token = self
            .admin
            .create_user_token(&self.account_id, username)
            .await
            .unwrap();
        Client::builder(self.url.as_str())
            .bearer_token(token.token)
            .retry_policy(patient_retries())
            .build()
            .unwrap()
    }

    pub(crate) async fn in_use(&self) -> u32 {
        let license = self.admin.get_license(&self.license_id).await.unwrap();
        license.usage.unwrap().in_use
    }

    async fn live_session_ids(&self) -> Vec<String> {
        let list = self.admin.list_sessions(&self.license_id).await.unwrap();
        list.sessions.into_iter().map(|s| s.id).collect()
    }
}

pub(crate) fn license(seats: i64) -> CreateLicense {
    CreateLicense {
        product: "cad".into(),
        model: LicenseModel::ConcurrentSessions,
        seats: Some(seats),
        ..CreateLicense::default()
    }
}

/// Polls the async `check` until it holds or `SOON` has passed.
async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > SOON {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unix_now() -> i64 {
    SystemClock.now_unix()
}

// ----- keep-alive, return, loss ---------------------------------------------------------------

#[tokio::test]
async fn a_guard_keeps_its_session_alive_across_several_inactivity_timeouts() {
    // Arrange: idle sessions end after 2 s; the server advises heartbeats every second.
    let server = TestServer::start().await;
    let tenant = server
        .tenant(CreateLicense {
            inactivity_timeout_secs: Some(2),
            ..license(2)
        })
        .await;
    let bob = tenant.user("bob").await;

    // Act: a guard with the server-advised interval, and a bare session nobody keeps alive.
    let guard = bob
        .checkout(&tenant.license_id, "laptop", "cad-1")
        .await
        .unwrap();
    assert_eq!(guard.session().heartbeat_interval_secs, 1);
    let first_lease = guard.lease().unwrap();
    let idle = bob
        .open_session(&leasehold_client::proto::OpenSession {
            license_id: tenant.license_id.clone(),
            device_id: "laptop".into(),
            instance_id: "cad-idle".into(),
            wait_secs: None,
            borrow_until: None,
        })
        .await
        .unwrap();
    let started = tokio::time::Instant::now();

    // Assert: the idle session is reclaimed after its timeout...
    assert!(eventually(|| async { !tenant.live_session_ids().await.contains(&idle.id) }).await);
    // ...while the guarded one lives on past three timeouts.
    let three_timeouts = Duration::from_secs(6) + Duration::from_millis(500);
    tokio::time::sleep(three_timeouts.saturating_sub(started.elapsed())).await;
    assert_eq!(guard.status(), LeaseStatus::Active);
    assert_eq!(
        tenant.live_session_ids().await,
        vec![guard.session_id().to_owned()]
    );
    assert_eq!(tenant.in_use().await, 1);
    // The heartbeats asked for re-signed leases along the way: genuine, and later than the
    // first. (A lease of a 2 s session is renewed at half its life and its `exp` is in whole
    // seconds, so "still valid at this very instant" would be a race: check the signature
    // with some leeway instead.)
    let verifier = (*bob.lease_verifier().await.unwrap())
        .clone()
        .with_leeway(60);
    let first = verifier.verify(&first_lease, unix_now()).unwrap();
    let latest = verifier
        .verify(&guard.lease().unwrap(), unix_now())
        .unwrap();
    assert_eq!(latest.sid, guard.session_id());
    assert!(latest.exp > first.exp, "{latest:?} vs {first:?}");

    guard.release().await.unwrap();
    assert_eq!(tenant.in_use().await, 0);
}

#[tokio::test]
async fn dropping_the_guard_frees_the_seat_for_someone_else() {
    // Arrange: one seat, held by bob.
    let server = TestServer::start().await;
    let tenant = server.tenant(license(1)).await;
    let bob = tenant.user("bob").await;
    let carol = tenant.user("carol").await;
    let guard = bob
        .checkout(&tenant.license_id, "laptop", "cad-1")
        .await
        .unwrap();

    // Carol is refused with the server's code while bob holds it.
    let err = carol
        .checkout(&tenant.license_id, "desktop", "cad-1")
        .await
        .unwrap_err();
    assert!(err.is_no_seat_available(), "{err:?}");
    assert_eq!(err.status(), Some(409));
    assert!(!err.is_retryable());

    // Act
    drop(guard);

    // Assert: the seat comes back without anyone waiting for an expiry (20 min here).
    assert!(eventually(|| async { tenant.in_use().await == 0 }).await);
    let guard = carol
        .checkout(&tenant.license_id, "desktop", "cad-1")
        .await
        .unwrap();
    assert_eq!(guard.session().username, "carol");
    // An explicit release frees it at once.
    guard.release().await.unwrap();
    assert_eq!(tenant.in_use().await, 0);
}

#[tokio::test]
async fn an_admin_revoke_is_reported_as_a_lost_lease() {
    // Arrange
    let server = TestServer::start().await;
    let tenant = server.tenant(license(2)).await;
    let bob = tenant.user("bob").await;
    let guard = bob
        .checkout_with(
            &tenant.license_id,
            "laptop",
            "cad-1",
            CheckoutOptions::new().heartbeat_interval(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    let mut status = guard.subscribe();

    // Act
    tenant
        .admin
        .close_session(guard.session_id())
        .await
        .unwrap();

    // Assert: the next heartbeat learns why, and every subscriber hears about it.
    let reason = tokio::time::timeout(SOON, guard.lost()).await.unwrap();
    assert_eq!(reason, LostReason::Ended(EndReason::Revoked));
    status.changed().await.unwrap();
    assert_eq!(
        *status.borrow(),
        LeaseStatus::Lost {
            reason: LostReason::Ended(EndReason::Revoked)
        }
    );
    assert_eq!(tenant.in_use().await, 0);
    // The ended session cannot be resurrected by a heartbeat.
    let err = bob.heartbeat(guard.session_id()).await.unwrap_err();
    assert!(err.is_session_ended(), "{err:?}");
    assert_eq!(err.end_reason(), Some(EndReason::Revoked));
    // Releasing a lost lease is not an error.
    guard.release().await.unwrap();
}

#[tokio::test]
async fn revoking_every_session_of_a_license_loses_every_lease_at_once() {
    // Arrange: two guards on the license.
    let server = TestServer::start().await;
    let tenant = server.tenant(license(3)).await;
    let bob = tenant.user("bob").await;
    let options = || CheckoutOptions::new().heartbeat_interval(Duration::from_millis(200));
    let first = bob
        .checkout_with(&tenant.license_id, "laptop", "cad-1", options())
        .await
        .unwrap();
    let second = bob
        .checkout_with(&tenant.license_id, "laptop", "cad-2", options())
        .await
        .unwrap();

    // Act
    let revoked = tenant
        .admin
        .revoke_license_sessions(&tenant.license_id)
        .await
        .unwrap();

    // Assert: both are lost as revoked, the seats are free.
    assert_eq!(revoked.revoked, 2);
    for guard in [&first, &second] {
        let reason = tokio::time::timeout(SOON, guard.lost()).await.unwrap();
        assert_eq!(reason, LostReason::Ended(EndReason::Revoked));
    }
    assert_eq!(tenant.in_use().await, 0);
    assert!(tenant.live_session_ids().await.is_empty());
}

// ----- retries --------------------------------------------------------------------------------

#[tokio::test]
async fn requests_and_heartbeats_survive_a_server_restart() {
    // Arrange: bob holds a seat and heartbeats every 200 ms.
    let mut server = TestServer::start().await;
    let tenant = server.tenant(license(2)).await;
    let bob = tenant.user("bob").await;
    let guard = bob
        .checkout_with(
            &tenant.license_id,
            "laptop",
            "cad-1",
            CheckoutOptions::new().heartbeat_interval(Duration::from_millis(200)),
        )
        .await
        .unwrap();

    // Act: the server goes away; a request is made while it is down; it comes back on the
    // same data folder and port.
    server.stop().await;
    let admin = tenant.admin.clone();
    let license_id = tenant.license_id.clone();
    let pending = tokio::spawn(async move { admin.get_license(&license_id).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!pending.is_finished(), "the request should be retrying");
    assert_eq!(guard.status(), LeaseStatus::Active, "expiry is 20 min away");
    let expiry_while_down = guard.expires_at();
    server.restart().await;

    // Assert: the request got its answer through the retries, the session survived, and the
    // guard's heartbeats go through again.
    let license = tokio::time::timeout(SOON, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(license.usage.unwrap().in_use, 1);
    assert_eq!(
        tenant.live_session_ids().await,
        vec![guard.session_id().to_owned()]
    );
    assert!(eventually(|| async { guard.expires_at() > expiry_while_down }).await);
    assert_eq!(guard.status(), LeaseStatus::Active);
    guard.release().await.unwrap();
    assert_eq!(tenant.in_use().await, 0);
}

#[tokio::test]
async fn without_retries_a_stopped_server_is_a_retryable_transport_error() {
    let mut server = TestServer::start().await;
    let client = Client::builder(server.url.as_str())
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    client.healthz().await.unwrap();

    server.stop().await;
    let err = client.healthz().await.unwrap_err();

    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
}

// ----- offline lease verification -------------------------------------------------------------

/// `lease` with its payload decoded, changed by `edit`, and encoded again (signature kept).
fn tamper(lease: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = lease.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    edit(&mut claims);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

fn assert_lease_invalid(
    result: leasehold_client::Result<leasehold_client::LeaseClaims>,
    needle: &str,
) {
    match result {
        Err(ClientError::LeaseInvalid(why)) => {
            assert!(why.contains(needle), "{why:?} should mention {needle:?}")
        }
        other => panic!("expected LeaseInvalid({needle}), got {other:?}"),
    }
}

#[tokio::test]
async fn real_leases_verify_offline_and_tampered_or_expired_ones_do_not() {
    // Arrange: a checkout that verifies its lease with the server's keys.
    let server = TestServer::start().await;
    let tenant = server.tenant(license(2)).await;
    let bob = tenant.user("bob").await;
    let guard = bob
        .checkout_with(
            &tenant.license_id,
            "laptop",
            "cad-1",
            CheckoutOptions::new().verify_leases(),
        )
        .await
        .unwrap();
    let lease = guard.lease().unwrap();
    // A vendor can ship the key set instead of fetching it: the verifier only needs the JWKS.
    let shipped_jwks = Client::new(&server.url).unwrap().jwks().await.unwrap();
    let verifier = LeaseVerifier::from_jwks(&shipped_jwks)
        .unwrap()
        .with_issuer("leasehold");

    // Act + Assert (offline from here: nothing below talks to the server): a good lease yields the session's claims...
    let claims = verifier.verify(&lease, unix_now()).unwrap();
    let session = guard.session();
    assert_eq!(claims.sid, session.id);
    assert_eq!(claims.lic, tenant.license_id);
    assert_eq!(claims.sub, "bob");
    assert_eq!(claims.kind, UserKind::Interactive);
    assert_eq!(
        (claims.device_id.as_str(), claims.instance_id.as_str()),
        ("laptop", "cad-1")
    );
    assert_eq!(claims.exp, session.expires_at.unix_timestamp());

    // ...a tampered one is refused...
    let forged = tamper(&lease, |c| c["sub"] = "mallory".into());
    assert_lease_invalid(verifier.verify(&forged, unix_now()), "bad signature");
    let extended = tamper(&lease, |c| c["exp"] = (claims.exp + 86_400).into());
    assert_lease_invalid(verifier.verify(&extended, unix_now()), "bad signature");
    let (signed, signature) = lease.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[0] ^= 0x80;
    let flipped = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(bytes));
    assert_lease_invalid(verifier.verify(&flipped, unix_now()), "bad signature");

    // ...and so is an expired one (the time is an argument: no waiting for 20 minutes).
    assert!(verifier.verify(&lease, claims.exp - 1).is_ok());
    assert_lease_invalid(verifier.verify(&lease, claims.exp), "expired");
    assert_lease_invalid(verifier.verify(&lease, claims.exp + 3600), "expired");

    guard.release().await.unwrap();
}

#[tokio::test]
async fn a_lease_from_another_server_does_not_verify() {
    let ours = TestServer::start().await;
    let theirs = TestServer::start().await;
    let tenant = theirs.tenant(license(1)).await;
    let mallory = tenant.user("mallory").await;
    let guard = mallory
        .checkout(&tenant.license_id, "laptop", "cad-1")
        .await
        .unwrap();

    let verifier = ours.client(ROOT).lease_verifier().await.unwrap();

    assert_lease_invalid(
        verifier.verify(&guard.lease().unwrap(), unix_now()),
        "unknown key id",
    );
    guard.release().await.unwrap();
}

// ----- service users, queueing ----------------------------------------------------------------

#[tokio::test]
async fn a_service_user_checks_out_with_client_credentials() {
    // Arrange: a service user; its secret is shown once.
    let server = TestServer::start().await;
    let tenant = server.tenant(license(1)).await;
    let user = tenant
        .admin
        .put_user(
            &tenant.account_id,
            "backend",
            &PutUser {
                kind: UserKind::Service,
                active: None,
            },
        )
        .await
        .unwrap();
    let (client_id, secret) = (user.client_id.unwrap(), user.client_secret.unwrap());
    let again = tenant
        .admin
        .put_user(
            &tenant.account_id,
            "backend",
            &PutUser {
                kind: UserKind::Service,
                active: Some(true),
            },
        )
        .await
        .unwrap();
    assert_eq!(again.client_secret, None, "the secret is shown only once");

    // Act: the SDK obtains the access token by itself.
    let service = Client::with_client_credentials(&server.url, &client_id, &secret).unwrap();
    let guard = service
        .checkout_with(
            &tenant.license_id,
            "host-1",
            "worker-1",
            CheckoutOptions::new().verify_leases(),
        )
        .await
        .unwrap();

    // Assert
    let session = guard.session();
    assert_eq!(
        (session.username.as_str(), session.kind),
        ("backend", UserKind::Service)
    );
    assert_eq!(tenant.in_use().await, 1);
    guard.release().await.unwrap();
    assert_eq!(tenant.in_use().await, 0);
    // Wrong credentials are a 401 with the server's code, not retried.
    let wrong = Client::with_client_credentials(&server.url, &client_id, "not-the-secret").unwrap();
    let err = wrong
        .checkout(&tenant.license_id, "host-1", "worker-2")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err:?}");
}

#[tokio::test]
async fn a_checkout_waits_in_the_queue_until_a_seat_is_freed() {
    // Arrange: one seat that queues, held by bob.
    let server = TestServer::start().await;
    let tenant = server
        .tenant(CreateLicense {
            on_full: Some(OnFull::Queue),
            ..license(1)
        })
        .await;
    let bob = tenant.user("bob").await;
    let carol = tenant.user("carol").await;
    let held = bob
        .checkout(&tenant.license_id, "laptop", "cad-1")
        .await
        .unwrap();

    // Act: carol waits for up to a minute...
    let license_id = tenant.license_id.clone();
    let waiting = tokio::spawn(async move {
        carol
            .checkout_with(
                &license_id,
                "desktop",
                "cad-1",
                CheckoutOptions::new().wait_secs(60),
            )
            .await
    });
    assert!(
        eventually(|| async {
            let queue = tenant
                .admin
                .license_queue(&tenant.license_id)
                .await
                .unwrap();
            queue.waiting.iter().any(|w| w.username == "carol")
        })
        .await
    );
    // ...and gets the seat as soon as bob gives it back.
    held.release().await.unwrap();

    // Assert
    let guard = tokio::time::timeout(SOON, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(guard.session().username, "carol");
    assert!(guard.is_active());
    guard.release().await.unwrap();
}

// ----- devices, account listings --------------------------------------------------------------

#[tokio::test]
async fn devices_are_activated_up_to_the_limit_and_deactivating_one_ends_its_sessions() {
    // Arrange: a node_locked license for two devices.
    let server = TestServer::start().await;
    let tenant = server
        .tenant(CreateLicense {
            model: LicenseModel::NodeLocked,
            ..license(2)
        })
        .await;
    let (admin, lid) = (&tenant.admin, tenant.license_id.as_str());
    let bob = tenant.user("bob").await;

    // Act + Assert: two activations, the same one again, then a refused third.
    let first = admin
        .activate_device(lid, "3f:9a:01", "CAD workstation 7")
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.device.name, "CAD workstation 7");
    assert!(
        admin
            .activate_device(lid, "3f:9a:02", "")
            .await
            .unwrap()
            .created
    );
    let again = admin
        .activate_device(lid, "3f:9a:01", "renamed")
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.device, first.device);
    let full = admin
        .activate_device(lid, "3f:9a:03", "")
        .await
        .unwrap_err();
    assert_eq!(full.status(), Some(409));
    assert_eq!(
        full.code(),
        Some(ErrorCode::ActivationsExhausted),
        "{full:?}"
    );
    let list = admin.list_devices(lid).await.unwrap();
    let mut fingerprints: Vec<&str> = list
        .devices
        .iter()
        .map(|d| d.fingerprint.as_str())
        .collect();
    fingerprints.sort_unstable();
    assert_eq!(fingerprints, ["3f:9a:01", "3f:9a:02"]);
    assert_eq!(list.max_devices, 2);

    // Deactivating a device ends its session and frees its activation.
    let guard = bob
        .checkout_with(
            lid,
            "3f:9a:01",
            "cad-1",
            CheckoutOptions::new().heartbeat_interval(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    admin.deactivate_device(lid, "3f:9a:01").await.unwrap();
    let reason = tokio::time::timeout(SOON, guard.lost()).await.unwrap();
    assert_eq!(reason, LostReason::Ended(EndReason::DeviceDeactivated));
    assert_eq!(admin.list_devices(lid).await.unwrap().devices.len(), 1);
    assert!(
        admin
            .activate_device(lid, "3f:9a:03", "")
            .await
            .unwrap()
            .created
    );
    let gone = admin.deactivate_device(lid, "3f:9a:01").await.unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::NotFound), "{gone:?}");
}

#[tokio::test]
async fn an_accounts_users_and_licenses_are_listed_and_a_user_is_read() {
    // Arrange: bob (interactive, via `user`) and a service user; a second license.
    let server = TestServer::start().await;
    let tenant = server.tenant(license(1)).await;
    let (admin, aid) = (&tenant.admin, tenant.account_id.as_str());
    tenant.user("bob").await;
    admin
        .put_user(
            aid,
            "backend",
            &PutUser {
                kind: UserKind::Service,
                active: Some(false),
            },
        )
        .await
        .unwrap();
    let second = admin
        .create_license(&CreateLicense {
            account_id: aid.to_owned(),
            product: "cam".into(),
            ..license(3)
        })
        .await
        .unwrap();

    // Act
    let backend = admin.get_user(aid, "backend").await.unwrap();
    let missing = admin.get_user(aid, "nobody").await.unwrap_err();
    let users = admin.list_users(aid).await.unwrap();
    let licenses = admin.list_licenses(aid).await.unwrap();
    let other = server
        .client(
            &server
                .client(ROOT)
                .create_account("Other")
                .await
                .unwrap()
                .admin_token,
        )
        .list_users(aid)
        .await
        .unwrap_err();

    // Assert
    assert_eq!(
        (backend.kind, backend.active, backend.client_secret),
        (UserKind::Service, false, None)
    );
    assert!(backend.client_id.is_some());
    assert_eq!(missing.code(), Some(ErrorCode::NotFound), "{missing:?}");
    let mut names: Vec<&str> = users.users.iter().map(|u| u.username.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["backend", "bob"]);
    let mut ids: Vec<&str> = licenses.licenses.iter().map(|l| l.id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = [tenant.license_id.as_str(), second.id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert_eq!(other.status(), Some(403), "{other:?}");
}
