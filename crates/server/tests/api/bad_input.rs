//! Bad input gets a clear 4xx JSON error with a stable code, and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let mut req = app
        .http
        .request(method, format!("{}{}", app.url, path))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    Answer { status, body }
}

#[tokio::test]
async fn malformed_or_invalid_bodies_are_refused_with_stable_codes() {
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let acc = f.account_id.clone();
    let license = |extra: serde_json::Value| {
        let mut b = json!({"account_id": acc, "product": "cad", "model": "concurrent_sessions", "seats": 2});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };

    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        (
            "malformed JSON",
            b"{\"account_id\": ".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "not JSON at all",
            b"seats=3".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown field",
            serde_json::to_vec(&license(json!({"colour": "red"}))).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown model",
            serde_json::to_vec(&license(json!({"model": "per_moon_phase"}))).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "zero seats",
            serde_json::to_vec(&license(json!({"seats": 0}))).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "negative seats",
            serde_json::to_vec(&license(json!({"seats": -4}))).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "seats as text",
            serde_json::to_vec(&license(json!({"seats": "ten"}))).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "zero timeout",
            serde_json::to_vec(&license(json!({"inactivity_timeout_secs": 0}))).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "more reserved than seats",
            serde_json::to_vec(&license(json!({"reserved": ["a", "b", "c"]}))).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "bad reserved username",
            serde_json::to_vec(&license(json!({"reserved": ["no spaces"]}))).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown plan",
            serde_json::to_vec(&license(json!({"seats": null, "plan": "gold"}))).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "oversized body",
            serde_json::to_vec(&license(json!({"product": "x".repeat(100_000)}))).unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (what, body, status) in cases {
        let r = raw(
            &app,
            Method::POST,
            "/v1/licenses",
            Some(&f.admin),
            "application/json",
            body,
        )
        .await;
        assert_eq!(r.status, status, "{what}: {:?}", r.body);
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "invalid_request"
        };
        assert_eq!(r.code(), code, "{what}");
        assert!(
            !r.body["error"]["message"].as_str().unwrap().is_empty(),
            "{what}"
        );
    }
    // Not JSON by its media type, or JSON in another charset: 415.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=iso-8859-1",
        "application/json; charset=utf-16",
    ] {
        let r = raw(
            &app,
            Method::POST,
            "/v1/licenses",
            Some(&f.admin),
            content_type,
            serde_json::to_vec(&license(json!({}))).unwrap(),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
        assert_eq!(r.code(), "unsupported_media_type", "{content_type}");
    }
    let r = raw(
        &app,
        Method::POST,
        "/v1/licenses",
        Some(&f.admin),
        "application/json; charset=UTF-8",
        serde_json::to_vec(&license(json!({}))).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);

    // Sessions: bad ids and fields.
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    for body in [
        json!({"license_id": f.license_id, "device_id": "", "instance_id": "x"}),
        json!({"license_id": f.license_id, "device_id": "pc", "instance_id": "a\u{0007}b"}),
        json!({"license_id": f.license_id, "device_id": "pc"}),
        json!({"license_id": f.license_id, "device_id": "pc", "instance_id": "x", "seats": 3}),
    ] {
        let r = app.post("/v1/sessions", &bob, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            r.body
        );
        assert_eq!(r.code(), "invalid_request");
    }
    let r = app.post("/v1/users", &f.admin, json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "not_found");
    let r = app
        .call(Method::PUT, "/v1/sessions", Some(&bob), None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.code(), "method_not_allowed");

    // Nothing changed: still one license of 2 seats, no session.
    let l = app
        .get(&format!("/v1/licenses/{}", f.license_id), &f.admin)
        .await;
    assert_eq!(l.body["seats"], 2);
    assert_eq!(l.body["usage"]["in_use"], 0);
    let audit = app
        .get(&format!("/v1/licenses/{}/audit", f.license_id), &f.admin)
        .await;
    assert_eq!(
        audit.body["events"].as_array().unwrap().len(),
        1,
        "only license_created"
    );
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let missing = "00000000-0000-0000-0000-000000000000";
    for path in [
        format!("/v1/licenses/{missing}"),
        format!("/v1/licenses/{missing}/sessions"),
        format!("/v1/licenses/{missing}/usage"),
        "/v1/licenses/not-even-a-uuid".to_string(),
    ] {
        let r = app.get(&path, &f.admin).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.code(), "not_found");
    }
    let r = app.open(&bob, missing, "pc", "x").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.heartbeat(&bob, missing).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{missing}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .call(
            Method::PUT,
            &format!("/v1/accounts/{missing}/users/x"),
            Some(leasehold_proto_root()),
            Some(json!({"kind": "interactive"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .post(
            &format!("/v1/accounts/{}/users/ghost/tokens", f.account_id),
            &f.admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

fn leasehold_proto_root() -> &'static str {
    ROOT_TOKEN
}

#[tokio::test]
async fn wrong_or_missing_tokens_are_refused() {
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let open = json!({"license_id": f.license_id, "device_id": "pc", "instance_id": "x"});

    // No token, unknown token, malformed header: 401 unauthorized.
    let r = app
        .call(Method::POST, "/v1/sessions", None, Some(open.clone()))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let r = app
        .post("/v1/sessions", "lh_usr_made_up", open.clone())
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let resp = app
        .http
        .get(format!("{}/v1/licenses/{}", app.url, f.license_id))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Wrong kinds: 403 forbidden.
    let r = app.post("/v1/sessions", &f.admin, open.clone()).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let r = app.post("/v1/sessions", ROOT_TOKEN, open.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post("/v1/licenses", &bob, json!({"account_id": f.account_id, "product": "p", "model": "concurrent_sessions", "seats": 9}))
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let r = app
        .get(&format!("/v1/licenses/{}", f.license_id), &bob)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post("/v1/accounts", &f.admin, json!({"name": "x"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.post("/v1/accounts", &bob, json!({"name": "x"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Service users have no personal tokens.
    app.call(
        Method::PUT,
        &format!("/v1/accounts/{}/users/svc", f.account_id),
        Some(&f.admin),
        Some(json!({"kind": "service"})),
    )
    .await;
    let r = app
        .post(
            &format!("/v1/accounts/{}/users/svc/tokens", f.account_id),
            &f.admin,
            json!({}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );
    // A user's kind cannot change.
    let r = app
        .call(
            Method::PUT,
            &format!("/v1/accounts/{}/users/svc", f.account_id),
            Some(&f.admin),
            Some(json!({"kind": "interactive"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "conflict"));
    // OAuth: wrong grant type, missing credentials.
    let resp = app
        .http
        .post(format!("{}/v1/oauth/token", app.url))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = app
        .http
        .post(format!("{}/v1/oauth/token", app.url))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 0);
}

#[tokio::test]
async fn undecodable_paths_are_400_json() {
    let app = spawn_app().await;
    let r = app.get("/v1/licenses/%FF", ROOT_TOKEN).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "invalid_request");
    let r = app.heartbeat(ROOT_TOKEN, "%FF%FE").await;
    assert_eq!(r.code(), "invalid_request");
}

#[tokio::test]
async fn only_a_json_object_is_a_body_and_fields_are_never_taken_by_position() {
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let path = format!("/v1/licenses/{}", f.license_id);
    // PATCH with an array would have set the second field (seats) to 7.
    for body in ["[null,7]", "[]", "7", "\"seats\"", "null", "true"] {
        let r = raw(
            &app,
            Method::PATCH,
            &path,
            Some(&f.admin),
            "application/json",
            body.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            r.body
        );
        assert_eq!(r.code(), "invalid_request");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("JSON object"),
            "{body}: {:?}",
            r.body
        );
    }
    let r = app.get(&path, &f.admin).await;
    assert_eq!(r.body["seats"], 2, "nothing changed");
    let r = raw(
        &app,
        Method::POST,
        "/v1/sessions",
        Some(&bob),
        "application/json",
        format!("[\"{}\", \"pc\", \"1\"]", f.license_id).into_bytes(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.in_use(&f.admin, &f.license_id).await, 0);
}

#[tokio::test]
async fn integral_numbers_written_with_a_fraction_are_the_integers_they_equal() {
    // OpenAPI 3.1 (JSON Schema) `type: integer` is any number with a zero fraction.
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let path = format!("/v1/licenses/{}", f.license_id);
    let patch = |body: &'static str| {
        raw(
            &app,
            Method::PATCH,
            &path,
            Some(&f.admin),
            "application/json",
            body.as_bytes().to_vec(),
        )
    };
    let r = patch("{\"seats\": 208.0}").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["seats"], 208);
    let r = patch("{\"seats\": 2.1e1, \"inactivity_timeout_secs\": 6e2}").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["seats"], 21);
    assert_eq!(r.body["inactivity_timeout_secs"], 600);
    for body in [
        "{\"seats\": 208.5}",
        "{\"seats\": 1e300}",
        "{\"product\": 1.0}",
    ] {
        let r = patch(body).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(r.code(), "invalid_request");
    }
    assert_eq!(app.get(&path, &f.admin).await.body["seats"], 21);
}
