//! The SDK against a scripted in-process HTTP server (axum on port 0): routes, retries, token
//! renewal, the checkout guard's heartbeats and seat return, and lease verification.
//!
//! These tests pin down the SDK's own behaviour, including failures the real server does not
//! produce on demand (scripted 503s, forged leases); `real_server` checks the same SDK against
//! the real thing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use leasehold_client::proto::{
    CreateLicense, Device, DeviceList, ErrorBody, ErrorDetail, Heartbeat, Jwk, Jwks, LeaseClaims,
    License, LicenseList, LicenseModel, OnFull, PatchLicense, PutUser, Session, SessionList, Usage,
    UsageReport, User, UserKind, UserList,
};
use leasehold_client::{
    CheckoutOptions, Client, ClientError, EndReason, ErrorCode, LeaseStatus, LostReason,
    RetryPolicy, UsageQuery,
};
use serde_json::{json, Value};
use time::OffsetDateTime;

// ----- helpers -------------------------------------------------------------------------------

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy::new(4, Duration::from_millis(5), Duration::from_millis(40))
}

fn client(base: &str, token: &str) -> Client {
    Client::builder(base)
        .bearer_token(token)
        .retry_policy(fast_retries())
        .build()
        .unwrap()
}

fn api_error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    error_with_reason(status, code, message, None)
}

fn error_with_reason(
    status: StatusCode,
    code: ErrorCode,
    message: &str,
    reason: Option<EndReason>,
) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code,
            message: message.to_owned(),
            reason,
            queue_timeout: None,
        },
    };
    (status, Json(body)).into_response()
}

/// The mock plays the server, which reads the wall clock at its edge.
#[allow(clippy::disallowed_methods)]
fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

fn license(id: &str) -> License {
    License {
        id: id.into(),
        account_id: "acc_1".into(),
        product: "editor".into(),
        model: LicenseModel::ConcurrentSessions,
        seats: 3,
        plan: None,
        extra_seats: 0,
        reserved: vec![],
        inactivity_timeout_secs: 1200,
        heartbeat_interval_secs: 60,
        service_session_lifetime_secs: 3600,
        interactive_session_lifetime_secs: None,
        on_full: OnFull::Deny,
        max_queue_wait_secs: 300,
        max_sessions_per_user: None,
        overdraft: 0,
        starts_at: None,
        expires_at: None,
        suspended: false,
        max_borrow_days: None,
        max_borrowed_seats: None,
        borrow_lowwater: None,
        alerts: None,
        created_at: now(),
        delegation_id: None,
        delegation_expires_at: None,
        usage: Some(Usage {
            seats: 3,
            in_use: 1,
            available: 2,
            ending: 0,
            overdraft_in_use: 0,
            borrowed: 0,
            delegated: 0,
            activations: None,
        }),
    }
}

fn device(license_id: &str, fingerprint: &str) -> Device {
    Device {
        license_id: license_id.into(),
        fingerprint: fingerprint.into(),
        name: "CAD workstation".into(),
        activated_at: now(),
    }
}

fn session(id: &str, expires_in: time::Duration, lease: Option<String>) -> Session {
    let opened_at = now();
    Session {
        id: id.into(),
        license_id: "lic_1".into(),
        username: "alice".into(),
        kind: UserKind::Interactive,
        device_id: "laptop".into(),
        instance_id: "app-1".into(),
        opened_at,
        expires_at: opened_at + expires_in,
        heartbeat_interval_secs: 60,
        overdraft: false,
        borrow_until: None,
        lease,
    }
}

/// Counts calls per name.
#[derive(Default)]
struct Hits(Mutex<HashMap<String, u32>>);

impl Hits {
    fn hit(&self, name: &str) -> u32 {
        let mut map = self.0.lock().unwrap();
        let n = map.entry(name.to_owned()).or_default();
        *n += 1;
        *n
    }

    fn get(&self, name: &str) -> u32 {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

/// Polls `check` until it holds or `within` runs out.
async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = tokio::time::Instant::now();
    while start.elapsed() < within {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

struct LeaseSigner {
    kid: String,
    key: SigningKey,
}

impl LeaseSigner {
    fn new(kid: &str, seed: u8) -> Self {
        LeaseSigner {
            kid: kid.into(),
            key: SigningKey::from_bytes(&[seed; 32]),
        }
    }

    fn jwks(&self) -> Jwks {
        Jwks {
            keys: vec![Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes()),
                kid: self.kid.clone(),
                alg: "EdDSA".into(),
                use_: "sig".into(),
            }],
        }
    }

    fn lease(&self, sid: &str, exp: OffsetDateTime) -> String {
        let claims = LeaseClaims {
            iss: "leasehold".into(),
            sub: "alice".into(),
            sid: sid.into(),
            lic: "lic_1".into(),
            kind: UserKind::Interactive,
            device_id: "laptop".into(),
            instance_id: "app-1".into(),
            iat: now().unix_timestamp(),
            exp: exp.unix_timestamp(),
            borrowed: false,
        };
        let header = format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#, self.kid);
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        let signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

// ----- routes -------------------------------------------------------------------------------

/// One request as the canned server saw it.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    query: Option<String>,
    body: String,
    authorization: Option<String>,
}

#[derive(Default)]
struct Recorded {
    calls: Mutex<Vec<Call>>,
}

/// Answers every route of the protocol with a canned body and records method, path, query,
/// body and Authorization header.
async fn canned(
    State(recorded): State<Arc<Recorded>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    recorded.calls.lock().unwrap().push(Call {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().map(str::to_owned),
        body: String::from_utf8_lossy(&body).into_owned(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
    });
    let user = User {
        account_id: "acc_1".into(),
        username: "bob".into(),
        kind: UserKind::Service,
        active: true,
        client_id: Some("cid".into()),
        client_secret: Some("secret".into()),
        created_at: now(),
    };
    match (method.as_str(), path.as_str()) {
        ("POST", "/v1/accounts") => (
            StatusCode::CREATED,
            Json(json!({"id": "acc_1", "name": "Acme", "admin_token": "adm"})),
        )
            .into_response(),
        ("POST", "/v1/licenses") => (StatusCode::CREATED, Json(license("lic_1"))).into_response(),
        ("GET", "/v1/licenses/lic_1") | ("PATCH", "/v1/licenses/lic_1") => {
            Json(license("lic_1")).into_response()
        }
        ("PUT", "/v1/accounts/acc_1/users/bob") => {
            (StatusCode::CREATED, Json(user)).into_response()
        }
        ("GET", "/v1/accounts/acc_1/users/bob") => Json(User {
            client_secret: None,
            ..user
        })
        .into_response(),
        ("GET", "/v1/accounts/acc_1/users") => Json(UserList {
            users: vec![User {
                client_secret: None,
                ..user
            }],
        })
        .into_response(),
        ("GET", "/v1/accounts/acc_1/licenses") => Json(LicenseList {
            licenses: vec![License {
                usage: None,
                ..license("lic_1")
            }],
        })
        .into_response(),
        ("POST", "/v1/licenses/lic_1/devices") => {
            (StatusCode::CREATED, Json(device("lic_1", "fp-1"))).into_response()
        }
        ("GET", "/v1/licenses/lic_1/devices") => Json(DeviceList {
            devices: vec![device("lic_1", "fp-1")],
            max_devices: 2,
        })
        .into_response(),
        ("DELETE", "/v1/licenses/lic_1/devices/fp-1") => StatusCode::NO_CONTENT.into_response(),
        ("POST", "/v1/accounts/acc_1/users/bob/tokens") => {
            (StatusCode::CREATED, Json(json!({"token": "tok_bob"}))).into_response()
        }
        ("GET", "/v1/licenses/lic_1/sessions") => Json(SessionList {
            sessions: vec![session("ses_1", time::Duration::minutes(20), None)],
        })
        .into_response(),
        ("GET", "/v1/licenses/lic_1/usage") => Json(UsageReport {
            license_id: "lic_1".into(),
            now: Usage {
                seats: 3,
                in_use: 1,
                available: 2,
                ending: 0,
                overdraft_in_use: 0,
                borrowed: 0,
                delegated: 0,
                activations: None,
            },
            high_water: 2,
            low_water: 0,
            denials: 5,
            since: now() - time::Duration::hours(24),
            from: now() - time::Duration::hours(24),
            to: now(),
            bucket: "hour".into(),
            buckets: vec![],
            utilization: leasehold_client::proto::Utilization {
                histogram: vec![],
                full: leasehold_client::proto::FullStats {
                    times: 0,
                    seconds: 0.0,
                },
                heatmap: vec![],
            },
            sites: Vec::new(),
        })
        .into_response(),
        ("GET", "/.well-known/jwks.json") => Json(LeaseSigner::new("k1", 1).jwks()).into_response(),
        ("GET", "/healthz") => "ok".into_response(),
        ("GET", "/metrics") => "# TYPE x counter\nx 1\n".into_response(),
        ("GET", "/openapi.json") => Json(json!({"openapi": "3.1.0"})).into_response(),
        ("POST", "/v1/sessions/ses_1/heartbeat") => Json(Heartbeat {
            expires_at: now() + time::Duration::minutes(20),
            lease: None,
        })
        .into_response(),
        ("DELETE", "/v1/sessions/ses_1") => StatusCode::NO_CONTENT.into_response(),
        _ => api_error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route"),
    }
}

#[tokio::test]
async fn every_route_uses_the_documented_method_path_and_body() {
    // Arrange
    let recorded = Arc::new(Recorded::default());
    let base = serve(Router::new().fallback(canned).with_state(recorded.clone())).await;
    let client = client(&base, "adm");

    // Act
    let account = client.create_account("Acme").await.unwrap();
    let created = client
        .create_license(&CreateLicense {
            account_id: "acc_1".into(),
            product: "editor".into(),
            seats: Some(3),
            on_full: Some(OnFull::Queue),
            ..CreateLicense::default()
        })
        .await
        .unwrap();
    let fetched = client.get_license("lic_1").await.unwrap();
    client
        .patch_license(
            "lic_1",
            &PatchLicense {
                seats: Some(5),
                ..PatchLicense::default()
            },
        )
        .await
        .unwrap();
    let user = client
        .put_user(
            "acc_1",
            "bob",
            &PutUser {
                kind: UserKind::Service,
                active: Some(true),
            },
        )
        .await
        .unwrap();
    let token = client.create_user_token("acc_1", "bob").await.unwrap();
    let sessions = client.list_sessions("lic_1").await.unwrap();
    client.usage("lic_1").await.unwrap();
    let report = client
        .usage_with(
            "lic_1",
            &UsageQuery {
                from: Some(OffsetDateTime::from_unix_timestamp(0).unwrap()),
                to: None,
                bucket: Some("day".into()),
            },
        )
        .await
        .unwrap();
    let jwks = client.jwks().await.unwrap();
    client.healthz().await.unwrap();
    let metrics = client.metrics().await.unwrap();
    let openapi = client.openapi().await.unwrap();
    client.heartbeat("ses_1").await.unwrap();
    client.close_session("ses_1").await.unwrap();
    let shown_user = client.get_user("acc_1", "bob").await.unwrap();
    let users = client.list_users("acc_1").await.unwrap();
    let licenses = client.list_licenses("acc_1").await.unwrap();
    let activation = client
        .activate_device("lic_1", "fp-1", "CAD workstation")
        .await
        .unwrap();
    let devices = client.list_devices("lic_1").await.unwrap();
    client.deactivate_device("lic_1", "fp-1").await.unwrap();

    // Assert
    assert_eq!(account.admin_token, "adm");
    assert_eq!(created.id, "lic_1");
    assert_eq!(fetched.usage.unwrap().available, 2);
    assert_eq!(user.client_secret.as_deref(), Some("secret"));
    assert_eq!(token.token, "tok_bob");
    assert_eq!(sessions.sessions.len(), 1);
    assert_eq!(report.denials, 5);
    assert_eq!(jwks.keys[0].kid, "k1");
    assert!(metrics.contains("x 1"));
    assert_eq!(openapi["openapi"], "3.1.0");
    assert_eq!(
        (shown_user.username.as_str(), shown_user.kind),
        ("bob", UserKind::Service)
    );
    assert_eq!(users.users[0].username, "bob");
    assert_eq!(licenses.licenses[0].id, "lic_1");
    assert!(activation.created);
    assert_eq!(activation.device.fingerprint, "fp-1");
    assert_eq!((devices.devices.len(), devices.max_devices), (1, 2));

    let calls = recorded.calls.lock().unwrap().clone();
    let routes: Vec<(&str, &str)> = calls
        .iter()
        .map(|call| (call.method.as_str(), call.path.as_str()))
        .collect();
    assert_eq!(
        routes,
        vec![
            ("POST", "/v1/accounts"),
            ("POST", "/v1/licenses"),
            ("GET", "/v1/licenses/lic_1"),
            ("PATCH", "/v1/licenses/lic_1"),
            ("PUT", "/v1/accounts/acc_1/users/bob"),
            ("POST", "/v1/accounts/acc_1/users/bob/tokens"),
            ("GET", "/v1/licenses/lic_1/sessions"),
            ("GET", "/v1/licenses/lic_1/usage"),
            ("GET", "/v1/licenses/lic_1/usage"),
            ("GET", "/.well-known/jwks.json"),
            ("GET", "/healthz"),
            ("GET", "/metrics"),
            ("GET", "/openapi.json"),
            ("POST", "/v1/sessions/ses_1/heartbeat"),
            ("DELETE", "/v1/sessions/ses_1"),
            ("GET", "/v1/accounts/acc_1/users/bob"),
            ("GET", "/v1/accounts/acc_1/users"),
            ("GET", "/v1/accounts/acc_1/licenses"),
            ("POST", "/v1/licenses/lic_1/devices"),
            ("GET", "/v1/licenses/lic_1/devices"),
            ("DELETE", "/v1/licenses/lic_1/devices/fp-1"),
        ]
    );
    let body = |i: usize| serde_json::from_str::<Value>(&calls[i].body).unwrap();
    assert_eq!(body(0), json!({"name": "Acme"}));
    assert_eq!(body(1)["seats"], 3);
    assert_eq!(body(1)["on_full"], "queue");
    assert_eq!(body(1)["model"], "concurrent_sessions");
    assert_eq!(body(3), json!({"seats": 5}));
    assert_eq!(body(4), json!({"kind": "service", "active": true}));
    assert_eq!(
        body(18),
        json!({"fingerprint": "fp-1", "name": "CAD workstation"})
    );
    assert!(calls[19].body.is_empty() && calls[20].body.is_empty());
    assert_eq!(calls[7].query, None);
    assert_eq!(
        calls[8].query.as_deref(),
        Some("from=1970-01-01T00%3A00%3A00Z&bucket=day")
    );
    // Admin routes carry the token; public ones do not.
    assert_eq!(calls[0].authorization.as_deref(), Some("Bearer adm"));
    assert_eq!(calls[13].authorization.as_deref(), Some("Bearer adm"));
    assert_eq!(calls[9].authorization, None);
    assert_eq!(calls[10].authorization, None);
}

#[tokio::test]
async fn path_segments_are_percent_encoded() {
    let recorded = Arc::new(Recorded::default());
    let base = serve(Router::new().fallback(canned).with_state(recorded.clone())).await;
    let err = client(&base, "adm")
        .get_license("../accounts")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    assert_eq!(
        recorded.calls.lock().unwrap()[0].path,
        "/v1/licenses/..%2Faccounts"
    );
}

#[tokio::test]
async fn a_device_activation_tells_new_from_existing_and_encodes_the_fingerprint() {
    // Arrange: the first activation of a fingerprint answers 201, the next ones 200; a third
    // device is refused with 409 activations_exhausted. Deactivations count their raw path.
    let hits = Arc::new(Hits::default());
    let router = Router::new()
        .route(
            "/v1/licenses/{id}/devices",
            post(
                |State(hits): State<Arc<Hits>>, Json(body): Json<Value>| async move {
                    let fingerprint = body["fingerprint"].as_str().unwrap().to_owned();
                    if fingerprint == "full" {
                        hits.hit("refused");
                        return api_error(
                            StatusCode::CONFLICT,
                            ErrorCode::ActivationsExhausted,
                            "all 2 device activations are taken",
                        );
                    }
                    let status = if hits.hit(&fingerprint) == 1 {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    (status, Json(device("lic_1", &fingerprint))).into_response()
                },
            ),
        )
        .route(
            "/v1/licenses/{id}/devices/{fingerprint}",
            delete(|State(hits): State<Arc<Hits>>, uri: Uri| async move {
                hits.hit(uri.path());
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(hits.clone());
    let base = serve(router).await;
    let client = client(&base, "adm");

    // Act
    let first = client.activate_device("lic_1", "3f:9a", "").await.unwrap();
    let again = client.activate_device("lic_1", "3f:9a", "").await.unwrap();
    let refused = client
        .activate_device("lic_1", "full", "")
        .await
        .unwrap_err();
    client
        .deactivate_device("lic 1", "3f:9a/../x")
        .await
        .unwrap();

    // Assert
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(again.device.fingerprint, "3f:9a");
    assert_eq!(refused.code(), Some(ErrorCode::ActivationsExhausted));
    assert_eq!(refused.status(), Some(409));
    assert_eq!(hits.get("refused"), 1, "a 409 is not retried");
    assert_eq!(
        hits.get("/v1/licenses/lic%201/devices/3f:9a%2F..%2Fx"),
        1,
        "the path segments are percent-encoded"
    );
}

// ----- retries ------------------------------------------------------------------------------

#[tokio::test]
async fn a_503_is_retried_until_the_server_answers() {
    // Arrange: two 503s, then the license.
    let hits = Arc::new(Hits::default());
    let router = Router::new()
        .route(
            "/v1/licenses/{id}",
            get(|State(hits): State<Arc<Hits>>| async move {
                if hits.hit("get") <= 2 {
                    api_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::StoreUnavailable,
                        "db down",
                    )
                } else {
                    Json(license("lic_1")).into_response()
                }
            }),
        )
        .with_state(hits.clone());
    let base = serve(router).await;

    // Act
    let license = client(&base, "t").get_license("lic_1").await.unwrap();

    // Assert
    assert_eq!(license.id, "lic_1");
    assert_eq!(hits.get("get"), 3);
}

#[tokio::test]
async fn a_503_that_persists_gives_up_after_the_last_attempt() {
    let hits = Arc::new(Hits::default());
    let router = Router::new()
        .route(
            "/v1/licenses/{id}",
            get(|State(hits): State<Arc<Hits>>| async move {
                hits.hit("get");
                api_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::StoreUnavailable,
                    "db down",
                )
            }),
        )
        .with_state(hits.clone());
    let base = serve(router).await;

    let err = client(&base, "t").get_license("lic_1").await.unwrap_err();

    assert_eq!(err.status(), Some(503));
    assert_eq!(err.code(), Some(ErrorCode::StoreUnavailable));
    assert!(err.is_retryable());
    assert_eq!(hits.get("get"), 4);
}

#[tokio::test]
async fn no_4xx_answer_is_ever_retried() {
    // Arrange: the sessions route answers 409 no_seat_available, others 401/404/410/422.
    let hits = Arc::new(Hits::default());
    let router = Router::new()
        .route(
            "/v1/sessions",
            post(|State(hits): State<Arc<Hits>>| async move {
                hits.hit("open");
                api_error(
                    StatusCode::CONFLICT,
                    ErrorCode::NoSeatAvailable,
                    "all 3 seats are in use",
                )
            }),
        )
        .route(
            "/v1/sessions/{id}/heartbeat",
            post(|State(hits): State<Arc<Hits>>| async move {
                hits.hit("heartbeat");
                error_with_reason(
                    StatusCode::GONE,
                    ErrorCode::SessionEnded,
                    "ended",
                    Some(EndReason::Lifetime),
                )
            }),
        )
        .route(
            "/v1/licenses/{id}",
            get(|State(hits): State<Arc<Hits>>| async move {
                hits.hit("get");
                api_error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "who?")
            }),
        )
        .with_state(hits.clone());
    let base = serve(router).await;
    let client = client(&base, "t");

    // Act
    let open = client
        .checkout("lic_1", "laptop", "app-1")
        .await
        .unwrap_err();
    let heartbeat = client.heartbeat("ses_1").await.unwrap_err();
    let get = client.get_license("lic_1").await.unwrap_err();

    // Assert
    assert!(open.is_no_seat_available());
    assert_eq!(open.status(), Some(409));
    assert!(open.to_string().contains("all 3 seats are in use"));
    assert!(heartbeat.is_session_ended());
    assert_eq!(heartbeat.end_reason(), Some(EndReason::Lifetime));
    assert_eq!(get.code(), Some(ErrorCode::Unauthorized));
    for (name, err) in [("open", &open), ("heartbeat", &heartbeat), ("get", &get)] {
        assert!(!err.is_retryable());
        assert_eq!(hits.get(name), 1, "{name} was retried");
    }
}

#[tokio::test]
async fn a_queue_timeout_is_reported() {
    let router = Router::new().route(
        "/v1/sessions",
        post(|| async {
            (
                StatusCode::CONFLICT,
                Json(json!({"error": {"code": "no_seat_available", "message": "waited 1s", "queue_timeout": true}})),
            )
        }),
    );
    let base = serve(router).await;
    let err = client(&base, "t")
        .checkout_with("lic_1", "d", "i", CheckoutOptions::new().wait_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ClientError::Api {
            status: 409,
            code: ErrorCode::NoSeatAvailable,
            queue_timeout: true,
            ..
        }
    ));
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_transport_error() {
    // Arrange: a port nobody listens on any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    // Act
    let err = client(&base, "t").healthz().await.unwrap_err();
    let create = client(&base, "t").create_account("Acme").await.unwrap_err();

    // Assert
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(matches!(create, ClientError::Transport(_)), "{create:?}");
}

#[tokio::test]
async fn a_2xx_body_that_does_not_decode_is_a_decode_error() {
    let router = Router::new().route(
        "/v1/licenses/{id}",
        get(|| async { Json(json!({"id": 1})) }),
    );
    let base = serve(router).await;
    let err = client(&base, "t").get_license("lic_1").await.unwrap_err();
    assert!(
        matches!(err, ClientError::Decode(ref m) if m.contains("/v1/licenses/lic_1")),
        "{err:?}"
    );
}

// ----- service users ------------------------------------------------------------------------

#[derive(Default)]
struct TokenServer {
    issued: AtomicU32,
    forms: Mutex<Vec<HashMap<String, String>>>,
    /// Tokens with a lower number are refused with 401.
    min_accepted: AtomicU32,
    expires_in: AtomicU32,
    protected_hits: AtomicU32,
}

fn token_router(server: Arc<TokenServer>) -> Router {
    Router::new()
        .route(
            "/v1/oauth/token",
            post(
                |State(server): State<Arc<TokenServer>>,
                 headers: HeaderMap,
                 Form(form): Form<HashMap<String, String>>| async move {
                    assert_eq!(
                        headers.get("content-type").unwrap(),
                        "application/x-www-form-urlencoded"
                    );
                    assert!(headers.get("authorization").is_none());
                    let ok = form.get("grant_type").map(String::as_str)
                        == Some("client_credentials")
                        && form.get("client_id").map(String::as_str) == Some("svc_id")
                        && form.get("client_secret").map(String::as_str) == Some("svc_secret");
                    server.forms.lock().unwrap().push(form);
                    if !ok {
                        return api_error(
                            StatusCode::UNAUTHORIZED,
                            ErrorCode::Unauthorized,
                            "bad client",
                        );
                    }
                    let n = server.issued.fetch_add(1, Ordering::SeqCst) + 1;
                    Json(json!({
                        "access_token": format!("t{n}"),
                        "token_type": "Bearer",
                        "expires_in": server.expires_in.load(Ordering::SeqCst),
                    }))
                    .into_response()
                },
            ),
        )
        .route(
            "/v1/licenses/{id}",
            get(
                |State(server): State<Arc<TokenServer>>, headers: HeaderMap| async move {
                    server.protected_hits.fetch_add(1, Ordering::SeqCst);
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let n: u32 = auth
                        .strip_prefix("Bearer t")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    if n == 0 || n < server.min_accepted.load(Ordering::SeqCst) {
                        return api_error(
                            StatusCode::UNAUTHORIZED,
                            ErrorCode::Unauthorized,
                            "stale token",
                        );
                    }
                    Json(license("lic_1")).into_response()
                },
            ),
        )
        .with_state(server)
}

#[tokio::test]
async fn client_credentials_are_exchanged_once_and_renewed_before_expiry() {
    // Arrange: tokens live 1 s, so they are renewed after 0.9 s.
    let server = Arc::new(TokenServer::default());
    server.expires_in.store(1, Ordering::SeqCst);
    let base = serve(token_router(server.clone())).await;
    let client = Client::builder(&base)
        .client_credentials("svc_id", "svc_secret")
        .retry_policy(fast_retries())
        .build()
        .unwrap();

    // Act + Assert: two quick calls share one token...
    client.get_license("lic_1").await.unwrap();
    client.get_license("lic_1").await.unwrap();
    assert_eq!(server.issued.load(Ordering::SeqCst), 1);
    // ...and a call after the token's renewal time gets a new one.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    client.get_license("lic_1").await.unwrap();
    assert_eq!(server.issued.load(Ordering::SeqCst), 2);
    let forms = server.forms.lock().unwrap();
    assert_eq!(forms[0]["grant_type"], "client_credentials");
    assert_eq!(forms[0]["client_secret"], "svc_secret");
}

#[tokio::test]
async fn concurrent_first_calls_share_one_token_request() {
    let server = Arc::new(TokenServer::default());
    server.expires_in.store(3600, Ordering::SeqCst);
    let base = serve(token_router(server.clone())).await;
    let client = Client::with_client_credentials(&base, "svc_id", "svc_secret").unwrap();

    let (a, b, c) = tokio::join!(
        client.get_license("lic_1"),
        client.get_license("lic_1"),
        client.get_license("lic_1")
    );

    assert!(a.is_ok() && b.is_ok() && c.is_ok());
    assert_eq!(server.issued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_access_token_is_renewed_once() {
    // Arrange: the server forgets token t1 (restart, revocation...).
    let server = Arc::new(TokenServer::default());
    server.expires_in.store(3600, Ordering::SeqCst);
    server.min_accepted.store(2, Ordering::SeqCst);
    let base = serve(token_router(server.clone())).await;
    let client = Client::with_client_credentials(&base, "svc_id", "svc_secret").unwrap();

    // Act
    let license = client.get_license("lic_1").await.unwrap();

    // Assert
    assert_eq!(license.id, "lic_1");
    assert_eq!(server.issued.load(Ordering::SeqCst), 2);
    assert_eq!(server.protected_hits.load(Ordering::SeqCst), 2);

    // A server that refuses every token gets exactly one renewal per call, not a loop.
    server.min_accepted.store(1000, Ordering::SeqCst);
    let err = client.get_license("lic_1").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
    assert_eq!(server.issued.load(Ordering::SeqCst), 3);
    assert_eq!(server.protected_hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn wrong_client_credentials_fail_with_401() {
    let server = Arc::new(TokenServer::default());
    let base = serve(token_router(server.clone())).await;
    let client = Client::with_client_credentials(&base, "svc_id", "wrong").unwrap();
    let err = client.get_license("lic_1").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
    assert_eq!(server.protected_hits.load(Ordering::SeqCst), 0);
}

// ----- checkout -----------------------------------------------------------------------------

/// A scripted session server.
struct SessionServer {
    hits: Hits,
    opened: Mutex<Vec<Value>>,
    /// What heartbeats answer: `None` for success, or a status + error.
    heartbeat_failure: Mutex<Option<(StatusCode, ErrorCode, Option<EndReason>)>>,
    /// How long a session lives from open or heartbeat.
    ttl: Mutex<time::Duration>,
    signer: LeaseSigner,
    /// Sign the leases of this session id instead of the real one (to forge a bad lease).
    lease_sid_override: Mutex<Option<String>>,
}

impl SessionServer {
    fn new() -> Arc<Self> {
        Arc::new(SessionServer {
            hits: Hits::default(),
            opened: Mutex::new(Vec::new()),
            heartbeat_failure: Mutex::new(None),
            ttl: Mutex::new(time::Duration::minutes(20)),
            signer: LeaseSigner::new("k1", 1),
            lease_sid_override: Mutex::new(None),
        })
    }

    fn lease(&self, exp: OffsetDateTime) -> String {
        let sid = self
            .lease_sid_override
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "ses_1".into());
        self.signer.lease(&sid, exp)
    }
}

fn session_router(server: Arc<SessionServer>) -> Router {
    Router::new()
        .route(
            "/v1/sessions",
            post(|State(s): State<Arc<SessionServer>>, Json(body): Json<Value>| async move {
                s.hits.hit("open");
                s.opened.lock().unwrap().push(body);
                let ttl = *s.ttl.lock().unwrap();
                let mut session = session("ses_1", ttl, None);
                session.lease = Some(s.lease(session.expires_at));
                (StatusCode::CREATED, Json(session)).into_response()
            }),
        )
        .route(
            "/v1/sessions/{id}/heartbeat",
            post(|State(s): State<Arc<SessionServer>>, uri: Uri| async move {
                let n = s.hits.hit("heartbeat");
                if let Some((status, code, reason)) = *s.heartbeat_failure.lock().unwrap() {
                    return error_with_reason(status, code, "scripted failure", reason);
                }
                s.hits.hit("heartbeat_ok");
                let expires_at = now() + *s.ttl.lock().unwrap();
                // Like the real server: a re-signed lease only when asked for.
                let lease = match uri.query() {
                    Some("lease=true") => {
                        s.hits.hit("lease");
                        Some(s.lease(expires_at))
                    }
                    None => None,
                    Some(other) => panic!("unexpected query {other:?}"),
                };
                Json(json!({
                    "expires_at": expires_at.format(&time::format_description::well_known::Rfc3339).unwrap(),
                    "lease": lease,
                    "n": n,
                }))
                .into_response()
            }),
        )
        .route(
            "/v1/sessions/{id}",
            delete(|State(s): State<Arc<SessionServer>>| async move {
                s.hits.hit("delete");
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/.well-known/jwks.json",
            get(|State(s): State<Arc<SessionServer>>| async move {
                s.hits.hit("jwks");
                Json(s.signer.jwks())
            }),
        )
        .with_state(server)
}

fn fast_heartbeats() -> CheckoutOptions {
    CheckoutOptions::new().heartbeat_interval(Duration::from_millis(30))
}

#[tokio::test]
async fn checkout_heartbeats_in_the_background_and_release_returns_the_seat() {
    // Arrange: sessions live 2 s from each heartbeat, so the lease is renewed after ~1 s.
    let server = SessionServer::new();
    *server.ttl.lock().unwrap() = time::Duration::seconds(2);
    let base = serve(session_router(server.clone())).await;
    let client = client(&base, "user-token");

    // Act
    let guard = client
        .checkout_with("lic_1", "laptop", "app-1", fast_heartbeats().wait_secs(30))
        .await
        .unwrap();
    let first_lease = guard.lease().unwrap();
    let first_expiry = guard.expires_at();
    assert!(eventually(Duration::from_secs(5), || server.hits.get("heartbeat") >= 3).await);

    // Assert: the open request, the refreshed lease, the status.
    let opened = server.opened.lock().unwrap()[0].clone();
    assert_eq!(
        opened,
        json!({"license_id": "lic_1", "device_id": "laptop", "instance_id": "app-1", "wait_secs": 30})
    );
    assert_eq!(guard.session_id(), "ses_1");
    assert_eq!(guard.session().license_id, "lic_1");
    assert!(guard.expires_at() >= first_expiry);
    assert!(
        eventually(Duration::from_secs(5), || guard.lease().unwrap()
            != first_lease)
        .await
    );
    assert_eq!(guard.status(), LeaseStatus::Active);
    // Leases are asked for now and then, not on every heartbeat.
    let (beats, leases) = (server.hits.get("heartbeat"), server.hits.get("lease"));
    assert!(
        leases >= 1 && leases * 4 < beats,
        "{leases} leases for {beats} heartbeats"
    );

    // Act: release.
    let mut status = guard.subscribe();
    guard.release().await.unwrap();

    // Assert: one DELETE, no more heartbeats, status Released.
    assert_eq!(server.hits.get("delete"), 1);
    assert_eq!(*status.borrow_and_update(), LeaseStatus::Released);
    let beats = server.hits.get("heartbeat");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(server.hits.get("heartbeat"), beats);
    assert_eq!(server.hits.get("delete"), 1);
}

#[tokio::test]
async fn checkout_without_options_sends_no_wait_secs() {
    let server = SessionServer::new();
    let base = serve(session_router(server.clone())).await;
    let guard = client(&base, "t")
        .checkout("lic_1", "laptop", "app-1")
        .await
        .unwrap();
    assert_eq!(
        server.opened.lock().unwrap()[0],
        json!({"license_id": "lic_1", "device_id": "laptop", "instance_id": "app-1"})
    );
    guard.release().await.unwrap();
}

#[tokio::test]
async fn dropping_the_guard_returns_the_seat() {
    let server = SessionServer::new();
    let base = serve(session_router(server.clone())).await;
    let guard = client(&base, "t")
        .checkout_with("lic_1", "laptop", "app-1", fast_heartbeats())
        .await
        .unwrap();
    let status = guard.subscribe();

    drop(guard);

    assert!(eventually(Duration::from_secs(5), || server.hits.get("delete") == 1).await);
    assert_eq!(*status.borrow(), LeaseStatus::Released);
    let beats = server.hits.get("heartbeat");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        server.hits.get("heartbeat"),
        beats,
        "heartbeats went on after drop"
    );
}

#[tokio::test]
async fn a_session_ended_answer_marks_the_seat_lost_with_its_reason() {
    // Arrange: an admin revoked the session.
    let server = SessionServer::new();
    *server.heartbeat_failure.lock().unwrap() = Some((
        StatusCode::GONE,
        ErrorCode::SessionEnded,
        Some(EndReason::Revoked),
    ));
    let base = serve(session_router(server.clone())).await;
    let guard = client(&base, "t")
        .checkout_with("lic_1", "laptop", "app-1", fast_heartbeats())
        .await
        .unwrap();

    // Act
    let reason = tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .unwrap();

    // Assert: lost, heartbeats stopped after the 410, and no DELETE for an ended session.
    assert_eq!(reason, LostReason::Ended(EndReason::Revoked));
    assert_eq!(
        guard.status(),
        LeaseStatus::Lost {
            reason: LostReason::Ended(EndReason::Revoked)
        }
    );
    assert!(!guard.is_active());
    drop(guard);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(server.hits.get("heartbeat"), 1);
    assert_eq!(server.hits.get("delete"), 0);
}

#[tokio::test]
async fn another_refused_heartbeat_marks_the_seat_lost() {
    let server = SessionServer::new();
    *server.heartbeat_failure.lock().unwrap() =
        Some((StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, None));
    let base = serve(session_router(server.clone())).await;
    let guard = client(&base, "t")
        .checkout_with("lic_1", "laptop", "app-1", fast_heartbeats())
        .await
        .unwrap();

    let reason = tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .unwrap();

    assert!(matches!(
        reason,
        LostReason::Rejected {
            status: 401,
            code: ErrorCode::Unauthorized,
            ..
        }
    ));
    assert_eq!(server.hits.get("heartbeat"), 1);
}

#[tokio::test]
async fn a_server_unreachable_past_expiry_loses_the_seat() {
    // Arrange: sessions live 2 s (1 to 2 s from now: the mock's times are whole seconds) and
    // every heartbeat gets a 503.
    let server = SessionServer::new();
    *server.ttl.lock().unwrap() = time::Duration::seconds(2);
    *server.heartbeat_failure.lock().unwrap() = Some((
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StoreUnavailable,
        None,
    ));
    let base = serve(session_router(server.clone())).await;
    let guard = client(&base, "t")
        .checkout_with(
            "lic_1",
            "laptop",
            "app-1",
            CheckoutOptions::new().heartbeat_interval(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    let mut status = guard.subscribe();

    // Act: the status stays Active while the session may still be alive...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*status.borrow_and_update(), LeaseStatus::Active);
    let reason = tokio::time::timeout(Duration::from_secs(6), guard.lost())
        .await
        .unwrap();

    // Assert: ...then turns Lost once the expiry has passed, after several tries.
    assert_eq!(reason, LostReason::Expired);
    assert!(status.has_changed().unwrap());
    assert!(server.hits.get("heartbeat") >= 2);
}

#[tokio::test]
async fn a_heartbeat_recovers_after_transient_failures() {
    // Arrange: heartbeats fail with 503 for a while, then work again.
    let server = SessionServer::new();
    *server.heartbeat_failure.lock().unwrap() = Some((
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StoreUnavailable,
        None,
    ));
    let base = serve(session_router(server.clone())).await;
    let guard = client(&base, "t")
        .checkout_with("lic_1", "laptop", "app-1", fast_heartbeats())
        .await
        .unwrap();

    // Act
    assert!(eventually(Duration::from_secs(5), || server.hits.get("heartbeat") >= 6).await);
    let first_expiry = guard.expires_at();
    *server.heartbeat_failure.lock().unwrap() = None;
    assert!(
        eventually(Duration::from_secs(5), || server.hits.get("heartbeat_ok")
            >= 2)
        .await
    );
    assert!(eventually(Duration::from_secs(5), || guard.expires_at() > first_expiry).await);

    // Assert
    assert_eq!(guard.status(), LeaseStatus::Active);
    guard.release().await.unwrap();
}

#[tokio::test]
async fn leases_are_verified_with_the_servers_cached_keys() {
    // Arrange
    let server = SessionServer::new();
    let base = serve(session_router(server.clone())).await;
    let client = client(&base, "t");

    // Act: two checkouts with verification.
    let first = client
        .checkout_with(
            "lic_1",
            "laptop",
            "app-1",
            fast_heartbeats().verify_leases(),
        )
        .await
        .unwrap();
    let second = client
        .checkout_with(
            "lic_1",
            "laptop",
            "app-1",
            CheckoutOptions::new().verify_leases(),
        )
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || server.hits.get("heartbeat") >= 2).await);

    // Assert: the key set was fetched once; the lease verifies offline too.
    assert_eq!(server.hits.get("jwks"), 1);
    let verifier = client.lease_verifier().await.unwrap();
    let claims = verifier
        .verify(&first.lease().unwrap(), now().unix_timestamp())
        .unwrap();
    assert_eq!(claims.sid, "ses_1");
    assert_eq!(first.status(), LeaseStatus::Active);
    first.release().await.unwrap();
    second.release().await.unwrap();
}

#[tokio::test]
async fn a_lease_for_another_session_fails_checkout_and_frees_the_seat() {
    // Arrange: the server signs a lease naming another session.
    let server = SessionServer::new();
    *server.lease_sid_override.lock().unwrap() = Some("ses_other".into());
    let base = serve(session_router(server.clone())).await;
    let verifier =
        Arc::new(leasehold_client::LeaseVerifier::from_jwks(&server.signer.jwks()).unwrap());

    // Act
    let err = client(&base, "t")
        .checkout_with(
            "lic_1",
            "laptop",
            "app-1",
            CheckoutOptions::new().verifier(verifier),
        )
        .await
        .unwrap_err();

    // Assert
    assert!(
        matches!(err, ClientError::LeaseInvalid(ref m) if m.contains("ses_other")),
        "{err:?}"
    );
    assert_eq!(server.hits.get("delete"), 1);
}

#[tokio::test]
async fn a_lease_signed_by_an_unknown_key_fails_checkout() {
    let server = SessionServer::new();
    let base = serve(session_router(server.clone())).await;
    let verifier = Arc::new(
        leasehold_client::LeaseVerifier::from_jwks(&LeaseSigner::new("k1", 2).jwks()).unwrap(),
    );

    let err = client(&base, "t")
        .checkout_with(
            "lic_1",
            "laptop",
            "app-1",
            CheckoutOptions::new().verifier(verifier),
        )
        .await
        .unwrap_err();

    assert!(
        matches!(err, ClientError::LeaseInvalid(ref m) if m.contains("bad signature")),
        "{err:?}"
    );
    assert_eq!(server.hits.get("delete"), 1);
}

#[tokio::test]
async fn a_bad_lease_on_heartbeat_marks_the_seat_lost() {
    let server = SessionServer::new();
    *server.ttl.lock().unwrap() = time::Duration::seconds(2);
    let base = serve(session_router(server.clone())).await;
    let guard = client(&base, "t")
        .checkout_with(
            "lic_1",
            "laptop",
            "app-1",
            fast_heartbeats().verify_leases(),
        )
        .await
        .unwrap();

    *server.lease_sid_override.lock().unwrap() = Some("ses_other".into());
    let reason = tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .unwrap();

    assert!(matches!(reason, LostReason::LeaseInvalid(_)), "{reason:?}");
}
