//! HTTPS: the server speaks TLS with a certificate made here (rcgen), HTTP/2 by ALPN as well as
//! HTTP/1.1, and takes a replaced certificate without dropping open connections.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use leasehold_server::{Application, Config, ManualClock};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use reqwest::{StatusCode, Version};

use crate::helpers::*;

/// A certificate authority made for the test, and certificates it signs for 127.0.0.1.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A server certificate: PEM files' contents and the DER a client sees.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Leasehold test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn leaf(&self, name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A client that trusts only this CA and shows the peer's certificate.
    pub fn client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem().as_bytes()).unwrap())
            .tls_info(true)
    }
}

impl Leaf {
    /// Writes the pair where the server reads it.
    pub fn install(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).unwrap();
        std::fs::write(key, &self.key_pem).unwrap();
    }
}

fn peer_certificate(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("TLS info")
        .to_vec()
}

/// A TLS server with `leaf` installed in the app's data folder; `app.http` trusts `ca`.
async fn spawn_tls(ca: &TestCa, leaf: &Leaf) -> (TestApp, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    leaf.install(&cert, &key);
    let (c, k) = (cert.clone(), key.clone());
    let app = spawn_app_configured(dir, move |config| {
        config.tls_cert = Some(c);
        config.tls_key = Some(k);
        config.tls_watch_interval = Duration::from_millis(100);
    })
    .await;
    let app = TestApp {
        http: ca.client().build().unwrap(),
        ..app
    };
    (app, cert, key)
}

#[tokio::test]
async fn https_answers_over_http2_by_alpn_and_over_http1_to_clients_that_ask() {
    // Arrange
    let ca = TestCa::new();
    let leaf = ca.leaf("first");
    let (app, _, _) = spawn_tls(&ca, &leaf).await;
    assert!(app.url.starts_with("https://"), "{}", app.url);

    // Act: a client that offers h2 and http/1.1, and one that offers only http/1.1.
    let h2 = ca.client().build().unwrap();
    let resp = h2.get(format!("{}/livez", app.url)).send().await.unwrap();
    let h1 = ca.client().http1_only().build().unwrap();
    let resp1 = h1.get(format!("{}/livez", app.url)).send().await.unwrap();

    // Assert
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(peer_certificate(&resp), leaf.der);
    assert_eq!(resp1.status(), StatusCode::OK);
    assert_eq!(resp1.version(), Version::HTTP_11);

    // The whole API works over HTTP/2: an account, a license, a session.
    let create = h2
        .post(format!("{}/v1/accounts", app.url))
        .bearer_auth(ROOT_TOKEN)
        .json(&serde_json::json!({"name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), StatusCode::CREATED);
    assert_eq!(create.version(), Version::HTTP_2);

    // Plain HTTP to the TLS port is not served.
    let plain = reqwest::Client::new()
        .get(app.url.replace("https://", "http://") + "/livez")
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

#[tokio::test]
async fn a_replaced_certificate_serves_new_connections_while_open_ones_keep_working() {
    // Arrange: a keep-alive HTTP/1.1 connection and an HTTP/2 one, made with the first
    // certificate.
    let ca = TestCa::new();
    let first = ca.leaf("first");
    let second = ca.leaf("second");
    let (app, cert, key) = spawn_tls(&ca, &first).await;
    let kept_h1 = ca.client().http1_only().build().unwrap();
    let kept_h2 = ca.client().build().unwrap();
    for client in [&kept_h1, &kept_h2] {
        let r = client
            .get(format!("{}/livez", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(peer_certificate(&r), first.der);
    }

    // Act: the files are replaced in place (the cert first, then the key, as a copy would).
    second.install(&cert, &key);

    // Assert: new connections soon get the second certificate...
    let fresh = || ca.client().pool_max_idle_per_host(0).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = fresh()
            .get(format!("{}/livez", app.url))
            .send()
            .await
            .unwrap();
        if peer_certificate(&r) == second.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...while the connections opened before still answer, on their first handshake.
    for client in [&kept_h1, &kept_h2] {
        let r = client
            .get(format!("{}/livez", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            peer_certificate(&r),
            first.der,
            "the same connection was reused"
        );
    }

    // A key that does not belong to the certificate is refused: the second stays in use.
    std::fs::write(&key, ca.leaf("stray").key_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = fresh()
        .get(format!("{}/livez", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(peer_certificate(&r), second.der);
    let metrics = app.get_text("/metrics", ROOT_TOKEN).await;
    assert!(
        metrics.contains("leasehold_tls_reloads_total{outcome=\"failed\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_certificate_that_does_not_load_stops_the_start_with_the_file_named() {
    let ca = TestCa::new();
    let leaf = ca.leaf("server");
    let other = ca.leaf("other");
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let build = |cert: &Path, key: &Path| {
        let mut config = Config::new_for_test(dir.path());
        config.tls_cert = Some(cert.to_path_buf());
        config.tls_key = Some(key.to_path_buf());
        Application::build(config, std::sync::Arc::new(ManualClock::new(TEST_START)))
    };

    // A key of another certificate.
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &other.key_pem).unwrap();
    let err = format!("{:#}", build(&cert, &key).await.err().unwrap());
    assert!(
        err.contains("key.pem is not the key of the certificate"),
        "{err}"
    );

    // Not a certificate at all.
    std::fs::write(&cert, "hello").unwrap();
    let err = format!("{:#}", build(&cert, &key).await.err().unwrap());
    assert!(err.contains("cert.pem: no certificate"), "{err}");

    // A missing file.
    let err = format!(
        "{:#}",
        build(&dir.path().join("nope.pem"), &key)
            .await
            .err()
            .unwrap()
    );
    assert!(err.contains("nope.pem"), "{err}");

    // Only half of the pair.
    let mut config = Config::new_for_test(dir.path());
    config.tls_cert = Some(cert.clone());
    let err = Application::build(config, std::sync::Arc::new(ManualClock::new(TEST_START)))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("tls_key"), "{err}");
}
