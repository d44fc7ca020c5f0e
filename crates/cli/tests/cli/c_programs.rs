//! The C example (`crates/ffi/examples/checkout.c`, linked with `libleasehold.so`) and the C++
//! example over `leasehold.hpp` (`checkout.cpp`, linked with `libleasehold.a`), compiled here
//! with the system's `cc` and `c++` (warnings as errors) and run against the real server: a
//! seat taken, its lease verified offline, kept past the inactivity timeout, and returned; a
//! revoke seen as lost (by the callback and by waiting, exit 76); a full license (exit 75).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use leasehold_client::proto::CreateLicense;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout};

use crate::kit::*;

/// The folder cargo built `libleasehold.so` and `libleasehold.a` into (this binary's own: the
/// cli crate dev-depends on leasehold-ffi).
pub fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    for lib in ["libleasehold.so", "libleasehold.a"] {
        assert!(
            deps.join(lib).exists(),
            "{lib} not found in {}",
            deps.display()
        );
    }
    deps
}

fn ffi_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ffi")
}

/// The two example programs, compiled once per test run.
struct Programs {
    _dir: tempfile::TempDir,
    c: PathBuf,
    cpp: PathBuf,
}

fn compile(compiler: &str, args: &[&str]) {
    let out = std::process::Command::new(compiler)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler} (install gcc and g++): {e}"));
    assert!(
        out.status.success(),
        "{compiler} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn programs() -> &'static Programs {
    static PROGRAMS: OnceLock<Programs> = OnceLock::new();
    PROGRAMS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let lib = library_dir();
        let lib = lib.to_str().unwrap();
        let include = format!("-I{}", ffi_dir().join("include").display());
        let c = dir.path().join("checkout");
        let cpp = dir.path().join("checkout-cpp");
        let c_source = ffi_dir().join("examples/checkout.c");
        compile(
            "cc",
            &[
                "-std=c11",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                &include,
                c_source.to_str().unwrap(),
                &format!("-L{lib}"),
                "-lleasehold",
                &format!("-Wl,-rpath,{lib}"),
                "-o",
                c.to_str().unwrap(),
            ],
        );
        // Statically linked: the archive plus the system libraries Rust's std needs
        // (`cargo rustc -p leasehold-ffi --crate-type staticlib -- --print native-static-libs`).
        let cpp_source = ffi_dir().join("examples/checkout.cpp");
        let archive = format!("{lib}/libleasehold.a");
        compile(
            "c++",
            &[
                "-std=c++17",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                &include,
                cpp_source.to_str().unwrap(),
                &archive,
                "-lgcc_s",
                "-lutil",
                "-lrt",
                "-lpthread",
                "-lm",
                "-ldl",
                "-lc",
                "-o",
                cpp.to_str().unwrap(),
            ],
        );
        Programs { _dir: dir, c, cpp }
    })
}

/// A running example program whose output is read line by line.
struct Running {
    child: Child,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
    jwks_dir: tempfile::TempDir,
}

fn start(program: &Path, kit: &Kit, token: &str, license_id: &str, seconds: u32) -> Running {
    let jwks_dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(program)
        .args([license_id, &seconds.to_string()])
        .env("LEASEHOLD_URL", kit.url())
        .env("LEASEHOLD_TOKEN", token)
        .env("LEASEHOLD_JWKS_FILE", jwks_dir.path().join("jwks.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    Running {
        child,
        stdout,
        seen: Vec::new(),
        jwks_dir,
    }
}

impl Running {
    /// Reads lines until one contains `needle`.
    async fn expect_line(&mut self, needle: &str) -> String {
        let read = async {
            while let Some(line) = self.stdout.next_line().await.unwrap() {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        };
        match tokio::time::timeout(SOON, read).await {
            Ok(Some(line)) => line,
            _ => panic!("no line with {needle:?}; saw {:#?}", self.seen),
        }
    }

    /// Waits for the exit; answers the code, all of stdout and stderr.
    async fn finish(mut self) -> (i32, String, String) {
        let mut rest = Vec::new();
        while let Some(line) = self.stdout.next_line().await.unwrap() {
            rest.push(line);
        }
        let status = tokio::time::timeout(SOON, self.child.wait())
            .await
            .expect("the program did not exit")
            .unwrap();
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            tokio::io::AsyncReadExt::read_to_string(&mut err, &mut stderr)
                .await
                .unwrap();
        }
        self.seen.extend(rest);
        (exit_code(status), self.seen.join("\n"), stderr)
    }
}

/// A license whose sessions end after 3 s without a heartbeat (so the programs must heartbeat
/// to keep them), and bob's token.
async fn short_timeout_tenant(kit: &Kit) -> (Tenant, String) {
    let tenant = kit
        .tenant(CreateLicense {
            inactivity_timeout_secs: Some(3),
            ..license(1)
        })
        .await;
    let bob = tenant.user_token("bob").await;
    (tenant, bob)
}

async fn takes_verifies_keeps_and_returns_a_seat(program: &Path, name: &str) {
    // Arrange
    let kit = Kit::start();
    let (tenant, bob) = short_timeout_tenant(&kit).await;

    // Act: the program holds the seat for 5 s (past the 3 s inactivity timeout).
    let mut run = start(program, &kit, &bob, &tenant.license_id, 5);
    let taken = run.expect_line("seat taken: session ").await;
    run.expect_line("lease verified offline: bob on ").await;
    assert!(
        run.jwks_dir.path().join("jwks.json").exists(),
        "the keys were saved"
    );

    // Assert: the seat is held, by this program's session, while it runs...
    let live = tenant
        .admin
        .list_sessions(&tenant.license_id)
        .await
        .unwrap();
    assert_eq!(live.sessions.len(), 1);
    assert!(taken.contains(&live.sessions[0].id), "{taken}");
    assert!(live.sessions[0].instance_id.starts_with(name));
    // ...still after the inactivity timeout (the library heartbeats)...
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(tenant.in_use().await, 1, "the seat was kept");
    // ...and given back at the end, the callback told.
    let (code, stdout, stderr) = run.finish().await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("seat returned: state released"), "{stdout}");
    assert!(
        stdout.contains(&format!("callback ({name}): seat released")),
        "{stdout}"
    );
    assert_eq!(tenant.in_use().await, 0);
}

async fn sees_a_revoke_as_lost(program: &Path, name: &str) {
    // Arrange
    let kit = Kit::start();
    let (tenant, bob) = short_timeout_tenant(&kit).await;
    let mut run = start(program, &kit, &bob, &tenant.license_id, 60);
    run.expect_line("lease verified offline").await;

    // Act: an admin revokes the session.
    let live = tenant
        .admin
        .list_sessions(&tenant.license_id)
        .await
        .unwrap();
    tenant
        .admin
        .close_session(&live.sessions[0].id)
        .await
        .unwrap();

    // Assert: lost, told by the callback and by waiting; exit 76.
    let (code, stdout, stderr) = run.finish().await;
    assert_eq!(code, 76, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "callback ({name}): seat lost: session ended (revoked)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("seat lost: session ended (revoked) (end reason: revoked)"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_c_example_takes_verifies_keeps_and_returns_a_seat() {
    takes_verifies_keeps_and_returns_a_seat(&programs().c, "c-example").await;
}

#[tokio::test]
async fn the_c_example_sees_a_revoke_as_lost_and_exits_76() {
    sees_a_revoke_as_lost(&programs().c, "c-example").await;
}

#[tokio::test]
async fn the_cpp_example_takes_verifies_keeps_and_returns_a_seat() {
    takes_verifies_keeps_and_returns_a_seat(&programs().cpp, "cpp-example").await;
}

#[tokio::test]
async fn the_cpp_example_sees_a_revoke_as_lost_and_exits_76() {
    sees_a_revoke_as_lost(&programs().cpp, "cpp-example").await;
}

#[tokio::test]
async fn both_examples_exit_75_with_the_servers_message_when_no_seat_is_free() {
    // Arrange: the programs compiled first (compiling blocks this runtime, whose heartbeats
    // keep the holder's seat), then the only seat taken.
    let programs = [&programs().c, &programs().cpp];
    let kit = Kit::start();
    let (tenant, bob) = short_timeout_tenant(&kit).await;
    let holder = kit
        .client(&tenant.user_token("alice").await)
        .checkout(&tenant.license_id, "pc", "other")
        .await
        .unwrap();

    for program in programs {
        // Act
        let (code, stdout, stderr) = start(program, &kit, &bob, &tenant.license_id, 1)
            .finish()
            .await;

        // Assert
        assert_eq!(code, 75, "{stdout}\n{stderr}");
        assert!(
            stderr.contains("no_seat_available")
                && stderr.contains("the license's only seat is in use"),
            "{stderr}"
        );
    }
    holder.release().await.unwrap();
}
