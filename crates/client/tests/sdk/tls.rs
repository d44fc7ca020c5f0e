//! The SDK over HTTPS: the real server with a certificate signed by a CA made here (rcgen),
//! trusted through `ClientBuilder::ca_pem`; a server the client cannot verify is a clear
//! transport error, never a silent downgrade.

use std::sync::Arc;

use leasehold_client::proto::{CreateLicense, LicenseModel, PutUser, UserKind};
use leasehold_client::{Client, ClientError};
use leasehold_server::{Application, Config, RunningServer};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

const ROOT: &str = "root-token-for-sdk-tls-tests-0123456789";

/// A CA's PEM, and a server signed by it for 127.0.0.1.
async fn tls_server(dir: &std::path::Path) -> (String, RunningServer) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "SDK test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
    let mut config = Config::new_for_test(dir);
    config.admin_token = Some(ROOT.into());
    config.tls_cert = Some(dir.join("cert.pem"));
    config.tls_key = Some(dir.join("key.pem"));
    let app = Application::build(config, Arc::new(leasehold_server::SystemClock::new()))
        .await
        .unwrap();
    (ca.pem(), app.spawn())
}

#[tokio::test]
async fn the_sdk_checks_out_a_seat_over_https_with_a_given_ca() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let (ca, server) = tls_server(dir.path()).await;
    let url = server.url();
    assert!(url.starts_with("https://"));
    let root = Client::builder(url.as_str())
        .bearer_token(ROOT)
        .ca_pem(ca.clone())
        .build()
        .unwrap();
    let account = root.create_account("Acme").await.unwrap();
    let admin = root.with_bearer_token(account.admin_token.clone());
    let license = admin
        .create_license(&CreateLicense {
            account_id: account.id.clone(),
            product: "cad".into(),
            model: LicenseModel::ConcurrentSessions,
            seats: Some(1),
            ..CreateLicense::default()
        })
        .await
        .unwrap();
    let svc = admin
        .put_user(
            &account.id,
            "erp",
            &PutUser {
                kind: UserKind::Service,
                active: None,
            },
        )
        .await
        .unwrap();

    // Act: a service user (client credentials over HTTPS) checks out a seat.
    let service = Client::builder(url.as_str())
        .client_credentials(svc.client_id.unwrap(), svc.client_secret.unwrap())
        .ca_pem(ca)
        .build()
        .unwrap();
    let guard = service.checkout(&license.id, "srv", "erp-1").await.unwrap();

    // Assert
    assert_eq!(guard.session().username, "erp");
    let claims = service
        .lease_verifier()
        .await
        .unwrap()
        .verify(
            &guard.lease().unwrap(),
            guard.session().opened_at.unix_timestamp(),
        )
        .unwrap();
    assert_eq!(claims.sub, "erp");
    guard.release().await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_server_the_client_cannot_verify_is_a_transport_error_naming_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (_, server) = tls_server(dir.path()).await;
    // The system's roots do not know the test CA.
    let client = Client::builder(server.url())
        .retry_policy(leasehold_client::RetryPolicy::none())
        .build()
        .unwrap();
    let err = client.healthz().await.unwrap_err();
    match &err {
        ClientError::Transport(message) => {
            assert!(message.to_lowercase().contains("certificate"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    server.stop().await.unwrap();
}
