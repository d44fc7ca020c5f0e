//! The self-description of the server: OpenAPI, JWKS and signed leases, health, metrics.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

/// Every route the server serves. A route missing from the OpenAPI document fails the test.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/accounts"),
    ("post", "/v1/licenses"),
    ("get", "/v1/licenses/{id}"),
    ("patch", "/v1/licenses/{id}"),
    ("put", "/v1/accounts/{id}/users/{username}"),
    ("post", "/v1/accounts/{id}/users/{username}/tokens"),
    ("post", "/v1/oauth/token"),
    ("post", "/v1/sessions"),
    ("post", "/v1/sessions/{id}/heartbeat"),
    ("delete", "/v1/sessions/{id}"),
    ("get", "/v1/sessions/{id}/events"),
    ("get", "/v1/licenses/{id}/sessions"),
    ("delete", "/v1/licenses/{id}/sessions"),
    ("get", "/v1/licenses/{id}/usage"),
    ("get", "/v1/licenses/{id}/audit"),
    ("get", "/v1/audit"),
    ("get", "/v1/plans"),
    ("get", "/v1/accounts/{id}/users/{username}"),
    ("get", "/v1/accounts/{id}/users"),
    ("get", "/v1/accounts/{id}/licenses"),
    ("get", "/v1/licenses/{id}/queue"),
    ("get", "/v1/licenses/{id}/revoked-leases"),
    ("put", "/v1/licenses/{id}/users/{username}"),
    ("get", "/v1/licenses/{id}/users"),
    ("post", "/v1/licenses/{id}/devices"),
    ("get", "/v1/licenses/{id}/devices"),
    ("delete", "/v1/licenses/{id}/devices/{fingerprint}"),
    ("get", "/v1/accounts/{id}/users/{username}/sessions"),
    ("get", "/v1/accounts/{id}/usage"),
    ("post", "/v1/licenses/{id}/delegations"),
    ("get", "/v1/licenses/{id}/delegations"),
    ("get", "/v1/licenses/{id}/delegations/{delegation_id}"),
    ("patch", "/v1/licenses/{id}/delegations/{delegation_id}"),
    (
        "post",
        "/v1/licenses/{id}/delegations/{delegation_id}/receipt",
    ),
    ("post", "/v1/delegation-requests"),
    ("post", "/v1/delegations"),
    ("post", "/v1/delegations/{id}/return"),
    ("get", "/v1/delegations/{id}/report"),
    (
        "post",
        "/v1/licenses/{id}/delegations/{delegation_id}/reports",
    ),
    ("get", "/.well-known/jwks.json"),
    ("get", "/healthz"),
    ("get", "/livez"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/v1/accounts/{id}/webhooks"),
    ("get", "/v1/accounts/{id}/webhooks"),
    ("get", "/v1/accounts/{id}/webhooks/{webhook_id}"),
    ("patch", "/v1/accounts/{id}/webhooks/{webhook_id}"),
    ("delete", "/v1/accounts/{id}/webhooks/{webhook_id}"),
    (
        "post",
        "/v1/accounts/{id}/webhooks/{webhook_id}/rotate-secret",
    ),
    ("post", "/v1/accounts/{id}/webhooks/{webhook_id}/ping"),
    ("get", "/v1/accounts/{id}/webhooks/{webhook_id}/deliveries"),
    (
        "post",
        "/v1/accounts/{id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    ),
];

#[tokio::test]
async fn openapi_documents_every_route_and_only_served_routes() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            assert!(
                ROUTES.contains(&(method.as_str(), path.as_str())),
                "{method} {path} is documented but not in this test's route list"
            );
            documented += 1;
            // The router serves it: anything but the route-not-found fallback.
            let concrete = path
                .replace("{id}", "x")
                .replace("{username}", "y")
                .replace("{fingerprint}", "z")
                .replace("{webhook_id}", "w")
                .replace("{delivery_id}", "d");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app.call(m, &concrete, None, None).await;
            assert!(
                !(r.status == StatusCode::NOT_FOUND
                    && r.body["error"]["message"] == "route not found"),
                "{method} {path} is documented but not served"
            );
        }
    }
    for (method, path) in ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} is undocumented"
        );
    }
    assert_eq!(documented, ROUTES.len());
}

#[tokio::test]
async fn leases_verify_offline_with_the_published_key() {
    let app = spawn_app().await;
    let f = app.fixture(1, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    let s = app.open(&bob, &f.license_id, "laptop", "cad").await;
    let lease = s.body["lease"].as_str().unwrap();

    let jwks: serde_json::Value = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(key["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let verifying = VerifyingKey::from_bytes(&x).unwrap();

    let parts: Vec<&str> = lease.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], key["kid"]);
    let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
    let signed = format!("{}.{}", parts[0], parts[1]);
    verifying.verify(signed.as_bytes(), &sig).unwrap();
    let claims: leasehold_proto::LeaseClaims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims.sid, s.id());
    assert_eq!(claims.lic, f.license_id);
    assert_eq!(claims.sub, "bob");
    assert_eq!(claims.exp, TEST_START.secs() + 1200);

    // A tampered payload does not verify.
    let forged = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&leasehold_proto::LeaseClaims {
            exp: claims.exp + 86_400,
            borrowed: false,
            ..claims.clone()
        })
        .unwrap(),
    );
    let tampered = format!("{}.{}", parts[0], forged);
    assert!(verifying.verify(tampered.as_bytes(), &sig).is_err());

    // A heartbeat can ask for a lease re-signed with the new expiry.
    app.clock.advance_secs(100);
    let hb = app
        .post(
            &format!("/v1/sessions/{}/heartbeat?lease=true", s.id()),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(hb.status, StatusCode::OK);
    let fresh = hb.body["lease"].as_str().unwrap();
    let p: Vec<&str> = fresh.split('.').collect();
    let claims: leasehold_proto::LeaseClaims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p[1]).unwrap()).unwrap();
    assert_eq!(claims.exp, TEST_START.secs() + 1300);
    let hb = app.heartbeat(&bob, &s.id()).await;
    assert!(
        hb.body.get("lease").is_none(),
        "no signing cost unless asked"
    );
}

#[tokio::test]
async fn health_is_public_and_metrics_show_per_license_series_only_with_a_credential() {
    // Arrange: a license with one session and one denial; a metrics token configured.
    let app = spawn_app_with(|c| c.metrics_token = Some("scrape-token-0123456789".into())).await;
    let f = app.fixture(1, &[], json!({})).await;
    let bob = app.user_token(&f.account_id, &f.admin, "bob").await;
    app.open(&bob, &f.license_id, "pc", "1").await;
    app.open(&bob, &f.license_id, "pc", "2").await; // denied
    let h = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.body, json!({"status": "ok"}));
    let live = app.call(Method::GET, "/livez", None, None).await;
    assert_eq!(live.status, StatusCode::OK);
    let scrape = |token: Option<&str>| {
        let mut req = app.http.get(format!("{}/metrics", app.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let lic = &f.license_id;

    // Without a credential: label-free totals, no license id.
    let public = scrape(None).await.unwrap();
    assert_eq!(public.status(), StatusCode::OK);
    let text = public.text().await.unwrap();
    assert!(!text.contains(lic.as_str()), "{text}");
    assert!(!text.contains('{'), "{text}");
    assert!(text.contains("\nleasehold_sessions_in_use 1\n"), "{text}");
    assert!(text.contains("\nleasehold_denials_total "), "{text}");
    // The per-license families of issue 15 are summed too: capacity, queue, opens, latency.
    assert!(text.contains("\nleasehold_license_seats 1\n"), "{text}");
    assert!(text.contains("\nleasehold_queue_waiting 0\n"), "{text}");
    assert!(
        text.contains("\nleasehold_sessions_opened_total "),
        "{text}"
    );
    assert!(
        text.contains("\nleasehold_http_request_duration_seconds_count "),
        "{text}"
    );

    // The root token and the metrics token see every series.
    for token in [ROOT_TOKEN, "scrape-token-0123456789"] {
        let full = scrape(Some(token)).await.unwrap();
        assert_eq!(full.status(), StatusCode::OK);
        let text = full.text().await.unwrap();
        assert!(
            text.contains(&format!("leasehold_sessions_in_use{{license=\"{lic}\"}} 1")),
            "{text}"
        );
        assert!(
            text.contains(&format!("leasehold_denials_total{{license=\"{lic}\"}} 1")),
            "{text}"
        );
    }

    // Any other valid token: 403; an unknown one: 401 with a challenge.
    let admin = scrape(Some(&f.admin)).await.unwrap();
    assert_eq!(admin.status(), StatusCode::FORBIDDEN);
    let unknown = scrape(Some("not-a-token")).await.unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert!(unknown.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
}

#[tokio::test]
async fn the_openapi_document_declares_what_each_route_takes_and_answers() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            let responses = op["responses"].as_object().unwrap();
            let has = |status: &str| responses.contains_key(status);
            // Query parameters are in the query, path parameters in the path.
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let place = if path.contains(&format!("{{{name}}}")) {
                    "path"
                } else {
                    "query"
                };
                assert_eq!(p["in"], place, "{what}: parameter {name}");
            }
            let bearer = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            if bearer {
                for status in ["400", "401", "429", "503"] {
                    assert!(has(status), "{what} does not document {status}");
                }
                assert!(
                    responses["401"]["headers"]
                        .get("WWW-Authenticate")
                        .is_some(),
                    "{what}"
                );
                assert!(
                    responses["429"]["headers"].get("Retry-After").is_some(),
                    "{what}"
                );
            }
            if op.get("requestBody").is_some() && path != "/v1/oauth/token" {
                for status in ["400", "408", "413", "415", "422"] {
                    assert!(has(status), "{what} does not document {status}");
                }
            }
            if path.contains('{') {
                assert!(has("400") && has("404"), "{what}");
            }
            assert!(has("414") || path == "/v1/oauth/token", "{what}");
        }
    }
    // The usage and heartbeat parameters, which once were declared in the path.
    let usage = &doc["paths"]["/v1/licenses/{id}/usage"]["get"]["parameters"];
    let names: Vec<_> = usage
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["from", "to", "bucket", "format"]);
    let heartbeat = &doc["paths"]["/v1/sessions/{id}/heartbeat"]["post"]["parameters"];
    assert!(heartbeat
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "lease" && p["in"] == "query"));
    // The token endpoint documents the RFC 6749 error shape.
    let token = &doc["paths"]["/v1/oauth/token"]["post"]["responses"];
    assert_eq!(
        token["401"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/OAuthErrorBody"
    );
}
