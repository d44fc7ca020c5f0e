//! Webhooks through the binary: a `kill -9` of the server between the acknowledgement of
//! opens and their delivery loses none of them (the outbox is the audit log, written with
//! each open; a delivery in flight at the kill is sent again by the restarted server), and the
//! `leasehold webhook` commands.

use std::collections::HashSet;
use std::time::Duration;

use leasehold_client::proto::OpenSession;
use serde_json::Value;

use crate::hook_receiver::HookReceiver;
use crate::kit::{license, Kit, ROOT, SOON};
use crate::support::ServerProcess;

/// The server's settings for these tests: receivers on 127.0.0.1, quick retries, and a
/// response timeout long enough that a hanging receiver holds a delivery in flight.
fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("leasehold.toml");
    std::fs::write(
        &path,
        "[webhooks]\nallow_private_targets = true\nretry_base_ms = 100\npoll_interval_ms = 20\n\
         connect_timeout_ms = 1000\nresponse_timeout_ms = 30000\n",
    )
    .unwrap();
    path
}

fn opened_sessions(bodies: &[Value]) -> HashSet<String> {
    bodies
        .iter()
        .filter(|b| b["type"] == "session.opened")
        .filter_map(|b| b["data"]["session_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn opens_acknowledged_before_a_kill_9_are_all_delivered_after_the_restart() {
    // Arrange: the receiver holds its first request unanswered (a delivery in flight).
    let receiver = HookReceiver::start(0, 1).await;
    let data = tempfile::tempdir().unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = config(conf_dir.path());
    let conf = conf.to_str().unwrap();
    let envs = [("LEASEHOLD_ADMIN_TOKEN", ROOT), ("LEASEHOLD_CONFIG", conf)];
    let kit = Kit::with_server(
        ServerProcess::start(data.path(), &envs),
        tempfile::tempdir().unwrap(),
    );
    let t = kit.tenant(license(50)).await;
    let created = kit
        .cli(
            &t.admin_token,
            &[
                "webhook",
                "create",
                "--account",
                &t.account_id,
                "--target",
                &receiver.url,
                "--events",
                "session.opened",
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let webhook = created["id"].as_str().unwrap().to_owned();
    let bob = kit.client(&t.user_token("bob").await);

    // Act: 30 opens acknowledged, then the server is killed at once.
    let mut acknowledged = HashSet::new();
    for i in 0..30 {
        let s = bob
            .open_session(&OpenSession {
                license_id: t.license_id.clone(),
                device_id: "pc".into(),
                instance_id: format!("app-{i}"),
                wait_secs: None,
                borrow_until: None,
            })
            .await
            .unwrap();
        acknowledged.insert(s.id);
    }
    kit.server.kill9();
    let delivered_before = opened_sessions(&receiver.bodies()).len();
    assert!(delivered_before <= 1, "at most the held delivery was sent");

    // Assert: after a restart on the same folder every acknowledged open arrives.
    let kit = Kit::with_server(
        ServerProcess::start(data.path(), &envs),
        tempfile::tempdir().unwrap(),
    );
    receiver
        .wait_for(SOON, |b| opened_sessions(b).is_superset(&acknowledged))
        .await;
    let log = kit
        .cli(
            &t.admin_token,
            &[
                "webhook",
                "deliveries",
                &webhook,
                "--account",
                &t.account_id,
                "--limit",
                "200",
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    let deliveries = log["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 30, "one delivery per event");
    let ids: HashSet<&str> = deliveries
        .iter()
        .map(|d| d["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 30, "every event has its own id");

    // The other commands: redeliver, ping, list, update, delete.
    let first = deliveries.last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = kit
        .cli(
            &t.admin_token,
            &[
                "webhook",
                "redeliver",
                &webhook,
                &first,
                "--account",
                &t.account_id,
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(again["status"], "pending");
    let ping = kit
        .cli(
            &t.admin_token,
            &["webhook", "ping", &webhook, "--account", &t.account_id],
        )
        .await
        .ok();
    assert!(ping.stdout.contains("ping"), "{ping:#?}");
    receiver
        .wait_for(SOON, |b| b.iter().any(|x| x["type"] == "ping"))
        .await;
    let list = kit
        .cli(
            &t.admin_token,
            &["webhook", "list", "--account", &t.account_id],
        )
        .await
        .ok();
    assert!(list.stdout.contains(&webhook) && !list.stdout.contains("whsec_"));
    let off = kit
        .cli(
            &t.admin_token,
            &[
                "webhook",
                "update",
                &webhook,
                "--disable",
                "--account",
                &t.account_id,
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(off["enabled"], false);
    kit.cli(
        &t.admin_token,
        &["webhook", "delete", &webhook, "--account", &t.account_id],
    )
    .await
    .ok();
    let gone = kit
        .cli(
            &t.admin_token,
            &["webhook", "ping", &webhook, "--account", &t.account_id],
        )
        .await;
    assert_eq!(gone.code, 1, "{gone:#?}");
    assert!(gone.stderr.contains("not_found"), "{gone:#?}");
    // A refused target is a clear error.
    let bad = kit
        .cli(
            &t.admin_token,
            &[
                "webhook",
                "create",
                "--account",
                &t.account_id,
                "--target",
                "ftp://x/",
                "--events",
                "*",
            ],
        )
        .await;
    assert_eq!(bad.code, 1, "{bad:#?}");
    assert!(bad.stderr.contains("invalid_request"), "{bad:#?}");
    // A license's alerts from the command line.
    let lic = kit
        .cli(
            &t.admin_token,
            &[
                "license",
                "set",
                &t.license_id,
                "--alert-threshold-percent",
                "80",
                "--alert-denials-per-hour",
                "5",
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(
        lic["alerts"],
        serde_json::json!({"threshold_percent": 80, "denials_per_hour": 5})
    );
    let shown = kit
        .cli(&t.admin_token, &["license", "show", &t.license_id])
        .await
        .ok();
    assert!(shown.stdout.contains("at 80 % of the seats"), "{shown:#?}");
    let bad = kit
        .cli(
            &t.admin_token,
            &[
                "license",
                "set",
                &t.license_id,
                "--alert-threshold-percent",
                "101",
            ],
        )
        .await;
    assert_eq!(bad.code, 1, "{bad:#?}");
    drop(kit);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
