//! `/metrics` (issue 15 point 4): per-license seats, use, opens, ends and denials after a known
//! sequence; queue length; the HTTP latency histogram per route template; the store's batch
//! histograms; HELP and TYPE on every family, and the whole exposition checked line by line
//! against the text format. Both stores (`LEASEHOLD_TEST_STORE=postgres`).
//!
//! No Prometheus parser is in `Cargo.lock` (and none is worth a new dependency), so `parse`
//! below is a strict reading of the text format 0.0.4: every line is a HELP, a TYPE or a
//! sample; names and label names are valid, label values use only the three escapes; every
//! sample belongs to the family typed just before it; a family is typed once; a histogram's
//! buckets rise and its `+Inf` bucket is its `_count`.
//!
//! The recorder is process-wide (tests share it): the per-license series are exact because each
//! test's license id is its own; label-free totals are only checked for presence.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

/// A series' labels, in order.
type Labels = Vec<(String, String)>;

/// One sample: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed exposition: the samples, and per family its HELP (if any) and TYPE.
#[derive(Debug, Default)]
struct Exposition {
    samples: Vec<Sample>,
    help: HashMap<String, String>,
    kinds: HashMap<String, String>,
}

impl Exposition {
    /// The value of the series `name` whose labels are exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.label(k) == Some(v))
            })
            .map(|s| s.value)
    }
}

fn valid_name(name: &str, colon: bool) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// `k="v",...` (the text between the braces): the pairs, or a panic naming the line.
fn parse_labels(text: &str, line: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .unwrap_or_else(|| panic!("label without '=': {line}"));
        let key = &rest[..eq];
        assert!(valid_name(key, false), "bad label name {key:?}: {line}");
        rest = &rest[eq + 1..];
        assert!(rest.starts_with('"'), "unquoted label value: {line}");
        let mut value = String::new();
        let mut chars = rest.char_indices().skip(1);
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => panic!("bad escape {other:?}: {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else {
            assert!(rest.is_empty(), "junk after a label: {line}");
        }
    }
    let keys: HashSet<_> = labels.iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), labels.len(), "a label twice: {line}");
    labels
}

fn parse_value(text: &str, line: &str) -> f64 {
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        t => t
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value {t:?}: {line}")),
    }
}

/// The family a sample name belongs to, given the types seen.
fn family_of<'a>(name: &'a str, kinds: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                kinds.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base;
            }
        }
    }
    name
}

/// Reads `text` strictly (see the module doc); panics on the first line out of format.
fn parse(text: &str) -> Exposition {
    let mut exp = Exposition::default();
    let mut current: Option<String> = None;
    let mut closed: HashSet<String> = HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let keyword = words.next().unwrap_or_default();
            let name = words.next().unwrap_or_default().to_owned();
            let rest = words.next().unwrap_or_default();
            assert!(valid_name(&name, true), "bad family name: {line}");
            if current.as_deref() != Some(name.as_str()) {
                assert!(!closed.contains(&name), "family {name} split: {line}");
                closed.extend(current.replace(name.clone()));
            }
            match keyword {
                "HELP" => {
                    assert!(!exp.kinds.contains_key(&name), "HELP after TYPE: {line}");
                    assert!(
                        exp.help.insert(name, rest.to_owned()).is_none(),
                        "HELP twice: {line}"
                    );
                }
                "TYPE" => {
                    assert!(
                        matches!(
                            rest,
                            "counter" | "gauge" | "histogram" | "summary" | "untyped"
                        ),
                        "bad type: {line}"
                    );
                    assert!(
                        exp.kinds.insert(name, rest.to_owned()).is_none(),
                        "TYPE twice: {line}"
                    );
                }
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "malformed comment: {line}");
        let name_end = line.find(['{', ' ']).expect("a sample has a value");
        let name = &line[..name_end];
        assert!(valid_name(name, true), "bad metric name: {line}");
        let rest = &line[name_end..];
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(r) => {
                let close = r.rfind('}').expect("labels close");
                (parse_labels(&r[..close], line), &r[close + 1..])
            }
            None => (Vec::new(), rest),
        };
        let mut fields = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value: {line}"))
            .split(' ');
        let value = parse_value(fields.next().unwrap_or_default(), line);
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("bad timestamp: {line}"));
        }
        assert!(fields.next().is_none(), "junk after the value: {line}");
        let family = family_of(name, &exp.kinds);
        assert_eq!(
            current.as_deref(),
            Some(family),
            "sample outside its family's TYPE: {line}"
        );
        let kind = exp.kinds.get(family).map(String::as_str);
        if kind == Some("histogram") && name.ends_with("_bucket") {
            assert!(
                labels.iter().any(|(k, _)| k == "le"),
                "bucket without le: {line}"
            );
        }
        exp.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    check_histograms(&exp);
    exp
}

/// Each histogram series: buckets rise with `le`, and the `+Inf` one is the `_count`.
fn check_histograms(exp: &Exposition) {
    for (family, kind) in &exp.kinds {
        if kind != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        let mut series: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
        for s in exp.samples.iter().filter(|s| s.name == bucket) {
            let le = parse_value(s.label("le").unwrap_or_default(), &s.name);
            let key: Vec<_> = s
                .labels
                .iter()
                .filter(|(k, _)| k != "le")
                .cloned()
                .collect();
            series.entry(key).or_default().push((le, s.value));
        }
        for (labels, buckets) in series {
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family}{labels:?}: buckets out of order {buckets:?}"
            );
            let (le, top) = *buckets.last().unwrap();
            assert_eq!(le, f64::INFINITY, "{family}{labels:?}: no +Inf bucket");
            let pairs: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let count = exp.value(&format!("{family}_count"), &pairs);
            assert_eq!(
                count,
                Some(top),
                "{family}{labels:?}: +Inf bucket is not _count"
            );
        }
    }
}

async fn scrape(app: &TestApp) -> Exposition {
    parse(&app.get_text("/metrics", ROOT_TOKEN).await)
}

/// Scrapes until `ready` holds (the reaper and the queue work in the background).
async fn scrape_until(app: &TestApp, ready: impl Fn(&Exposition) -> bool) -> Exposition {
    for _ in 0..300 {
        let exp = scrape(app).await;
        if ready(&exp) {
            return exp;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exp = scrape(app).await;
    panic!("metrics never got there: {exp:#?}");
}

#[tokio::test]
async fn per_license_series_count_seats_use_opens_ends_expiries_and_denials() {
    // Arrange: 2 seats, sessions idle for 60 s expire.
    let app = spawn_app().await;
    let f = app
        .fixture(2, &[], json!({"inactivity_timeout_secs": 60}))
        .await;
    let lic = f.license_id.as_str();
    let l = [("license", lic)];
    let alice = app.user_token(&f.account_id, &f.admin, "alice").await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let carol = app.user_token(&f.account_id, &f.admin, "carol").await;

    // Act: alice and bob open, carol is refused, bob logs out, carol opens.
    assert_eq!(
        app.open(&alice, lic, "pc", "1").await.status,
        StatusCode::CREATED
    );
    let b = app.open(&bob, lic, "pc", "1").await;
    assert_eq!(b.status, StatusCode::CREATED);
    assert_ne!(
        app.open(&carol, lic, "pc", "1").await.status,
        StatusCode::CREATED
    );
    let out = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", b.id()),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.open(&carol, lic, "pc", "1").await.status,
        StatusCode::CREATED
    );

    // Assert: capacity, use, opens, the logout, the denial.
    let exp = scrape(&app).await;
    assert_eq!(exp.value("leasehold_license_seats", &l), Some(2.0));
    assert_eq!(exp.value("leasehold_sessions_in_use", &l), Some(2.0));
    assert_eq!(exp.value("leasehold_sessions_opened_total", &l), Some(3.0));
    assert_eq!(exp.value("leasehold_denials_total", &l), Some(1.0));
    let ended = |reason| [("license", lic), ("reason", reason)];
    assert_eq!(
        exp.value("leasehold_sessions_ended_total", &ended("logout")),
        Some(1.0)
    );
    assert_eq!(
        exp.value("leasehold_sessions_ended_total", &ended("inactivity")),
        None
    );

    // Act: both idle past the timeout; the reaper expires them.
    app.advance(61).await;

    // Assert: the expiries count for the license; the seats are free, capacity unchanged.
    let exp = scrape_until(&app, |e| {
        e.value("leasehold_sessions_ended_total", &ended("inactivity")) == Some(2.0)
    })
    .await;
    assert_eq!(exp.value("leasehold_sessions_in_use", &l), Some(0.0));
    assert_eq!(exp.value("leasehold_license_seats", &l), Some(2.0));
    assert_eq!(exp.value("leasehold_sessions_opened_total", &l), Some(3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_length_per_license_follows_the_waiters() {
    // Arrange: one seat, held by alice; a second license of the account has no queue.
    let app = Arc::new(spawn_app().await);
    let f = app
        .fixture(
            1,
            &[],
            json!({"on_full": "queue", "max_queue_wait_secs": 600}),
        )
        .await;
    let lic = f.license_id.clone();
    let alice = app.user_token(&f.account_id, &f.admin, "alice").await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let a = app.open(&alice, &lic, "pc", "1").await;
    assert_eq!(a.status, StatusCode::CREATED);
    let l = [("license", lic.as_str())];
    assert_eq!(
        scrape(&app).await.value("leasehold_queue_waiting", &l),
        Some(0.0)
    );

    // Act: bob waits for the seat.
    let waiter = {
        let (app, lic) = (app.clone(), lic.clone());
        tokio::spawn(async move {
            app.post(
                "/v1/sessions",
                &bob,
                json!({"license_id": lic, "device_id": "pc", "instance_id": "1", "wait_secs": 30}),
            )
            .await
        })
    };

    // Assert: one waiting; once alice leaves, none, and bob holds the seat.
    scrape_until(&app, |e| {
        e.value("leasehold_queue_waiting", &l) == Some(1.0)
    })
    .await;
    let out = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", a.id()),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(waiter.await.unwrap().status, StatusCode::CREATED);
    let exp = scrape_until(&app, |e| {
        e.value("leasehold_queue_waiting", &l) == Some(0.0)
    })
    .await;
    assert_eq!(exp.value("leasehold_sessions_in_use", &l), Some(1.0));
}

#[tokio::test]
async fn http_latency_is_a_histogram_per_route_template_with_no_id_in_its_labels() {
    // Arrange: a session, heartbeated.
    let app = spawn_app().await;
    let f = app.fixture(1, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let s = app.open(&bob, &f.license_id, "pc", "1").await.id();
    assert_eq!(app.heartbeat(&bob, &s).await.status, StatusCode::OK);
    let missing = app
        .call(Method::GET, "/no/such/route/123", None, None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Act
    let exp = scrape(&app).await;

    // Assert: the heartbeat's series is named by its template, counted, bucketed 1 ms..10 s.
    let name = "leasehold_http_request_duration_seconds";
    assert_eq!(exp.kinds.get(name).map(String::as_str), Some("histogram"));
    let hb = [
        ("route", "/v1/sessions/{id}/heartbeat"),
        ("method", "POST"),
        ("status_class", "2xx"),
    ];
    assert!(
        exp.value(&format!("{name}_count"), &hb) >= Some(1.0),
        "{exp:#?}"
    );
    for le in ["0.001", "10", "+Inf"] {
        let mut labels = hb.to_vec();
        labels.push(("le", le));
        assert!(
            exp.value(&format!("{name}_bucket"), &labels).is_some(),
            "le={le}"
        );
    }
    let unmatched = [
        ("route", "unmatched"),
        ("method", "GET"),
        ("status_class", "4xx"),
    ];
    assert!(exp.value(&format!("{name}_count"), &unmatched) >= Some(1.0));
    // No raw path, session id or license id in any label of the family.
    for sample in exp.samples.iter().filter(|x| x.name.starts_with(name)) {
        for (_, v) in &sample.labels {
            assert!(!v.contains(&s) && !v.contains(&f.license_id), "{sample:?}");
            assert!(!v.contains("/no/such"), "{sample:?}");
        }
    }
}

#[tokio::test]
async fn store_batches_report_their_size_and_commit_latency() {
    // Arrange: writes of both kinds the store batches (opens, heartbeats, a logout).
    let app = spawn_app().await;
    let f = app.fixture(2, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let s = app.open(&bob, &f.license_id, "pc", "1").await.id();
    app.heartbeat(&bob, &s).await;
    app.call(
        Method::DELETE,
        &format!("/v1/sessions/{s}"),
        Some(&bob),
        None,
    )
    .await;

    // Act
    let exp = scrape(&app).await;

    // Assert: both histograms have series for this run's store, with batches of at least one.
    let store = if std::env::var("LEASEHOLD_TEST_STORE").as_deref() == Ok("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    for family in [
        "leasehold_store_batch_size",
        "leasehold_store_commit_seconds",
    ] {
        assert_eq!(exp.kinds.get(family).map(String::as_str), Some("histogram"));
        let counts: Vec<_> = exp
            .samples
            .iter()
            .filter(|x| x.name == format!("{family}_count") && x.label("store") == Some(store))
            .collect();
        assert!(!counts.is_empty(), "{family}: no {store} series");
        assert!(counts.iter().all(|x| x.label("kind").is_some()));
        assert!(counts.iter().map(|x| x.value).sum::<f64>() >= 1.0);
    }
    let sizes = exp
        .samples
        .iter()
        .filter(|x| x.name == "leasehold_store_batch_size_sum" && x.label("store") == Some(store))
        .map(|x| x.value)
        .sum::<f64>();
    assert!(sizes >= 1.0, "jobs were committed: {sizes}");
}

#[tokio::test]
async fn every_family_has_help_and_type_and_the_public_view_keeps_no_label() {
    // Arrange: activity that touches the families (an open, a denial, a heartbeat, a failed
    // authentication, a logout).
    let app = spawn_app().await;
    let f = app.fixture(1, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let s = app.open(&bob, &f.license_id, "pc", "1").await.id();
    app.open(&bob, &f.license_id, "pc", "2").await;
    app.heartbeat(&bob, &s).await;
    let lic_path = format!("/v1/licenses/{}", f.license_id);
    let refused = app
        .call(Method::GET, &lic_path, Some("lh_usr_wrong"), None)
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    app.call(
        Method::DELETE,
        &format!("/v1/sessions/{s}"),
        Some(&bob),
        None,
    )
    .await;

    // Act: the full view (parsed strictly) and the public one.
    let text = app.get_text("/metrics", ROOT_TOKEN).await;
    let exp = parse(&text);
    let public = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let public_exp = parse(&public);

    // Assert: every leasehold_ family is described and typed, in both views.
    let families: HashSet<&str> = exp
        .samples
        .iter()
        .map(|s| family_of(&s.name, &exp.kinds))
        .collect();
    for expected in [
        "leasehold_license_seats",
        "leasehold_sessions_in_use",
        "leasehold_queue_waiting",
        "leasehold_sessions_opened_total",
        "leasehold_sessions_ended_total",
        "leasehold_denials_total",
        "leasehold_heartbeats_total",
        "leasehold_auth_failures_total",
        "leasehold_http_request_duration_seconds",
        "leasehold_store_batch_size",
        "leasehold_store_commit_seconds",
    ] {
        assert!(families.contains(expected), "{expected} missing:\n{text}");
    }
    for view in [&exp, &public_exp] {
        for family in view.kinds.keys().chain(view.help.keys()) {
            if family.starts_with("leasehold_") {
                assert!(view.help.contains_key(family), "{family}: no HELP");
                assert!(view.kinds.contains_key(family), "{family}: no TYPE");
            }
        }
    }
    assert!(families.iter().all(|f| exp.kinds.contains_key(*f)));

    // The public view: totals of the new families too, and no label, no license id.
    assert!(!public.contains('{'), "{public}");
    assert!(!public.contains(f.license_id.as_str()), "{public}");
    for total in [
        "leasehold_license_seats",
        "leasehold_queue_waiting",
        "leasehold_sessions_opened_total",
        "leasehold_sessions_ended_total",
        "leasehold_http_request_duration_seconds_count",
        "leasehold_store_batch_size_count",
        "leasehold_store_commit_seconds_sum",
    ] {
        assert!(public_exp.value(total, &[]).is_some(), "{total}:\n{public}");
    }
    assert_eq!(public_exp.value("leasehold_license_seats", &[]), Some(1.0));
}

#[tokio::test]
async fn per_license_series_are_for_the_root_and_metrics_token_only() {
    // Arrange: two tenants, each with a license.
    let app = spawn_app().await;
    let a = app.fixture(3, &[], json!({})).await;
    let b = app.fixture(5, &[], json!({})).await;

    // Act / Assert: a tenant's admin cannot read the per-license view (its own or another's).
    for admin in [&a.admin, &b.admin] {
        let r = app.call(Method::GET, "/metrics", Some(admin), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    // The root view has each license's own capacity.
    let exp = scrape(&app).await;
    assert_eq!(
        exp.value(
            "leasehold_license_seats",
            &[("license", a.license_id.as_str())]
        ),
        Some(3.0)
    );
    assert_eq!(
        exp.value(
            "leasehold_license_seats",
            &[("license", b.license_id.as_str())]
        ),
        Some(5.0)
    );
}
