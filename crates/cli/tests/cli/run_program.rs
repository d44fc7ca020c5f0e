//! `leasehold run` with real child programs against the real server: exit codes pass through,
//! the seat is held while the program runs and returned when it exits or is signalled, a full
//! license is refused clearly (exit 75) or waited for, and a lost seat stops the program.

use std::process::Stdio;

use leasehold_client::proto::{CreateLicense, OnFull};
use leasehold_client::Client;

use crate::kit::*;
use crate::support::BIN;

#[tokio::test]
async fn the_programs_exit_code_passes_through_and_the_seat_is_held_only_while_it_runs() {
    // Arrange
    let kit = Kit::start();
    let tenant = kit.tenant(license(1)).await;
    let bob = tenant.user_token("bob").await;
    let dir = tempfile::tempdir().unwrap();
    let during = dir.path().join("during.json");
    // The program lists the license's sessions from the inside (with the admin token), then
    // exits 7.
    let script = format!(
        "{BIN} session list --license {} --token {} -o json > {} && echo \"$LEASEHOLD_SESSION_ID\" > {}; exit 7",
        tenant.license_id,
        tenant.admin_token,
        during.display(),
        dir.path().join("session").display(),
    );

    // Act
    let out = kit
        .cli(
            &bob,
            &[
                "run",
                "--license",
                &tenant.license_id,
                "--",
                "sh",
                "-c",
                &script,
            ],
        )
        .await;

    // Assert: exit code 7; during the run the program's session held the seat...
    assert_eq!(out.code, 7, "{out:#?}");
    let seen: serde_json::Value = serde_json::from_str(&read(&during)).unwrap();
    let sessions = seen["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{seen}");
    let session_id = read(&dir.path().join("session")).trim().to_owned();
    assert_eq!(
        sessions[0]["id"],
        session_id.as_str(),
        "LEASEHOLD_SESSION_ID is set"
    );
    assert_eq!(sessions[0]["username"], "bob");
    // ...with the defaults: this machine's hostname as device, a fresh instance per run.
    if let Ok(hostname) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        assert_eq!(sessions[0]["device_id"], hostname.trim());
    }
    assert!(sessions[0]["instance_id"]
        .as_str()
        .unwrap()
        .starts_with("run-"));
    // ...and after it the seat is free again.
    assert_eq!(tenant.in_use().await, 0);
    let live = tenant
        .admin
        .list_sessions(&tenant.license_id)
        .await
        .unwrap();
    assert!(live.sessions.is_empty());
}

#[tokio::test]
async fn a_program_killed_by_a_signal_exits_128_plus_the_signal_and_missing_ones_127() {
    let kit = Kit::start();
    let tenant = kit.tenant(license(1)).await;
    let bob = tenant.user_token("bob").await;
    let license = tenant.license_id.as_str();

    let killed = kit
        .cli(
            &bob,
            &["run", "--license", license, "--", "sh", "-c", "kill -9 $$"],
        )
        .await;
    let missing = kit
        .cli(
            &bob,
            &["run", "--license", license, "--", "/nonexistent/program"],
        )
        .await;
    let ok = kit.cli(&bob, &["run", "--license", license, "true"]).await;

    assert_eq!(killed.code, 137, "{killed:#?}");
    assert_eq!(missing.code, 127, "{missing:#?}");
    assert!(missing.stderr.contains("command not found"), "{missing:#?}");
    assert_eq!(ok.code, 0, "{ok:#?}");
    assert_eq!(tenant.in_use().await, 0, "every run returned its seat");
}

#[tokio::test]
async fn sigterm_to_leasehold_run_reaches_the_program_and_the_seat_is_returned() {
    // Arrange: a program that says when it is ready and records the SIGTERM it gets.
    let kit = Kit::start();
    let tenant = kit.tenant(license(1)).await;
    let bob = tenant.user_token("bob").await;
    let dir = tempfile::tempdir().unwrap();
    let (ready, got) = (dir.path().join("ready"), dir.path().join("got"));
    let script = format!(
        "trap 'echo term > {}; exit 5' TERM; touch {}; while :; do sleep 0.1; done",
        got.display(),
        ready.display()
    );
    let mut cmd = kit.command(
        &bob,
        &[
            "run",
            "--license",
            &tenant.license_id,
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let mut run = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(|| async { ready.exists() }).await,
        "the program started"
    );
    assert_eq!(tenant.in_use().await, 1);

    // Act: SIGTERM to `leasehold run` itself, not to the program.
    let pid = i32::try_from(run.id().unwrap()).unwrap();
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(SOON, run.wait())
        .await
        .unwrap()
        .unwrap();

    // Assert: the program got the signal and chose its exit code; the seat is back.
    assert_eq!(read(&got).trim(), "term");
    assert_eq!(exit_code(status), 5);
    assert_eq!(tenant.in_use().await, 0);
}

#[tokio::test]
async fn a_full_license_is_refused_clearly_with_exit_code_75() {
    // Arrange: alice holds the only seat.
    let kit = Kit::start();
    let tenant = kit.tenant(license(1)).await;
    let alice = Client::with_token(kit.url(), tenant.user_token("alice").await).unwrap();
    let held = alice
        .checkout(&tenant.license_id, "desk", "cad-1")
        .await
        .unwrap();
    let bob = tenant.user_token("bob").await;
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");

    // Act
    let out = kit
        .cli(
            &bob,
            &[
                "run",
                "--license",
                &tenant.license_id,
                "--",
                "touch",
                ran.to_str().unwrap(),
            ],
        )
        .await;

    // Assert: exit 75, the server's code and the license on stderr, the program never ran.
    assert_eq!(out.code, 75, "{out:#?}");
    assert!(out.stderr.contains("no_seat_available"), "{out:#?}");
    assert!(out.stderr.contains(&tenant.license_id), "{out:#?}");
    assert!(
        out.stderr.contains("--wait"),
        "the message says how to wait: {out:#?}"
    );
    assert!(!ran.exists());
    held.release().await.unwrap();
}

#[tokio::test]
async fn with_wait_the_program_runs_once_a_seat_is_freed() {
    // A license that does not queue: `run` asks again now and then.
    wait_for_a_seat(OnFull::Deny).await;
}

#[tokio::test]
async fn with_wait_on_a_queueing_license_the_program_waits_in_the_queue() {
    wait_for_a_seat(OnFull::Queue).await;
}

async fn wait_for_a_seat(on_full: OnFull) {
    // Arrange: alice holds the only seat.
    let kit = Kit::start();
    let tenant = kit
        .tenant(CreateLicense {
            on_full: Some(on_full),
            ..license(1)
        })
        .await;
    let alice = Client::with_token(kit.url(), tenant.user_token("alice").await).unwrap();
    let held = alice
        .checkout(&tenant.license_id, "desk", "cad-1")
        .await
        .unwrap();
    let bob = tenant.user_token("bob").await;
    let dir = tempfile::tempdir().unwrap();
    let (ran, stderr) = (dir.path().join("ran"), dir.path().join("stderr"));

    // Act: bob waits up to a minute; alice leaves once he is waiting.
    let mut cmd = kit.command(
        &bob,
        &[
            "run",
            "--license",
            &tenant.license_id,
            "--wait",
            "60",
            "--",
            "touch",
            ran.to_str().unwrap(),
        ],
    );
    let mut run = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    assert!(eventually(|| async { read(&stderr).contains("waiting up to 60 s") }).await);
    if on_full == OnFull::Queue {
        let queued = || async {
            let queue = tenant
                .admin
                .license_queue(&tenant.license_id)
                .await
                .unwrap();
            queue.waiting.iter().any(|w| w.username == "bob")
        };
        assert!(eventually(queued).await, "bob waits in the server's queue");
    }
    held.release().await.unwrap();
    let status = tokio::time::timeout(SOON, run.wait())
        .await
        .unwrap()
        .unwrap();

    // Assert
    assert_eq!(exit_code(status), 0, "{}", read(&stderr));
    assert!(ran.exists());
    assert_eq!(tenant.in_use().await, 0);
}

#[tokio::test]
async fn a_lost_seat_stops_the_program_and_exits_76() {
    // Arrange: heartbeats every second (3 s inactivity timeout), a program that runs until
    // told to stop.
    let kit = Kit::start();
    let tenant = kit
        .tenant(CreateLicense {
            inactivity_timeout_secs: Some(3),
            ..license(1)
        })
        .await;
    let bob = tenant.user_token("bob").await;
    let dir = tempfile::tempdir().unwrap();
    let (ready, got) = (dir.path().join("ready"), dir.path().join("got"));
    let script = format!(
        "trap 'echo term > {}; exit 0' TERM; touch {}; while :; do sleep 0.1; done",
        got.display(),
        ready.display()
    );
    let mut cmd = kit.command(
        &bob,
        &[
            "run",
            "--license",
            &tenant.license_id,
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let run = cmd.spawn().unwrap();
    assert!(
        eventually(|| async { ready.exists() }).await,
        "the program started"
    );

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
    let output = tokio::time::timeout(SOON, run.wait_with_output())
        .await
        .unwrap()
        .unwrap();

    // Assert: told on stderr, the program got SIGTERM, exit 76.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(exit_code(output.status), 76, "{stderr}");
    assert!(
        stderr.contains("seat was lost") && stderr.contains("revoked"),
        "{stderr}"
    );
    assert_eq!(read(&got).trim(), "term");
}

#[tokio::test]
async fn without_credentials_or_with_an_admin_token_run_says_why() {
    let kit = Kit::start();
    let tenant = kit.tenant(license(1)).await;

    let no_token = kit
        .cli("", &["run", "--license", &tenant.license_id, "--", "true"])
        .await;
    let admin_token = kit
        .cli(
            &tenant.admin_token,
            &["run", "--license", &tenant.license_id, "--", "true"],
        )
        .await;

    assert_eq!(no_token.code, 78, "{no_token:#?}");
    assert!(no_token.stderr.contains("LEASEHOLD_TOKEN"), "{no_token:#?}");
    assert_eq!(admin_token.code, 77, "{admin_token:#?}");
    assert!(admin_token.stderr.contains("forbidden"), "{admin_token:#?}");
}

#[tokio::test]
async fn a_revoke_stops_the_program_within_two_seconds_under_the_default_timeout() {
    // Arrange: the default 20-minute inactivity timeout (heartbeats every 60 s), so only the
    // session's event stream can bring the revoke in time.
    let kit = Kit::start();
    let tenant = kit.tenant(license(1)).await;
    let bob = tenant.user_token("bob").await;
    let dir = tempfile::tempdir().unwrap();
    let (ready, got) = (dir.path().join("ready"), dir.path().join("got"));
    let script = format!(
        "trap 'echo term > {}; exit 0' TERM; touch {}; while :; do sleep 0.1; done",
        got.display(),
        ready.display()
    );
    let mut cmd = kit.command(
        &bob,
        &[
            "run",
            "--license",
            &tenant.license_id,
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let run = cmd.spawn().unwrap();
    assert!(
        eventually(|| async { ready.exists() }).await,
        "the program started"
    );
    let live = tenant
        .admin
        .list_sessions(&tenant.license_id)
        .await
        .unwrap();
    assert_eq!(live.sessions[0].heartbeat_interval_secs, 60);

    // Act: an admin revokes the session.
    tenant
        .admin
        .close_session(&live.sessions[0].id)
        .await
        .unwrap();
    let revoked = std::time::Instant::now();
    let output = tokio::time::timeout(SOON, run.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let took = revoked.elapsed();

    // Assert: the program was stopped and `run` exited 76, within 2 s of the revoke.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(exit_code(output.status), 76, "{stderr}");
    assert!(stderr.contains("revoked"), "{stderr}");
    assert_eq!(read(&got).trim(), "term");
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
}
