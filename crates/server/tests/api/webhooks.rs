//! Webhooks (issue 17) against a real HTTP receiver on 127.0.0.1: signed events checked by
//! independent implementations, retries after 500s and timeouts (the manual clock makes them
//! due), per-license order, redelivery, the test ping, the bounded backlog, SSRF refusals,
//! tenant isolation, bad input, and the license alerts (events and `/metrics`). Runs on both
//! stores.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp, ROOT_TOKEN};
use crate::receiver::{verify, verify_with_python, Answer, Receiver};

/// Creates an endpoint for `events`; answers its id and secret.
async fn endpoint(
    app: &TestApp,
    account: &str,
    admin: &str,
    url: &str,
    events: Value,
) -> (String, String) {
    let a = app
        .post(
            &format!("/v1/accounts/{account}/webhooks"),
            admin,
            json!({"url": url, "events": events, "description": "billing"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    (a.id(), a.body["secret"].as_str().unwrap().to_owned())
}

/// The endpoint's delivery log once `done` holds for it.
async fn log_when(
    app: &TestApp,
    account: &str,
    admin: &str,
    webhook: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut list = Vec::new();
    for _ in 0..400 {
        let a = app
            .get(
                &format!("/v1/accounts/{account}/webhooks/{webhook}/deliveries"),
                admin,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        list = a.body["deliveries"].as_array().cloned().unwrap_or_default();
        if done(&list) {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the delivery log never got there: {list:#?}");
}

fn now_secs(app: &TestApp) -> i64 {
    use leasehold_server::Clock;
    app.clock.now().secs()
}

#[tokio::test]
async fn an_endpoint_shows_its_secret_once_and_receives_signed_session_events_in_order() {
    // Arrange
    let app = spawn_app().await;
    let f = app.fixture(3, &[], json!({})).await;
    let mut rx = Receiver::start(&[]).await;
    let (id, secret) = endpoint(
        &app,
        &f.account_id,
        &f.admin,
        &rx.url,
        json!(["session.opened", "session.closed"]),
    )
    .await;
    assert!(secret.starts_with("whsec_"));
    let token = app.user_token(&f.account_id, &f.admin, "ann").await;

    // Act
    let s = app.open(&token, &f.license_id, "d1", "i1").await;
    assert_eq!(s.status, StatusCode::CREATED);
    let closed = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", s.id()),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(closed.status, StatusCode::NO_CONTENT);

    // Assert: both events, in order, signed, with distinct ids and the documented body.
    let opened = rx.next().await;
    let ended = rx.next().await;
    for r in [&opened, &ended] {
        verify(r, &secret, now_secs(&app));
        assert_eq!(
            r.header("leasehold-event-id"),
            r.json()["id"].as_str().unwrap()
        );
    }
    verify_with_python(&opened, &secret, now_secs(&app));
    let (o, e) = (opened.json(), ended.json());
    assert_eq!(o["type"], "session.opened");
    assert_eq!(o["license_id"], f.license_id.as_str());
    assert_eq!(o["account_id"], f.account_id.as_str());
    assert_eq!(o["data"]["session_id"], s.id().as_str());
    assert_eq!(o["data"]["username"], "ann");
    assert_eq!(e["type"], "session.closed");
    assert_eq!(e["data"]["reason"], "logout");
    assert_ne!(o["id"], e["id"]);
    // The secret is never shown again.
    let got = app
        .get(
            &format!("/v1/accounts/{}/webhooks/{id}", f.account_id),
            &f.admin,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body.get("secret").is_none());
    let list = app
        .get(&format!("/v1/accounts/{}/webhooks", f.account_id), &f.admin)
        .await;
    assert_eq!(list.body["webhooks"][0]["id"], id.as_str());
    assert!(list.body["webhooks"][0].get("secret").is_none());
    let log = log_when(&app, &f.account_id, &f.admin, &id, |l| {
        l.len() == 2 && l.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    assert_eq!(log[0]["event_type"], "session.closed", "newest first");
    assert_eq!(log[0]["attempts"], 1);
    assert_eq!(log[0]["response_status"], 200);
    assert_eq!(log[0]["response_excerpt"], "ok from receiver");
    assert!(log[0]["latency_ms"].is_u64());
}

#[tokio::test]
async fn a_receiver_answering_500_gets_the_same_event_again_after_the_backoff() {
    let app = spawn_app().await;
    let f = app.fixture(3, &[], json!({})).await;
    let mut rx = Receiver::start(&[Answer::Status(500)]).await;
    let (id, secret) = endpoint(
        &app,
        &f.account_id,
        &f.admin,
        &rx.url,
        json!(["session.opened"]),
    )
    .await;
    let token = app.user_token(&f.account_id, &f.admin, "ann").await;
    app.open(&token, &f.license_id, "d1", "i1").await;

    let first = rx.next().await;
    let log = log_when(&app, &f.account_id, &f.admin, &id, |l| {
        l.first().is_some_and(|d| d["attempts"] == 1)
    })
    .await;
    assert_eq!(log[0]["status"], "pending");
    assert_eq!(log[0]["response_status"], 500);
    assert!(log[0]["next_attempt_at"].is_string());
    // Not retried before the backoff (10 s at most for the first retry, by the manual clock).
    rx.quiet(Duration::from_millis(300)).await;

    app.advance(11).await;
    let second = rx.next().await;
    verify(&second, &secret, now_secs(&app));
    assert_eq!(first.json()["id"], second.json()["id"], "the same event id");
    assert_eq!(first.body, second.body);
    log_when(&app, &f.account_id, &f.admin, &id, |l| {
        l[0]["status"] == "delivered" && l[0]["attempts"] == 2
    })
    .await;
}

#[tokio::test]
async fn a_receiver_that_hangs_is_cut_by_the_timeout_and_retried() {
    let app = spawn_app_with(|c| c.webhooks.response_timeout = Duration::from_millis(300)).await;
    let f = app.fixture(3, &[], json!({})).await;
    let mut rx = Receiver::start(&[Answer::Hang]).await;
    let (id, _) = endpoint(
        &app,
        &f.account_id,
        &f.admin,
        &rx.url,
        json!(["session.opened"]),
    )
    .await;
    let token = app.user_token(&f.account_id, &f.admin, "ann").await;
    let started = std::time::Instant::now();
    let s = app.open(&token, &f.license_id, "d1", "i1").await;
    assert_eq!(s.status, StatusCode::CREATED);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "the open never waits for it"
    );

    rx.next().await;
    let log = log_when(&app, &f.account_id, &f.admin, &id, |l| {
        l.first().is_some_and(|d| d["attempts"] == 1)
    })
    .await;
    assert_eq!(log[0]["status"], "pending");
    assert!(log[0].get("response_status").is_none());
    assert!(
        log[0]["response_excerpt"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{:?}",
        log[0]
    );
    app.advance(11).await;
    rx.next().await;
    log_when(&app, &f.account_id, &f.admin, &id, |l| {
        l[0]["status"] == "delivered"
    })
    .await;
}

#[tokio::test]
async fn a_license_events_reach_an_endpoint_one_at_a_time_in_order() {
    let app = spawn_app().await;
    let f = app.fixture(5, &[], json!({})).await;
    let mut rx = Receiver::start(&[Answer::Status(503)]).await;
    endpoint(
        &app,
        &f.account_id,
        &f.admin,
        &rx.url,
        json!(["session.opened"]),
    )
    .await;
    let token = app.user_token(&f.account_id, &f.admin, "ann").await;
    let mut sessions = Vec::new();
    for i in 0..3 {
        let s = app
            .open(&token, &f.license_id, "d1", &format!("i{i}"))
            .await;
        sessions.push(s.id());
    }
    let first = rx.next().await;
    assert_eq!(first.json()["data"]["session_id"], sessions[0].as_str());
    // The first event waits for its retry, and the license's later events wait behind it.
    rx.quiet(Duration::from_millis(400)).await;
    app.advance(11).await;
    for expected in &sessions {
        let r = rx.next().await;
        assert_eq!(r.json()["data"]["session_id"], expected.as_str());
    }
}

#[tokio::test]
async fn a_delivery_is_sent_again_on_redeliver_with_the_same_event_id() {
    let app = spawn_app().await;
    let f = app.fixture(3, &[], json!({})).await;
    let mut rx = Receiver::start(&[]).await;
    let (id, _) = endpoint(&app, &f.account_id, &f.admin, &rx.url, json!(["*"])).await;
    let token = app.user_token(&f.account_id, &f.admin, "ann").await;
    app.open(&token, &f.license_id, "d1", "i1").await;
    let first = rx.next_of("session.opened").await;
    let log = log_when(&app, &f.account_id, &f.admin, &id, |l| {
        l.iter()
            .any(|d| d["event_type"] == "session.opened" && d["status"] == "delivered")
    })
    .await;
    let delivered = log
        .iter()
        .find(|d| d["event_type"] == "session.opened")
        .unwrap();

    let a = app
        .post(
            &format!(
                "/v1/accounts/{}/webhooks/{id}/deliveries/{}/redeliver",
                f.account_id,
                delivered["id"].as_str().unwrap()
            ),
            &f.admin,
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    assert_eq!(a.body["status"], "pending");
    assert_ne!(a.body["id"], delivered["id"]);

    let again = rx.next_of("session.opened").await;
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_ne!(
        again.header("leasehold-delivery-id"),
        first.header("leasehold-delivery-id")
    );
}

#[tokio::test]
async fn a_ping_reaches_the_receiver_signed() {
    let app = spawn_app().await;
    let (account, admin) = app.create_account("Acme").await;
    let mut rx = Receiver::start(&[]).await;
    let (id, secret) = endpoint(&app, &account, &admin, &rx.url, json!(["license.changed"])).await;
    let a = app
        .post(
            &format!("/v1/accounts/{account}/webhooks/{id}/ping"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    assert_eq!(a.body["event_type"], "ping");
    let r = rx.next().await;
    verify(&r, &secret, now_secs(&app));
    assert_eq!(r.json()["type"], "ping");
    assert_eq!(r.json()["data"]["webhook_id"], id.as_str());

    // A rotated secret signs from then on; the old one no longer verifies.
    let rotated = app
        .post(
            &format!("/v1/accounts/{account}/webhooks/{id}/rotate-secret"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let new_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    app.post(
        &format!("/v1/accounts/{account}/webhooks/{id}/ping"),
        &admin,
        json!({}),
    )
    .await;
    let r = rx.next().await;
    verify(&r, &new_secret, now_secs(&app));
}

#[tokio::test]
async fn a_dead_receiver_gets_at_most_its_backlog_and_gives_up_after_a_day() {
    let app = spawn_app_with(|c| c.webhooks.max_pending_per_endpoint = 2).await;
    let f = app.fixture(5, &[], json!({})).await;
    let mut rx = Receiver::start(&[Answer::Status(500); 20]).await;
    let (id, _) = endpoint(
        &app,
        &f.account_id,
        &f.admin,
        &rx.url,
        json!(["session.opened"]),
    )
    .await;
    let token = app.user_token(&f.account_id, &f.admin, "ann").await;
    for i in 0..4 {
        app.open(&token, &f.license_id, "d1", &format!("i{i}"))
            .await;
    }
    rx.next().await;
    let log = log_when(&app, &f.account_id, &f.admin, &id, |l| l.len() == 4).await;
    let full: Vec<_> = log.iter().filter(|d| d["status"] == "failed").collect();
    assert_eq!(full.len(), 2, "{log:#?}");
    assert!(full[0]["response_excerpt"]
        .as_str()
        .unwrap()
        .contains("backlog is full"));
    let metrics = app.get_text("/metrics", ROOT_TOKEN).await;
    assert!(metrics.contains("leasehold_webhook_backlog "), "{metrics}");

    // A day later the first is failed for good and the next one is tried.
    app.advance(24 * 3600 + 1).await;
    log_when(&app, &f.account_id, &f.admin, &id, |l| {
        l.iter().all(|d| d["status"] == "failed")
    })
    .await;
}

#[tokio::test]
async fn private_and_loopback_targets_are_refused_unless_allowed() {
    let app = spawn_app_with(|c| c.webhooks.allow_private_targets = false).await;
    let (account, admin) = app.create_account("Acme").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/",
        "http://192.168.1.10/",
        "http://0.0.0.0/",
        "https://host.invalid/",
    ] {
        let a = app
            .post(
                &format!("/v1/accounts/{account}/webhooks"),
                &admin,
                json!({"url": url, "events": ["*"]}),
            )
            .await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {:?}",
            a.body
        );
        assert_eq!(a.code(), "webhook_target_refused", "{url}");
    }
    let list = app
        .get(&format!("/v1/accounts/{account}/webhooks"), &admin)
        .await;
    assert_eq!(list.body["webhooks"], json!([]));
}

#[tokio::test]
async fn bad_webhook_input_gets_a_clear_error_and_changes_nothing() {
    let app = spawn_app().await;
    let (account, admin) = app.create_account("Acme").await;
    let path = format!("/v1/accounts/{account}/webhooks");
    for (body, code) in [
        (
            json!({"url": "ftp://example.com/", "events": ["*"]}),
            "invalid_request",
        ),
        (
            json!({"url": "https://u:p@example.com/", "events": ["*"]}),
            "invalid_request",
        ),
        (
            json!({"url": "not a url", "events": ["*"]}),
            "invalid_request",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "events": []}),
            "invalid_request",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "events": ["session.exploded"]}),
            "invalid_request",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "events": ["*"], "description": "x".repeat(501)}),
            "invalid_request",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "events": ["*"], "secret": "mine"}),
            "invalid_request",
        ),
    ] {
        let a = app.post(&path, &admin, body.clone()).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            a.body
        );
        assert_eq!(a.code(), code, "{body}");
    }
    assert_eq!(app.get(&path, &admin).await.body["webhooks"], json!([]));
    let (id, _) = endpoint(&app, &account, &admin, "http://127.0.0.1:9/", json!(["*"])).await;
    let a = app
        .get(&format!("{path}/{id}/deliveries?limit=0"), &admin)
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let a = app
        .get(&format!("{path}/{id}/deliveries?before=42"), &admin)
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let a = app
        .post(
            &format!("{path}/{id}/deliveries/dl_999999/redeliver"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = app
        .post(
            &format!("{path}/{id}/deliveries/nonsense/redeliver"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = app
        .call(
            Method::PATCH,
            &format!("{path}/{id}"),
            Some(&admin),
            Some(json!({"events": ["nope"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let a = app
        .call(
            Method::PATCH,
            &format!("{path}/{id}"),
            Some(&admin),
            Some(json!({"enabled": false, "description": "off"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["enabled"], false);
    assert_eq!(a.body["events"], json!(["*"]));
    let a = app
        .call(Method::DELETE, &format!("{path}/{id}"), Some(&admin), None)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = app
        .call(Method::DELETE, &format!("{path}/{id}"), Some(&admin), None)
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn another_accounts_admin_can_neither_see_nor_touch_webhooks() {
    let app = spawn_app().await;
    let (account, admin) = app.create_account("Acme").await;
    let (other, other_admin) = app.create_account("Other").await;
    let (id, _) = endpoint(&app, &account, &admin, "http://127.0.0.1:9/", json!(["*"])).await;
    let ping = app
        .post(
            &format!("/v1/accounts/{account}/webhooks/{id}/ping"),
            &admin,
            json!({}),
        )
        .await;
    let delivery = ping.body["id"].as_str().unwrap().to_owned();
    let base = format!("/v1/accounts/{account}/webhooks");
    // Another account's admin naming this account: 403, as every account route answers.
    for (method, path) in [
        (Method::GET, base.clone()),
        (Method::POST, base.clone()),
        (Method::GET, format!("{base}/{id}")),
        (Method::PATCH, format!("{base}/{id}")),
        (Method::DELETE, format!("{base}/{id}")),
        (Method::POST, format!("{base}/{id}/ping")),
        (Method::POST, format!("{base}/{id}/rotate-secret")),
        (Method::GET, format!("{base}/{id}/deliveries")),
        (
            Method::POST,
            format!("{base}/{id}/deliveries/{delivery}/redeliver"),
        ),
    ] {
        let body = (method != Method::GET && method != Method::DELETE)
            .then(|| json!({"url": "http://127.0.0.1:9/", "events": ["*"]}));
        let a = app
            .call(method.clone(), &path, Some(&other_admin), body)
            .await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {:?}",
            a.body
        );
    }
    // Its own account's path with this account's ids: 404.
    let theirs = format!("/v1/accounts/{other}/webhooks");
    for (method, path) in [
        (Method::GET, format!("{theirs}/{id}")),
        (Method::DELETE, format!("{theirs}/{id}")),
        (Method::POST, format!("{theirs}/{id}/ping")),
        (Method::GET, format!("{theirs}/{id}/deliveries")),
        (
            Method::POST,
            format!("{theirs}/{id}/deliveries/{delivery}/redeliver"),
        ),
    ] {
        let a = app
            .call(method.clone(), &path, Some(&other_admin), None)
            .await;
        assert_eq!(
            a.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {:?}",
            a.body
        );
    }
    // A user token is not an admin's.
    let user = app.user_token(&account, &admin, "ann").await;
    assert_eq!(app.get(&base, &user).await.status, StatusCode::FORBIDDEN);
    // Root sees it.
    assert_eq!(
        app.get(&format!("{base}/{id}"), ROOT_TOKEN).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn license_alerts_raise_threshold_full_and_denial_events_and_show_in_metrics() {
    let app = spawn_app().await;
    let f = app
        .fixture(
            2,
            &[],
            json!({"alerts": {"threshold_percent": 50, "denials_per_hour": 1}}),
        )
        .await;
    let mut rx = Receiver::start(&[]).await;
    let (_, secret) = endpoint(
        &app,
        &f.account_id,
        &f.admin,
        &rx.url,
        json!(["license.threshold", "license.full", "license.denials"]),
    )
    .await;
    let lic = app
        .get(&format!("/v1/licenses/{}", f.license_id), &f.admin)
        .await;
    assert_eq!(
        lic.body["alerts"],
        json!({"threshold_percent": 50, "denials_per_hour": 1})
    );
    let token = app.user_token(&f.account_id, &f.admin, "ann").await;

    app.open(&token, &f.license_id, "d1", "i1").await;
    let up = rx.next().await;
    verify(&up, &secret, now_secs(&app));
    let up = up.json();
    assert_eq!(up["type"], "license.threshold");
    assert_eq!(up["data"]["direction"], "up");
    assert_eq!(up["data"]["in_use"], 1);
    assert_eq!(up["data"]["seats"], 2);

    app.open(&token, &f.license_id, "d1", "i2").await;
    assert_eq!(rx.next().await.json()["type"], "license.full");
    let denied = app.open(&token, &f.license_id, "d1", "i3").await;
    assert_eq!(denied.status, StatusCode::CONFLICT);
    let d = rx.next().await.json();
    assert_eq!(d["type"], "license.denials");
    assert_eq!(d["data"]["denials_last_hour"], 1);

    let metrics = app.get_text("/metrics", ROOT_TOKEN).await;
    let lic = &f.license_id;
    for line in [
        format!("leasehold_license_alert_threshold_percent{{license=\"{lic}\"}} 50"),
        format!("leasehold_license_alert_threshold_reached{{license=\"{lic}\"}} 1"),
        format!("leasehold_license_denials_last_hour{{license=\"{lic}\"}} 1"),
        format!("leasehold_license_alert_denials_reached{{license=\"{lic}\"}} 1"),
    ] {
        assert!(metrics.contains(&line), "{line} missing");
    }
    // Without a credential: how many licenses are past an alert, never a sum of thresholds.
    let public = app.http.get(format!("{}/metrics", app.url)).send().await;
    let public = public.unwrap().text().await.unwrap();
    assert!(public.contains("\nleasehold_license_alert_threshold_reached 1\n"));
    assert!(public.contains("\nleasehold_license_alert_denials_reached 1\n"));
    assert!(!public.contains("threshold_percent"), "{public}");
    assert!(!public.contains("alert_denials_per_hour"), "{public}");

    // Back below the threshold: raised once, downwards.
    let a = app
        .call(
            Method::DELETE,
            &format!("/v1/licenses/{lic}/sessions"),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let down = rx.next().await.json();
    assert_eq!(down["type"], "license.threshold");
    assert_eq!(down["data"]["direction"], "down");

    // A patch changes one alert and keeps the other; bad values are refused.
    let a = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{lic}"),
            Some(&f.admin),
            Some(json!({"alerts": {"threshold_percent": 0}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["alerts"], json!({"denials_per_hour": 1}));
    let a = app
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{lic}"),
            Some(&f.admin),
            Some(json!({"alerts": {"threshold_percent": 101}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_license_near_its_end_raises_expiring_once() {
    let app = spawn_app().await;
    let end = leasehold_core::Timestamp::from_secs(now_secs(&app) + 3 * 86_400).to_offset();
    let end = end
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let f = app.fixture(2, &[], json!({"expires_at": end})).await;
    let mut rx = Receiver::start(&[]).await;
    endpoint(
        &app,
        &f.account_id,
        &f.admin,
        &rx.url,
        json!(["license.expiring"]),
    )
    .await;
    let r = rx.next().await.json();
    assert_eq!(r["type"], "license.expiring");
    assert_eq!(r["data"]["days_left"], 3);
    assert_eq!(r["license_id"], f.license_id.as_str());
    rx.quiet(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn borrows_and_returns_show_as_their_own_events() {
    let app = spawn_app().await;
    let f = app.fixture(3, &[], json!({"max_borrow_days": 7})).await;
    let mut rx = Receiver::start(&[]).await;
    endpoint(
        &app,
        &f.account_id,
        &f.admin,
        &rx.url,
        json!(["session.borrowed", "session.returned"]),
    )
    .await;
    let token = app.user_token(&f.account_id, &f.admin, "ann").await;
    let until = leasehold_core::Timestamp::from_secs(now_secs(&app) + 86_400).to_offset();
    let until = until
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let b = app
        .post(
            "/v1/sessions",
            &token,
            json!({"license_id": f.license_id, "device_id": "d", "instance_id": "i", "borrow_until": until}),
        )
        .await;
    assert_eq!(b.status, StatusCode::CREATED, "{:?}", b.body);
    let borrowed = rx.next().await.json();
    assert_eq!(borrowed["type"], "session.borrowed");
    assert_eq!(borrowed["data"]["borrowed"], true);
    app.call(
        Method::DELETE,
        &format!("/v1/sessions/{}", b.id()),
        Some(&token),
        None,
    )
    .await;
    let returned = rx.next().await.json();
    assert_eq!(returned["type"], "session.returned");
    assert_eq!(returned["data"]["reason"], "returned");
}

#[tokio::test]
async fn a_waiter_shows_as_queued_then_granted() {
    let app = spawn_app().await;
    let f = app.fixture(1, &[], json!({"on_full": "queue"})).await;
    let mut rx = Receiver::start(&[]).await;
    endpoint(
        &app,
        &f.account_id,
        &f.admin,
        &rx.url,
        json!(["session.queued", "session.granted"]),
    )
    .await;
    let ann = app.user_token(&f.account_id, &f.admin, "ann").await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let held = app.open(&ann, &f.license_id, "d1", "i1").await;
    assert_eq!(held.status, StatusCode::CREATED);
    let waiter = {
        let (http, url, license) = (app.http.clone(), app.url.clone(), f.license_id.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/v1/sessions"))
                .bearer_auth(bob)
                .json(&json!({"license_id": license, "device_id": "d2", "instance_id": "i2", "wait_secs": 30}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let queued = rx.next().await.json();
    assert_eq!(queued["type"], "session.queued");
    assert_eq!(queued["data"]["username"], "bob");
    app.call(
        Method::DELETE,
        &format!("/v1/sessions/{}", held.id()),
        Some(&ann),
        None,
    )
    .await;
    assert_eq!(waiter.await.unwrap(), StatusCode::CREATED);
    let granted = rx.next().await.json();
    assert_eq!(granted["type"], "session.granted");
    assert_eq!(granted["data"]["username"], "bob");
    assert_eq!(granted["data"]["from_queue"], true);
}

#[tokio::test]
async fn racing_opens_and_closes_reach_the_receiver_once_each_in_the_logs_order() {
    let app = spawn_app().await;
    let f = app.fixture(100, &[], json!({})).await;
    let mut rx = Receiver::start(&[]).await;
    endpoint(
        &app,
        &f.account_id,
        &f.admin,
        &rx.url,
        json!(["session.opened", "session.closed"]),
    )
    .await;
    let token = app.user_token(&f.account_id, &f.admin, "ann").await;

    // Act: 40 clients open and close at once.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (http, url, token, license) = (
            app.http.clone(),
            app.url.clone(),
            token.clone(),
            f.license_id.clone(),
        );
        set.spawn(async move {
            let s: Value = http
                .post(format!("{url}/v1/sessions"))
                .bearer_auth(&token)
                .json(&json!({"license_id": license, "device_id": "d", "instance_id": format!("i{i}")}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let id = s["id"].as_str().unwrap().to_owned();
            let r = http
                .delete(format!("{url}/v1/sessions/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
            id
        });
    }
    let mut sessions = Vec::new();
    while let Some(id) = set.join_next().await {
        sessions.push(id.unwrap());
    }

    // Assert: 80 events, each once, in the order of the log (one license: one at a time).
    let mut got = Vec::new();
    for _ in 0..80 {
        got.push(rx.next().await.json());
    }
    rx.quiet(Duration::from_millis(300)).await;
    let ids: std::collections::HashSet<&str> =
        got.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 80);
    let seqs: Vec<u64> = got
        .iter()
        .map(|b| b["id"].as_str().unwrap()["evt_".len()..].parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for id in &sessions {
        let at = |t: &str| {
            got.iter()
                .position(|b| b["type"] == t && b["data"]["session_id"] == id.as_str())
                .unwrap()
        };
        assert!(at("session.opened") < at("session.closed"));
    }
}
