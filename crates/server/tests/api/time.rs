//! Time: a step of the wall clock (NTP, a resumed VM) neither ends live sessions at once nor
//! keeps idle ones past their timeout. Times on the wire follow the server's wall clock on
//! SQLite; on PostgreSQL they are the database's, which a node's step does not move.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// How far the times on the wire move with a step of the node's wall clock of `secs`.
fn wire_step(secs: i64) -> i64 {
    if std::env::var("LEASEHOLD_TEST_STORE").as_deref() == Ok("postgres") {
        0
    } else {
        secs
    }
}

fn expires_at(body: &serde_json::Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

#[tokio::test]
async fn a_forward_step_of_the_wall_clock_ends_no_session() {
    // Arrange: a busy and an idle session, 60 s inactivity timeout.
    let app = spawn_app().await;
    let f = app
        .fixture(3, &[], json!({"inactivity_timeout_secs": 60}))
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let busy = app.open(&bob, &f.license_id, "pc", "busy").await.id();
    let idle = app.open(&bob, &f.license_id, "pc", "idle").await.id();
    app.advance(30).await;

    // Act: the wall clock jumps 2 h ahead (the reaper notices it within a tick).
    app.clock.step_wall_secs(7200);
    app.advance(0).await;

    // Assert: both still live; a heartbeat answers a wall-clock expiry.
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 2);
    let hb = app.heartbeat(&bob, &busy).await;
    assert_eq!(hb.status, StatusCode::OK, "{:?}", hb.body);
    assert_eq!(
        expires_at(&hb.body).unix_timestamp(),
        TEST_START.plus_secs(30 + 60).secs() + wire_step(7200),
        "{:?}",
        hb.body
    );
    // The idle one ends at its timeout, measured in elapsed time: 60 s after it opened.
    app.advance(29).await;
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 2);
    app.advance(2).await;
    let gone = app.heartbeat(&bob, &idle).await;
    assert_eq!(gone.status, StatusCode::GONE, "{:?}", gone.body);
    assert_eq!(gone.body["error"]["reason"], "inactivity");
    assert_eq!(app.heartbeat(&bob, &busy).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_backward_step_of_the_wall_clock_keeps_no_idle_session_past_its_timeout() {
    // Arrange
    let app = spawn_app().await;
    let f = app
        .fixture(3, &[], json!({"inactivity_timeout_secs": 60}))
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let idle = app.open(&bob, &f.license_id, "pc", "idle").await.id();
    app.advance(10).await;

    // Act: the wall clock goes back 2 h.
    app.clock.step_wall_secs(-7200);
    app.advance(0).await;

    // Assert: a session opened now expires 60 s from the (new) wall clock...
    let fresh = app.open(&bob, &f.license_id, "pc", "fresh").await;
    assert_eq!(fresh.status, StatusCode::CREATED);
    assert_eq!(
        expires_at(&fresh.body).unix_timestamp(),
        TEST_START.plus_secs(10 + 60).secs() + wire_step(-7200)
    );
    // ...and the idle one still ends 60 s after it opened, not 2 h later.
    app.advance(49).await;
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 2);
    app.advance(2).await;
    let gone = app.heartbeat(&bob, &idle).await;
    assert_eq!(gone.status, StatusCode::GONE, "{:?}", gone.body);
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 1);
}
