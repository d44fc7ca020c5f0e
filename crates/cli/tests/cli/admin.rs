//! The admin commands against the real server, each family in both output modes: accounts,
//! licenses, users, devices, tokens, OAuth client credentials, sessions, usage and plans;
//! errors with the server's code; settings from flags, environment and the CLI config file.

use leasehold_client::proto::{CreateLicense, LicenseModel, PutUser, UserKind};
use leasehold_client::Client;

use crate::kit::*;

/// The value of `key` in `key  value` output.
#[track_caller]
fn value_of(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{text}"))
}

#[tokio::test]
async fn account_create_shows_the_admin_token_once_in_text_and_json() {
    let kit = Kit::start();

    let text = kit.cli(ROOT, &["account", "create", "Acme"]).await.ok();
    let json = kit
        .cli(ROOT, &["accounts", "create", "Beta", "--output", "json"])
        .await
        .ok()
        .json();

    assert_eq!(value_of(&text.stdout, "name"), "Acme");
    let admin_token = value_of(&text.stdout, "admin_token");
    assert!(admin_token.starts_with("lh_adm_"), "{text:#?}");
    assert!(text.stderr.contains("shown only once"), "{text:#?}");
    assert_eq!(json["name"], "Beta");
    assert!(json["admin_token"].as_str().unwrap().starts_with("lh_adm_"));
    // An account admin may not create accounts: the server's code, exit 1.
    let refused = kit.cli(&admin_token, &["account", "create", "Gamma"]).await;
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(refused.stderr.contains("403 forbidden"), "{refused:#?}");
}

#[tokio::test]
async fn licenses_are_created_shown_changed_and_their_sessions_listed() {
    // Arrange
    let kit = Kit::start();
    let account = kit.client(ROOT).create_account("Acme").await.unwrap();
    let (aid, admin) = (account.id.as_str(), account.admin_token.as_str());

    // Act + Assert: create, in text and in JSON.
    let text = kit
        .cli(
            admin,
            &[
                "license",
                "create",
                "--account",
                aid,
                "--product",
                "cad",
                "--seats",
                "2",
                "--reserved",
                "alice,bob",
                "--inactivity-timeout",
                "600",
                "--on-full",
                "queue",
            ],
        )
        .await
        .ok();
    let id = value_of(&text.stdout, "id");
    assert_eq!(value_of(&text.stdout, "seats"), "2");
    assert_eq!(value_of(&text.stdout, "reserved"), "alice, bob");
    assert_eq!(value_of(&text.stdout, "inactivity_timeout"), "600 s");
    assert_eq!(value_of(&text.stdout, "on_full"), "queue");
    let json = kit
        .cli(
            admin,
            &[
                "license",
                "create",
                "--account",
                aid,
                "--product",
                "cam",
                "--model",
                "registered_users",
                "--seats",
                "1",
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(json["model"], "registered_users");
    assert_eq!(json["product"], "cam");

    // show, with usage.
    let bob = bob_session(&kit, aid, admin, &id).await;
    let shown = kit.cli(admin, &["license", "show", &id]).await.ok();
    assert_eq!(value_of(&shown.stdout, "in_use"), "1 of 2 (1 available)");
    let shown = kit
        .cli(admin, &["license", "show", &id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["usage"]["in_use"], 1);

    // set: seats directly, then a plan with extra seats, reserved users, suspension.
    let set = kit
        .cli(admin, &["license", "set", &id, "--seats", "4"])
        .await
        .ok();
    assert_eq!(value_of(&set.stdout, "seats"), "4");
    assert_eq!(value_of(&set.stdout, "in_use"), "1 of 4 (3 available)");
    let set = kit
        .cli(
            admin,
            &[
                "license",
                "set",
                &id,
                "--plan",
                "small-business-basic",
                "--extra-seats",
                "2",
                "--no-reserved",
                "--suspend",
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(set["seats"], 5, "{set}");
    assert_eq!(set["plan"], "small-business-basic");
    assert_eq!(set["reserved"], serde_json::json!([]));
    assert_eq!(set["suspended"], true);
    let set = kit
        .cli(
            admin,
            &["license", "set", &id, "--reserved", "carol", "--resume"],
        )
        .await
        .ok();
    assert_eq!(value_of(&set.stdout, "reserved"), "carol");
    assert_eq!(value_of(&set.stdout, "suspended"), "no");
    // The plan's cap is the server's rule: its code comes back, exit 1.
    let capped = kit
        .cli(admin, &["license", "set", &id, "--extra-seats", "1000"])
        .await;
    assert_eq!(capped.code, 1, "{capped:#?}");
    assert!(capped.stderr.contains("plan_cap_exceeded"), "{capped:#?}");
    // Nothing to change is a usage error.
    let nothing = kit.cli(admin, &["license", "set", &id]).await;
    assert_eq!(nothing.code, 2, "{nothing:#?}");

    // sessions: a table, or the server's list.
    let table = kit.cli(admin, &["license", "sessions", &id]).await.ok();
    let header = table.stdout.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("DEVICE"),
        "{table:#?}"
    );
    assert!(table.stdout.contains(bob.session_id()), "{table:#?}");
    assert!(table.stdout.contains("laptop"), "{table:#?}");
    let json = kit
        .cli(admin, &["license", "sessions", &id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(json["sessions"][0]["id"], bob.session_id());
    bob.release().await.unwrap();
    let empty = kit.cli(admin, &["license", "sessions", &id]).await.ok();
    assert_eq!(empty.stdout.trim(), "no live sessions");
}

/// Bob, with a session on the license.
async fn bob_session(
    kit: &Kit,
    account: &str,
    admin: &str,
    license: &str,
) -> leasehold_client::LeaseGuard {
    let admin = kit.client(admin);
    admin
        .put_user(
            account,
            "bob",
            &PutUser {
                kind: UserKind::Interactive,
                active: None,
            },
        )
        .await
        .unwrap();
    let token = admin.create_user_token(account, "bob").await.unwrap().token;
    kit.client(&token)
        .checkout(license, "laptop", "cad-1")
        .await
        .unwrap()
}

#[tokio::test]
async fn users_are_added_activated_and_deactivated() {
    // Arrange
    let kit = Kit::start();
    let tenant = kit.tenant(license(3)).await;
    let (aid, admin) = (tenant.account_id.as_str(), tenant.admin_token.as_str());

    // add: interactive in text, service in JSON (its secret shown once).
    let text = kit
        .cli(admin, &["user", "add", "bob", "--account", aid])
        .await
        .ok();
    assert_eq!(value_of(&text.stdout, "kind"), "interactive");
    assert_eq!(value_of(&text.stdout, "active"), "yes");
    let service = kit
        .cli(
            admin,
            &[
                "users",
                "add",
                "backend",
                "--service",
                "--account",
                aid,
                "-o",
                "json",
            ],
        )
        .await
        .ok();
    let json = service.json();
    assert_eq!(json["kind"], "service");
    assert!(json["client_id"].as_str().unwrap().starts_with("lh_cid_"));
    assert!(json["client_secret"]
        .as_str()
        .unwrap()
        .starts_with("lh_sec_"));
    assert!(service.stderr.contains("shown only once"));
    let text = kit
        .cli(
            admin,
            &["user", "add", "worker", "--service", "--account", aid],
        )
        .await
        .ok();
    assert!(value_of(&text.stdout, "client_secret").starts_with("lh_sec_"));

    // deactivate ends bob's session and frees its seat.
    let token = tenant
        .admin
        .create_user_token(aid, "bob")
        .await
        .unwrap()
        .token;
    let guard = kit
        .client(&token)
        .checkout(&tenant.license_id, "laptop", "cad-1")
        .await
        .unwrap();
    let user_sessions = kit
        .cli(
            admin,
            &["user", "sessions", "bob", "--account", aid, "-o", "json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(user_sessions["sessions"][0]["id"], guard.session_id());
    let text = kit
        .cli(admin, &["user", "sessions", "bob", "--account", aid])
        .await
        .ok();
    assert!(text.stdout.contains(guard.session_id()), "{text:#?}");
    let off = kit
        .cli(admin, &["user", "deactivate", "bob", "--account", aid])
        .await
        .ok();
    assert!(off.stdout.contains("bob is now inactive"), "{off:#?}");
    assert!(off.stdout.contains("1 live session(s) ended"), "{off:#?}");
    assert_eq!(tenant.in_use().await, 0);
    let refused = kit
        .client(&token)
        .checkout(&tenant.license_id, "laptop", "cad-2")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(leasehold_client::ErrorCode::UserInactive),
        "{refused:?}"
    );
    drop(guard);

    // activate (JSON), and the same for a service user (its kind is kept).
    let on = kit
        .cli(
            admin,
            &["user", "activate", "bob", "--account", aid, "-o", "json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(
        (on["username"].as_str(), on["active"].as_bool()),
        (Some("bob"), Some(true))
    );
    kit.client(&token)
        .checkout(&tenant.license_id, "laptop", "cad-3")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let svc = kit
        .cli(
            admin,
            &[
                "user",
                "deactivate",
                "backend",
                "--account",
                aid,
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(
        (svc["kind"].as_str(), svc["active"].as_bool()),
        (Some("service"), Some(false))
    );

    // An unknown user is not created by activate: 404, exit 1.
    let missing = kit
        .cli(admin, &["user", "activate", "nobody", "--account", aid])
        .await;
    assert_eq!(missing.code, 1, "{missing:#?}");
    assert!(missing.stderr.contains("404 not_found"), "{missing:#?}");
}

#[tokio::test]
async fn users_are_activated_per_license_on_registered_users_licenses() {
    let kit = Kit::start();
    let tenant = kit
        .tenant(CreateLicense {
            model: LicenseModel::RegisteredUsers,
            ..license(1)
        })
        .await;
    let (aid, admin, lid) = (
        tenant.account_id.as_str(),
        tenant.admin_token.as_str(),
        tenant.license_id.as_str(),
    );
    tenant.user_token("bob").await;
    tenant.user_token("carol").await;

    let on = kit
        .cli(
            admin,
            &[
                "user",
                "activate",
                "bob",
                "--account",
                aid,
                "--license",
                lid,
            ],
        )
        .await
        .ok();
    let full = kit
        .cli(
            admin,
            &["user", "activate", "carol", "--license", lid, "-o", "json"],
        )
        .await;
    let table = kit.cli(admin, &["license", "users", lid]).await.ok();
    let json = kit
        .cli(admin, &["license", "users", lid, "-o", "json"])
        .await
        .ok()
        .json();
    let off = kit
        .cli(
            admin,
            &["user", "deactivate", "bob", "--license", lid, "-o", "json"],
        )
        .await
        .ok()
        .json();

    assert!(
        on.stdout.contains("bob is now active on license"),
        "{on:#?}"
    );
    assert_eq!(full.code, 1, "{full:#?}");
    assert_eq!(
        full.stderr_json()["error"]["code"],
        "active_users_exhausted"
    );
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("bob") && l.contains("yes")),
        "{table:#?}"
    );
    assert!(table.stdout.contains("1 of 1 active"), "{table:#?}");
    assert_eq!(json["active"], 1);
    assert_eq!(off["active"], false);
}

#[tokio::test]
async fn devices_are_activated_up_to_the_limit_listed_and_deactivated() {
    // Arrange: a node_locked license for two devices; bob may open sessions.
    let kit = Kit::start();
    let tenant = kit
        .tenant(CreateLicense {
            model: LicenseModel::NodeLocked,
            ..license(2)
        })
        .await;
    let (admin, lid) = (tenant.admin_token.as_str(), tenant.license_id.as_str());
    let bob = kit.client(&tenant.user_token("bob").await);

    // activate: in text with a name, in JSON without; again: nothing changes.
    let text = kit
        .cli(
            admin,
            &[
                "device",
                "activate",
                "--license",
                lid,
                "3f:9a:01",
                "--name",
                "CAD workstation 7",
            ],
        )
        .await
        .ok();
    assert_eq!(value_of(&text.stdout, "fingerprint"), "3f:9a:01");
    assert_eq!(value_of(&text.stdout, "name"), "CAD workstation 7");
    assert_eq!(value_of(&text.stdout, "license"), lid);
    assert!(text.stderr.is_empty(), "{text:#?}");
    let json = kit
        .cli(
            admin,
            &[
                "devices",
                "activate",
                "--license",
                lid,
                "3f:9a:02",
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(
        (json["fingerprint"].as_str(), json["name"].as_str()),
        (Some("3f:9a:02"), Some(""))
    );
    let again = kit
        .cli(admin, &["device", "activate", "--license", lid, "3f:9a:01"])
        .await
        .ok();
    assert_eq!(value_of(&again.stdout, "name"), "CAD workstation 7");
    assert!(again.stderr.contains("already activated"), "{again:#?}");

    // A third device: the server's 409 code, exit 1, in both modes.
    let full = kit
        .cli(admin, &["device", "activate", "--license", lid, "3f:9a:03"])
        .await;
    assert_eq!(full.code, 1, "{full:#?}");
    assert!(
        full.stderr.contains("409 activations_exhausted"),
        "{full:#?}"
    );
    assert!(full.stdout.is_empty(), "{full:#?}");
    let full = kit
        .cli(
            admin,
            &[
                "device",
                "activate",
                "--license",
                lid,
                "3f:9a:03",
                "-o",
                "json",
            ],
        )
        .await;
    assert_eq!(full.code, 1, "{full:#?}");
    let error = full.stderr_json();
    assert_eq!(error["error"]["code"], "activations_exhausted");
    assert_eq!(error["error"]["status"], 409);

    // list: a table with the count, or the server's list.
    let table = kit
        .cli(admin, &["device", "list", "--license", lid])
        .await
        .ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(
        lines[0].starts_with("FINGERPRINT") && lines[0].contains("ACTIVATED"),
        "{table:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("3f:9a:01") && l.contains("CAD workstation 7")),
        "{table:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("3f:9a:02 ") && l.contains(" - ")),
        "an unnamed device shows a dash: {table:#?}"
    );
    assert_eq!(lines.last(), Some(&"2 of 2 devices activated"));
    let json = kit
        .cli(admin, &["device", "list", "--license", lid, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(json["devices"].as_array().unwrap().len(), 2);
    assert_eq!(json["max_devices"], 2);

    // deactivate: ends the device's session (text), then the other one (JSON).
    let guard = bob.checkout(lid, "3f:9a:01", "cad-1").await.unwrap();
    let off = kit
        .cli(
            admin,
            &["device", "deactivate", "--license", lid, "3f:9a:01"],
        )
        .await
        .ok();
    assert!(
        off.stdout
            .contains(&format!("3f:9a:01 is now deactivated on license {lid}")),
        "{off:#?}"
    );
    assert!(off.stdout.contains("1 live session(s) ended"), "{off:#?}");
    assert_eq!(tenant.in_use().await, 0);
    let refused = bob.checkout(lid, "3f:9a:01", "cad-2").await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(leasehold_client::ErrorCode::DeviceNotActivated),
        "{refused:?}"
    );
    drop(guard);
    let off = kit
        .cli(
            admin,
            &[
                "device",
                "deactivate",
                "--license",
                lid,
                "3f:9a:02",
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(off["fingerprint"], "3f:9a:02");
    assert_eq!(off["deactivated"], true);
    assert_eq!(off["ended_sessions"], serde_json::json!([]));
    let empty = kit
        .cli(admin, &["device", "list", "--license", lid])
        .await
        .ok();
    assert_eq!(empty.stdout.trim(), "0 of 2 devices activated");

    // A freed activation can be taken again; an unknown device is a 404, exit 1.
    kit.cli(admin, &["device", "activate", "--license", lid, "3f:9a:03"])
        .await
        .ok();
    let missing = kit
        .cli(
            admin,
            &["device", "deactivate", "--license", lid, "3f:9a:01"],
        )
        .await;
    assert_eq!(missing.code, 1, "{missing:#?}");
    assert!(missing.stderr.contains("404 not_found"), "{missing:#?}");
}

#[tokio::test]
async fn the_users_and_licenses_of_an_account_are_listed_and_a_user_shown() {
    // Arrange: bob (interactive) and an inactive service user; a second license.
    let kit = Kit::start();
    let tenant = kit.tenant(license(3)).await;
    let (aid, admin, lid) = (
        tenant.account_id.as_str(),
        tenant.admin_token.as_str(),
        tenant.license_id.as_str(),
    );
    tenant.user_token("bob").await;
    kit.cli(
        admin,
        &[
            "user",
            "add",
            "backend",
            "--service",
            "--inactive",
            "--account",
            aid,
        ],
    )
    .await
    .ok();
    let cam = kit
        .cli(
            admin,
            &[
                "license",
                "create",
                "--account",
                aid,
                "--product",
                "cam",
                "--model",
                "node-locked",
                "--seats",
                "4",
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    let cam_id = cam["id"].as_str().unwrap();
    let empty = kit.client(ROOT).create_account("Empty").await.unwrap();

    // user list / show, in both modes.
    let users = kit
        .cli(admin, &["user", "list", "--account", aid])
        .await
        .ok();
    let users_json = kit
        .cli(admin, &["users", "list", "--account", aid, "-o", "json"])
        .await
        .ok()
        .json();
    let shown = kit
        .cli(admin, &["user", "show", "backend", "--account", aid])
        .await
        .ok();
    let shown_json = kit
        .cli(
            admin,
            &["user", "show", "bob", "--account", aid, "-o", "json"],
        )
        .await
        .ok()
        .json();
    let missing = kit
        .cli(admin, &["user", "show", "nobody", "--account", aid])
        .await;
    let no_users = kit
        .cli(
            &empty.admin_token,
            &["user", "list", "--account", &empty.id],
        )
        .await
        .ok();

    let lines: Vec<&str> = users.stdout.lines().collect();
    assert!(
        lines[0].starts_with("USER") && lines[0].contains("KIND") && lines[0].contains("ACTIVE"),
        "{users:#?}"
    );
    assert_eq!(lines.len(), 3, "header + 2 rows: {users:#?}");
    let backend = lines.iter().find(|l| l.starts_with("backend")).unwrap();
    assert!(
        backend.contains("service") && backend.contains("no") && backend.contains("lh_cid_"),
        "{users:#?}"
    );
    let bob = lines.iter().find(|l| l.starts_with("bob")).unwrap();
    assert!(
        bob.contains("interactive") && bob.contains("yes"),
        "{users:#?}"
    );
    let mut names: Vec<&str> = users_json["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["backend", "bob"]);
    assert_eq!(value_of(&shown.stdout, "kind"), "service");
    assert_eq!(value_of(&shown.stdout, "active"), "no");
    assert!(value_of(&shown.stdout, "client_id").starts_with("lh_cid_"));
    assert!(
        !shown.stdout.contains("client_secret"),
        "the secret is never shown again: {shown:#?}"
    );
    assert_eq!(
        (shown_json["username"].as_str(), shown_json["kind"].as_str()),
        (Some("bob"), Some("interactive"))
    );
    assert_eq!(missing.code, 1, "{missing:#?}");
    assert!(missing.stderr.contains("404 not_found"), "{missing:#?}");
    assert_eq!(no_users.stdout.trim(), "no users");

    // license list, in both modes.
    let licenses = kit
        .cli(admin, &["license", "list", "--account", aid])
        .await
        .ok();
    let licenses_json = kit
        .cli(admin, &["licenses", "list", "--account", aid, "-o", "json"])
        .await
        .ok()
        .json();
    let no_licenses = kit
        .cli(
            &empty.admin_token,
            &["license", "list", "--account", &empty.id],
        )
        .await
        .ok();
    let other = kit
        .cli(
            &empty.admin_token,
            &["license", "list", "--account", aid, "-o", "json"],
        )
        .await;

    let lines: Vec<&str> = licenses.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("PRODUCT") && lines[0].contains("SEATS"),
        "{licenses:#?}"
    );
    assert_eq!(lines.len(), 3, "header + 2 rows: {licenses:#?}");
    let row = lines.iter().find(|l| l.starts_with(cam_id)).unwrap();
    assert!(
        row.contains("cam") && row.contains("node_locked") && row.contains(" 4 "),
        "{licenses:#?}"
    );
    assert!(lines.iter().any(|l| l.starts_with(lid)), "{licenses:#?}");
    let mut ids: Vec<&str> = licenses_json["licenses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected = [lid, cam_id];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert_eq!(no_licenses.stdout.trim(), "no licenses");
    assert_eq!(other.code, 1, "{other:#?}");
    assert_eq!(other.stderr_json()["error"]["code"], "forbidden");
}

#[tokio::test]
async fn tokens_and_oauth_access_tokens_are_printed_for_scripts() {
    // Arrange
    let kit = Kit::start();
    let tenant = kit.tenant(license(3)).await;
    let (aid, admin, lid) = (
        tenant.account_id.as_str(),
        tenant.admin_token.as_str(),
        tenant.license_id.as_str(),
    );
    kit.cli(admin, &["user", "add", "bob", "--account", aid])
        .await
        .ok();
    let service = kit
        .cli(
            admin,
            &[
                "user",
                "add",
                "backend",
                "--service",
                "--account",
                aid,
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    let (client_id, secret) = (
        service["client_id"].as_str().unwrap(),
        service["client_secret"].as_str().unwrap(),
    );

    // token create: the bare token in text, an object in JSON; both open sessions.
    let text = kit
        .cli(admin, &["token", "create", "bob", "--account", aid])
        .await
        .ok();
    let json = kit
        .cli(
            admin,
            &["tokens", "create", "bob", "--account", aid, "-o", "json"],
        )
        .await
        .ok()
        .json();
    for (i, token) in [text.stdout.trim(), json["token"].as_str().unwrap()]
        .into_iter()
        .enumerate()
    {
        assert!(token.starts_with("lh_usr_"), "{token:?}");
        let guard = kit
            .client(token)
            .checkout(lid, "laptop", &format!("cad-{i}"))
            .await
            .unwrap();
        guard.release().await.unwrap();
    }
    assert!(text.stderr.contains("shown only once"));

    // oauth token: the bare access token in text, the OAuth answer in JSON.
    let text = kit
        .cli(
            "",
            &[
                "oauth",
                "token",
                "--client-id",
                client_id,
                "--client-secret",
                secret,
            ],
        )
        .await
        .ok();
    let json = kit
        .cli(
            "",
            &[
                "oauth",
                "token",
                "--client-id",
                client_id,
                "--client-secret",
                secret,
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(json["token_type"], "Bearer");
    assert!(json["expires_in"].as_u64().unwrap() > 0);
    let guard = Client::with_token(kit.url(), text.stdout.trim())
        .unwrap()
        .checkout(lid, "host-1", "worker-1")
        .await
        .unwrap();
    assert_eq!(guard.session().username, "backend");
    guard.release().await.unwrap();

    // A wrong secret: the server's 401, exit 1.
    let wrong = kit
        .cli(
            "",
            &[
                "oauth",
                "token",
                "--client-id",
                client_id,
                "--client-secret",
                "nope",
            ],
        )
        .await;
    assert_eq!(wrong.code, 1, "{wrong:#?}");
    assert!(wrong.stderr.contains("401 unauthorized"), "{wrong:#?}");
}

#[tokio::test]
async fn sessions_are_listed_and_revoked() {
    // Arrange: bob holds a seat.
    let kit = Kit::start();
    let tenant = kit.tenant(license(2)).await;
    let (admin, lid) = (tenant.admin_token.as_str(), tenant.license_id.as_str());
    let bob = kit.client(&tenant.user_token("bob").await);
    let first = bob.checkout(lid, "laptop", "cad-1").await.unwrap();
    let second = bob.checkout(lid, "laptop", "cad-2").await.unwrap();

    // list in both modes, by license and by user.
    let table = kit
        .cli(admin, &["session", "list", "--license", lid])
        .await
        .ok();
    assert_eq!(
        table.stdout.lines().count(),
        3,
        "header + 2 rows: {table:#?}"
    );
    let by_user = kit
        .cli(
            admin,
            &[
                "sessions",
                "list",
                "--user",
                "bob",
                "--account",
                &tenant.account_id,
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(by_user["sessions"].as_array().unwrap().len(), 2);

    // revoke in text, then in JSON.
    let text = kit
        .cli(admin, &["session", "revoke", first.session_id()])
        .await
        .ok();
    assert_eq!(
        text.stdout.trim(),
        format!("revoked {}", first.session_id())
    );
    let json = kit
        .cli(
            admin,
            &["session", "revoke", second.session_id(), "-o", "json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(json["revoked"][0], second.session_id());
    assert_eq!(tenant.in_use().await, 0);

    // Revoking an ended session: the server's 410, exit 1, in both modes.
    let again = kit
        .cli(admin, &["session", "revoke", first.session_id()])
        .await;
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(again.stderr.contains("410 session_ended"), "{again:#?}");
    let again = kit
        .cli(
            admin,
            &["session", "revoke", first.session_id(), "-o", "json"],
        )
        .await;
    assert_eq!(again.code, 1);
    let error = again.stderr_json();
    assert_eq!(error["error"]["code"], "session_ended");
    assert_eq!(error["error"]["status"], 410);
    let table = kit
        .cli(admin, &["session", "list", "--license", lid, "-o", "json"])
        .await
        .ok();
    assert_eq!(table.json()["sessions"], serde_json::json!([]));
}

#[tokio::test]
async fn every_session_of_a_license_is_revoked_at_once() {
    // Arrange: bob holds three seats.
    let kit = Kit::start();
    let tenant = kit.tenant(license(5)).await;
    let (admin, lid) = (tenant.admin_token.as_str(), tenant.license_id.as_str());
    let bob = kit.client(&tenant.user_token("bob").await);
    let mut guards = Vec::new();
    for i in 0..3 {
        guards.push(
            bob.checkout(lid, "laptop", &format!("cad-{i}"))
                .await
                .unwrap(),
        );
    }

    // Act: in text, then again in JSON (nothing left).
    let text = kit
        .cli(admin, &["session", "revoke", "--license", lid, "--all"])
        .await
        .ok();
    let json = kit
        .cli(
            admin,
            &["session", "revoke", "--license", lid, "--all", "-o", "json"],
        )
        .await
        .ok()
        .json();

    // Assert
    assert_eq!(
        text.stdout.trim(),
        format!("revoked 3 session(s) of license {lid}")
    );
    assert_eq!(json, serde_json::json!({"revoked": 0}));
    assert_eq!(tenant.in_use().await, 0);
    for g in &guards {
        let err = bob.heartbeat(g.session_id()).await.unwrap_err();
        assert_eq!(
            err.end_reason(),
            Some(leasehold_client::proto::EndReason::Revoked)
        );
    }
    // `--all` goes with `--license`, and not with ids: a usage error, exit 2.
    for args in [
        &["session", "revoke", "--all"][..],
        &["session", "revoke", "--license", lid][..],
        &["session", "revoke", "some-id", "--license", lid, "--all"][..],
    ] {
        let wrong = kit.cli(admin, args).await;
        assert_eq!(wrong.code, 2, "{args:?}: {wrong:#?}");
    }
    // An unknown license: the server's 404, exit 1.
    let unknown = kit
        .cli(admin, &["session", "revoke", "--license", "nope", "--all"])
        .await;
    assert_eq!(unknown.code, 1, "{unknown:#?}");
    assert!(unknown.stderr.contains("404 not_found"), "{unknown:#?}");
}

#[tokio::test]
async fn usage_and_plans_in_both_modes() {
    let kit = Kit::start();
    let tenant = kit.tenant(license(1)).await;
    let (admin, lid) = (tenant.admin_token.as_str(), tenant.license_id.as_str());
    let bob = kit.client(&tenant.user_token("bob").await);
    let guard = bob.checkout(lid, "laptop", "cad-1").await.unwrap();
    let denied = bob.checkout(lid, "laptop", "cad-2").await.unwrap_err();
    assert!(denied.is_no_seat_available());

    let text = kit.cli(admin, &["usage", lid]).await.ok();
    let json = kit
        .cli(admin, &["usage", lid, "--bucket", "day", "-o", "json"])
        .await
        .ok()
        .json();
    let plans = kit.cli(admin, &["plans"]).await.ok();
    let plans_json = kit.cli(admin, &["plans", "-o", "json"]).await.ok().json();
    let bad_bucket = kit.cli(admin, &["usage", lid, "--bucket", "week"]).await;
    let csv = kit
        .cli(
            admin,
            &["license", "usage", lid, "--bucket", "minute", "--csv"],
        )
        .await
        .ok();
    let series = kit.cli(admin, &["license", "usage", lid]).await.ok();

    assert_eq!(value_of(&text.stdout, "in_use"), "1");
    assert_eq!(value_of(&text.stdout, "high_water"), "1");
    assert_eq!(value_of(&text.stdout, "denials"), "1");
    assert_eq!(json["now"]["in_use"], 1);
    assert_eq!(json["denials"], 1);
    assert!(plans.stdout.starts_with("PLAN"), "{plans:#?}");
    assert!(plans.stdout.contains("small-business-basic"), "{plans:#?}");
    assert!(plans_json
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "small-business-basic"));
    // The series: CSV of 24 h of minutes (the minute holding now included), and the text
    // form with its table of hours.
    let rows: Vec<&str> = csv.stdout.lines().collect();
    assert!(
        rows[0].starts_with("start,end,high_water,low_water,average_in_use,"),
        "{csv:#?}"
    );
    assert_eq!(rows.len(), 1 + 24 * 60 + 1, "{csv:#?}");
    assert_eq!(value_of(&series.stdout, "bucket"), "hour");
    assert!(series.stdout.contains("START"), "{series:#?}");
    assert_eq!(bad_bucket.code, 1, "{bad_bucket:#?}");
    assert!(
        bad_bucket.stderr.contains("unknown_bucket"),
        "{bad_bucket:#?}"
    );
    guard.release().await.unwrap();
}

#[tokio::test]
async fn settings_come_from_flags_environment_or_the_config_file() {
    // Arrange
    let kit = Kit::start();
    let tenant = kit.tenant(license(1)).await;
    let config = kit.home.path().join("ops.toml");
    std::fs::write(
        &config,
        format!(
            "url = \"{}\"\ntoken = \"{}\"\naccount = \"{}\"\noutput = \"json\"\n",
            kit.url(),
            tenant.admin_token,
            tenant.account_id
        ),
    )
    .unwrap();

    // A named config file: URL, token, account and output from it.
    let mut cmd = kit.command(
        "",
        &[
            "user",
            "add",
            "dave",
            "--cli-config",
            config.to_str().unwrap(),
        ],
    );
    cmd.env_remove("LEASEHOLD_URL");
    let from_file = run(cmd).await.ok().json();
    assert_eq!(from_file["username"], "dave");

    // The default config file is read too; flags win over it.
    let default = kit.home.path().join(".config/leasehold/cli.toml");
    std::fs::create_dir_all(default.parent().unwrap()).unwrap();
    std::fs::copy(&config, &default).unwrap();
    let mut cmd = kit.command("", &["user", "add", "erin", "-o", "text"]);
    cmd.env_remove("LEASEHOLD_URL");
    let text = run(cmd).await.ok();
    assert_eq!(value_of(&text.stdout, "username"), "erin");
    // The environment wins over the file: a wrong token from LEASEHOLD_TOKEN is used.
    let env_token = kit
        .cli("not-a-token", &["license", "show", &tenant.license_id])
        .await;
    assert_eq!(env_token.code, 1, "{env_token:#?}");
    assert_eq!(env_token.stderr_json()["error"]["code"], "unauthorized");
    // The --server flag wins over the environment.
    let flag = kit
        .cli(
            &tenant.admin_token,
            &["plans", "--server", "http://127.0.0.1:1", "-o", "text"],
        )
        .await;
    assert_eq!(flag.code, 69, "unreachable: {flag:#?}");
    assert!(flag.stderr.contains("cannot reach the server"), "{flag:#?}");

    // A typo in the file is a configuration error, and so is a missing token.
    std::fs::write(&default, "tokn = \"x\"\n").unwrap();
    let typo = kit.cli("", &["plans"]).await;
    assert_eq!(typo.code, 78, "{typo:#?}");
    assert!(typo.stderr.contains("cli.toml"), "{typo:#?}");
    std::fs::remove_file(&default).unwrap();
    let no_token = kit.cli("", &["plans"]).await;
    assert_eq!(no_token.code, 78, "{no_token:#?}");
    assert!(no_token.stderr.contains("LEASEHOLD_TOKEN"), "{no_token:#?}");
    let no_account = kit
        .cli(&tenant.admin_token, &["user", "add", "frank"])
        .await;
    assert_eq!(no_account.code, 78, "{no_account:#?}");
    assert!(no_account.stderr.contains("--account"), "{no_account:#?}");
}
