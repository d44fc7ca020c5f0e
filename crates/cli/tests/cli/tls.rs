//! HTTPS with the real binary: `serve --tls-cert/--tls-key`, the client commands (`healthcheck`,
//! admin commands, `run`) trusting a CA given by flag, environment or config file, and a
//! certificate reloaded on SIGHUP while open connections keep working.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::kit::{license, run, Kit, ROOT};
use crate::support::{ServerProcess, BIN};

/// A CA made for the test (also used by the C ABI tests).
pub(crate) struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A server certificate for 127.0.0.1: its PEM pair and DER.
pub(crate) struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Leasehold CLI test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    pub(crate) fn leaf(&self) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    fn client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.cert.pem().as_bytes()).unwrap(),
            )
            .tls_info(true)
    }
}

/// The files of a TLS server: CA, certificate and key.
pub(crate) struct Files {
    pub(crate) ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

pub(crate) fn write_files(dir: &Path, ca: &TestCa, leaf: &Leaf) -> Files {
    let files = Files {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.ca, ca.cert.pem()).unwrap();
    std::fs::write(&files.cert, &leaf.cert_pem).unwrap();
    std::fs::write(&files.key, &leaf.key_pem).unwrap();
    files
}

pub(crate) fn start_tls(data: &Path, files: &Files, log: &str) -> ServerProcess {
    ServerProcess::start_with(
        data,
        &[("LEASEHOLD_ADMIN_TOKEN", ROOT), ("LEASEHOLD_LOG", log)],
        &[
            "--tls-cert",
            files.cert.to_str().unwrap(),
            "--tls-key",
            files.key.to_str().unwrap(),
        ],
        Some(&files.ca),
    )
}

fn peer_certificate(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn the_client_commands_speak_https_with_a_given_ca() {
    // Arrange: an HTTPS server, and a tenant made over HTTPS through the SDK.
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(dir.path(), &ca, &ca.leaf());
    let data = tempfile::tempdir().unwrap();
    let server = start_tls(data.path(), &files, "warn");
    assert!(server.url.starts_with("https://"));
    let kit = Kit::with_server(server, data);
    let pem = std::fs::read(&files.ca).unwrap();
    let root = leasehold_client::Client::builder(kit.url())
        .bearer_token(ROOT)
        .ca_pem(pem.clone())
        .build()
        .unwrap();
    let tenant = kit.tenant_with(&root, license(1)).await;
    let bob = tenant.user_token("bob").await;
    let ca_file = files.ca.to_str().unwrap();

    // healthcheck: with the CA, ready; without it, the certificate is named.
    let ok = run({
        let mut c = tokio::process::Command::new(BIN);
        c.args(["healthcheck", "--url", kit.url(), "--ca-file", ca_file]);
        c
    })
    .await;
    assert_eq!(ok.code, 0, "{ok:#?}");
    let untrusted = run({
        let mut c = tokio::process::Command::new(BIN);
        c.args(["healthcheck", "--url", kit.url()]);
        c.env_remove("LEASEHOLD_CA_FILE");
        c
    })
    .await;
    assert_eq!(untrusted.code, 1, "{untrusted:#?}");
    assert!(
        untrusted.stderr.to_lowercase().contains("certificate"),
        "{untrusted:#?}"
    );

    // Admin commands: the CA by flag, by environment, by config file.
    let flag = kit.cli(ROOT, &["plans", "--ca-file", ca_file]).await;
    assert_eq!(flag.code, 0, "{flag:#?}");
    let mut cmd = kit.command(ROOT, &["plans"]);
    cmd.env("LEASEHOLD_CA_FILE", ca_file);
    assert_eq!(run(cmd).await.code, 0);
    let config = kit.home.path().join("cli.toml");
    std::fs::write(&config, format!("ca_file = {ca_file:?}\n")).unwrap();
    let from_file = kit
        .cli(ROOT, &["plans", "--cli-config", config.to_str().unwrap()])
        .await;
    assert_eq!(from_file.code, 0, "{from_file:#?}");
    // Without it: unreachable (69), and why.
    let none = kit.cli(ROOT, &["plans"]).await;
    assert_eq!(none.code, 69, "{none:#?}");
    assert!(
        none.stderr.to_lowercase().contains("certificate"),
        "{none:#?}"
    );
    // A CA file that is not there: misconfigured (78).
    let missing = kit
        .cli(ROOT, &["plans", "--ca-file", "/nonexistent/ca.pem"])
        .await;
    assert_eq!(missing.code, 78, "{missing:#?}");
    assert!(
        missing.stderr.contains("/nonexistent/ca.pem"),
        "{missing:#?}"
    );

    // `leasehold run` holds a seat over HTTPS for the program's life.
    let ran = kit
        .cli(
            &bob,
            &[
                "run",
                "--license",
                &tenant.license_id,
                "--ca-file",
                ca_file,
                "--",
                "sh",
                "-c",
                "test -n \"$LEASEHOLD_SESSION_ID\"",
            ],
        )
        .await;
    assert_eq!(ran.code, 0, "{ran:#?}");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_open_connections_keep_working() {
    // Arrange: a keep-alive connection made with the first certificate.
    let ca = TestCa::new();
    let first = ca.leaf();
    let second = ca.leaf();
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(dir.path(), &ca, &first);
    let data = tempfile::tempdir().unwrap();
    let server = start_tls(data.path(), &files, "info");
    let kept = ca.client().http1_only().build().unwrap();
    let r = kept
        .get(format!("{}/livez", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(peer_certificate(&r), first.der);

    // Act: the files are replaced and the server gets SIGHUP.
    std::fs::write(&files.cert, &second.cert_pem).unwrap();
    std::fs::write(&files.key, &second.key_pem).unwrap();
    let pid = i32::try_from(server.child.id()).unwrap();
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);

    // Assert: new connections get the second certificate, the server lives on and says why.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = ca.client().pool_max_idle_per_host(0).build().unwrap();
        let r = fresh
            .get(format!("{}/livez", server.url))
            .send()
            .await
            .unwrap();
        if peer_certificate(&r) == second.der {
            break;
        }
        assert!(Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = kept
        .get(format!("{}/livez", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        peer_certificate(&r),
        first.der,
        "the open connection was kept"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.contains("TLS certificate reloaded") && l.contains("SIGHUP"))
    {
        assert!(Instant::now() < deadline, "{lines:#?}");
        lines.extend(server.printed_lines());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
