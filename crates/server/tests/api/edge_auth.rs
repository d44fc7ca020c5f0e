//! Authentication at the edge: every 401 carries a `Bearer` challenge (RFC 6750 section 3),
//! failed authentications are limited per client address and per credential (429 with
//! `Retry-After`) without ever refusing a valid credential, and they are counted.
//!
//! Other machines are played by clients bound to other loopback addresses (127.0.0.2...).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

fn challenge(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn every_401_of_the_api_carries_a_bearer_challenge() {
    let app = spawn_app_with(|c| c.auth_failures_per_minute_per_address = 1000).await;
    let doc: serde_json::Value = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let needs_token = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().all(|r| r.get("bearer").is_some()));
            if !needs_token {
                continue;
            }
            let concrete = path
                .replace("{id}", "x")
                .replace("{username}", "y")
                .replace("{fingerprint}", "z");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // No token at all: a challenge without an error code (RFC 6750 3.1).
            let resp = app
                .http
                .request(m.clone(), format!("{}{concrete}", app.url))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(
                challenge(&resp),
                "Bearer realm=\"leasehold\"",
                "{method} {path}"
            );
            // An unknown token: invalid_token.
            let resp = app
                .http
                .request(m, format!("{}{concrete}", app.url))
                .bearer_auth(format!("lh_usr_unknown_{checked}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(
                challenge(&resp),
                "Bearer realm=\"leasehold\", error=\"invalid_token\"",
                "{method} {path}"
            );
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");

    // Another scheme is a missing bearer token; a malformed bearer header is 400.
    let url = format!("{}/v1/plans", app.url);
    let resp = app
        .http
        .get(&url)
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&resp), "Bearer realm=\"leasehold\"");
    let resp = app
        .http
        .get(&url)
        .header("authorization", "Bearer two words")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        challenge(&resp),
        "Bearer realm=\"leasehold\", error=\"invalid_request\""
    );
}

#[tokio::test]
async fn failures_over_an_address_budget_get_429_with_retry_after_but_valid_tokens_pass() {
    // Arrange: 5 failures a minute per address.
    let app = spawn_app_with(|c| c.auth_failures_per_minute_per_address = 5).await;
    let f = app.fixture(2, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let nat = TestApp::client_from("127.0.0.2");
    let neighbour = TestApp::client_from("127.0.0.3");
    let get = |client: &reqwest::Client, token: &str| {
        client
            .get(format!("{}/v1/licenses/{}", app.url, f.license_id))
            .bearer_auth(token)
            .send()
    };

    // Act: six wrong tokens from one address.
    for i in 0..5 {
        let r = get(&nat, &format!("lh_usr_guess_{i}")).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "failure {i}");
    }
    let limited = get(&nat, "lh_usr_guess_5").await.unwrap();

    // Assert: 429 rate_limited with Retry-After (one failure refills every 12 s).
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "12");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("from this address"));
    // A valid token is served from that very address (a shared NAT's other users)...
    let r = get(&nat, &f.admin).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = nat
        .post(format!("{}/v1/sessions", app.url))
        .bearer_auth(&bob)
        .json(&json!({"license_id": f.license_id, "device_id": "pc", "instance_id": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // ...and other addresses' failures are answered as usual.
    let r = get(&neighbour, "lh_usr_guess_other").await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Once Retry-After has passed, a failure is a 401 again.
    app.clock.advance_secs(12);
    let r = get(&nat, "lh_usr_guess_6").await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Counted: failures and limited ones.
    let metrics = app.get_text("/metrics", ROOT_TOKEN).await;
    assert!(
        metrics.contains("leasehold_auth_failures_total{method=\"bearer\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("leasehold_auth_rate_limited_total{scope=\"address\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_token_that_keeps_failing_is_refused_from_everywhere_but_no_valid_credential_is() {
    // Arrange: 3 failures a minute per credential, many per address.
    let app = spawn_app_with(|c| {
        c.auth_failures_per_minute_per_credential = 3;
        c.auth_failures_per_minute_per_address = 1000;
    })
    .await;
    let f = app.fixture(2, &[], json!({})).await;
    let svc = app
        .call(
            Method::PUT,
            &format!("/v1/accounts/{}/users/erp", f.account_id),
            Some(&f.admin),
            Some(json!({"kind": "service"})),
        )
        .await;
    let client_id = svc.body["client_id"].as_str().unwrap().to_owned();
    let secret = svc.body["client_secret"].as_str().unwrap().to_owned();
    let attacker = TestApp::client_from("127.0.0.4");
    let owner = TestApp::client_from("127.0.0.5");

    // A revoked or made-up token used over and over, from one address...
    let stale = "lh_usr_revoked_long_ago";
    for _ in 0..3 {
        let r = attacker
            .get(format!("{}/v1/plans", app.url))
            .bearer_auth(stale)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // ...is refused before it is looked up, from any address.
    let r = owner
        .get(format!("{}/v1/plans", app.url))
        .bearer_auth(stale)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("with this credential"));

    // Wrong secrets for the service user's client id, from the attacker...
    let token = |client: &reqwest::Client, secret: &str| {
        client
            .post(format!("{}/v1/oauth/token", app.url))
            .basic_auth(&client_id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    for _ in 0..3 {
        let r = token(&attacker, "wrong").await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = token(&attacker, "wrong").await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    // ...never lock the owner out: the right secret works from its address and the attacker's.
    for client in [&owner, &attacker] {
        let r = token(client, &secret).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}
