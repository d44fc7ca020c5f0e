//! Usernames are case-insensitive: every username the API is given is folded to lowercase, so
//! `Dave` and `dave` are one user on both stores (run with `LEASEHOLD_TEST_STORE=postgres`
//! too).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn dave_and_dave_in_capitals_are_one_user_everywhere() {
    let app = spawn_app().await;
    let f = app.fixture(2, &["Alice"], json!({})).await;
    let users = |name: &str| format!("/v1/accounts/{}/users/{name}", f.account_id);

    // Created as "Dave", it is "dave".
    let r = app
        .call(
            Method::PUT,
            &users("Dave"),
            Some(&f.admin),
            Some(json!({"kind": "interactive"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["username"], "dave");
    // "DAVE" is the same user: updated, not created.
    let r = app
        .call(
            Method::PUT,
            &users("DAVE"),
            Some(&f.admin),
            Some(json!({"kind": "interactive"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.get(&users("dAvE"), &f.admin).await;
    assert_eq!(
        (r.status, r.body["username"].as_str()),
        (StatusCode::OK, Some("dave"))
    );
    let list = app
        .get(&format!("/v1/accounts/{}/users", f.account_id), &f.admin)
        .await;
    let names: Vec<_> = list.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dave"]);

    // A token asked for "DAVE" opens sessions as "dave", listed under any case.
    let t = app
        .post(&format!("{}/tokens", users("DAVE")), &f.admin, json!({}))
        .await;
    let token = t.body["token"].as_str().unwrap();
    let s = app.open(token, &f.license_id, "pc", "1").await;
    assert_eq!(s.body["username"], "dave");
    let listed = app
        .get(&format!("{}/sessions", users("Dave")), &f.admin)
        .await;
    assert_eq!(listed.body["sessions"][0]["id"], s.body["id"]);

    // Reserved names fold too.
    let lic = app
        .get(&format!("/v1/licenses/{}", f.license_id), &f.admin)
        .await;
    assert_eq!(lic.body["reserved"], json!(["alice"]));

    // A name that cannot be a username names nobody.
    let r = app.get(&users("no%20such"), &f.admin).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn registered_users_fold_on_the_license_too() {
    let app = spawn_app().await;
    let f = app
        .fixture(1, &[], json!({"model": "registered_users"}))
        .await;
    app.user_token(&f.account_id, &f.admin, "bob").await;
    let r = app
        .call(
            Method::PUT,
            &format!("/v1/licenses/{}/users/BOB", f.license_id),
            Some(&f.admin),
            Some(json!({"active": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["username"], "bob");
    let again = app
        .call(
            Method::PUT,
            &format!("/v1/licenses/{}/users/Bob", f.license_id),
            Some(&f.admin),
            Some(json!({"active": true})),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "the same registration");
}
