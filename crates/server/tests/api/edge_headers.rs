//! Response headers: no caching of answers that carry a secret (or anything else),
//! `nosniff` and a closed `Content-Security-Policy` on every answer, and CORS off unless
//! origins are configured.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

const CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn assert_edge_headers(resp: &reqwest::Response, what: &str) {
    let h = resp.headers();
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["content-security-policy"], CSP, "{what}");
    assert_eq!(h["cache-control"], "no-store", "{what}");
}

#[tokio::test]
async fn answers_carrying_secrets_are_not_stored_and_every_answer_has_the_security_headers() {
    let app = spawn_app().await;
    let send =
        |method: Method, path: &str, token: Option<&str>, body: Option<serde_json::Value>| {
            let mut req = app.http.request(method, format!("{}{path}", app.url));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            req.send()
        };

    // Secrets: an admin token, a user token, a client secret, an access token.
    let account = send(
        Method::POST,
        "/v1/accounts",
        Some(ROOT_TOKEN),
        Some(json!({"name": "Acme"})),
    )
    .await
    .unwrap();
    assert_edge_headers(&account, "account with admin token");
    let account: serde_json::Value = account.json().await.unwrap();
    let (aid, admin) = (
        account["id"].as_str().unwrap().to_owned(),
        account["admin_token"].as_str().unwrap().to_owned(),
    );
    send(
        Method::PUT,
        &format!("/v1/accounts/{aid}/users/bob"),
        Some(&admin),
        Some(json!({"kind": "interactive"})),
    )
    .await
    .unwrap();
    let token = send(
        Method::POST,
        &format!("/v1/accounts/{aid}/users/bob/tokens"),
        Some(&admin),
        None,
    )
    .await
    .unwrap();
    assert_eq!(token.status(), StatusCode::CREATED);
    assert_edge_headers(&token, "user token");
    let svc = send(
        Method::PUT,
        &format!("/v1/accounts/{aid}/users/erp"),
        Some(&admin),
        Some(json!({"kind": "service"})),
    )
    .await
    .unwrap();
    assert_edge_headers(&svc, "client secret");
    let svc: serde_json::Value = svc.json().await.unwrap();
    let access = app
        .http
        .post(format!("{}/v1/oauth/token", app.url))
        .basic_auth(
            svc["client_id"].as_str().unwrap(),
            svc["client_secret"].as_str(),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(access.status(), StatusCode::OK);
    assert_edge_headers(&access, "access token");

    // Everything else too: data, errors, the fallbacks, the documents.
    for (method, path, token) in [
        (Method::GET, "/v1/plans".to_owned(), Some(admin.as_str())),
        (Method::GET, "/v1/plans".to_owned(), None),
        (Method::GET, "/nowhere".to_owned(), None),
        (Method::PUT, "/healthz".to_owned(), None),
        (Method::GET, "/openapi.json".to_owned(), None),
        (Method::GET, "/.well-known/jwks.json".to_owned(), None),
        (Method::GET, "/metrics".to_owned(), None),
        (
            Method::GET,
            format!("/v1/licenses/{}", "x".repeat(10_000)),
            Some(ROOT_TOKEN),
        ),
    ] {
        let resp = send(method.clone(), &path, token, None).await.unwrap();
        assert_edge_headers(&resp, &format!("{method} {}", &path[..path.len().min(40)]));
    }
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let app = spawn_app().await;
    let resp = app
        .http
        .get(format!("{}/v1/plans", app.url))
        .header("origin", "https://admin.example.com")
        .bearer_auth(ROOT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let preflight = app
        .http
        .request(Method::OPTIONS, format!("{}/v1/plans", app.url))
        .header("origin", "https://admin.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert_eq!(preflight.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn configured_origins_and_only_those_may_call_from_a_browser() {
    let app = spawn_app_with(|c| {
        c.cors_allowed_origins = vec!["https://admin.example.com".into()];
    })
    .await;
    // Preflight from the allowed origin.
    let preflight = app
        .http
        .request(Method::OPTIONS, format!("{}/v1/licenses/x", app.url))
        .header("origin", "https://admin.example.com")
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    let h = preflight.headers();
    assert_eq!(
        h["access-control-allow-origin"],
        "https://admin.example.com"
    );
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("PATCH"));
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    assert!(h.get("access-control-allow-credentials").is_none());
    assert_edge_headers(&preflight, "preflight");

    // The call itself, and what the page may read of the answer.
    let resp = app
        .http
        .get(format!("{}/v1/plans", app.url))
        .header("origin", "https://admin.example.com")
        .bearer_auth(ROOT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://admin.example.com"
    );
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id") && exposed.contains("retry-after"));

    // Another origin gets no CORS headers: the browser keeps the answer from it.
    let other = app
        .http
        .get(format!("{}/v1/plans", app.url))
        .header("origin", "https://evil.example")
        .bearer_auth(ROOT_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
