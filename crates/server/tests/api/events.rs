//! Session event streams (`GET /v1/sessions/{id}/events`): a revoke, a logout, a mass end, a
//! deactivation, a license change and an end found at expiry reach the owner's stream, which
//! then ends; who may watch; keep-alives past the idle timeout; a stop ends open streams.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;
use leasehold_server::Clock as _;

/// The owner's stream of a session, read over real HTTP.
struct Stream {
    response: reqwest::Response,
    buffer: String,
    /// Comment lines seen (keep-alives).
    comments: usize,
}

impl Stream {
    async fn open(app: &TestApp, token: &str, session: &str) -> Stream {
        Stream::try_open(&app.http, &app.url, token, session)
            .await
            .unwrap()
    }

    /// The stream, or the refusal (status and body).
    async fn try_open(
        http: &reqwest::Client,
        url: &str,
        token: &str,
        session: &str,
    ) -> Result<Stream, (StatusCode, Value)> {
        let response = http
            .get(format!("{url}/v1/sessions/{session}/events"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::OK {
            let status = response.status();
            return Err((status, response.json().await.unwrap()));
        }
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut stream = Stream {
            response,
            buffer: String::new(),
            comments: 0,
        };
        let (name, data) = stream.next().await.unwrap();
        assert_eq!(name, "open", "{data}");
        assert_eq!(data["session_id"], session);
        Ok(stream)
    }

    /// The next event (name, data), or `None` once the server ended the stream; fails the
    /// test if nothing comes within 5 s.
    async fn next(&mut self) -> Option<(String, Value)> {
        self.next_within(Duration::from_secs(5)).await
    }

    async fn next_within(&mut self, limit: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if name.is_empty() {
                    continue;
                }
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("no event in time")
                .unwrap();
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return None,
            }
        }
    }

    /// Reads until the final event, which must be `name` with `reason`, within `limit`; then
    /// the stream ends.
    async fn expect_end(&mut self, name: &str, reason: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let (event, data) = self
                .next_within(limit)
                .await
                .expect("the stream ended without a final event");
            if event == "license_changed" {
                continue;
            }
            assert_eq!(
                (event.as_str(), data["reason"].as_str()),
                (name, Some(reason)),
                "{data}"
            );
            break;
        }
        let took = started.elapsed();
        assert!(
            self.next().await.is_none(),
            "the final event ends the stream"
        );
        took
    }
}

async fn session_of(app: &TestApp, token: &str, license: &str, instance: &str) -> String {
    let opened = app.open(token, license, "laptop", instance).await;
    assert_eq!(opened.status, StatusCode::CREATED, "{:?}", opened.body);
    opened.id()
}

#[tokio::test]
async fn an_admin_revoke_reaches_the_owners_stream_within_two_seconds() {
    // Arrange: the default 20-minute timeout (heartbeats every 60 s).
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let id = session_of(&app, &bob, &f.license_id, "cad-1").await;
    let mut stream = Stream::open(&app, &bob, &id).await;

    // Act
    let revoked = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{id}"),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);

    // Assert
    let took = stream
        .expect_end("revoked", "revoked", Duration::from_secs(2))
        .await;
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn a_logout_ends_the_stream_with_its_reason_and_an_ended_session_cannot_be_watched() {
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let id = session_of(&app, &bob, &f.license_id, "cad-1").await;
    let mut stream = Stream::open(&app, &bob, &id).await;

    let out = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{id}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);

    stream
        .expect_end("ended", "logout", Duration::from_secs(2))
        .await;
    let again = app.get(&format!("/v1/sessions/{id}/events"), &bob).await;
    assert_eq!(again.status, StatusCode::GONE);
    assert_eq!(again.code(), "session_ended");
    assert_eq!(again.body["error"]["reason"], "logout");
}

#[tokio::test]
async fn only_the_owner_may_watch_a_session() {
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    let id = session_of(&app, &bob, &f.license_id, "cad-1").await;

    let by_carol = app.get(&format!("/v1/sessions/{id}/events"), &carol).await;
    let by_admin = app
        .get(&format!("/v1/sessions/{id}/events"), &f.admin)
        .await;
    let unknown = app
        .get(
            "/v1/sessions/00000000-0000-0000-0000-000000000000/events",
            &bob,
        )
        .await;

    assert_eq!(
        by_carol.status,
        StatusCode::FORBIDDEN,
        "{:?}",
        by_carol.body
    );
    assert_eq!(by_carol.code(), "forbidden");
    assert_eq!(
        by_admin.status,
        StatusCode::FORBIDDEN,
        "{:?}",
        by_admin.body
    );
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.code(), "not_found");
}

#[tokio::test]
async fn ends_decided_in_bulk_reach_every_stream_they_end_and_no_other() {
    // Arrange: bob holds two sessions, carol one; dan one on another license.
    let app = spawn_app().await;
    let f = app.fixture(5, &[], json!({})).await;
    let other = app
        .create_license(
            &f.admin,
            json!({"account_id": f.account_id, "product": "cam", "model": "concurrent_sessions", "seats": 2}),
        )
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    let dan = app.user_token(&f.account_id, &f.admin, "dan").await;
    let b1 = session_of(&app, &bob, &f.license_id, "cad-1").await;
    let b2 = session_of(&app, &bob, &f.license_id, "cad-2").await;
    let c1 = session_of(&app, &carol, &f.license_id, "cad-1").await;
    let d1 = session_of(&app, &dan, &other, "cam-1").await;
    let mut sb1 = Stream::open(&app, &bob, &b1).await;
    let mut sb2 = Stream::open(&app, &bob, &b2).await;
    let mut sc1 = Stream::open(&app, &carol, &c1).await;
    let mut sd1 = Stream::open(&app, &dan, &d1).await;

    // Act 1: bob is deactivated on the account.
    let off = app
        .call(
            Method::PUT,
            &format!("/v1/accounts/{}/users/bob", f.account_id),
            Some(&f.admin),
            Some(json!({"kind": "interactive", "active": false})),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{:?}", off.body);

    // Assert 1: both of bob's streams end; carol's goes on.
    for s in [&mut sb1, &mut sb2] {
        s.expect_end("ended", "user_deactivated", Duration::from_secs(2))
            .await;
    }

    // Act 2: every session of the license is revoked at once.
    let all = app
        .call(
            Method::DELETE,
            &format!("/v1/licenses/{}/sessions", f.license_id),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);

    // Assert 2: carol's stream says revoked; dan's (another license) stays open and quiet.
    sc1.expect_end("revoked", "revoked", Duration::from_secs(2))
        .await;
    let beat = app.heartbeat(&dan, &d1).await;
    assert_eq!(beat.status, StatusCode::OK);
    let revoke_dan = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{d1}"),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(revoke_dan.status, StatusCode::NO_CONTENT);
    sd1.expect_end("revoked", "revoked", Duration::from_secs(2))
        .await;
}

#[tokio::test]
async fn a_license_change_is_streamed_and_the_license_end_ends_the_stream() {
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let id = session_of(&app, &bob, &f.license_id, "cad-1").await;
    let mut stream = Stream::open(&app, &bob, &id).await;

    // A new heartbeat cadence reaches the client.
    let patched = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}", f.license_id),
            Some(&f.admin),
            Some(json!({"heartbeat_interval_secs": 7})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    let (name, data) = stream.next().await.unwrap();
    assert_eq!(name, "license_changed");
    assert_eq!(data["heartbeat_interval_secs"], 7);
    assert_eq!(data["license_id"], f.license_id.as_str());

    // The license's end set to now ends the session, and the stream says why.
    let now = time::OffsetDateTime::from_unix_timestamp(app.clock.now().secs()).unwrap();
    let ended = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}", f.license_id),
            Some(&f.admin),
            Some(json!({"expires_at": now.format(&time::format_description::well_known::Rfc3339).unwrap()})),
        )
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{:?}", ended.body);
    stream
        .expect_end("ended", "license_expired", Duration::from_secs(3))
        .await;
}

#[tokio::test]
async fn an_end_nobody_raises_is_found_when_the_expiry_passes() {
    // Arrange: interactive sessions live at most 60 s; streams look at the expiry every second.
    let app = spawn_app_with(|c| c.event_keepalive = Duration::from_secs(1)).await;
    let f = app
        .fixture(2, &[], json!({"interactive_session_lifetime_secs": 60}))
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let id = session_of(&app, &bob, &f.license_id, "cad-1").await;
    let mut stream = Stream::open(&app, &bob, &id).await;

    // Act: the lifetime passes (the reaper ends the session; no call raises anything).
    app.advance(61).await;

    // Assert
    stream
        .expect_end("ended", "lifetime", Duration::from_secs(4))
        .await;
}

#[tokio::test]
async fn a_stream_outlives_the_idle_timeout_on_keep_alives() {
    // Arrange: connections idle for 1 s are closed; keep-alives every second.
    let app = spawn_app_with(|c| {
        c.limits.idle_timeout = Duration::from_secs(1);
        c.event_keepalive = Duration::from_secs(1);
    })
    .await;
    let f = app.fixture(2, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let id = session_of(&app, &bob, &f.license_id, "cad-1").await;
    let mut stream = Stream::open(&app, &bob, &id).await;

    // Act: 3.5 s of nothing but keep-alives, then a revoke.
    let quiet = tokio::time::timeout(Duration::from_millis(3500), stream.next()).await;
    assert!(quiet.is_err(), "no event while nothing happens");
    let revoked = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{id}"),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);

    // Assert: the stream was not cut, and it saw keep-alive comments.
    stream
        .expect_end("revoked", "revoked", Duration::from_secs(2))
        .await;
    assert!(stream.comments >= 2, "{} keep-alives", stream.comments);
}

#[tokio::test]
async fn stopping_the_server_ends_its_open_streams() {
    let mut app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let id = session_of(&app, &bob, &f.license_id, "cad-1").await;
    let mut stream = Stream::open(&app, &bob, &id).await;

    tokio::time::timeout(Duration::from_secs(5), app.stop())
        .await
        .expect("a graceful stop does not wait for event streams");

    assert!(stream.next().await.is_none(), "the stream ended");
}

#[tokio::test]
async fn the_owner_hears_its_waiting_requests_move_in_the_queue() {
    // Arrange: one seat, queueing; bob holds it and watches his session.
    let app = spawn_app().await;
    let f = app.fixture(1, &[], json!({"on_full": "queue"})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    let id = session_of(&app, &bob, &f.license_id, "cad-1").await;
    let mut stream = Stream::open(&app, &bob, &id).await;

    // Act 1: carol waits (not bob's request: bob's stream stays quiet), then bob waits for a
    // second seat, for 2 s.
    let carol_waits = {
        let (app_url, http, license, carol) = (
            app.url.clone(),
            app.http.clone(),
            f.license_id.clone(),
            carol.clone(),
        );
        tokio::spawn(async move {
            http.post(format!("{app_url}/v1/sessions"))
                .bearer_auth(carol)
                .json(&json!({"license_id": license, "device_id": "pc", "instance_id": "c", "wait_secs": 30}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let queued = || async {
        let q = app
            .get(&format!("/v1/licenses/{}/queue", f.license_id), &f.admin)
            .await;
        q.body["length"].as_u64().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while queued().await < 1 {
        assert!(Instant::now() < deadline, "carol did not queue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bob_waits = {
        let (app_url, http, license, bob) = (
            app.url.clone(),
            app.http.clone(),
            f.license_id.clone(),
            bob.clone(),
        );
        tokio::spawn(async move {
            http.post(format!("{app_url}/v1/sessions"))
                .bearer_auth(bob)
                .json(&json!({"license_id": license, "device_id": "laptop", "instance_id": "cad-2", "wait_secs": 2}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };

    // Assert 1: bob's stream shows his own request, second of two.
    let (name, data) = stream.next().await.unwrap();
    assert_eq!(name, "queue", "{data}");
    assert_eq!(data["length"], 2, "{data}");
    let waiting = data["waiting"].as_array().unwrap();
    assert_eq!(waiting.len(), 1, "only bob's own requests: {data}");
    assert_eq!(waiting[0]["instance_id"], "cad-2");
    assert_eq!(waiting[0]["position"], 2);

    // Act 2 + assert 2: bob's wait runs out; his stream hears he waits no more.
    assert_eq!(bob_waits.await.unwrap(), StatusCode::CONFLICT);
    let (name, data) = stream.next().await.unwrap();
    assert_eq!(name, "queue", "{data}");
    assert_eq!(data["waiting"], json!([]));
    assert_eq!(data["length"], 1);

    // Carol gets the seat once bob logs out; bob's stream ends with his logout.
    let out = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{id}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    stream
        .expect_end("ended", "logout", Duration::from_secs(2))
        .await;
    assert_eq!(carol_waits.await.unwrap(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_racing_logouts_and_a_revoke_of_all_each_end_once_as_the_store_says() {
    // Arrange: 40 users, a session each.
    let app = std::sync::Arc::new(spawn_app().await);
    let f = app.fixture(40, &[], json!({})).await;
    let mut sessions = Vec::new();
    for i in 0..40 {
        let token = app
            .user_token(&f.account_id, &f.admin, &format!("u{i}"))
            .await;
        let id = session_of(&app, &token, &f.license_id, "cad").await;
        sessions.push((token, id));
    }

    // Act: every owner holds a stream; then, all at once, each owner opens a second stream
    // while the even ones log out and an admin revokes every session of the license.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(41));
    let mut watchers = tokio::task::JoinSet::new();
    for (i, (token, id)) in sessions.iter().cloned().enumerate() {
        let (http, url, barrier) = (app.http.clone(), app.url.clone(), barrier.clone());
        watchers.spawn(async move {
            let first = Stream::try_open(&http, &url, &token, &id).await;
            barrier.wait().await;
            let second = Stream::try_open(&http, &url, &token, &id).await;
            let mut outcomes = Vec::new();
            for opened in [first, second] {
                outcomes.push(match opened {
                    Err((status, body)) => {
                        assert_eq!(status, StatusCode::GONE, "{body}");
                        let reason = body["error"]["reason"].as_str().unwrap().to_owned();
                        ("refused".to_owned(), reason)
                    }
                    Ok(mut stream) => {
                        let (name, data) = loop {
                            let (name, data) = stream
                                .next_within(Duration::from_secs(5))
                                .await
                                .expect("the stream ended without a final event");
                            if name != "license_changed" && name != "queue" {
                                break (name, data);
                            }
                        };
                        assert!(
                            stream.next().await.is_none(),
                            "one final event, then the end"
                        );
                        (name, data["reason"].as_str().unwrap().to_owned())
                    }
                });
            }
            (i, outcomes)
        });
    }
    barrier.wait().await;
    let mut enders = tokio::task::JoinSet::new();
    for (token, id) in sessions.iter().cloned().step_by(2) {
        let app = app.clone();
        enders.spawn(async move {
            app.call(
                Method::DELETE,
                &format!("/v1/sessions/{id}"),
                Some(&token),
                None,
            )
            .await
            .status
        });
    }
    let revoke_all = app
        .call(
            Method::DELETE,
            &format!("/v1/licenses/{}/sessions", f.license_id),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(revoke_all.status, StatusCode::OK, "{:?}", revoke_all.body);
    while let Some(status) = enders.join_next().await {
        // A logout that lost the race to the revoke finds the session ended.
        let status = status.unwrap();
        assert!(
            status == StatusCode::NO_CONTENT || status == StatusCode::GONE,
            "{status}"
        );
    }

    // Assert: each stream ended once, with the reason the store gives for its session.
    let (mut ended, mut streamed) = (0, 0);
    while let Some(joined) = watchers.join_next().await {
        let (i, outcomes) = joined.unwrap();
        let (token, id) = &sessions[i];
        let beat = app.heartbeat(token, id).await;
        assert_eq!(beat.status, StatusCode::GONE);
        for (how, reason) in outcomes {
            assert_eq!(
                beat.body["error"]["reason"].as_str().unwrap(),
                reason,
                "session {i}"
            );
            match (how.as_str(), reason.as_str()) {
                ("revoked", "revoked") | ("ended", "logout") => streamed += 1,
                ("refused", _) => {}
                other => panic!("session {i}: {other:?}"),
            }
        }
        ended += 1;
    }
    assert_eq!(ended, 40);
    assert!(streamed >= 40, "every first stream saw its end: {streamed}");
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 0);
}
