//! The dashboard's edge, over real HTTP on both stores: sign-in mints a cookie session
//! (`HttpOnly`, `Secure`, `SameSite=Strict`) for account admin tokens only, the cookie
//! authenticates API calls, a call that changes something needs the page's CSRF token, another
//! site can neither sign in nor sign out, sign-out expires the session on the server, a session
//! sees only its own account, and the pages run nothing but their own script. (What the pages
//! do in a browser: `tests/browser/test_dashboard.py`, in headless Chromium.)

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

/// A client that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `token`; answers the status and the cookie (`lh_ui=...`) when one was set.
async fn sign_in(app: &TestApp, token: &str, origin: Option<&str>) -> (StatusCode, Option<String>) {
    let mut req = browser()
        .post(format!("{}/ui/login", app.url))
        .form(&[("token", token)]);
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    let resp = req.send().await.unwrap();
    let cookie = resp
        .headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned());
    if resp.status() == StatusCode::SEE_OTHER {
        assert_eq!(resp.headers()[LOCATION], "/ui");
    }
    let pair = cookie.and_then(|c| c.split(';').next().map(str::to_owned));
    (resp.status(), pair)
}

/// The CSRF token the signed-in page carries.
async fn page_csrf(app: &TestApp, cookie: &str) -> String {
    let page = app
        .http
        .get(format!("{}/ui", app.url))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"leasehold-csrf\" content=\"";
    let start = page.find(marker).expect("the page carries its CSRF token") + marker.len();
    page[start..start + 64].to_owned()
}

async fn with_cookie(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
) -> Answer {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.url))
        .header(COOKIE, cookie);
    if let Some(csrf) = csrf {
        req = req.header("x-csrf-token", csrf);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    }
}

#[tokio::test]
async fn an_admin_signs_in_and_the_cookie_is_strict_http_only_and_secure() {
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let resp = browser()
        .post(format!("{}/ui/login", app.url))
        .form(&[("token", f.admin.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for part in [
        "lh_ui=lh_ui_",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=28800",
    ] {
        assert!(set.contains(part), "{set}");
    }
    // The admin token itself never reaches the browser.
    assert!(!set.contains(&f.admin));
    let cookie = set.split(';').next().unwrap();
    let page = app
        .http
        .get(format!("{}/ui", app.url))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains(&f.account_id) && html.contains("Acme"));
    assert!(!html.contains("<script>"), "no inline script");
    // The cookie reads the API like the admin token.
    let usage = with_cookie(
        &app,
        Method::GET,
        &format!("/v1/licenses/{}", f.license_id),
        cookie,
        None,
    )
    .await;
    assert_eq!(usage.status, StatusCode::OK, "{:?}", usage.body);
}

#[tokio::test]
async fn only_account_admin_tokens_sign_in() {
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let user = app.user_token(&f.account_id, &f.admin, "bob").await;
    for (token, status) in [
        ("lh_adm_unknown", StatusCode::UNAUTHORIZED),
        (ROOT_TOKEN, StatusCode::FORBIDDEN),
        (user.as_str(), StatusCode::FORBIDDEN),
        ("", StatusCode::BAD_REQUEST),
    ] {
        let (got, cookie) = sign_in(&app, token, None).await;
        assert_eq!(got, status, "{token}");
        assert!(cookie.is_none(), "{token}");
    }
    // Failed sign-ins count against the failed-authentication budget like bearer tokens.
    let mut limited = false;
    for _ in 0..40 {
        if sign_in(&app, "lh_adm_guess", None).await.0 == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(
        limited,
        "guessing tokens at the sign-in form is rate limited"
    );
}

#[tokio::test]
async fn another_site_cannot_sign_in_or_out_and_changes_need_the_csrf_token() {
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let (status, cookie) = sign_in(&app, &f.admin, Some("https://evil.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(cookie.is_none());
    let host = app.url.trim_start_matches("http://").to_owned();
    let (status, cookie) = sign_in(&app, &f.admin, Some(&format!("http://{host}"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = cookie.unwrap();
    let csrf = page_csrf(&app, &cookie).await;

    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let sid = app.open(&bob, &f.license_id, "laptop", "cad-1").await.id();
    let path = format!("/v1/sessions/{sid}");
    let refused = with_cookie(&app, Method::DELETE, &path, &cookie, None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.code(), "csrf_token_invalid");
    let refused = with_cookie(&app, Method::DELETE, &path, &cookie, Some(&"0".repeat(64))).await;
    assert_eq!(refused.code(), "csrf_token_invalid");
    assert_eq!(app.heartbeat(&bob, &sid).await.status, StatusCode::OK);
    let revoked = with_cookie(&app, Method::DELETE, &path, &cookie, Some(&csrf)).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{:?}", revoked.body);
    let ended = app.heartbeat(&bob, &sid).await;
    assert_eq!(ended.body["error"]["reason"], "revoked");

    // Sign-out: refused without the token (another site's form), done with it.
    let sign_out = |csrf: String| {
        browser()
            .post(format!("{}/ui/logout", app.url))
            .header(COOKIE, cookie.clone())
            .form(&[("csrf", csrf)])
            .send()
    };
    let refused = sign_out("forged".into()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let still = with_cookie(
        &app,
        Method::GET,
        &format!("/v1/licenses/{}", f.license_id),
        &cookie,
        None,
    )
    .await;
    assert_eq!(still.status, StatusCode::OK);
    let out = sign_out(csrf).await.unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // Expired on the server: a copy of the cookie kept elsewhere is worthless now.
    let after = with_cookie(
        &app,
        Method::GET,
        &format!("/v1/licenses/{}", f.license_id),
        &cookie,
        None,
    )
    .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    let page = app
        .http
        .get(format!("{}/ui", app.url))
        .header(COOKIE, cookie.as_str())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("name=\"token\""),
        "signed out: the sign-in form"
    );
}

#[tokio::test]
async fn a_dashboard_session_ends_after_eight_hours_and_sees_only_its_account() {
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let other = app.fixture(1, &[], json!({})).await;
    let (_, cookie) = sign_in(&app, &f.admin, None).await;
    let cookie = cookie.unwrap();
    for path in [
        format!("/v1/licenses/{}", other.license_id),
        format!("/v1/licenses/{}/sessions", other.license_id),
        format!("/v1/licenses/{}/usage", other.license_id),
    ] {
        let a = with_cookie(&app, Method::GET, &path, &cookie, None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}: {:?}", a.body);
    }
    let a = with_cookie(
        &app,
        Method::GET,
        &format!("/v1/accounts/{}/users", other.account_id),
        &cookie,
        None,
    )
    .await;
    assert!(
        matches!(a.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "{:?}",
        a.body
    );
    app.advance(8 * 3600 - 1).await;
    let a = with_cookie(
        &app,
        Method::GET,
        &format!("/v1/licenses/{}", f.license_id),
        &cookie,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    app.advance(1).await;
    let a = with_cookie(
        &app,
        Method::GET,
        &format!("/v1/licenses/{}", f.license_id),
        &cookie,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // A bearer token wins over the cookie; a non-dashboard token in the cookie is not read.
    let a = app
        .http
        .get(format!("{}/v1/licenses/{}", app.url, f.license_id))
        .header(COOKIE, format!("lh_ui={}", f.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_assets_are_embedded_and_small() {
    let app = spawn_app().await;
    let mut total = 0;
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/assets/app.js", "text/javascript"),
        ("/ui/assets/app.css", "text/css"),
    ] {
        let resp = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        total += resp.bytes().await.unwrap().len();
    }
    assert!(total < 100_000, "the first page weighs {total} bytes");
}
