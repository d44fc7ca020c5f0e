//! Offline borrowing from the command line, with the real binary and server: `leasehold
//! borrow` saves a seat that `leasehold run --lease` uses with no network (an unreachable
//! server, or none configured) until the borrow ends and refuses after; `leasehold return`
//! frees the seat at once; a seat reclaimed by the admin (`leasehold session reclaim`) is
//! refused wherever the server can be reached; a borrow beyond the policy is refused clearly.

use std::time::Duration;

use leasehold_client::proto::CreateLicense;

use crate::kit::*;

/// A port nothing listens on: the server is "unreachable".
const NOWHERE: &str = "http://127.0.0.1:9";

/// A license of `seats` seats that lends up to 3 days.
fn lending(seats: i64) -> CreateLicense {
    CreateLicense {
        max_borrow_days: Some(3),
        ..license(seats)
    }
}

/// The wall clock plus `secs`, in RFC 3339.
fn in_secs(secs: i64) -> String {
    #[allow(clippy::disallowed_methods)] // the test's own reading of the (shared) wall clock
    let now = time::OffsetDateTime::now_utc();
    (now + time::Duration::seconds(secs))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// `leasehold ARGS` offline: with `token`, at a server URL that points nowhere; without one,
/// with no URL and no token at all.
async fn offline(kit: &Kit, token: Option<&str>, args: &[&str]) -> Out {
    let mut cmd = kit.command("", args);
    match token {
        Some(token) => cmd
            .env("LEASEHOLD_TOKEN", token)
            .env("LEASEHOLD_URL", NOWHERE),
        None => cmd
            .env_remove("LEASEHOLD_TOKEN")
            .env_remove("LEASEHOLD_URL"),
    };
    run(cmd).await
}

#[tokio::test]
async fn a_borrowed_seat_runs_a_program_with_no_network_until_the_borrow_ends_and_is_refused_after()
{
    // Arrange: bob borrows a seat for 8 seconds.
    let kit = Kit::start();
    let tenant = kit.tenant(lending(2)).await;
    let bob = tenant.user_token("bob").await;
    let dir = tempfile::tempdir().unwrap();
    let seat = dir.path().join("seat.lease");
    let seat_arg = seat.to_str().unwrap();
    let until = in_secs(8);
    let borrowed = kit
        .cli(
            &bob,
            &[
                "borrow",
                "--license",
                &tenant.license_id,
                "--until",
                &until,
                "--out",
                seat_arg,
            ],
        )
        .await
        .ok();
    assert!(
        borrowed.stdout.contains("borrowed session"),
        "{borrowed:#?}"
    );
    assert_eq!(tenant.in_use().await, 1);

    // Act + Assert: with the server unreachable, and with no server or token at all, the
    // program runs and its exit code passes through.
    let unreachable = offline(
        &kit,
        Some(NOWHERE),
        &["run", "--lease", seat_arg, "--", "sh", "-c", "exit 3"],
    )
    .await;
    assert_eq!(unreachable.code, 3, "{unreachable:#?}");
    assert!(
        unreachable.stderr.contains("cannot be reached")
            || unreachable.stderr.contains("did not answer"),
        "{unreachable:#?}"
    );
    let nothing = offline(
        &kit,
        None,
        &["run", "--lease", seat_arg, "--", "sh", "-c", "exit 4"],
    )
    .await;
    assert_eq!(nothing.code, 4, "{nothing:#?}");
    // Bound to its device: another device id is refused.
    let elsewhere = offline(
        &kit,
        None,
        &[
            "run",
            "--lease",
            seat_arg,
            "--device-id",
            "other-pc",
            "--",
            "true",
        ],
    )
    .await;
    assert_eq!(elsewhere.code, 77, "{elsewhere:#?}");
    // A program still running when the borrow ends is stopped (exit 76)...
    let started = tokio::time::Instant::now();
    let stopped = offline(
        &kit,
        Some(NOWHERE),
        &[
            "run",
            "--lease",
            seat_arg,
            "--kill-after",
            "1",
            "--",
            "sleep",
            "60",
        ],
    )
    .await;
    assert_eq!(stopped.code, 76, "{stopped:#?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // ...and after it the lease is refused, offline, before anything runs.
    let after = offline(&kit, None, &["run", "--lease", seat_arg, "--", "true"]).await;
    assert_eq!(after.code, 77, "{after:#?}");
    assert!(after.stderr.contains("expired"), "{after:#?}");
    // The server freed the seat by itself.
    assert!(eventually(|| async { tenant.in_use().await == 0 }).await);
}

#[tokio::test]
async fn an_early_return_frees_the_seat_at_once_and_removes_the_file() {
    // Arrange
    let kit = Kit::start();
    let tenant = kit.tenant(lending(1)).await;
    let bob = tenant.user_token("bob").await;
    let dir = tempfile::tempdir().unwrap();
    let seat = dir.path().join("seat.lease");
    let seat_arg = seat.to_str().unwrap();
    kit.cli(
        &bob,
        &[
            "borrow",
            "--license",
            &tenant.license_id,
            "--days",
            "3",
            "--out",
            seat_arg,
        ],
    )
    .await
    .ok();
    assert_eq!(tenant.in_use().await, 1);

    // Act
    let returned = kit.cli(&bob, &["return", "--lease", seat_arg]).await.ok();

    // Assert: the seat is free, the file gone, the lease listed as returned.
    assert!(returned.stdout.contains("returned"), "{returned:#?}");
    assert_eq!(tenant.in_use().await, 0);
    assert!(!seat.exists());
    let listed = kit
        .cli(
            &tenant.admin_token,
            &[
                "session",
                "revoked-leases",
                "--license",
                &tenant.license_id,
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(listed["leases"][0]["reason"], "returned");
}

#[tokio::test]
async fn a_reclaimed_seat_is_refused_wherever_the_server_can_be_reached() {
    // Arrange: bob borrows; the admin reclaims it (a lost laptop).
    let kit = Kit::start();
    let tenant = kit.tenant(lending(1)).await;
    let bob = tenant.user_token("bob").await;
    let dir = tempfile::tempdir().unwrap();
    let seat = dir.path().join("seat.lease");
    let seat_arg = seat.to_str().unwrap();
    kit.cli(
        &bob,
        &[
            "borrow",
            "--license",
            &tenant.license_id,
            "--days",
            "1",
            "--out",
            seat_arg,
        ],
    )
    .await
    .ok();
    let listed = kit
        .cli(
            &tenant.admin_token,
            &["session", "list", "--license", &tenant.license_id],
        )
        .await
        .ok();
    assert!(listed.stdout.contains("(borrowed)"), "{listed:#?}");
    let session_id = tenant
        .admin
        .list_sessions(&tenant.license_id)
        .await
        .unwrap()
        .sessions[0]
        .id
        .clone();
    // Only a borrowed session of the license is reclaimed.
    let wrong = kit
        .cli(
            &tenant.admin_token,
            &[
                "session",
                "reclaim",
                "no-such-session",
                "--license",
                &tenant.license_id,
            ],
        )
        .await;
    assert_ne!(wrong.code, 0);

    // Act
    kit.cli(
        &tenant.admin_token,
        &[
            "session",
            "reclaim",
            &session_id,
            "--license",
            &tenant.license_id,
        ],
    )
    .await
    .ok();

    // Assert: the seat is back in the pool; online, the lease is refused as reclaimed...
    assert_eq!(tenant.in_use().await, 0);
    let online = kit
        .cli(&bob, &["run", "--lease", seat_arg, "--", "true"])
        .await;
    assert_eq!(online.code, 77, "{online:#?}");
    assert!(online.stderr.contains("reclaimed"), "{online:#?}");
    // ...and a return says there is nothing to return.
    let back = kit.cli(&bob, &["return", "--lease", seat_arg]).await.ok();
    assert!(back.stdout.contains("reclaimed"), "{back:#?}");
}

#[tokio::test]
async fn a_borrow_beyond_the_policy_is_refused_with_its_code() {
    // Arrange
    let kit = Kit::start();
    let tenant = kit.tenant(lending(1)).await;
    let bob = tenant.user_token("bob").await;
    let dir = tempfile::tempdir().unwrap();
    let seat = dir.path().join("seat.lease");
    let seat_arg = seat.to_str().unwrap();

    // Act
    let out = kit
        .cli(
            &bob,
            &[
                "borrow",
                "--license",
                &tenant.license_id,
                "--days",
                "5",
                "--out",
                seat_arg,
            ],
        )
        .await;

    // Assert
    assert_eq!(out.code, 77, "{out:#?}");
    assert!(out.stderr.contains("borrow_too_long"), "{out:#?}");
    assert!(!seat.exists());
    assert_eq!(tenant.in_use().await, 0);
}
