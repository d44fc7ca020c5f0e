//! Borrowed seats with the SDK against the real server: a seat borrowed with
//! `Client::borrow`, saved and loaded back, verified offline against the saved key set with no
//! network (accepted until its `exp`, refused after, and refused on another device or when
//! tampered with), returned early, and refused online once the admin reclaimed it.

use leasehold_client::proto::CreateLicense;
use leasehold_client::{BorrowedSeat, ClientError, ErrorCode};

use crate::real_server::{license, TestServer};

fn lending(seats: i64) -> CreateLicense {
    CreateLicense {
        max_borrow_days: Some(3),
        ..license(seats)
    }
}

#[tokio::test]
async fn a_borrowed_seat_verifies_offline_until_its_exp_and_not_after() {
    // Arrange: a borrow of 2 days, saved to a file.
    let mut server = TestServer::start().await;
    let tenant = server.tenant(lending(2)).await;
    let bob = tenant.user("bob").await;
    let opened = bob.jwks().await.unwrap();
    assert!(!opened.keys.is_empty());
    #[allow(clippy::disallowed_methods)] // the test's own reading of the wall clock
    let now = time::OffsetDateTime::now_utc();
    let until = now + time::Duration::days(2);
    let seat = bob
        .borrow(&tenant.license_id, "laptop", "borrow-1", until)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seat.lease");
    seat.save(&path).unwrap();
    assert_eq!(tenant.in_use().await, 1);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the seat file is its owner's alone");
    }

    // Act: no network at all from here on: the server is gone.
    server.stop().await;
    let loaded = BorrowedSeat::load(&path).unwrap();

    // Assert: accepted until its `exp`, refused at it and after.
    assert_eq!(loaded, seat);
    let exp = until.unix_timestamp();
    let claims = loaded
        .verify_offline("laptop", now.unix_timestamp())
        .unwrap();
    assert!(claims.borrowed);
    assert_eq!(claims.exp, exp);
    assert!(loaded.verify_offline("laptop", exp - 1).is_ok());
    let expired = loaded.verify_offline("laptop", exp).unwrap_err();
    assert!(
        matches!(expired, ClientError::LeaseInvalid(ref m) if m.contains("expired")),
        "{expired}"
    );
    // Bound to its device.
    let other = loaded
        .verify_offline("desktop", now.unix_timestamp())
        .unwrap_err();
    assert!(
        matches!(other, ClientError::LeaseInvalid(ref m) if m.contains("device")),
        "{other}"
    );
    // A lease whose claims were changed (a later `exp`) does not verify.
    let mut parts: Vec<String> = loaded.lease.split('.').map(str::to_owned).collect();
    let forged_claims = parts[1].replace('A', "B");
    parts[1] = forged_claims;
    let forged = BorrowedSeat {
        lease: parts.join("."),
        ..loaded.clone()
    };
    assert!(forged
        .verify_offline("laptop", now.unix_timestamp())
        .is_err());
    // Checking online with the server gone is a transport error, not a refusal.
    let err = bob
        .check_borrowed(&loaded, "laptop", now.unix_timestamp())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn a_returned_or_reclaimed_seat_is_refused_online_and_frees_its_seat() {
    // Arrange: bob and carol each borrow one of two seats.
    let server = TestServer::start().await;
    let tenant = server.tenant(lending(2)).await;
    let bob = tenant.user("bob").await;
    let carol = tenant.user("carol").await;
    #[allow(clippy::disallowed_methods)] // the test's own reading of the wall clock
    let now = time::OffsetDateTime::now_utc();
    let until = now + time::Duration::days(1);
    let bobs = bob
        .borrow(&tenant.license_id, "laptop", "b", until)
        .await
        .unwrap();
    let carols = carol
        .borrow(&tenant.license_id, "tablet", "c", until)
        .await
        .unwrap();
    assert!(bob
        .check_borrowed(&bobs, "laptop", now.unix_timestamp())
        .await
        .is_ok());
    // Past the license's policy: a borrow of 4 days.
    let refused = bob
        .borrow(
            &tenant.license_id,
            "laptop",
            "b2",
            now + time::Duration::days(4),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::BorrowTooLong));

    // Act: bob returns his early; the admin reclaims carol's (a lost tablet).
    bob.return_borrowed(&bobs).await.unwrap();
    tenant
        .admin
        .close_session(&carols.session_id)
        .await
        .unwrap();

    // Assert: both seats are free; both leases, still valid by signature, are refused online.
    assert_eq!(tenant.in_use().await, 0);
    assert!(bobs.verify_offline("laptop", now.unix_timestamp()).is_ok());
    let returned = bob
        .check_borrowed(&bobs, "laptop", now.unix_timestamp())
        .await
        .unwrap_err();
    assert!(
        matches!(returned, ClientError::LeaseRevoked(ref m) if m.contains("returned")),
        "{returned}"
    );
    let reclaimed = carol
        .check_borrowed(&carols, "tablet", now.unix_timestamp())
        .await
        .unwrap_err();
    assert!(
        matches!(reclaimed, ClientError::LeaseRevoked(ref m) if m.contains("reclaimed")),
        "{reclaimed}"
    );
    let list = tenant
        .admin
        .revoked_leases(&tenant.license_id)
        .await
        .unwrap();
    assert_eq!(list.leases.len(), 2);
}
