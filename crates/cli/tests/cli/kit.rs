//! Kit for the tests of the client commands (`run` and the admin commands): the real server
//! with a known root token, tenants set up through the SDK, and `leasehold` invocations with a
//! clean environment (no user config file, no inherited `LEASEHOLD_*` variables, stdin closed).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use leasehold_client::proto::{CreateLicense, LicenseModel, PutUser, UserKind};
use leasehold_client::Client;
use serde_json::Value;

use crate::support::{ServerProcess, BIN};

pub const ROOT: &str = "root-token-for-cli-tests-0123456789";

/// Generous bound for anything that should happen "soon" on a loaded machine.
pub const SOON: Duration = Duration::from_secs(20);

pub struct Kit {
    pub server: ServerProcess,
    /// HOME and XDG_CONFIG_HOME of every invocation: no config file unless a test writes one.
    pub home: tempfile::TempDir,
    _data: tempfile::TempDir,
}

/// What an invocation printed, and how it ended.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts success and returns self.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{self:#?}");
        self
    }

    /// Stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Stderr parsed as JSON (errors with `--output json`).
    #[track_caller]
    pub fn stderr_json(&self) -> Value {
        serde_json::from_str(self.stderr.trim())
            .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {self:#?}"))
    }
}

impl Kit {
    pub fn start() -> Kit {
        let data = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(data.path(), &[("LEASEHOLD_ADMIN_TOKEN", ROOT)]);
        Kit {
            server,
            home: tempfile::tempdir().unwrap(),
            _data: data,
        }
    }

    /// A kit around a server started otherwise (HTTPS, other flags); `data` is its folder.
    pub fn with_server(server: ServerProcess, data: tempfile::TempDir) -> Kit {
        Kit {
            server,
            home: tempfile::tempdir().unwrap(),
            _data: data,
        }
    }

    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// `leasehold ARGS` with the server's URL and `token` in the environment.
    pub fn command(&self, token: &str, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args)
            .env("LEASEHOLD_URL", self.url())
            .env("LEASEHOLD_TOKEN", token)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env_remove("LEASEHOLD_ADMIN_TOKEN")
            .env_remove("LEASEHOLD_CONFIG")
            .env("LEASEHOLD_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `leasehold ARGS` to completion.
    pub async fn cli(&self, token: &str, args: &[&str]) -> Out {
        run(self.command(token, args)).await
    }

    pub fn client(&self, token: &str) -> Client {
        Client::with_token(self.url(), token).unwrap()
    }

    /// An account with a license made from `license` (its `account_id` filled in).
    pub async fn tenant(&self, license: CreateLicense) -> Tenant {
        self.tenant_with(&self.client(ROOT), license).await
    }

    /// `tenant`, made through `root` (a root client with its own settings, e.g. a CA).
    pub async fn tenant_with(&self, root: &Client, license: CreateLicense) -> Tenant {
        let account = root.create_account("Acme").await.unwrap();
        let admin = root.with_bearer_token(account.admin_token.clone());
        let license = admin
            .create_license(&CreateLicense {
                account_id: account.id.clone(),
                ..license
            })
            .await
            .unwrap();
        Tenant {
            account_id: account.id,
            admin_token: account.admin_token,
            license_id: license.id,
            admin,
        }
    }
}

/// Runs a prepared command to completion; a hung command fails the test instead of hanging it.
pub async fn run(mut cmd: tokio::process::Command) -> Out {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let output = tokio::time::timeout(SOON * 3, cmd.output())
        .await
        .expect("leasehold did not finish in time")
        .unwrap();
    Out {
        code: exit_code(output.status),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The exit code, or 128+N for a process killed by signal N (as a shell reports it).
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

pub fn license(seats: i64) -> CreateLicense {
    CreateLicense {
        product: "cad".into(),
        model: LicenseModel::ConcurrentSessions,
        seats: Some(seats),
        ..CreateLicense::default()
    }
}

pub struct Tenant {
    pub account_id: String,
    pub admin_token: String,
    pub license_id: String,
    pub admin: Client,
}

impl Tenant {
    /// An interactive user's personal token.
    pub async fn user_token(&self, username: &str) -> String {
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

    pub async fn in_use(&self) -> u32 {
        let license = self.admin.get_license(&self.license_id).await.unwrap();
        license.usage.unwrap().in_use
    }
}

/// Polls `check` every 50 ms until it holds or `SOON` has passed.
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
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

/// The file's text, or "" while it does not exist.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
