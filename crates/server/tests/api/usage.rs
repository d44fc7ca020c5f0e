//! Usage series, `GET /v1/licenses/{id}/usage` and `GET /v1/accounts/{id}/usage`: a known
//! sequence of opens, closes, a denial and a queue wait played on the manual clock, checked
//! bucket by bucket; an account's series is the high water of the sum; CSV; the refusals;
//! tenant isolation. Both stores (`LEASEHOLD_TEST_STORE=postgres`).

use std::sync::Arc;
use std::time::Duration;

use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

/// `secs` after the tests' start, in RFC 3339.
fn at(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(TEST_START.millis() / 1000 + secs)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn close(app: &TestApp, token: &str, session: &str) {
    let a = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{session}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);
}

async fn open_at(app: &TestApp, secs: i64, token: &str, license: &str, instance: &str) -> String {
    app.clock.set(TEST_START.plus_secs(secs as u64));
    let a = app.open(token, license, "pc", instance).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    a.id()
}

async fn close_at(app: &TestApp, secs: i64, token: &str, session: &str) {
    app.clock.set(TEST_START.plus_secs(secs as u64));
    close(app, token, session).await;
}

/// Waits until the license's audit log holds `n` events (a refusal's event is written behind
/// its answer), so that the series can be checked exactly.
async fn logged(app: &TestApp, admin: &str, license: &str, n: usize) {
    app.audit_when(admin, license, |e| e.len() >= n).await;
}

fn buckets(a: &Answer) -> Vec<Value> {
    a.body["buckets"].as_array().cloned().unwrap()
}

/// (high, low, average, seats, opens, denials, queued, median wait, distinct users)
fn figures(b: &Value) -> (u64, u64, f64, u64, u64, u64, u64, Option<f64>, u64) {
    (
        b["high_water"].as_u64().unwrap(),
        b["low_water"].as_u64().unwrap(),
        (b["average_in_use"].as_f64().unwrap() * 1e6).round() / 1e6,
        b["seats"].as_u64().unwrap(),
        b["opens"].as_u64().unwrap(),
        b["denials"].as_u64().unwrap(),
        b["queued"].as_u64().unwrap(),
        b["queue_wait_median_secs"].as_f64(),
        b["distinct_users"].as_u64().unwrap(),
    )
}

fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_known_sequence_gives_every_bucket_its_exact_high_low_average_denials_and_waits() {
    // Arrange: 2 seats, queueing; four users.
    let app = Arc::new(spawn_app().await);
    let f = app
        .fixture(
            2,
            &[],
            json!({"on_full": "queue", "max_queue_wait_secs": 600}),
        )
        .await;
    let lid = f.license_id.clone();
    let mut tokens = Vec::new();
    for u in ["bob", "carol", "dave", "erin"] {
        tokens.push(app.user_token(&f.account_id, &f.admin, u).await);
    }
    let [bob, carol, dave, erin] = <[String; 4]>::try_from(tokens).unwrap();

    // Act: minute 0: bob 10–40 s, carol from 20 s (full), dave refused at 30 s.
    let a = open_at(&app, 10, &bob, &lid, "a").await;
    let b = open_at(&app, 20, &carol, &lid, "b").await;
    app.clock.set(TEST_START.plus_secs(30));
    let refused = app.open(&dave, &lid, "pc", "refused").await;
    assert_eq!(refused.code(), "no_seat_available");
    close_at(&app, 40, &bob, &a).await;
    // Minute 1: dave at 70 s (full again); erin waits from 75 s until carol leaves at 90 s.
    let c = open_at(&app, 70, &dave, &lid, "c").await;
    app.clock.set(TEST_START.plus_secs(75));
    let waiter = {
        let (app, erin, lid) = (app.clone(), erin.clone(), lid.clone());
        tokio::spawn(async move {
            app.post(
                "/v1/sessions",
                &erin,
                json!({"license_id": lid, "device_id": "pc", "instance_id": "e", "wait_secs": 120}),
            )
            .await
        })
    };
    let mut waiting = false;
    for _ in 0..500 {
        let q = app
            .get(&format!("/v1/licenses/{lid}/queue"), &f.admin)
            .await;
        if q.body["length"] == json!(1) {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(waiting, "erin never queued");
    close_at(&app, 90, &carol, &b).await;
    let granted = waiter.await.unwrap();
    assert_eq!(granted.status, StatusCode::CREATED, "{:?}", granted.body);
    // Minute 2: dave leaves at 150 s; minute 3: erin at 200 s; now is 210 s.
    close_at(&app, 150, &dave, &c).await;
    close_at(&app, 200, &erin, &granted.id()).await;
    app.clock.set(TEST_START.plus_secs(210));
    // created, 5 opens, 1 denial, 1 queued, 5 ends
    logged(&app, &f.admin, &lid, 1 + 4 + 1 + 1 + 4).await;
    let path = format!("/v1/licenses/{lid}/usage?from={}&to={}", at(0), at(240));
    let by_minute = app.get(&format!("{path}&bucket=minute"), &f.admin).await;
    let by_hour = app.get(&format!("{path}&bucket=hour"), &f.admin).await;

    // Assert: every minute, exactly.
    assert_eq!(by_minute.status, StatusCode::OK, "{:?}", by_minute.body);
    let got: Vec<_> = buckets(&by_minute).iter().map(figures).collect();
    assert_eq!(
        got,
        [
            // 0: 1 for 10 s, 2 for 20 s, 1 for 20 s.
            (2, 0, round(70.0 / 60.0), 2, 2, 1, 0, None, 2),
            // 1: 1 until 70 s, then 2 (carol's end and erin's grant at 90 s touch 1).
            (2, 1, round(110.0 / 60.0), 2, 2, 0, 1, Some(15.0), 2),
            // 2: 2 until 150 s, then 1.
            (2, 1, 1.5, 2, 0, 0, 0, None, 0),
            // 3: 1 until 200 s, 0 until now (30 s of the minute have passed).
            (1, 0, round(20.0 / 30.0), 2, 0, 0, 0, None, 0),
        ]
    );
    let m1 = &buckets(&by_minute)[1];
    assert_eq!(m1["queue_wait_max_secs"], json!(15.0));
    assert_eq!(m1["start"], json!(at(60)));
    assert_eq!(m1["end"], json!(at(120)));
    let body = &by_minute.body;
    assert_eq!(
        (body["high_water"].clone(), body["low_water"].clone()),
        (json!(2), json!(0))
    );
    assert_eq!(body["denials"], json!(1));
    assert_eq!(body["from"], json!(at(0)));
    assert_eq!(body["since"], json!(at(0)));
    assert_eq!(body["bucket"], json!("minute"));
    assert_eq!(body["license_id"], json!(lid));
    assert_eq!(body["now"]["in_use"], json!(0));
    // Utilization: 0 in use for 20 s, 1 for 90 s, 2 for 100 s; full twice, 100 s in all.
    let u = &body["utilization"];
    assert_eq!(
        u["histogram"],
        json!([
            {"in_use": 0, "seconds": 20.0},
            {"in_use": 1, "seconds": 90.0},
            {"in_use": 2, "seconds": 100.0}
        ])
    );
    assert_eq!(u["full"], json!({"times": 2, "seconds": 100.0}));
    // 2027-01-15 is a Friday (4); the tests start at 08:00 UTC.
    let heat = u["heatmap"].as_array().unwrap();
    assert_eq!(heat.len(), 168);
    let hot: Vec<_> = heat
        .iter()
        .filter(|c| c["high_water"] != json!(0))
        .collect();
    assert_eq!(hot, [&json!({"weekday": 4, "hour": 8, "high_water": 2})]);
    // The hour holds the same events: one bucket, averaged over the 210 s that have passed.
    let hour = buckets(&by_hour);
    assert_eq!(hour.len(), 1);
    assert_eq!(
        figures(&hour[0]),
        (2, 0, round(290.0 / 210.0), 2, 4, 1, 1, Some(15.0), 4)
    );
    assert_eq!(hour[0]["overdraft_high_water"], json!(0));
}

#[tokio::test]
async fn the_time_before_a_license_exists_is_neither_full_nor_in_use() {
    // Arrange: 2 seats created 34 min 20 s into the hour; bob holds a seat for 10 s.
    let app = spawn_app().await;
    let born = 34 * 60 + 20;
    app.clock.set(TEST_START.plus_secs(born as u64));
    let f = app.fixture(2, &[], json!({})).await;
    let lid = f.license_id.clone();
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let s = open_at(&app, born + 5, &bob, &lid, "a").await;
    close_at(&app, born + 15, &bob, &s).await;
    app.clock.set(TEST_START.plus_secs(40 * 60));
    logged(&app, &f.admin, &lid, 3).await;

    // Act
    let range = format!("from={}&to={}&bucket=hour", at(0), at(3600));
    let license = app
        .get(&format!("/v1/licenses/{lid}/usage?{range}"), &f.admin)
        .await;
    let account = app
        .get(
            &format!("/v1/accounts/{}/usage?{range}", f.account_id),
            &f.admin,
        )
        .await;
    let by_minute = app
        .get(
            &format!(
                "/v1/licenses/{lid}/usage?from={}&to={}&bucket=minute",
                at(0),
                at(3600)
            ),
            &f.admin,
        )
        .await;

    // Assert: never full (the 34 min before the license were 0 of 0 seats, not full); the
    // histogram starts at the license's birth: 10 s at 1, the rest of the 40 min at 0; the
    // same by the minute, whose 34 minutes before the license show no seats.
    let minutes = buckets(&by_minute);
    assert_eq!(minutes.len(), 41, "{:?}", by_minute.body);
    assert!(minutes[..34].iter().all(|m| m["seats"] == json!(0)));
    assert_eq!(minutes[34]["seats"], json!(2));
    for a in [&license, &account, &by_minute] {
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        let u = &a.body["utilization"];
        assert_eq!(u["full"], json!({"times": 0, "seconds": 0.0}), "{u}");
        let pre = (40 * 60 - born - 10) as f64;
        assert_eq!(
            u["histogram"],
            json!([{"in_use": 0, "seconds": pre}, {"in_use": 1, "seconds": 10.0}])
        );
        assert_eq!(
            (a.body["high_water"].clone(), a.body["low_water"].clone()),
            (json!(1), json!(0))
        );
    }
}

#[tokio::test]
async fn an_account_series_is_the_high_water_of_the_sum_not_the_sum_of_high_waters() {
    // Arrange: one account, two licenses of one seat; bob on X for 5–15 s, on Y for 20–30 s.
    let app = spawn_app().await;
    let f = app.fixture(1, &[], json!({})).await;
    let y = app
        .create_license(
            &f.admin,
            json!({"account_id": f.account_id, "product": "cam", "model": "concurrent_sessions", "seats": 1}),
        )
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let s1 = open_at(&app, 5, &bob, &f.license_id, "x").await;
    close_at(&app, 15, &bob, &s1).await;
    let s2 = open_at(&app, 20, &bob, &y, "y").await;
    close_at(&app, 30, &bob, &s2).await;
    app.clock.set(TEST_START.plus_secs(60));

    // Act
    let q = format!("?from={}&to={}&bucket=minute", at(0), at(60));
    let account = app
        .get(&format!("/v1/accounts/{}/usage{q}", f.account_id), &f.admin)
        .await;
    let x = app
        .get(&format!("/v1/licenses/{}/usage{q}", f.license_id), &f.admin)
        .await;

    // Assert: each license reached 1 and so did the account (not 2); seats are summed.
    assert_eq!(account.status, StatusCode::OK, "{:?}", account.body);
    assert_eq!(account.body["account_id"], json!(f.account_id));
    assert_eq!(account.body["now"]["seats"], json!(2));
    let b = &buckets(&account)[0];
    assert_eq!(figures(b), (1, 0, round(20.0 / 60.0), 2, 2, 0, 0, None, 1));
    assert_eq!(buckets(&x)[0]["high_water"], json!(1));
    assert_eq!(account.body["high_water"], json!(1));
}

#[tokio::test]
async fn a_series_exports_as_csv_with_a_header_row_of_the_bucket_fields() {
    // Arrange
    let app = spawn_app().await;
    // (A day of inactivity allowed: the session stays for the 3 hours the clock jumps.)
    let f = app
        .fixture(3, &[], json!({"inactivity_timeout_secs": 86_400}))
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    open_at(&app, 30, &bob, &f.license_id, "a").await;
    app.clock.set(TEST_START.plus_secs(3 * 3600));
    let path = format!(
        "{}/v1/licenses/{}/usage?from={}&bucket=hour",
        app.url,
        f.license_id,
        at(0)
    );

    // Act: by parameter and by Accept.
    let by_param = app
        .http
        .get(format!("{path}&format=csv"))
        .bearer_auth(&f.admin)
        .send()
        .await
        .unwrap();
    let by_accept = app
        .http
        .get(&path)
        .bearer_auth(&f.admin)
        .header(header::ACCEPT, "text/csv")
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(by_param.status(), StatusCode::OK);
    assert_eq!(
        by_param.headers()[header::CONTENT_TYPE],
        "text/csv; charset=utf-8"
    );
    let text = by_param.text().await.unwrap();
    assert_eq!(text, by_accept.text().await.unwrap());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "start,end,high_water,low_water,average_in_use,seats,seats_max,opens,denials,queued,queue_wait_median_secs,queue_wait_max_secs,distinct_users,overdraft_high_water"
    );
    // Hours 0, 1, 2, and the hour holding now (3 h: none of it has passed; the state now).
    assert_eq!(lines.len(), 1 + 4);
    assert_eq!(
        lines[1],
        format!(
            "{},{},1,0,{},3,3,1,0,0,,,1,0",
            at(0),
            at(3600),
            3570.0 / 3600.0
        )
    );
    assert_eq!(
        lines[2],
        format!("{},{},1,1,1,3,3,0,0,0,,,0,0", at(3600), at(7200))
    );
    assert_eq!(
        lines[4],
        format!("{},{},1,1,1,3,3,0,0,0,,,0,0", at(3 * 3600), at(4 * 3600))
    );
}

#[tokio::test]
async fn absurd_usage_queries_are_refused_with_stable_codes() {
    let app = spawn_app().await;
    let f = app.fixture(1, &[], json!({})).await;
    let base = format!("/v1/licenses/{}/usage", f.license_id);
    let cases = [
        (
            "?bucket=week".to_owned(),
            StatusCode::BAD_REQUEST,
            "unknown_bucket",
        ),
        (
            format!("?from={}&to={}", at(60), at(0)),
            StatusCode::BAD_REQUEST,
            "invalid_usage_range",
        ),
        (
            format!("?from={}&to={}", at(0), at(0)),
            StatusCode::BAD_REQUEST,
            "invalid_usage_range",
        ),
        (
            "?from=yesterday".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_usage_range",
        ),
        // 10,081 minutes
        (
            format!("?from={}&to={}&bucket=minute", at(0), at(7 * 86_400 + 60)),
            StatusCode::BAD_REQUEST,
            "invalid_usage_range",
        ),
        (
            format!("?from={}&to={}&bucket=month", at(-6 * 366 * 86_400), at(0)),
            StatusCode::BAD_REQUEST,
            "invalid_usage_range",
        ),
        (
            "?format=xml".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "?period=1h".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ];
    for (query, status, code) in cases {
        for path in [base.clone(), format!("/v1/accounts/{}/usage", f.account_id)] {
            let a = app.get(&format!("{path}{query}"), &f.admin).await;
            assert_eq!(
                (a.status, a.code()),
                (status, code),
                "{path}{query}: {:?}",
                a.body
            );
        }
    }
    // The largest queries allowed: 10,000 minutes; a year of hours.
    for query in [
        format!("?from={}&to={}&bucket=minute", at(0), at(10_000 * 60)),
        format!("?from={}&to={}&bucket=hour", at(-365 * 86_400), at(0)),
    ] {
        let a = app.get(&format!("{base}{query}"), &f.admin).await;
        assert_eq!(a.status, StatusCode::OK, "{query}: {:?}", a.body);
    }
}

#[tokio::test]
async fn each_tenant_reads_only_its_own_usage() {
    // Arrange: two tenants.
    let app = spawn_app().await;
    let mine = app.fixture(1, &[], json!({})).await;
    let theirs = app.fixture(1, &[], json!({})).await;
    let bob = app.user_token(&mine.account_id, &mine.admin, "bob").await;
    let license = format!("/v1/licenses/{}/usage", mine.license_id);
    let account = format!("/v1/accounts/{}/usage", mine.account_id);

    // Act / Assert: another tenant's admin: 404 for the license, 403 for the account; a user
    // token: 403; no token: 401; the own admin and root: 200.
    assert_eq!(
        app.get(&license, &theirs.admin).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&account, &theirs.admin).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.get(&license, &bob).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.get(&account, &bob).await.status, StatusCode::FORBIDDEN);
    for path in [&license, &account] {
        let anonymous = app.call(Method::GET, path, None, None).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        assert_eq!(app.get(path, &mine.admin).await.status, StatusCode::OK);
        assert_eq!(app.get(path, ROOT_TOKEN).await.status, StatusCode::OK);
    }
    let missing = app.get("/v1/accounts/nope/usage", ROOT_TOKEN).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opens_and_closes_racing_leave_the_true_high_water_and_the_final_count_in_use() {
    // Arrange: 5 seats, 40 users.
    let app = Arc::new(spawn_app().await);
    let f = app.fixture(5, &[], json!({})).await;
    let mut tokens = Vec::new();
    for i in 0..40 {
        tokens.push(
            app.user_token(&f.account_id, &f.admin, &format!("u{i}"))
                .await,
        );
    }
    app.clock.set(TEST_START.plus_secs(10));

    // Act: all 40 open at once (5 win and hold until every answer is in: the license is full);
    // then each runs 3 rounds of open and close; those of the first 3 users' last round stay.
    let open_all = tokens.iter().enumerate().map(|(i, t)| {
        let (app, t, lid) = (app.clone(), t.clone(), f.license_id.clone());
        async move { (i, app.open(&t, &lid, "pc", "first").await) }
    });
    let first = futures_util::future::join_all(open_all).await;
    let winners: Vec<_> = first
        .iter()
        .filter(|(_, a)| a.status == StatusCode::CREATED)
        .map(|(i, a)| (*i, a.id()))
        .collect();
    assert_eq!(winners.len(), 5);
    // The five hold their seats for a second (a state that held for no time is not a mark).
    app.clock.set(TEST_START.plus_secs(11));
    let (mut opens, mut denials) = (5u64, 35u64);
    let mut users: std::collections::HashSet<usize> = winners.iter().map(|(i, _)| *i).collect();
    for (i, id) in &winners {
        close(&app, &tokens[*i], id).await;
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in tokens.iter().enumerate() {
        let (app, t, lid) = (app.clone(), t.clone(), f.license_id.clone());
        set.spawn(async move {
            let (mut opened, mut refused) = (0u64, 0u64);
            for round in 0..3 {
                let a = app.open(&t, &lid, "pc", &format!("r{round}")).await;
                match a.status {
                    StatusCode::CREATED => {
                        opened += 1;
                        if !(i < 3 && round == 2) {
                            close(&app, &t, &a.id()).await;
                        }
                    }
                    StatusCode::CONFLICT => refused += 1,
                    other => panic!("{other}: {:?}", a.body),
                }
            }
            (i, opened, refused)
        });
    }
    while let Some(r) = set.join_next().await {
        let (i, o, d) = r.unwrap();
        opens += o;
        denials += d;
        if o > 0 {
            users.insert(i);
        }
    }
    let in_use = app.in_use(&f.admin, &f.license_id).await;
    // Every answer is in; the denials' events are written behind their answers.
    let expected_events = 1 + opens as usize * 2 - in_use as usize + denials as usize;
    logged(&app, &f.admin, &f.license_id, expected_events).await;
    app.clock.set(TEST_START.plus_secs(70));
    let series = app
        .get(
            &format!(
                "/v1/licenses/{}/usage?from={}&to={}&bucket=minute",
                f.license_id,
                at(0),
                at(120)
            ),
            &f.admin,
        )
        .await;

    // Assert: the race reached 5 and never more; the next minute holds what is left in use.
    assert_eq!(series.status, StatusCode::OK, "{:?}", series.body);
    let b = buckets(&series);
    assert_eq!(b[0]["high_water"], json!(5));
    assert_eq!(b[0]["opens"], json!(opens));
    assert_eq!(b[0]["denials"], json!(denials));
    assert_eq!(b[0]["distinct_users"], json!(users.len()));
    assert_eq!(b[1]["high_water"], json!(in_use));
    assert_eq!(b[1]["low_water"], json!(in_use));
    assert!(in_use <= 3, "{in_use}");
}
