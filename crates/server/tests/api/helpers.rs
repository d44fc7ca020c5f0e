//! Test kit: `spawn_app()` starts the real server on port 0 with a fresh data folder and a
//! manual clock, and `TestApp` drives it over real HTTP.

use std::sync::Arc;

use leasehold_core::Timestamp;
use leasehold_proto as proto;
use leasehold_server::{Application, Config, ManualClock, RunningServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// 2027-01-15T08:00:00Z: tests start here and move the clock forward by hand.
pub const TEST_START: Timestamp = Timestamp::from_secs(1_800_000_000);
pub const ROOT_TOKEN: &str = "root-token-for-tests-0123456789";

pub struct TestApp {
    pub server: Option<RunningServer>,
    pub url: String,
    pub http: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
}

/// An answer: status and JSON body (Null when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn id(&self) -> String {
        self.body["id"].as_str().unwrap_or_default().to_owned()
    }
}

pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    spawn_app_in(dir).await
}

pub async fn spawn_app_in(dir: tempfile::TempDir) -> TestApp {
    spawn_app_configured(dir, |_| {}).await
}

/// `spawn_app` with the configuration changed by `configure` (limits, TLS, CORS...).
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_configured(tempfile::tempdir().unwrap(), configure).await
}

pub async fn spawn_app_configured(
    dir: tempfile::TempDir,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let clock = Arc::new(ManualClock::new(TEST_START));
    let mut config = Config::new_for_test(dir.path());
    config.database_url = crate::pg::database_url_for(dir.path()).await;
    config.admin_token = Some(ROOT_TOKEN.into());
    configure(&mut config);
    let app = Application::build(config, clock.clone()).await.unwrap();
    let server = app.spawn();
    TestApp {
        url: server.url(),
        server: Some(server),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap(),
        clock,
        dir,
    }
}

/// An account with a license and interactive users, each with a token.
pub struct Fixture {
    pub account_id: String,
    pub admin: String,
    pub license_id: String,
}

impl TestApp {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer { status, body }
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn create_account(&self, name: &str) -> (String, String) {
        let a = self
            .post("/v1/accounts", ROOT_TOKEN, json!({"name": name}))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        (a.id(), a.body["admin_token"].as_str().unwrap().to_owned())
    }

    pub async fn create_license(&self, admin: &str, body: Value) -> String {
        let a = self.post("/v1/licenses", admin, body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        a.id()
    }

    /// Creates (or updates) a user and, for interactive users, returns a personal token;
    /// for service users, returns `client_id:client_secret`.
    pub async fn user_token(&self, account: &str, admin: &str, username: &str) -> String {
        let a = self
            .call(
                Method::PUT,
                &format!("/v1/accounts/{account}/users/{username}"),
                Some(admin),
                Some(json!({"kind": "interactive"})),
            )
            .await;
        assert!(a.status.is_success(), "{:?}", a.body);
        let t = self
            .post(
                &format!("/v1/accounts/{account}/users/{username}/tokens"),
                admin,
                json!({}),
            )
            .await;
        assert_eq!(t.status, StatusCode::CREATED, "{:?}", t.body);
        t.body["token"].as_str().unwrap().to_owned()
    }

    pub async fn fixture(&self, seats: u32, reserved: &[&str], extra: Value) -> Fixture {
        let (account_id, admin) = self.create_account("Acme").await;
        let mut body = json!({
            "account_id": account_id,
            "product": "cad",
            "model": "concurrent_sessions",
            "seats": seats,
            "reserved": reserved,
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let license_id = self.create_license(&admin, body).await;
        Fixture {
            account_id,
            admin,
            license_id,
        }
    }

    pub async fn open(&self, token: &str, license: &str, device: &str, instance: &str) -> Answer {
        self.post(
            "/v1/sessions",
            token,
            json!({"license_id": license, "device_id": device, "instance_id": instance}),
        )
        .await
    }

    pub async fn heartbeat(&self, token: &str, session: &str) -> Answer {
        self.post(
            &format!("/v1/sessions/{session}/heartbeat"),
            token,
            json!({}),
        )
        .await
    }

    pub async fn in_use(&self, admin: &str, license: &str) -> u64 {
        let a = self.get(&format!("/v1/licenses/{license}"), admin).await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        a.body["usage"]["in_use"].as_u64().unwrap()
    }

    /// Moves the clock and waits until the reaper (50 ms tick in tests) has run.
    pub async fn advance(&self, secs: i64) {
        self.clock.advance_secs(secs);
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }

    /// The license's audit events once `landed` holds for them (ends decided at once are
    /// written in the background: their events land shortly after the call that decided them).
    pub async fn audit_when(
        &self,
        admin: &str,
        license: &str,
        landed: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let mut events = Vec::new();
        for _ in 0..500 {
            let audit = self
                .get(&format!("/v1/licenses/{license}/audit"), admin)
                .await;
            events = audit.body["events"].as_array().cloned().unwrap_or_default();
            if landed(&events) {
                return events;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the expected audit events did not land: {events:?}");
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await.unwrap();
        }
    }

    /// A GET's body as text (`/metrics`).
    pub async fn get_text(&self, path: &str, token: &str) -> String {
        let resp = self
            .http
            .get(format!("{}{}", self.url, path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.text().await.unwrap()
    }

    /// The server's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().unwrap().addr
    }

    /// A client whose connections come from `ip` (any of 127.0.0.0/8), as another machine's
    /// would.
    pub fn client_from(ip: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    }

    pub fn session(body: &Value) -> proto::Session {
        serde_json::from_value(body.clone()).unwrap()
    }
}
