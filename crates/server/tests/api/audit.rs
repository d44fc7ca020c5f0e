//! The account-wide audit log, `GET /v1/audit`: cursor pagination (every event once, also
//! while events are appended), each filter, the JSON lines and CSV exports, the refusals, and
//! tenant isolation.

use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

/// `n` sessions opened and closed by `token` on `license`: 2 events each.
async fn cycles(app: &TestApp, token: &str, license: &str, n: usize, tag: &str) {
    for i in 0..n {
        let opened = app
            .open(token, license, "laptop", &format!("{tag}-{i}"))
            .await;
        assert_eq!(opened.status, StatusCode::CREATED, "{:?}", opened.body);
        let closed = app
            .call(
                Method::DELETE,
                &format!("/v1/sessions/{}", opened.id()),
                Some(token),
                None,
            )
            .await;
        assert_eq!(closed.status, StatusCode::NO_CONTENT, "{:?}", closed.body);
    }
}

/// The events of one page (asserting a 200).
async fn page(app: &TestApp, token: &str, query: &str) -> Answer {
    let a = app.get(&format!("/v1/audit{query}"), token).await;
    assert_eq!(a.status, StatusCode::OK, "{query}: {:?}", a.body);
    a
}

fn events(a: &Answer) -> Vec<Value> {
    a.body["events"].as_array().cloned().unwrap()
}

/// Every page from `cursor` on (`limit` at a time) until `has_more` is false: the events and
/// the last cursor.
async fn walk(
    app: &TestApp,
    token: &str,
    filter: &str,
    limit: usize,
    mut cursor: Option<String>,
) -> (Vec<Value>, Option<String>) {
    let mut walked = Vec::new();
    loop {
        let mut query = format!("?limit={limit}{filter}");
        if let Some(c) = &cursor {
            query.push_str(&format!("&cursor={c}"));
        }
        let a = page(app, token, &query).await;
        let got = events(&a);
        assert!(
            got.len() <= limit,
            "{} events on a page of {limit}",
            got.len()
        );
        walked.extend(got);
        cursor = a.body["next_cursor"].as_str().map(str::to_owned).or(cursor);
        if !a.body["has_more"].as_bool().unwrap() {
            return (walked, cursor);
        }
    }
}

/// The whole log as one page.
async fn all(app: &TestApp, token: &str, filter: &str) -> Vec<Value> {
    let a = page(app, token, &format!("?limit=1000{filter}")).await;
    assert_eq!(a.body["has_more"], json!(false));
    events(&a)
}

/// `secs` after the tests' start, in RFC 3339.
fn at(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(TEST_START.millis() / 1000 + secs)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn paging_through_the_log_answers_every_event_once_in_order() {
    // Arrange: the license's creation, bob's creation and token, and 12 sessions opened and
    // closed.
    let app = spawn_app().await;
    let f = app.fixture(5, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    cycles(&app, &bob, &f.license_id, 12, "a").await;

    // Act: 5 events a page.
    let (walked, _) = walk(&app, &f.admin, "", 5, None).await;

    // Assert
    let every = all(&app, &f.admin, "").await;
    assert_eq!(every.len(), 27);
    assert_eq!(walked, every);
    assert_eq!(
        kinds(&every)[..5],
        [
            "license_created",
            "user_created",
            "token_issued",
            "opened",
            "ended"
        ]
    );
    let first = page(&app, &f.admin, "").await;
    assert_eq!(
        events(&first).len(),
        27,
        "the default limit (100) holds them all"
    );
    assert_eq!(first.body["has_more"], json!(false));
    let one = page(&app, &f.admin, "?limit=1").await;
    assert_eq!(events(&one), every[..1]);
    assert_eq!(one.body["has_more"], json!(true));
}

#[tokio::test]
async fn a_walk_while_events_are_appended_misses_none_and_repeats_none() {
    // Arrange
    let app = spawn_app().await;
    let f = app.fixture(50, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    cycles(&app, &bob, &f.license_id, 5, "before").await;

    // Act: walk 3 at a time while carol's sessions come and go, then read on from the last
    // cursor once she is done (a tail).
    let (appended, (mut walked, cursor)) = tokio::join!(
        cycles(&app, &carol, &f.license_id, 15, "during"),
        walk(&app, &f.admin, "", 3, None),
    );
    let () = appended;
    let (tail, _) = walk(&app, &f.admin, "", 3, cursor).await;
    walked.extend(tail);

    // Assert
    let every = all(&app, &f.admin, "").await;
    // created; bob's and carol's user and token; the sessions
    assert_eq!(every.len(), 1 + 4 + 10 + 30);
    assert_eq!(walked, every);
}

#[tokio::test]
async fn each_filter_narrows_the_log() {
    // Arrange: two licenses; bob on the first (one seat), carol refused on it, then on the
    // second; the clock moves 10 s between steps.
    let app = spawn_app().await;
    let f = app.fixture(1, &[], json!({})).await;
    let l1 = f.license_id.clone();
    let l2 = app
        .create_license(
            &f.admin,
            json!({"account_id": f.account_id, "product": "cam", "model": "concurrent_sessions", "seats": 3}),
        )
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    app.advance(10).await;
    let b = app.open(&bob, &l1, "laptop", "cad-1").await; // +10 s: opened
    assert_eq!(b.status, StatusCode::CREATED);
    app.advance(10).await;
    let refused = app.open(&carol, &l1, "desk", "cad-1").await; // +20 s: denied
    assert_eq!(refused.status, StatusCode::CONFLICT);
    app.advance(10).await;
    let c = app.open(&carol, &l2, "desk", "cam-1").await; // +30 s: opened
    assert_eq!(c.status, StatusCode::CREATED);
    app.advance(10).await;
    let closed = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", b.id()),
            Some(&bob),
            None,
        )
        .await; // +40 s: ended
    assert_eq!(closed.status, StatusCode::NO_CONTENT);

    // Act / Assert: by license.
    let on_l2 = all(&app, &f.admin, &format!("&license_id={l2}")).await;
    assert_eq!(kinds(&on_l2), ["license_created", "opened"]);
    assert!(on_l2.iter().all(|e| e["license_id"] == json!(l2)));
    // By user (the name folds like every username).
    let bobs = all(&app, &f.admin, "&username=BOB").await;
    assert_eq!(
        kinds(&bobs),
        ["user_created", "token_issued", "opened", "ended"]
    );
    assert!(bobs.iter().all(|e| e["username"] == json!("bob")));
    // By kind: repeated or as a comma list, the same.
    let repeated = all(&app, &f.admin, "&event=denied&event=ended").await;
    assert_eq!(kinds(&repeated), ["denied", "ended"]);
    assert_eq!(all(&app, &f.admin, "&event=ended,denied").await, repeated);
    assert_eq!(repeated[0]["detail"], json!("no_seat_available"));
    // By time: from is inclusive, to exclusive.
    let window = all(&app, &f.admin, &format!("&from={}&to={}", at(20), at(40))).await;
    assert_eq!(kinds(&window), ["denied", "opened"]);
    let since = all(&app, &f.admin, &format!("&from={}", at(30))).await;
    assert_eq!(kinds(&since), ["opened", "ended"]);
    let until = all(&app, &f.admin, &format!("&to={}", at(10))).await;
    assert_eq!(
        kinds(&until),
        [
            "license_created",
            "license_created",
            "user_created",
            "token_issued",
            "user_created",
            "token_issued"
        ]
    );
    // Together, and paged.
    let carols_on_l1 = all(&app, &f.admin, &format!("&license_id={l1}&username=carol")).await;
    assert_eq!(kinds(&carols_on_l1), ["denied"]);
    let (paged, _) = walk(&app, &f.admin, "&event=opened,ended", 1, None).await;
    assert_eq!(kinds(&paged), ["opened", "opened", "ended"]);
}

#[tokio::test]
async fn malformed_queries_are_refused_with_stable_codes() {
    let app = spawn_app().await;
    let f = app.fixture(1, &[], json!({})).await;
    let cases = [
        (
            "?event=opened,teleported",
            StatusCode::BAD_REQUEST,
            "unknown_event_kind",
        ),
        ("?event=", StatusCode::BAD_REQUEST, "unknown_event_kind"),
        ("?cursor=42", StatusCode::BAD_REQUEST, "invalid_cursor"),
        ("?cursor=YTEuLTE", StatusCode::BAD_REQUEST, "invalid_cursor"),
        (
            "?limit=0",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "?limit=1001",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "?limit=ten",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "?limit=5&limit=6",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "?colour=red",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "?from=yesterday",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "?from=2027-01-02T00:00:00Z&to=2027-01-01T00:00:00Z",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "?format=xml",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "?username=with%20space",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "?license_id=a%00b",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "?account_id=",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ];
    for (query, status, code) in cases {
        let a = app.get(&format!("/v1/audit{query}"), &f.admin).await;
        assert_eq!(
            (a.status, a.code()),
            (status, code),
            "{query}: {:?}",
            a.body
        );
    }
}

#[tokio::test]
async fn each_tenant_reads_only_its_own_log_and_root_reads_all() {
    // Arrange: two accounts with a license and a session each.
    let app = spawn_app().await;
    let a = app.fixture(2, &[], json!({})).await;
    let b = app.fixture(2, &[], json!({})).await;
    let ann = app.user_token(&a.account_id, &a.admin, "ann").await;
    let bea = app.user_token(&b.account_id, &b.admin, "bea").await;
    cycles(&app, &ann, &a.license_id, 1, "a").await;
    cycles(&app, &bea, &b.license_id, 2, "b").await;

    // Act / Assert: B's admin sees B's events only, whatever it asks for.
    let bs = all(&app, &b.admin, "").await;
    // created; bea's user and token; 2 sessions
    assert_eq!(bs.len(), 1 + 2 + 4);
    assert!(bs.iter().all(|e| e["account_id"] == json!(b.account_id)));
    assert!(
        all(&app, &b.admin, &format!("&license_id={}", a.license_id))
            .await
            .is_empty()
    );
    assert!(all(&app, &b.admin, "&username=ann").await.is_empty());
    let other = app
        .get(&format!("/v1/audit?account_id={}", a.account_id), &b.admin)
        .await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let own = all(&app, &b.admin, &format!("&account_id={}", b.account_id)).await;
    assert_eq!(own, bs);
    // A's cursor reads nothing of A for B.
    let a_page = page(&app, &a.admin, "?limit=1").await;
    let a_cursor = a_page.body["next_cursor"].as_str().unwrap();
    let from_a = all(&app, &b.admin, &format!("&cursor={a_cursor}")).await;
    assert!(from_a
        .iter()
        .all(|e| e["account_id"] == json!(b.account_id)));
    // A user token, and no token.
    let user = app.get("/v1/audit", &bea).await;
    assert_eq!(
        (user.status, user.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let anonymous = app.call(Method::GET, "/v1/audit", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    // Root: both accounts, or one.
    let everything = all(&app, ROOT_TOKEN, "").await;
    assert_eq!(everything.len(), 5 + 7);
    let only_a = all(&app, ROOT_TOKEN, &format!("&account_id={}", a.account_id)).await;
    assert_eq!(only_a, all(&app, &a.admin, "").await);
    assert_eq!(only_a.len(), 5);
}

/// A GET of the log with extra headers: status, content type, next cursor, body.
async fn raw(
    app: &TestApp,
    token: &str,
    query: &str,
    accept: Option<&str>,
) -> (StatusCode, String, Option<String>, String) {
    let mut req = app
        .http
        .get(format!("{}/v1/audit{query}", app.url))
        .bearer_auth(token);
    if let Some(a) = accept {
        req = req.header(header::ACCEPT, a);
    }
    let resp = req.send().await.unwrap();
    let header_of = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let content_type = header_of("content-type").unwrap_or_default();
    let next = header_of("x-next-cursor");
    assert!(header_of("x-has-more").is_some());
    (
        resp.status(),
        content_type,
        next,
        resp.text().await.unwrap(),
    )
}

#[tokio::test]
async fn the_log_exports_as_json_lines_and_as_quoted_csv() {
    // Arrange: a node-locked license whose device fingerprint holds a comma and quotes.
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({"model": "node_locked"})).await;
    let fingerprint = "desk,\"7\"";
    let r = app
        .post(
            &format!("/v1/licenses/{}/devices", f.license_id),
            &f.admin,
            json!({"fingerprint": fingerprint}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let ann = app.user_token(&f.account_id, &f.admin, "ann").await;
    let opened = app.open(&ann, &f.license_id, fingerprint, "cad-1").await;
    assert_eq!(opened.status, StatusCode::CREATED, "{:?}", opened.body);
    let json_events = all(&app, &f.admin, "").await;
    assert_eq!(
        kinds(&json_events),
        [
            "license_created",
            "device_activated",
            "user_created",
            "token_issued",
            "opened"
        ]
    );

    // Act / Assert: JSON lines, by parameter and by Accept; one event per line.
    for (query, accept) in [("?format=jsonl", None), ("", Some("application/x-ndjson"))] {
        let (status, content_type, _, body) = raw(&app, &f.admin, query, accept).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/x-ndjson");
        assert!(body.ends_with('\n'));
        let lines: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, json_events);
    }

    // CSV, by parameter and by Accept: a header row, then one row per event, quoted where a
    // field needs it.
    for (query, accept) in [("?format=csv", None), ("", Some("text/csv"))] {
        let (status, content_type, _, body) = raw(&app, &f.admin, query, accept).await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/csv"), "{content_type}");
        let rows: Vec<&str> = body.split_terminator("\r\n").collect();
        assert_eq!(rows.len(), 6, "{body}");
        assert_eq!(
            rows[0],
            "at,account_id,license_id,event,session_id,username,detail,actor,request_id,client_addr"
        );
        let device = &json_events[1];
        assert_eq!(
            rows[2],
            format!(
                "{},{},{},device_activated,,,\"desk,\"\"7\"\"\",admin:{},{},127.0.0.1",
                device["at"].as_str().unwrap(),
                f.account_id,
                f.license_id,
                f.account_id,
                device["request_id"].as_str().unwrap(),
            )
        );
        assert_eq!(
            rows[5],
            format!(
                "{},{},{},opened,{},ann,interactive,user:ann,{},127.0.0.1",
                json_events[4]["at"].as_str().unwrap(),
                f.account_id,
                f.license_id,
                opened.id(),
                json_events[4]["request_id"].as_str().unwrap(),
            )
        );
    }

    // The exports page like the JSON answer: the cursor in `x-next-cursor`.
    let (_, _, next, body) = raw(&app, &f.admin, "?format=csv&limit=3", None).await;
    assert_eq!(body.split_terminator("\r\n").count(), 4);
    let (_, _, _, rest) = raw(
        &app,
        &f.admin,
        &format!("?format=csv&limit=3&cursor={}", next.unwrap()),
        None,
    )
    .await;
    let rest: Vec<&str> = rest.split_terminator("\r\n").collect();
    assert_eq!(rest.len(), 3);
    assert!(rest[1].contains(",token_issued,"));
    assert!(rest[2].contains(",opened,"));
}

/// PostgreSQL takes `seq` at insert, so a transaction can commit after one with a greater
/// `seq` was read: a page must not give out a cursor past an event still being written.
/// (SQLite's single writer commits in `seq` order; this test is for PostgreSQL.)
#[tokio::test]
async fn on_postgres_an_event_that_commits_late_with_a_smaller_seq_is_not_skipped() {
    use sqlx::{Connection, Row};

    let app = spawn_app().await;
    let Ok(url) = std::fs::read_to_string(app.dir.path().join("test-database-url")) else {
        return;
    };
    let f = app.fixture(5, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let first = page(&app, &f.admin, "?limit=1").await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    // Arrange: another node's transaction writes an event and has not committed yet; a later
    // event (bob's open) commits first.
    let mut other_node = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut slow = other_node.begin().await.unwrap();
    let slow_seq: i64 = sqlx::query(
        "INSERT INTO audit_events (at, account_id, license_id, event)
         VALUES ($1, $2, $3, 'license_updated') RETURNING seq",
    )
    .bind(TEST_START.millis())
    .bind(&f.account_id)
    .bind(&f.license_id)
    .fetch_one(&mut *slow)
    .await
    .unwrap()
    .get(0);
    let opened = app.open(&bob, &f.license_id, "laptop", "cad-1").await;
    assert_eq!(opened.status, StatusCode::CREATED, "{:?}", opened.body);

    // Act: the next page is read while the slow transaction is open; it commits 300 ms later.
    let query = format!("?cursor={cursor}");
    let (next, ()) = tokio::join!(page(&app, &f.admin, &query), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        slow.commit().await.unwrap();
    });

    // Assert: the late event is on the page, before the open, and the walk is complete.
    let every = all(&app, &f.admin, "").await;
    assert_eq!(
        kinds(&every),
        [
            "license_created",
            "user_created",
            "token_issued",
            "license_updated",
            "opened"
        ],
        "slow seq {slow_seq}"
    );
    assert_eq!(events(&next), every[1..]);
}

/// A page waiting for a slow writer (PostgreSQL's horizon) never holds up the seat path: an
/// open on the license (its `opened` event is an insert into the audit log) is answered while
/// the slow transaction is still open and the page still waiting. (A `SHARE` lock on the log
/// made every insert queue behind the waiting reader.)
#[tokio::test]
async fn on_postgres_a_page_waiting_for_a_slow_writer_does_not_hold_up_opens() {
    use sqlx::Connection;

    let app = spawn_app().await;
    let Ok(url) = std::fs::read_to_string(app.dir.path().join("test-database-url")) else {
        return;
    };
    let f = app.fixture(5, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let mut other_node = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut slow = other_node.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO audit_events (at, account_id, license_id, event)
         VALUES ($1, $2, $3, 'license_updated')",
    )
    .bind(TEST_START.millis())
    .bind(&f.account_id)
    .bind(&f.license_id)
    .execute(&mut *slow)
    .await
    .unwrap();

    // Act: a page starts waiting for the slow transaction; meanwhile bob opens.
    let (waiting, opened) = tokio::join!(page(&app, &f.admin, "?limit=1000"), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let opened = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            app.open(&bob, &f.license_id, "laptop", "cad-1"),
        )
        .await;
        slow.commit().await.unwrap();
        opened
    });

    // Assert: the open was answered while the writer was still open; the page came after.
    let opened = opened.expect("the open waited for the audit reader");
    assert_eq!(opened.status, StatusCode::CREATED, "{:?}", opened.body);
    let every = all(&app, &f.admin, "").await;
    assert_eq!(
        kinds(&every),
        [
            "license_created",
            "user_created",
            "token_issued",
            "license_updated",
            "opened"
        ]
    );
    assert!(events(&waiting).len() <= every.len());
}

#[tokio::test]
async fn events_past_their_retention_are_deleted_and_usage_statistics_stay() {
    // Arrange: a day of retention; a license of one seat, bob on it, carol refused.
    let app = spawn_app_with(|c| c.audit_retention_days = Some(1)).await;
    let f = app.fixture(1, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    cycles(&app, &bob, &f.license_id, 3, "old").await;
    let held = app.open(&bob, &f.license_id, "laptop", "kept").await;
    assert_eq!(held.status, StatusCode::CREATED);
    let refused = app.open(&carol, &f.license_id, "desk", "cad-1").await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    let usage = |a: &Answer| (a.body["denials"].clone(), a.body["high_water"].clone());
    // The whole test's period (by default a usage report covers the last 24 hours).
    let period = format!(
        "/v1/licenses/{}/usage?from=2027-01-15T00:00:00Z&to=2027-01-17T00:00:00Z",
        f.license_id
    );
    // The denial's event is written behind the refusal (a refusal needs no fsync): wait for it.
    let mut logged = Vec::new();
    for _ in 0..200 {
        logged = all(&app, &f.admin, "").await;
        // created; bob's and carol's user and token; 3 cycles; bob's open; carol's denial
        if logged.len() == 1 + 4 + 6 + 1 + 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(logged.len(), 1 + 4 + 6 + 1 + 1, "{logged:?}");
    let before = app.get(&period, &f.admin).await;

    // Act: a day and an hour later (bob's session expires meanwhile), one new event.
    app.advance(25 * 3600).await;
    cycles(&app, &carol, &f.license_id, 1, "new").await;
    let mut left = Vec::new();
    for _ in 0..200 {
        left = all(&app, &f.admin, "").await;
        if left.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Assert: only the events of the last day are left (bob's expiry, carol's session); the
    // per-license log agrees; the usage statistics are unchanged.
    assert_eq!(
        left.iter()
            .map(|e| (e["event"].as_str().unwrap(), e["detail"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [
            ("ended", "inactivity"),
            ("opened", "interactive"),
            ("ended", "logout")
        ]
    );
    let per_license = app
        .get(&format!("/v1/licenses/{}/audit", f.license_id), &f.admin)
        .await;
    assert_eq!(per_license.body["events"].as_array().unwrap().len(), 3);
    let after = app.get(&period, &f.admin).await;
    assert_eq!(usage(&after), usage(&before));
    assert_eq!(after.body["denials"], json!(1));
}

/// A call with the client's own request id.
async fn call_as(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    request_id: &str,
    body: Option<Value>,
) -> StatusCode {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.url))
        .bearer_auth(token)
        .header("x-request-id", request_id);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().status()
}

/// `(event, detail, actor, request_id, client_addr)` of each event.
fn origins(events: &[Value]) -> Vec<[Option<&str>; 5]> {
    events
        .iter()
        .map(|e| ["event", "detail", "actor", "request_id", "client_addr"].map(|k| e[k].as_str()))
        .collect()
}

#[tokio::test]
async fn each_event_of_a_request_names_its_actor_request_id_and_client_address() {
    // Arrange
    let app = spawn_app().await;
    let (account, admin) = app.create_account("Acme").await;
    let bob = app.user_token(&account, &admin, "bob").await;
    let carol = app.user_token(&account, &admin, "carol").await;
    let license = json!({"account_id": account, "product": "cad", "model": "concurrent_sessions",
                         "seats": 1, "inactivity_timeout_secs": 60});

    // Act: root creates the license, the admin changes it; bob opens, carol is refused; the
    // admin revokes bob's session; carol's session expires.
    let created = app
        .http
        .post(format!("{}/v1/licenses", app.url))
        .bearer_auth(ROOT_TOKEN)
        .header("x-request-id", "create-1")
        .json(&license)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let lic = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let patch = json!({"inactivity_timeout_secs": 30});
    let s = call_as(
        &app,
        Method::PATCH,
        &format!("/v1/licenses/{lic}"),
        &admin,
        "patch-1",
        Some(patch),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let open = |who: &str| json!({"license_id": lic, "device_id": who, "instance_id": "cad-1"});
    let s = call_as(
        &app,
        Method::POST,
        "/v1/sessions",
        &bob,
        "open-1",
        Some(open("laptop")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let s = call_as(
        &app,
        Method::POST,
        "/v1/sessions",
        &carol,
        "open-2",
        Some(open("desk")),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let bobs = all(&app, &admin, "&username=bob&event=opened").await;
    let sid = bobs[0]["session_id"].as_str().unwrap().to_owned();
    let s = call_as(
        &app,
        Method::DELETE,
        &format!("/v1/sessions/{sid}"),
        &admin,
        "revoke-1",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let s = call_as(
        &app,
        Method::POST,
        "/v1/sessions",
        &carol,
        "open-3",
        Some(open("desk")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    app.advance(31).await;

    // Assert
    let admin_actor = format!("admin:{account}");
    let local = Some("127.0.0.1");
    let events = app.audit_when(&admin, &lic, |e| e.len() == 7).await;
    assert_eq!(
        origins(&events),
        [
            [
                Some("license_created"),
                Some("seats=1"),
                Some("root"),
                Some("create-1"),
                local
            ],
            [
                Some("license_updated"),
                Some("seats=1"),
                Some(admin_actor.as_str()),
                Some("patch-1"),
                local
            ],
            [
                Some("opened"),
                Some("interactive"),
                Some("user:bob"),
                Some("open-1"),
                local
            ],
            [
                Some("denied"),
                Some("no_seat_available"),
                Some("user:carol"),
                Some("open-2"),
                local
            ],
            [
                Some("ended"),
                Some("revoked"),
                Some(admin_actor.as_str()),
                Some("revoke-1"),
                local
            ],
            [
                Some("opened"),
                Some("interactive"),
                Some("user:carol"),
                Some("open-3"),
                local
            ],
            // Time ended it: no request did.
            [Some("ended"), Some("inactivity"), None, None, None],
        ]
    );
    let on_license = all(&app, &admin, &format!("&license_id={lic}")).await;
    assert_eq!(origins(&on_license), origins(&events));
    // The admin's changes to users and tokens carry the admin's origin too.
    let admin_changes = all(&app, &admin, "&event=user_created,token_issued").await;
    assert_eq!(admin_changes.len(), 4);
    for e in &admin_changes {
        assert_eq!(e["actor"], json!(admin_actor));
        assert_eq!(e["client_addr"], json!("127.0.0.1"));
        assert!(e["request_id"].is_string(), "{e}");
        assert_eq!(e["license_id"], json!(""));
    }
}

#[tokio::test]
async fn a_seat_granted_from_the_queue_records_the_waiting_request() {
    // Arrange: one seat, held by bob; carol waits for it.
    let app = spawn_app().await;
    let f = app
        .fixture(
            1,
            &[],
            json!({"on_full": "queue", "max_queue_wait_secs": 600}),
        )
        .await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;
    let held = app.open(&bob, &f.license_id, "laptop", "cad-1").await;
    assert_eq!(held.status, StatusCode::CREATED);
    let wait = json!({"license_id": f.license_id, "device_id": "desk", "instance_id": "cad-1",
                      "wait_secs": 60});

    // Act: bob's logout (another request) grants carol's waiting open.
    let waiting = call_as(
        &app,
        Method::POST,
        "/v1/sessions",
        &carol,
        "wait-1",
        Some(wait),
    );
    let logout = async {
        for _ in 0..500 {
            let q = app
                .get(&format!("/v1/licenses/{}/queue", f.license_id), &f.admin)
                .await;
            if q.body["length"] == json!(1) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        call_as(
            &app,
            Method::DELETE,
            &format!("/v1/sessions/{}", held.id()),
            &bob,
            "logout-1",
            None,
        )
        .await
    };
    let (granted, logged_out) = tokio::join!(waiting, logout);
    assert_eq!(
        (granted, logged_out),
        (StatusCode::CREATED, StatusCode::NO_CONTENT)
    );

    // Assert: the grant is carol's request's, the end bob's.
    let events = all(&app, &f.admin, "&event=opened,ended").await;
    let local = Some("127.0.0.1");
    assert_eq!(
        origins(&events),
        [
            [
                Some("opened"),
                Some("interactive"),
                Some("user:bob"),
                events[0]["request_id"].as_str(),
                local
            ],
            [
                Some("ended"),
                Some("logout"),
                Some("user:bob"),
                Some("logout-1"),
                local
            ],
            [
                Some("opened"),
                Some("interactive queued"),
                Some("user:carol"),
                Some("wait-1"),
                local
            ],
        ]
    );
}

#[tokio::test]
async fn the_documented_event_kinds_are_the_kinds_the_store_writes() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let params = doc["paths"]["/v1/audit"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let event = params.iter().find(|p| p["name"] == json!("event")).unwrap();
    let documented: Vec<&str> = event["schema"]["items"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(documented, leasehold_store::AUDIT_EVENT_KINDS);
}

#[tokio::test]
async fn admin_changes_to_users_tokens_and_registered_users_are_in_the_log() {
    // Arrange: a registered_users license; bob created and given a token.
    let app = spawn_app().await;
    let f = app
        .fixture(2, &[], json!({"model": "registered_users"}))
        .await;
    let _bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let path = format!("/v1/licenses/{}/users/bob", f.license_id);
    let put = |active: bool| {
        app.call(
            Method::PUT,
            &path,
            Some(&f.admin),
            Some(json!({"active": active})),
        )
    };

    // Act: bob is activated on the license, then deactivated there, then on the account.
    assert_eq!(put(true).await.status, StatusCode::CREATED);
    assert_eq!(put(false).await.status, StatusCode::OK);
    let off = app
        .call(
            Method::PUT,
            &format!("/v1/accounts/{}/users/bob", f.account_id),
            Some(&f.admin),
            Some(json!({"kind": "interactive", "active": false})),
        )
        .await;
    assert!(off.status.is_success(), "{:?}", off.body);

    // Assert: each change is an event with the admin's origin; the license's are on its log.
    let admin_actor = json!(format!("admin:{}", f.account_id));
    let mine = all(&app, &f.admin, "&username=bob").await;
    let got: Vec<_> = mine
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["detail"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("user_created", json!("interactive active")),
            ("token_issued", json!("user")),
            ("license_user_activated", Value::Null),
            ("license_user_deactivated", Value::Null),
            ("user_updated", json!("interactive inactive")),
        ]
    );
    assert!(mine.iter().all(|e| e["actor"] == admin_actor));
    assert!(mine.iter().all(|e| e["request_id"].is_string()));
    let on_license = all(
        &app,
        &f.admin,
        &format!(
            "&license_id={}&event=license_user_activated,license_user_deactivated",
            f.license_id
        ),
    )
    .await;
    assert_eq!(on_license.len(), 2);
    // The token itself is never in the log.
    let text = serde_json::to_string(&mine).unwrap();
    assert!(!text.contains(_bob.as_str()));
}
