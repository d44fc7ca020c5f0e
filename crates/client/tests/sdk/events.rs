//! The SDK's use of a session's event stream, against the real server (SQLite, real clock):
//! a revoke is reported as `Lost` within 2 s under the default 20-minute timeout (heartbeats
//! every 60 s), a license's new heartbeat cadence applies at once, and behind a proxy that
//! refuses streams the guard falls back to heartbeats silently: the seat is kept and its loss
//! still detected. `Client::session_events` is also read by hand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use leasehold_client::proto::{CreateLicense, LicenseModel, PatchLicense, PutUser, UserKind};
use leasehold_client::{
    CheckoutOptions, Client, EndReason, LeaseStatus, LostReason, SessionStreamEvent,
};
use leasehold_server::{Application, Config, RunningServer};

const ROOT: &str = "root-token-for-sdk-tests-0123456789";

struct Server {
    running: Option<RunningServer>,
    url: String,
    dir: tempfile::TempDir,
}

async fn launch(dir: &std::path::Path, listen: std::net::SocketAddr) -> RunningServer {
    let mut config = Config::new_for_test(dir);
    config.admin_token = Some(ROOT.into());
    config.listen = listen;
    // A restarted server's old listener may take a moment to let go of the port.
    for _ in 0..50 {
        let clock = Arc::new(leasehold_server::SystemClock::new());
        match Application::build(config.clone(), clock).await {
            Ok(app) => return app.spawn(),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("the server did not start");
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let running = launch(dir.path(), ([127, 0, 0, 1], 0).into()).await;
        Server {
            url: running.url(),
            running: Some(running),
            dir,
        }
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    /// Stops the server (its streams end without a final event) and starts it again on the
    /// same data folder and address.
    async fn restart(&mut self) {
        let running = self.running.take().unwrap();
        let addr = running.addr;
        running.stop().await.unwrap();
        self.running = Some(launch(self.dir.path(), addr).await);
    }
}

struct Tenant {
    account_id: String,
    admin: Client,
    license_id: String,
}

async fn tenant(url: &str, license: CreateLicense) -> Tenant {
    let root = Client::with_token(url, ROOT).unwrap();
    let account = root.create_account("Acme").await.unwrap();
    let admin = Client::with_token(url, &account.admin_token).unwrap();
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
    }
}

impl Tenant {
    /// A user's personal token.
    async fn token(&self, username: &str) -> String {
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
        self.admin
            .create_user_token(&self.account_id, username)
            .await
            .unwrap()
            .token
    }
}

fn license(seats: i64) -> CreateLicense {
    CreateLicense {
        product: "cad".into(),
        model: LicenseModel::ConcurrentSessions,
        seats: Some(seats),
        ..CreateLicense::default()
    }
}

/// Waits until the guard's status is final, at most `limit`; answers it and how long it took.
async fn final_status(
    guard: &leasehold_client::LeaseGuard,
    limit: Duration,
) -> (LeaseStatus, Duration) {
    let started = Instant::now();
    let mut status = guard.subscribe();
    let status = tokio::time::timeout(limit, status.wait_for(|s| !s.is_active()))
        .await
        .expect("the status did not become final in time")
        .unwrap()
        .clone();
    (status, started.elapsed())
}

#[tokio::test]
async fn an_admin_revoke_is_reported_as_lost_within_two_seconds() {
    // Arrange: the default timeout, so the next heartbeat is a minute away.
    let server = Server::start().await;
    let t = tenant(&server.url(), license(1)).await;
    let bob = Client::with_token(&server.url(), t.token("bob").await).unwrap();
    let guard = bob
        .checkout(&t.license_id, "laptop", "cad-1")
        .await
        .unwrap();
    assert_eq!(guard.session().heartbeat_interval_secs, 60);
    // Let the guard's stream open (a revoke before it would be answered 410 on opening it,
    // which is reported the same way).
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act
    t.admin.close_session(guard.session_id()).await.unwrap();

    // Assert
    let (status, took) = final_status(&guard, Duration::from_secs(5)).await;
    assert_eq!(
        status,
        LeaseStatus::Lost {
            reason: LostReason::Ended(EndReason::Revoked)
        }
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(guard.lost().await, LostReason::Ended(EndReason::Revoked));
}

#[tokio::test]
async fn a_new_heartbeat_cadence_of_the_license_applies_at_once() {
    // Arrange: heartbeats every 60 s.
    let server = Server::start().await;
    let t = tenant(&server.url(), license(1)).await;
    let bob = Client::with_token(&server.url(), t.token("bob").await).unwrap();
    let guard = bob
        .checkout(&t.license_id, "laptop", "cad-1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first_expiry = guard.expires_at();

    // Act: the admin asks for a heartbeat every second.
    t.admin
        .patch_license(
            &t.license_id,
            &PatchLicense {
                heartbeat_interval_secs: Some(1),
                ..PatchLicense::default()
            },
        )
        .await
        .unwrap();

    // Assert: the guard learns it from its stream and heartbeats within seconds (its expiry
    // moves), not a minute later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while guard.session().heartbeat_interval_secs != 1 || guard.expires_at() <= first_expiry {
        assert!(Instant::now() < deadline, "no heartbeat at the new cadence");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(guard.is_active());
    guard.release().await.unwrap();
}

#[tokio::test]
async fn the_event_stream_can_be_read_by_hand() {
    let server = Server::start().await;
    let t = tenant(&server.url(), license(1)).await;
    let bob = Client::with_token(&server.url(), t.token("bob").await).unwrap();
    let guard = bob
        .checkout_with(
            &t.license_id,
            "laptop",
            "cad-1",
            CheckoutOptions::new().without_events(),
        )
        .await
        .unwrap();
    let mut events = bob.session_events(guard.session_id()).await.unwrap();
    let first = events.next().await.unwrap().unwrap();
    assert!(
        matches!(&first, SessionStreamEvent::Opened(o) if o.session_id == guard.session_id()),
        "{first:?}"
    );

    t.admin.close_session(guard.session_id()).await.unwrap();

    let last = events.next_within(Duration::from_secs(5)).await.unwrap();
    match last {
        Some(SessionStreamEvent::Ended(ended)) => assert_eq!(ended.reason, EndReason::Revoked),
        other => panic!("expected the end, got {other:?}"),
    }
    assert!(events.next().await.unwrap().is_none());
    let again = bob.session_events(guard.session_id()).await.unwrap_err();
    assert!(again.is_session_ended(), "{again}");
    assert_eq!(again.end_reason(), Some(EndReason::Revoked));
}

/// What the proxy answers to a request for an event stream.
#[derive(Clone, Copy)]
enum Refusal {
    /// 403, as a proxy that blocks the route.
    Forbidden,
    /// 200 with an HTML page, as a proxy that answers with its own page.
    Html,
}

#[derive(Clone)]
struct ProxyState {
    target: String,
    http: reqwest::Client,
    refusal: Refusal,
    stream_requests: Arc<AtomicUsize>,
}

/// Forwards every request to the server, except event streams, which it refuses.
async fn forward(State(p): State<ProxyState>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    if path.ends_with("/events") {
        p.stream_requests.fetch_add(1, Ordering::SeqCst);
        return match p.refusal {
            Refusal::Forbidden => {
                (StatusCode::FORBIDDEN, "streaming is not allowed").into_response()
            }
            Refusal::Html => (
                [(axum::http::header::CONTENT_TYPE, "text/html")],
                "<html>proxy</html>",
            )
                .into_response(),
        };
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let mut forwarded = p
        .http
        .request(parts.method, format!("{}{path}", p.target))
        .body(bytes);
    for (name, value) in &parts.headers {
        if name != "host" {
            forwarded = forwarded.header(name, value);
        }
    }
    let answer = forwarded.send().await.unwrap();
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    response
        .body(Body::from(answer.bytes().await.unwrap()))
        .unwrap()
}

async fn refusing_proxy(target: String, refusal: Refusal) -> (String, Arc<AtomicUsize>) {
    let stream_requests = Arc::new(AtomicUsize::new(0));
    let state = ProxyState {
        target,
        http: reqwest::Client::new(),
        refusal,
        stream_requests: stream_requests.clone(),
    };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), stream_requests)
}

#[tokio::test]
async fn behind_a_proxy_that_refuses_streams_heartbeats_keep_the_seat_and_detect_its_loss() {
    for refusal in [Refusal::Forbidden, Refusal::Html] {
        // Arrange: sessions idle for 3 s end (heartbeats every second); the SDK talks to the
        // server through a proxy that refuses event streams.
        let server = Server::start().await;
        let t = tenant(
            &server.url(),
            CreateLicense {
                inactivity_timeout_secs: Some(3),
                ..license(1)
            },
        )
        .await;
        let (proxy, stream_requests) = refusing_proxy(server.url(), refusal).await;
        let bob = Client::with_token(&proxy, t.token("bob").await).unwrap();
        let guard = bob
            .checkout(&t.license_id, "laptop", "cad-1")
            .await
            .unwrap();

        // Act 1: longer than the timeout.
        tokio::time::sleep(Duration::from_millis(4500)).await;

        // Assert 1: the seat is kept by heartbeats alone; the stream was asked for once.
        assert!(guard.is_active(), "{:?}", guard.status());
        let live = t.admin.list_sessions(&t.license_id).await.unwrap();
        assert_eq!(live.sessions.len(), 1);
        assert_eq!(stream_requests.load(Ordering::SeqCst), 1, "no retry storm");

        // Act 2 + assert 2: a revoke is still detected, at the next heartbeat.
        t.admin.close_session(guard.session_id()).await.unwrap();
        let (status, _) = final_status(&guard, Duration::from_secs(5)).await;
        assert_eq!(
            status,
            LeaseStatus::Lost {
                reason: LostReason::Ended(EndReason::Revoked)
            }
        );
    }
}

#[tokio::test]
async fn a_service_users_seat_hears_its_revoke_through_client_credentials() {
    let server = Server::start().await;
    let t = tenant(&server.url(), license(1)).await;
    let user = t
        .admin
        .put_user(
            &t.account_id,
            "erp",
            &PutUser {
                kind: UserKind::Service,
                active: None,
            },
        )
        .await
        .unwrap();
    let (client_id, secret) = (user.client_id.unwrap(), user.client_secret.unwrap());
    let service = Client::with_client_credentials(&server.url(), &client_id, &secret).unwrap();
    let guard = service
        .checkout(&t.license_id, "erp-host", "worker-1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    t.admin.close_session(guard.session_id()).await.unwrap();

    let (status, took) = final_status(&guard, Duration::from_secs(5)).await;
    assert_eq!(
        status,
        LeaseStatus::Lost {
            reason: LostReason::Ended(EndReason::Revoked)
        }
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[tokio::test]
async fn a_stream_cut_by_a_server_restart_is_opened_again() {
    // Arrange: a seat whose stream is open.
    let mut server = Server::start().await;
    let t = tenant(&server.url(), license(1)).await;
    let bob = Client::with_token(&server.url(), t.token("bob").await).unwrap();
    let guard = bob
        .checkout(&t.license_id, "laptop", "cad-1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act: the server restarts (the session survives it; the stream does not), then, once
    // the guard had time to open its stream again, an admin revokes the session.
    server.restart().await;
    assert!(guard.is_active());
    tokio::time::sleep(Duration::from_secs(2)).await;
    t.admin.close_session(guard.session_id()).await.unwrap();

    // Assert: heard on the new stream, within 2 s (the next heartbeat is a minute away).
    let (status, took) = final_status(&guard, Duration::from_secs(5)).await;
    assert_eq!(
        status,
        LeaseStatus::Lost {
            reason: LostReason::Ended(EndReason::Revoked)
        }
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}
