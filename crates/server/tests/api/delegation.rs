//! Dark sites: two real servers in one test, a cloud (the configured store: SQLite, or
//! PostgreSQL with `LEASEHOLD_TEST_STORE=postgres`) and a local server (SQLite) that trusts the
//! cloud's JWKS. Files go from one to the other as the JSON the routes answer, exactly what the
//! CLI writes and reads.

use leasehold_core::Timestamp;
use leasehold_server::jws;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;

use crate::helpers::{
    spawn_app, spawn_app_configured, Answer, Fixture, TestApp, ROOT_TOKEN, TEST_START,
};

/// A cloud with a 5-seat license, and a local server trusting the cloud's key.
struct Sites {
    cloud: TestApp,
    local: TestApp,
    lic: Fixture,
    /// The local account that holds imported licenses, and its admin token.
    local_account: String,
    local_admin: String,
}

fn at(secs_from_start: i64) -> String {
    Timestamp::from_secs(TEST_START.secs() + secs_from_start)
        .to_offset()
        .format(&Rfc3339)
        .unwrap()
}

/// A local server (always SQLite) trusting `vendor`'s JWKS.
async fn local_site(vendor: &TestApp) -> TestApp {
    let jwks = vendor.get("/.well-known/jwks.json", ROOT_TOKEN).await;
    assert_eq!(jwks.status, StatusCode::OK);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vendor-jwks.json");
    std::fs::write(&path, jwks.body.to_string()).unwrap();
    spawn_app_configured(dir, move |c| {
        c.database_url = None;
        c.vendor_jwks = Some(path);
    })
    .await
}

async fn sites() -> Sites {
    let cloud = spawn_app().await;
    let lic = cloud.fixture(5, &[], json!({})).await;
    let local = local_site(&cloud).await;
    let (local_account, local_admin) = local.create_account("Plant 7").await;
    Sites {
        cloud,
        local,
        lic,
        local_account,
        local_admin,
    }
}

async fn request(local: &TestApp) -> Value {
    let r = local
        .post(
            "/v1/delegation-requests",
            ROOT_TOKEN,
            json!({"site": "plant-7"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

impl Sites {
    async fn delegate(&self, request: &Value, seats: u32, expires_in: i64) -> Answer {
        self.cloud
            .post(
                &format!("/v1/licenses/{}/delegations", self.lic.license_id),
                &self.lic.admin,
                json!({"request": request["request"], "seats": seats, "expires_at": at(expires_in)}),
            )
            .await
    }

    async fn import(&self, file: &Value) -> Answer {
        self.local
            .post(
                "/v1/delegations",
                ROOT_TOKEN,
                json!({"delegation": file["delegation"], "account_id": self.local_account}),
            )
            .await
    }

    async fn cloud_usage(&self) -> Value {
        let l = self
            .cloud
            .get(
                &format!("/v1/licenses/{}", self.lic.license_id),
                &self.lic.admin,
            )
            .await;
        assert_eq!(l.status, StatusCode::OK, "{:?}", l.body);
        l.body["usage"].clone()
    }

    async fn local_user(&self, name: &str) -> String {
        self.local
            .user_token(&self.local_account, &self.local_admin, name)
            .await
    }

    async fn cloud_user(&self, name: &str) -> String {
        self.cloud
            .user_token(&self.lic.account_id, &self.lic.admin, name)
            .await
    }
}

#[tokio::test]
async fn the_whole_round_trip_goes_through_files() {
    let s = sites().await;
    // Local: the request file names the server by its key's thumbprint.
    let req = request(&s.local).await;
    let key = &req["public_key"];
    assert_eq!(
        req["server_id"].as_str().unwrap(),
        jws::thumbprint(key["x"].as_str().unwrap())
    );
    let local_jwks = s.local.get("/.well-known/jwks.json", ROOT_TOKEN).await;
    assert_eq!(local_jwks.body["keys"][0]["x"], key["x"]);

    // Cloud: 3 of the 5 seats leave the license at once.
    let d = s.delegate(&req, 3, 3600).await;
    assert_eq!(d.status, StatusCode::CREATED, "{:?}", d.body);
    assert_eq!(d.body["seats"], 3);
    assert_eq!(d.body["sequence"], 1);
    assert_eq!(d.body["server_id"], req["server_id"]);
    let usage = s.cloud_usage().await;
    assert_eq!(
        (usage["delegated"].as_u64(), usage["available"].as_u64()),
        (Some(3), Some(2))
    );
    let list = s
        .cloud
        .get(
            &format!("/v1/licenses/{}/delegations", s.lic.license_id),
            &s.lic.admin,
        )
        .await;
    assert_eq!(list.body["delegations"][0]["status"], "active");
    assert_eq!(list.body["delegations"][0]["site"], "plant-7");

    // Cloud users get only the 2 seats left.
    let cloud_user = s.cloud_user("ann").await;
    for i in 0..2 {
        let o = s
            .cloud
            .open(&cloud_user, &s.lic.license_id, "d", &format!("c{i}"))
            .await;
        assert_eq!(o.status, StatusCode::CREATED, "{:?}", o.body);
    }
    let full = s
        .cloud
        .open(&cloud_user, &s.lic.license_id, "d", "c2")
        .await;
    assert_eq!(full.code(), "no_seat_available");

    // Local: the import creates a 3-seat license with the delegated terms.
    let imp = s.import(&d.body).await;
    assert_eq!(imp.status, StatusCode::CREATED, "{:?}", imp.body);
    assert_eq!(imp.body["outcome"], "created");
    let local_lic = imp.body["license_id"].as_str().unwrap().to_owned();
    assert_eq!(local_lic, d.body["delegation_id"].as_str().unwrap());
    let l = s
        .local
        .get(&format!("/v1/licenses/{local_lic}"), &s.local_admin)
        .await;
    assert_eq!(l.status, StatusCode::OK, "{:?}", l.body);
    assert_eq!(
        (l.body["seats"].as_u64(), l.body["product"].as_str()),
        (Some(3), Some("cad"))
    );
    assert_eq!(l.body["delegation_expires_at"].as_str().unwrap(), at(3600));
    // The same file again changes nothing.
    let again = s.import(&d.body).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(again.body["outcome"], "unchanged");
    // A local admin cannot raise the delegated seats.
    let patch = s
        .local
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{local_lic}"),
            Some(&s.local_admin),
            Some(json!({"seats": 50})),
        )
        .await;
    assert_eq!(patch.status, StatusCode::CONFLICT, "{:?}", patch.body);

    // Apps use the local server with the same protocol: 3 seats, leases signed by its key.
    let bob = s.local_user("bob").await;
    let mut sessions = Vec::new();
    for i in 0..3 {
        let o = s.local.open(&bob, &local_lic, "d", &format!("i{i}")).await;
        assert_eq!(o.status, StatusCode::CREATED, "{:?}", o.body);
        let lease = o.body["lease"].as_str().unwrap();
        let local_key = jws::key_from_x(key["x"].as_str().unwrap()).unwrap();
        let claims: Value = jws::verify(lease, &local_key).unwrap();
        assert_eq!(claims["lic"], local_lic.as_str());
        sessions.push(o.id());
    }
    assert_eq!(
        s.local.open(&bob, &local_lic, "d", "i3").await.code(),
        "no_seat_available"
    );

    // Local: the return stops the license at once and answers the signed receipt.
    let receipt = s
        .local
        .post(
            &format!("/v1/delegations/{local_lic}/return"),
            ROOT_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(receipt.status, StatusCode::OK, "{:?}", receipt.body);
    let hb = s.local.heartbeat(&bob, &sessions[0]).await;
    assert_eq!(hb.status, StatusCode::GONE, "{:?}", hb.body);
    assert_eq!(hb.body["error"]["reason"], "delegation_returned");
    assert_eq!(
        s.local.open(&bob, &local_lic, "d", "i9").await.code(),
        "license_not_active"
    );
    // Asking again answers the same receipt; importing the delegation again is refused.
    let receipt2 = s
        .local
        .post(
            &format!("/v1/delegations/{local_lic}/return"),
            ROOT_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(receipt2.body["returned_at"], receipt.body["returned_at"]);
    assert_eq!(s.import(&d.body).await.code(), "delegation_returned");

    // Cloud: the receipt gives the 3 seats back; importing it twice counts once.
    let path = format!(
        "/v1/licenses/{}/delegations/{}/receipt",
        s.lic.license_id, local_lic
    );
    for _ in 0..2 {
        let r = s
            .cloud
            .post(
                &path,
                &s.lic.admin,
                json!({"receipt": receipt.body["receipt"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["status"], "returned");
    }
    let usage = s.cloud_usage().await;
    assert_eq!(
        (usage["delegated"].as_u64(), usage["available"].as_u64()),
        (Some(0), Some(3))
    );
    let o = s
        .cloud
        .open(&cloud_user, &s.lic.license_id, "d", "c2")
        .await;
    assert_eq!(o.status, StatusCode::CREATED, "{:?}", o.body);
    // A returned delegation cannot be renewed.
    let renew = s
        .cloud
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}/delegations/{local_lic}", s.lic.license_id),
            Some(&s.lic.admin),
            Some(json!({"seats": 2})),
        )
        .await;
    assert_eq!(renew.code(), "delegation_returned");
    // The cloud's audit log has each change of the delegation once (the receipt imported twice
    // counts once), and so do webhooks (`delegation.*`).
    let log = s
        .cloud
        .get(
            &format!(
                "/v1/audit?license_id={}&event=delegation_created,delegation_returned",
                s.lic.license_id
            ),
            &s.lic.admin,
        )
        .await;
    assert_eq!(log.status, StatusCode::OK, "{:?}", log.body);
    let kinds: Vec<(&str, &str)> = log.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert_eq!(kinds[0].0, "delegation_created");
    assert!(
        kinds[0]
            .1
            .starts_with(&format!("id={local_lic} delegated=3 ")),
        "{kinds:?}"
    );
    assert_eq!(kinds[1].0, "delegation_returned");
}

/// Flips one character of the JWS's payload.
fn tampered(file: &Value, field: &str) -> Value {
    let jws = file[field].as_str().unwrap();
    let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
    let mut payload: Vec<char> = parts[1].chars().collect();
    payload[10] = if payload[10] == 'A' { 'B' } else { 'A' };
    parts[1] = payload.into_iter().collect();
    let mut out = file.clone();
    out[field] = Value::String(parts.join("."));
    out
}

#[tokio::test]
async fn every_tampering_is_refused() {
    let s = sites().await;
    let req = request(&s.local).await;

    // A request whose content was altered does not verify on the cloud.
    let bad = s.delegate(&tampered(&req, "request"), 1, 3600).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.code(), "delegation_signature_invalid");

    // A flipped byte in the delegation.
    let d = s.delegate(&req, 1, 3600).await;
    assert_eq!(d.status, StatusCode::CREATED, "{:?}", d.body);
    let bad = s.import(&tampered(&d.body, "delegation")).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.code(), "delegation_signature_invalid");

    // Signed by another vendor's key: a second cloud delegating to this very server.
    let rogue = spawn_app().await;
    let rogue_lic = rogue.fixture(5, &[], json!({})).await;
    let forged = rogue
        .post(
            &format!("/v1/licenses/{}/delegations", rogue_lic.license_id),
            &rogue_lic.admin,
            json!({"request": req["request"], "seats": 1, "expires_at": at(3600)}),
        )
        .await;
    assert_eq!(forged.status, StatusCode::CREATED, "{:?}", forged.body);
    assert_eq!(
        s.import(&forged.body).await.code(),
        "delegation_signature_invalid"
    );

    // Bound to another local server's key.
    let other_site = local_site(&s.cloud).await;
    let other_req = request(&other_site).await;
    let theirs = s.delegate(&other_req, 1, 3600).await;
    let wrong = s.import(&theirs.body).await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong.code(), "delegation_wrong_server");

    // Not valid yet.
    let later = s
        .cloud
        .post(
            &format!("/v1/licenses/{}/delegations", s.lic.license_id),
            &s.lic.admin,
            json!({"request": req["request"], "seats": 1, "expires_at": at(7200), "not_before": at(600)}),
        )
        .await;
    assert_eq!(later.status, StatusCode::CREATED, "{:?}", later.body);
    let early = s.import(&later.body).await;
    assert_eq!(
        (early.status, early.code()),
        (StatusCode::CONFLICT, "delegation_not_yet_valid")
    );

    // An older sequence replayed after a renewal.
    assert_eq!(s.import(&d.body).await.status, StatusCode::CREATED);
    let renewed = s
        .cloud
        .call(
            Method::PATCH,
            &format!(
                "/v1/licenses/{}/delegations/{}",
                s.lic.license_id,
                d.body["delegation_id"].as_str().unwrap()
            ),
            Some(&s.lic.admin),
            Some(json!({"expires_at": at(7200)})),
        )
        .await;
    assert_eq!(renewed.body["sequence"], 2, "{:?}", renewed.body);
    assert_eq!(s.import(&renewed.body).await.body["outcome"], "renewed");
    let replay = s.import(&d.body).await;
    assert_eq!(
        (replay.status, replay.code()),
        (StatusCode::CONFLICT, "delegation_superseded")
    );

    // Expired: the local clock past its end.
    s.local.clock.advance_secs(7200);
    let expired = s.import(&renewed.body).await;
    assert_eq!(
        (expired.status, expired.code()),
        (StatusCode::CONFLICT, "delegation_expired")
    );

    // A receipt not signed by the delegation's server is refused by the cloud.
    let foreign = other_site
        .post("/v1/delegation-requests", ROOT_TOKEN, json!({"site": "x"}))
        .await;
    let path = format!(
        "/v1/licenses/{}/delegations/{}/receipt",
        s.lic.license_id,
        d.body["delegation_id"].as_str().unwrap()
    );
    let r = s
        .cloud
        .post(
            &path,
            &s.lic.admin,
            json!({"receipt": foreign.body["request"]}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "delegation_signature_invalid"
        )
    );
}

#[tokio::test]
async fn a_server_without_a_vendor_key_and_a_first_import_without_an_account_are_refused() {
    let s = sites().await;
    let d = s.delegate(&request(&s.local).await, 1, 3600).await;
    let no_account = s
        .local
        .post(
            "/v1/delegations",
            ROOT_TOKEN,
            json!({"delegation": d.body["delegation"]}),
        )
        .await;
    assert_eq!(
        no_account.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        no_account.body
    );
    // The cloud itself trusts no vendor key.
    let on_cloud = s
        .cloud
        .post(
            "/v1/delegations",
            ROOT_TOKEN,
            json!({"delegation": d.body["delegation"], "account_id": s.lic.account_id}),
        )
        .await;
    assert_eq!(on_cloud.code(), "delegation_signature_invalid");
    // More seats than the license has, or than are free.
    let req = request(&s.local).await;
    assert_eq!(
        s.delegate(&req, 9, 3600).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let busy = s.delegate(&req, 5, 3600).await;
    assert_eq!(
        (busy.status, busy.code()),
        (StatusCode::CONFLICT, "not_enough_free_seats")
    );
    // An end in the past.
    assert_eq!(
        s.delegate(&req, 1, -10).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // A delegation the license does not have: 404 for its renewal, receipt, report and file.
    let base = format!(
        "/v1/licenses/{}/delegations/no-such-delegation",
        s.lic.license_id
    );
    let renew = s
        .cloud
        .call(
            Method::PATCH,
            &base,
            Some(&s.lic.admin),
            Some(json!({"seats": 1})),
        )
        .await;
    assert_eq!(renew.status, StatusCode::NOT_FOUND, "{:?}", renew.body);
    assert_eq!(
        s.cloud.get(&base, &s.lic.admin).await.status,
        StatusCode::NOT_FOUND
    );
    for (tail, field) in [("receipt", "receipt"), ("reports", "report")] {
        let a = s
            .cloud
            .post(
                &format!("{base}/{tail}"),
                &s.lic.admin,
                json!({field: "a.b.c"}),
            )
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{tail}: {:?}", a.body);
    }
    // A delegation cannot outlive its license.
    let ending = s
        .cloud
        .create_license(
            &s.lic.admin,
            json!({"account_id": s.lic.account_id, "product": "cad", "seats": 5,
                   "model": "concurrent_sessions", "expires_at": at(600)}),
        )
        .await;
    let long = s
        .cloud
        .post(
            &format!("/v1/licenses/{ending}/delegations"),
            &s.lic.admin,
            json!({"request": req["request"], "seats": 1, "expires_at": at(3600)}),
        )
        .await;
    assert_eq!(
        long.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        long.body
    );
    // A renewal that changes nothing is refused.
    let did = d.body["delegation_id"].as_str().unwrap();
    let empty = s
        .cloud
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}/delegations/{did}", s.lic.license_id),
            Some(&s.lic.admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    // A site name is needed.
    let no_site = s
        .local
        .post("/v1/delegation-requests", ROOT_TOKEN, json!({"site": "  "}))
        .await;
    assert_eq!(no_site.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn expiry_ends_local_sessions_and_gives_the_seats_back_at_the_same_instant() {
    let s = sites().await;
    let d = s.delegate(&request(&s.local).await, 4, 600).await;
    let imp = s.import(&d.body).await;
    let local_lic = imp.body["license_id"].as_str().unwrap().to_owned();
    let bob = s.local_user("bob").await;
    let o = s.local.open(&bob, &local_lic, "d", "i").await;
    assert_eq!(o.status, StatusCode::CREATED, "{:?}", o.body);
    // No lease outlives its delegation.
    assert!(o.body["expires_at"].as_str().unwrap() <= at(600).as_str());

    // One second before the end: the cloud still has 1 seat, the local session lives.
    s.cloud.clock.advance_secs(599);
    s.local.advance(599).await;
    assert_eq!(s.cloud_usage().await["available"], 1);
    assert_eq!(
        s.local.heartbeat(&bob, &o.id()).await.status,
        StatusCode::OK
    );

    // At the end: both sides at once, with no call between them.
    s.cloud.clock.advance_secs(1);
    s.local.advance(1).await;
    let usage = s.cloud_usage().await;
    assert_eq!(
        (usage["delegated"].as_u64(), usage["available"].as_u64()),
        (Some(0), Some(5))
    );
    let hb = s.local.heartbeat(&bob, &o.id()).await;
    assert_eq!(hb.status, StatusCode::GONE);
    assert_eq!(hb.body["error"]["reason"], "delegation_expired");
    assert_eq!(
        s.local.open(&bob, &local_lic, "d", "j").await.code(),
        "license_not_active"
    );
    let list = s
        .cloud
        .get(
            &format!("/v1/licenses/{}/delegations", s.lic.license_id),
            &s.lic.admin,
        )
        .await;
    assert_eq!(list.body["delegations"][0]["status"], "expired");
    // An expired delegation is not renewed (a new one is made instead).
    let renew = s
        .cloud
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}/delegations/{local_lic}", s.lic.license_id),
            Some(&s.lic.admin),
            Some(json!({"expires_at": at(7200)})),
        )
        .await;
    assert_eq!(
        (renew.status, renew.code()),
        (StatusCode::CONFLICT, "delegation_expired")
    );
    let ann = s.cloud_user("ann").await;
    for i in 0..5 {
        let o = s
            .cloud
            .open(&ann, &s.lic.license_id, "d", &format!("c{i}"))
            .await;
        assert_eq!(o.status, StatusCode::CREATED, "{:?}", o.body);
    }
}

#[tokio::test]
async fn a_renewal_changes_the_local_license_without_ending_live_sessions() {
    let s = sites().await;
    let d = s.delegate(&request(&s.local).await, 3, 600).await;
    let local_lic = s.import(&d.body).await.body["license_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob = s.local_user("bob").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let o = s.local.open(&bob, &local_lic, "d", &format!("i{i}")).await;
        assert_eq!(o.status, StatusCode::CREATED, "{:?}", o.body);
        ids.push(o.id());
    }
    // Fewer seats and a later end: the cloud gets a seat back at once.
    let renew_path = format!(
        "/v1/licenses/{}/delegations/{}",
        s.lic.license_id,
        d.body["delegation_id"].as_str().unwrap()
    );
    let renewed = s
        .cloud
        .call(
            Method::PATCH,
            &renew_path,
            Some(&s.lic.admin),
            Some(json!({"seats": 2, "expires_at": at(7200)})),
        )
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{:?}", renewed.body);
    assert_eq!(s.cloud_usage().await["available"], 3);
    let imp = s.import(&renewed.body).await;
    assert_eq!(
        (imp.status, imp.body["outcome"].as_str()),
        (StatusCode::OK, Some("renewed"))
    );

    // The three live sessions run on; a fourth is refused until under the new limit.
    for id in &ids {
        assert_eq!(s.local.heartbeat(&bob, id).await.status, StatusCode::OK);
    }
    assert_eq!(
        s.local.open(&bob, &local_lic, "d", "x").await.code(),
        "no_seat_available"
    );
    for id in &ids[..2] {
        let c = s
            .local
            .call(
                Method::DELETE,
                &format!("/v1/sessions/{id}"),
                Some(&bob),
                None,
            )
            .await;
        assert_eq!(c.status, StatusCode::NO_CONTENT);
    }
    assert_eq!(
        s.local.open(&bob, &local_lic, "d", "x").await.status,
        StatusCode::CREATED
    );

    // Past the first end, the renewal's end holds.
    s.local.advance(900).await;
    assert_eq!(
        s.local.heartbeat(&bob, &ids[2]).await.status,
        StatusCode::OK
    );
    // More seats than the cloud has free are refused: 2 delegated, 2 taken, 1 free.
    let ann = s.cloud_user("ann").await;
    for i in 0..2 {
        let o = s
            .cloud
            .open(&ann, &s.lic.license_id, "d", &format!("c{i}"))
            .await;
        assert_eq!(o.status, StatusCode::CREATED, "{:?}", o.body);
    }
    let more = s
        .cloud
        .call(
            Method::PATCH,
            &renew_path,
            Some(&s.lic.admin),
            Some(json!({"seats": 4})),
        )
        .await;
    assert_eq!(more.code(), "not_enough_free_seats");
}

#[tokio::test]
async fn delegations_and_opens_racing_never_over_allocate() {
    let s = sites().await;
    let req = request(&s.local).await;
    let ann = s.cloud_user("ann").await;
    let lic = s.lic.license_id.clone();
    // 30 opens and 3 delegations of 2 seats race for 5 seats.
    let opens = (0..30).map(|i| {
        let cloud = &s.cloud;
        let ann = ann.clone();
        let lic = lic.clone();
        async move { cloud.open(&ann, &lic, "d", &format!("r{i}")).await.status }
    });
    let delegations = (0..3).map(|_| s.delegate(&req, 2, 3600));
    let (opened, delegated) = tokio::join!(
        futures_util::future::join_all(opens),
        futures_util::future::join_all(delegations)
    );
    let opened = opened.iter().filter(|s| **s == StatusCode::CREATED).count() as u64;
    for d in &delegated {
        assert!(
            d.status == StatusCode::CREATED || d.code() == "not_enough_free_seats",
            "{:?}",
            d.body
        );
    }
    let delegated: u64 = delegated
        .iter()
        .filter(|d| d.status == StatusCode::CREATED)
        .map(|_| 2)
        .sum();
    assert!(
        opened + delegated <= 5,
        "{opened} opened + {delegated} delegated > 5 seats"
    );
    let usage = s.cloud_usage().await;
    assert_eq!(usage["in_use"].as_u64(), Some(opened));
    assert_eq!(usage["delegated"].as_u64(), Some(delegated));
    // Every seat is used by one or the other: a refusal was only ever for want of seats.
    assert!(opened + delegated >= 4, "{opened} + {delegated}");
}

#[tokio::test]
async fn delegation_routes_are_tenant_isolated_and_local_ones_root_only() {
    let s = sites().await;
    let d = s.delegate(&request(&s.local).await, 1, 3600).await;
    let did = d.body["delegation_id"].as_str().unwrap().to_owned();
    let (_, intruder) = s.cloud.create_account("Intruder").await;
    let base = format!("/v1/licenses/{}/delegations", s.lic.license_id);
    let req = request(&s.local).await;
    let answers = [
        s.cloud.get(&base, &intruder).await,
        s.cloud
            .post(
                &base,
                &intruder,
                json!({"request": req["request"], "seats": 1, "expires_at": at(3600)}),
            )
            .await,
        s.cloud
            .call(
                Method::PATCH,
                &format!("{base}/{did}"),
                Some(&intruder),
                Some(json!({"seats": 1})),
            )
            .await,
        s.cloud
            .post(
                &format!("{base}/{did}/receipt"),
                &intruder,
                json!({"receipt": "a.b.c"}),
            )
            .await,
    ];
    for a in answers {
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{:?}", a.body);
    }
    assert_eq!(s.cloud_usage().await["delegated"], 1);
    // The local routes are the local operator's (root), not a tenant's.
    let local_answers = [
        s.local
            .post(
                "/v1/delegation-requests",
                &s.local_admin,
                json!({"site": "x"}),
            )
            .await,
        s.local
            .post(
                "/v1/delegations",
                &s.local_admin,
                json!({"delegation": d.body["delegation"], "account_id": s.local_account}),
            )
            .await,
        s.local
            .post(
                &format!("/v1/delegations/{did}/return"),
                &s.local_admin,
                json!({}),
            )
            .await,
    ];
    for a in local_answers {
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{:?}", a.body);
    }
}

#[tokio::test]
async fn the_local_server_warns_ahead_of_the_end_in_the_license_and_metrics() {
    let s = sites().await;
    let six_days = 6 * 24 * 3600;
    let d = s.delegate(&request(&s.local).await, 1, six_days).await;
    let imp = s.import(&d.body).await;
    let local_lic = imp.body["license_id"].as_str().unwrap().to_owned();
    let l = s
        .local
        .get(&format!("/v1/licenses/{local_lic}"), &s.local_admin)
        .await;
    assert_eq!(l.body["delegation_id"], local_lic.as_str());
    assert_eq!(
        l.body["delegation_expires_at"].as_str().unwrap(),
        at(six_days)
    );
    let metrics = s.local.get_text("/metrics", ROOT_TOKEN).await;
    assert!(
        metrics.contains(&format!(
            "leasehold_delegation_seconds_left{{license=\"{local_lic}\"}} {six_days}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("leasehold_delegations_expiring_soon 1"),
        "{metrics}"
    );
    // A renewal past 7 days: no longer expiring soon.
    let renewed = s
        .cloud
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}/delegations/{local_lic}", s.lic.license_id),
            Some(&s.lic.admin),
            Some(json!({"expires_at": at(30 * 24 * 3600)})),
        )
        .await;
    assert_eq!(s.import(&renewed.body).await.body["outcome"], "renewed");
    let metrics = s.local.get_text("/metrics", ROOT_TOKEN).await;
    assert!(
        metrics.contains("leasehold_delegations_expiring_soon 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn usage_reports_go_back_by_file_and_count_once() {
    let s = sites().await;
    let d = s.delegate(&request(&s.local).await, 2, 24 * 3600).await;
    let did = d.body["delegation_id"].as_str().unwrap().to_owned();
    s.import(&d.body).await;
    let bob = s.local_user("bob").await;
    // First hour: two opens, one refusal, one end.
    let a = s.local.open(&bob, &did, "d", "a").await;
    s.local.open(&bob, &did, "d", "b").await;
    assert_eq!(
        s.local.open(&bob, &did, "d", "c").await.code(),
        "no_seat_available"
    );
    let c = s
        .local
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", a.id()),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(c.status, StatusCode::NO_CONTENT);
    s.local.advance(3700).await;
    s.cloud.clock.advance_secs(3700);

    let first = s
        .local
        .get(&format!("/v1/delegations/{did}/report"), ROOT_TOKEN)
        .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.body["sequence"], 1);
    let h0 = &first.body["hours"][0];
    assert_eq!(
        (
            h0["opened"].as_u64(),
            h0["peak"].as_u64(),
            h0["denials"].as_u64()
        ),
        (Some(2), Some(2), Some(1))
    );
    assert_eq!(
        first.body["hours"][1]["low"], 0,
        "{:?}",
        first.body["hours"]
    );

    let path = format!(
        "/v1/licenses/{}/delegations/{did}/reports",
        s.lic.license_id
    );
    let import = |report: &Value| {
        s.cloud
            .post(&path, &s.lic.admin, json!({"report": report["report"]}))
    };
    let kept = import(&first.body).await;
    assert_eq!(kept.status, StatusCode::OK, "{:?}", kept.body);
    assert_eq!(kept.body["kept"], true);
    assert_eq!(
        (
            kept.body["site"]["opened"].as_u64(),
            kept.body["site"]["peak"].as_u64()
        ),
        (Some(2), Some(2))
    );
    // The same report twice counts once.
    let again = import(&first.body).await;
    assert_eq!(again.body["kept"], false);
    assert_eq!(again.body["site"]["opened"], 2);

    // A newer report with one more open; then the older one again changes nothing.
    s.local.open(&bob, &did, "d", "e").await;
    let second = s
        .local
        .get(&format!("/v1/delegations/{did}/report"), ROOT_TOKEN)
        .await;
    assert_eq!(second.body["sequence"], 2);
    assert_eq!(import(&second.body).await.body["site"]["opened"], 3);
    let older = import(&first.body).await;
    assert_eq!(
        (
            older.body["kept"].as_bool(),
            older.body["site"]["opened"].as_u64()
        ),
        (Some(false), Some(3))
    );
    assert_eq!(older.body["site"]["report_sequence"], 2);
    assert_eq!(older.body["hours"][0]["opened"], 2);

    // The cloud's usage for the license shows the site.
    let usage = s
        .cloud
        .get(
            &format!("/v1/licenses/{}/usage", s.lic.license_id),
            &s.lic.admin,
        )
        .await;
    let site = &usage.body["sites"][0];
    assert_eq!(
        (
            site["site"].as_str(),
            site["opened"].as_u64(),
            site["seats"].as_u64()
        ),
        (Some("plant-7"), Some(3), Some(2))
    );

    // A report signed by another server is refused; the route is the license's admins'.
    let other = local_site(&s.cloud).await;
    let forged = other
        .post("/v1/delegation-requests", ROOT_TOKEN, json!({"site": "x"}))
        .await;
    let bad = s
        .cloud
        .post(
            &path,
            &s.lic.admin,
            json!({"report": forged.body["request"]}),
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "delegation_signature_invalid"
        )
    );
    let (_, intruder) = s.cloud.create_account("Intruder").await;
    let hidden = s
        .cloud
        .post(&path, &intruder, json!({"report": second.body["report"]}))
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    // Signed by the right server but not a receipt: a report offered as one returns nothing.
    let receipt_path = format!(
        "/v1/licenses/{}/delegations/{did}/receipt",
        s.lic.license_id
    );
    let misfiled = s
        .cloud
        .post(
            &receipt_path,
            &s.lic.admin,
            json!({"receipt": second.body["report"]}),
        )
        .await;
    assert_eq!(
        (misfiled.status, misfiled.code()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "delegation_signature_invalid"
        )
    );
    assert!(
        misfiled.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("the file is not a receipt")),
        "{}",
        misfiled.body
    );
    let still = s
        .cloud
        .get(
            &format!("/v1/licenses/{}/delegations", s.lic.license_id),
            &s.lic.admin,
        )
        .await;
    assert_eq!(
        still.body["delegations"][0]["status"], "active",
        "{}",
        still.body
    );
    let not_root = s
        .local
        .get(&format!("/v1/delegations/{did}/report"), &s.local_admin)
        .await;
    assert_eq!(not_root.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_online_mode_fetches_renewals_and_pushes_reports_and_files_still_count_once() {
    let cloud = spawn_app().await;
    let lic = cloud.fixture(5, &[], json!({})).await;
    let jwks = cloud.get("/.well-known/jwks.json", ROOT_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vendor-jwks.json");
    std::fs::write(&path, jwks.body.to_string()).unwrap();
    let (url, token) = (cloud.url.clone(), lic.admin.clone());
    let local = spawn_app_configured(dir, move |c| {
        c.database_url = None;
        c.vendor_jwks = Some(path);
        c.upstream = Some(url);
        c.upstream_token = Some(token);
        c.upstream_interval = std::time::Duration::from_millis(100);
    })
    .await;
    let (local_account, local_admin) = local.create_account("Plant 7").await;
    let mut s = Sites {
        cloud,
        local,
        lic,
        local_account,
        local_admin,
    };
    // The first import is a file, as always.
    let d = s.delegate(&request(&s.local).await, 3, 3600).await;
    let did = d.body["delegation_id"].as_str().unwrap().to_owned();
    assert_eq!(s.import(&d.body).await.status, StatusCode::CREATED);
    let bob = s.local_user("bob").await;
    assert_eq!(
        s.local.open(&bob, &did, "d", "a").await.status,
        StatusCode::CREATED
    );

    // A renewal on the cloud reaches the local license by itself.
    let renewed = s
        .cloud
        .call(
            Method::PATCH,
            &format!("/v1/licenses/{}/delegations/{did}", s.lic.license_id),
            Some(&s.lic.admin),
            Some(json!({"seats": 2})),
        )
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{:?}", renewed.body);
    let mut seats = 0;
    for _ in 0..100 {
        let l = s
            .local
            .get(&format!("/v1/licenses/{did}"), &s.local_admin)
            .await;
        seats = l.body["seats"].as_u64().unwrap();
        if seats == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seats, 2);

    // Reports reach the cloud by themselves; a report carried by file that is older than one
    // the sync pushed changes nothing.
    let by_file = s
        .local
        .get(&format!("/v1/delegations/{did}/report"), ROOT_TOKEN)
        .await;
    let file_sequence = by_file.body["sequence"].as_u64().unwrap();
    let mut site = Value::Null;
    for _ in 0..100 {
        let u = s
            .cloud
            .get(
                &format!("/v1/licenses/{}/usage", s.lic.license_id),
                &s.lic.admin,
            )
            .await;
        site = u.body["sites"][0].clone();
        if site["report_sequence"].as_u64().unwrap_or(0) > file_sequence {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        site["report_sequence"].as_u64().unwrap() > file_sequence,
        "{site}"
    );
    assert_eq!(site["opened"], 1);
    let late = s
        .cloud
        .post(
            &format!(
                "/v1/licenses/{}/delegations/{did}/reports",
                s.lic.license_id
            ),
            &s.lic.admin,
            json!({"report": by_file.body["report"]}),
        )
        .await;
    assert_eq!(late.body["kept"], false, "{:?}", late.body);
    assert_eq!(late.body["site"]["opened"], 1);

    // The cloud gone: the local server serves on, and files still work.
    s.cloud.stop().await;
    assert_eq!(
        s.local.open(&bob, &did, "d", "b").await.status,
        StatusCode::CREATED
    );
    let offline = s
        .local
        .get(&format!("/v1/delegations/{did}/report"), ROOT_TOKEN)
        .await;
    assert_eq!(offline.status, StatusCode::OK);
    assert!(offline.body["sequence"].as_u64().unwrap() > file_sequence);
}

/// Takes slot `n` of a `registered_users` (a user activated) or `node_locked` (a device
/// activated) license on the cloud.
async fn take_slot(s: &Sites, model: &str, lic: &str, n: u32) -> Answer {
    if model == "registered_users" {
        s.cloud
            .call(
                Method::PUT,
                &format!("/v1/accounts/{}/users/u{n}", s.lic.account_id),
                Some(&s.lic.admin),
                Some(json!({"kind": "interactive"})),
            )
            .await;
        s.cloud
            .call(
                Method::PUT,
                &format!("/v1/licenses/{lic}/users/u{n}"),
                Some(&s.lic.admin),
                Some(json!({"active": true})),
            )
            .await
    } else {
        s.cloud
            .post(
                &format!("/v1/licenses/{lic}/devices"),
                &s.lic.admin,
                json!({"fingerprint": format!("fp-{n}")}),
            )
            .await
    }
}

#[tokio::test]
async fn registered_users_and_node_locked_licenses_delegate_their_free_slots() {
    let s = sites().await;
    let req = request(&s.local).await;
    for (round, model) in ["registered_users", "node_locked"].into_iter().enumerate() {
        // Arrange: 5 slots, 3 taken on the cloud (active users / activated devices).
        let start = 3600 * round as i64;
        let lic = s
            .cloud
            .create_license(
                &s.lic.admin,
                json!({"account_id": s.lic.account_id, "product": "cad", "seats": 5,
                       "model": model}),
            )
            .await;
        for n in 0..3 {
            let a = take_slot(&s, model, &lic, n).await;
            assert!(a.status.is_success(), "{model}: {:?}", a.body);
        }
        let path = format!("/v1/licenses/{lic}/delegations");
        let ask = |seats: u32| json!({"request": req["request"], "seats": seats, "expires_at": at(start + 3600)});

        // Act / Assert: 3 do not fit in the 2 free slots; 2 do, and the cloud is full.
        let too_many = s.cloud.post(&path, &s.lic.admin, ask(3)).await;
        assert_eq!(
            too_many.code(),
            "not_enough_free_seats",
            "{model}: {:?}",
            too_many.body
        );
        let d = s.cloud.post(&path, &s.lic.admin, ask(2)).await;
        assert_eq!(d.status, StatusCode::CREATED, "{model}: {:?}", d.body);
        let full = take_slot(&s, model, &lic, 3).await;
        let code = if model == "registered_users" {
            "active_users_exhausted"
        } else {
            "activations_exhausted"
        };
        assert_eq!(full.code(), code, "{model}: {:?}", full.body);
        // The local server gets a license of the same model with the 2 slots.
        let imp = s.import(&d.body).await;
        assert_eq!(imp.status, StatusCode::CREATED, "{model}: {:?}", imp.body);
        let local_lic = d.body["delegation_id"].as_str().unwrap();
        let l = s
            .local
            .get(&format!("/v1/licenses/{local_lic}"), &s.local_admin)
            .await;
        assert_eq!(l.status, StatusCode::OK, "{model}: {:?}", l.body);
        assert_eq!(
            (l.body["model"].as_str(), l.body["seats"].as_u64()),
            (Some(model), Some(2))
        );
        // At the delegation's end the cloud has its 5 slots again, by itself.
        s.cloud.advance(3600).await;
        s.local.advance(3600).await;
        let back = take_slot(&s, model, &lic, 3).await;
        assert!(back.status.is_success(), "{model}: {:?}", back.body);
    }
}
