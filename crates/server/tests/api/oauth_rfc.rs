//! The token endpoint as RFC 6749 says, checked with a stock OAuth2 client the project does
//! not own (the `oauth2` crate: it sends client credentials by HTTP Basic or in the body, and
//! parses error answers strictly into the RFC's error codes, so `"error": {...}` would fail),
//! and the headers it must send checked by hand.

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenType};
use oauth2::{
    AuthType, ClientId, ClientSecret, RequestTokenError, ResourceOwnerPassword,
    ResourceOwnerUsername, Scope, TokenResponse, TokenUrl,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

/// A service user: its client id and secret.
async fn service_user(app: &TestApp, active: bool) -> (String, String, Fixture) {
    let f = app.fixture(2, &[], json!({})).await;
    let r = app
        .call(
            Method::PUT,
            &format!("/v1/accounts/{}/users/erp", f.account_id),
            Some(&f.admin),
            Some(json!({"kind": "service", "active": active})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    (
        r.body["client_id"].as_str().unwrap().to_owned(),
        r.body["client_secret"].as_str().unwrap().to_owned(),
        f,
    )
}

fn http() -> reqwest::Client {
    // As the oauth2 crate asks: no redirects (a token request must not be sent elsewhere).
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_stock_oauth2_client_gets_a_token_with_basic_or_body_authentication() {
    let app = spawn_app().await;
    let (id, secret, f) = service_user(&app, true).await;
    let token_url = TokenUrl::new(format!("{}/v1/oauth/token", app.url)).unwrap();
    for auth in [AuthType::BasicAuth, AuthType::RequestBody] {
        let client = BasicClient::new(ClientId::new(id.clone()))
            .set_client_secret(ClientSecret::new(secret.clone()))
            .set_token_uri(token_url.clone())
            .set_auth_type(auth.clone());
        let token = client
            .exchange_client_credentials()
            .request_async(&http())
            .await
            .unwrap_or_else(|e| panic!("{auth:?}: {e:?}"));
        assert_eq!(token.token_type(), &BasicTokenType::Bearer);
        assert_eq!(token.expires_in().unwrap().as_secs(), 3600);
        // The access token opens a session.
        let s = app
            .open(token.access_token().secret(), &f.license_id, "srv", "erp-1")
            .await;
        assert!(s.status.is_success(), "{:?}", s.body);
    }
}

/// The RFC error a request got, through the stock client.
fn server_error<T: std::fmt::Debug>(
    result: Result<
        T,
        RequestTokenError<
            oauth2::HttpClientError<reqwest::Error>,
            oauth2::basic::BasicErrorResponse,
        >,
    >,
) -> (BasicErrorResponseType, String) {
    match result {
        Err(RequestTokenError::ServerResponse(e)) => (
            e.error().clone(),
            e.error_description().cloned().unwrap_or_default(),
        ),
        other => panic!("not an RFC 6749 error answer: {other:?}"),
    }
}

#[tokio::test]
async fn errors_reach_a_stock_client_as_rfc_6749_error_codes() {
    let app = spawn_app().await;
    let (id, secret, _) = service_user(&app, true).await;
    let token_url = TokenUrl::new(format!("{}/v1/oauth/token", app.url)).unwrap();
    let client = |id: &str, secret: &str| {
        BasicClient::new(ClientId::new(id.to_owned()))
            .set_client_secret(ClientSecret::new(secret.to_owned()))
            .set_token_uri(token_url.clone())
    };

    // A wrong secret, an unknown client: invalid_client.
    let (code, description) = server_error(
        client(&id, "wrong")
            .exchange_client_credentials()
            .request_async(&http())
            .await,
    );
    assert_eq!(code, BasicErrorResponseType::InvalidClient);
    assert!(!description.is_empty());
    let (code, _) = server_error(
        client("lh_cid_nobody", &secret)
            .exchange_client_credentials()
            .request_async(&http())
            .await,
    );
    assert_eq!(code, BasicErrorResponseType::InvalidClient);

    // A scope: this server defines none.
    let (code, _) = server_error(
        client(&id, &secret)
            .exchange_client_credentials()
            .add_scope(Scope::new("admin".into()))
            .request_async(&http())
            .await,
    );
    assert_eq!(code, BasicErrorResponseType::InvalidScope);

    // Another grant type.
    let user = ResourceOwnerUsername::new("bob".into());
    let password = ResourceOwnerPassword::new("pw".into());
    let (code, _) = server_error(
        client(&id, &secret)
            .exchange_password(&user, &password)
            .request_async(&http())
            .await,
    );
    assert_eq!(code, BasicErrorResponseType::UnsupportedGrantType);

    // An inactive service user: invalid_grant.
    let (inactive_id, inactive_secret, _) = service_user(&app, false).await;
    let (code, description) = server_error(
        client(&inactive_id, &inactive_secret)
            .exchange_client_credentials()
            .request_async(&http())
            .await,
    );
    assert_eq!(code, BasicErrorResponseType::InvalidGrant);
    assert!(description.contains("inactive"), "{description}");
}

#[tokio::test]
async fn every_answer_has_the_rfc_headers_and_a_401_challenges_basic() {
    let app = spawn_app().await;
    let (id, secret, _) = service_user(&app, true).await;
    let url = format!("{}/v1/oauth/token", app.url);
    let check_no_cache = |resp: &reqwest::Response| {
        assert_eq!(resp.headers()["cache-control"], "no-store");
        assert_eq!(resp.headers()["pragma"], "no-cache");
    };

    let ok = http()
        .post(&url)
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    check_no_cache(&ok);

    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            http()
                .post(&url)
                .basic_auth(&id, Some("wrong"))
                .form(&[("grant_type", "client_credentials")]),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            http()
                .post(&url)
                .form(&[("grant_type", "client_credentials"), ("client_id", &id)]),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            http()
                .post(&url)
                .form(&[("client_id", id.as_str()), ("client_secret", &secret)]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            // Two ways of authenticating at once.
            http().post(&url).basic_auth(&id, Some(&secret)).form(&[
                ("grant_type", "client_credentials"),
                ("client_secret", &secret),
            ]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            http()
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("grant_type=client_credentials&grant_type=client_credentials"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            http()
                .post(&url)
                .basic_auth(&id, Some(&secret))
                .json(&json!({"grant_type": "client_credentials"})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            http()
                .post(&url)
                .basic_auth(&id, Some(&secret))
                .header(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=iso-8859-1",
                )
                .body("grant_type=client_credentials"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            http()
                .post(&url)
                .basic_auth(&id, Some(&secret))
                .form(&[("grant_type", "authorization_code"), ("code", "x")]),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
    ];
    for (i, (request, status, code)) in cases.into_iter().enumerate() {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), status, "case {i}");
        check_no_cache(&resp);
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(
                resp.headers()["www-authenticate"],
                "Basic realm=\"leasehold\"",
                "case {i}"
            );
        }
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], code, "case {i}: {body}");
        assert!(body["error_description"].is_string(), "case {i}: {body}");
        assert!(body.get("code").is_none());
    }

    // Unknown parameters are ignored (RFC 6749 3.2).
    let resp = http()
        .post(&url)
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials"), ("audience", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
