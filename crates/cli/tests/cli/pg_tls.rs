//! PostgreSQL over TLS: the server honours `sslmode` (and `sslrootcert`) in the database URL.
//! CI enables SSL on its test cluster (`.ci/run`); Debian's cluster has it on by default.

use std::process::Stdio;

use sqlx::{Connection, Row};

use crate::pg::TestDb;
use crate::support::{ServerProcess, BIN};

/// `url` with `params` added to its query.
fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test]
async fn the_server_connects_to_postgresql_over_tls_when_the_url_says_sslmode_require() {
    let Some(db) = TestDb::create("sslmode=require").await else {
        return;
    };
    let url = with_params(&db.url, "sslmode=require");

    // The URL's connections are encrypted (what the server's pool gets from the same URL).
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let ssl: bool = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "sslmode=require gave an unencrypted connection");
    conn.close().await.ok();

    // A node serves from it.
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[("LEASEHOLD_DATABASE_URL", url.as_str())]);
    let health = reqwest::get(format!("{}/healthz", server.url))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    drop(server);
    db.drop_db().await;
}

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test]
async fn a_database_certificate_that_does_not_verify_stops_the_start_with_a_clear_error() {
    let Some(db) = TestDb::create("sslmode=verify-full").await else {
        return;
    };
    // A CA that did not sign the database server's certificate.
    let dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let url = with_params(
        &db.url,
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );

    let out = tokio::process::Command::new(BIN)
        .args(["migrate", "--database-url", &url])
        .env("LEASEHOLD_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();

    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("tls") || stderr.contains("certificate"),
        "{stderr}"
    );
    // The URL (it may hold a password) is not in the message.
    assert!(!stderr.contains("sslrootcert"), "{stderr}");
    db.drop_db().await;
}
