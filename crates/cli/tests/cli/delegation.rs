//! Dark sites from the command line: two real `leasehold serve` processes, a cloud and a local
//! server started with `--vendor-jwks` (the cloud's JWKS saved to a file), and the file
//! workflow of the README run step by step with `leasehold delegation …`.

use crate::kit::{license, Kit, ROOT};
use crate::support::ServerProcess;

/// The wall clock plus `days`, in RFC 3339.
fn in_days(days: i64) -> String {
    #[allow(clippy::disallowed_methods)] // the test's own reading of the (shared) wall clock
    let now = time::OffsetDateTime::now_utc();
    (now + time::Duration::days(days))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn the_file_workflow_runs_end_to_end_with_the_cli() {
    // The cloud, with a 3-seat license.
    let cloud = Kit::start();
    let tenant = cloud.tenant(license(3)).await;
    let files = tempfile::tempdir().unwrap();
    let path = |name: &str| files.path().join(name).to_str().unwrap().to_owned();

    // The vendor's key, saved to a file, given to the local server at setup.
    let jwks = cloud.client(ROOT).jwks().await.unwrap();
    std::fs::write(
        path("vendor-jwks.json"),
        serde_json::to_string(&jwks).unwrap(),
    )
    .unwrap();
    let local_data = tempfile::tempdir().unwrap();
    let local = Kit::with_server(
        ServerProcess::start_with(
            local_data.path(),
            &[("LEASEHOLD_ADMIN_TOKEN", ROOT)],
            &["--vendor-jwks", &path("vendor-jwks.json")],
            None,
        ),
        local_data,
    );

    // 1. Local: the request file.
    let req = local
        .cli(
            ROOT,
            &[
                "delegation",
                "request",
                "--site",
                "plant-7",
                "--out",
                &path("request.json"),
            ],
        )
        .await
        .ok();
    assert!(req.stdout.contains("plant-7"), "{req:#?}");

    // 2. Cloud: 2 seats for the local server, for 30 days.
    let expires_at = in_days(30);
    let created = cloud
        .cli(
            &tenant.admin_token,
            &[
                "delegation",
                "create",
                "--license",
                &tenant.license_id,
                "--seats",
                "2",
                "--expires-at",
                &expires_at,
                "--request",
                &path("request.json"),
                "--out",
                &path("delegation.json"),
            ],
        )
        .await
        .ok();
    assert!(created.stdout.contains("sequence"), "{created:#?}");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path("delegation.json")).unwrap()).unwrap();
    let delegation_id = file["delegation_id"].as_str().unwrap().to_owned();
    let usage = tenant
        .admin
        .get_license(&tenant.license_id)
        .await
        .unwrap()
        .usage
        .unwrap();
    assert_eq!((usage.delegated, usage.available), (2, 1));

    // 3. Local: an account, the import, a user, and a program run on a local seat.
    let account = local
        .cli(ROOT, &["account", "create", "Plant 7", "--output", "json"])
        .await
        .ok()
        .json();
    let account_id = account["id"].as_str().unwrap().to_owned();
    let admin_token = account["admin_token"].as_str().unwrap().to_owned();
    let imported = local
        .cli(
            ROOT,
            &[
                "delegation",
                "import",
                &path("delegation.json"),
                "--account",
                &account_id,
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(imported["outcome"], "created");
    assert_eq!(imported["license_id"], delegation_id.as_str());
    // Importing it again changes nothing.
    let again = local
        .cli(
            ROOT,
            &[
                "delegation",
                "import",
                &path("delegation.json"),
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(again["outcome"], "unchanged");
    local
        .cli(
            &admin_token,
            &["user", "add", "bob", "--account", &account_id],
        )
        .await
        .ok();
    let bob = local
        .cli(
            &admin_token,
            &["token", "create", "bob", "--account", &account_id],
        )
        .await
        .ok()
        .stdout
        .trim()
        .to_owned();
    local
        .cli(&bob, &["run", "--license", &delegation_id, "true"])
        .await
        .ok();

    // 4. Local: a usage report, imported on the cloud twice (counted once).
    local
        .cli(
            ROOT,
            &[
                "delegation",
                "report",
                "--delegation",
                &delegation_id,
                "--out",
                &path("report.json"),
            ],
        )
        .await
        .ok();
    for kept in [true, false] {
        let imported = cloud
            .cli(
                &tenant.admin_token,
                &[
                    "delegation",
                    "import-report",
                    &path("report.json"),
                    "--license",
                    &tenant.license_id,
                    "-o",
                    "json",
                ],
            )
            .await
            .ok()
            .json();
        assert_eq!(imported["kept"], kept, "{imported}");
        assert_eq!(imported["site"]["opened"], 1, "{imported}");
    }
    let usage = cloud
        .cli(
            &tenant.admin_token,
            &["usage", &tenant.license_id, "-o", "json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(usage["sites"][0]["site"], "plant-7", "{usage}");

    // 5. Local: the return, and its receipt imported on the cloud (twice: counted once).
    local
        .cli(
            ROOT,
            &[
                "delegation",
                "return",
                "--delegation",
                &delegation_id,
                "--out",
                &path("receipt.json"),
            ],
        )
        .await
        .ok();
    let refused = local
        .cli(&bob, &["run", "--license", &delegation_id, "true"])
        .await;
    assert_ne!(refused.code, 0, "{refused:#?}");
    for _ in 0..2 {
        cloud
            .cli(
                &tenant.admin_token,
                &[
                    "delegation",
                    "import-receipt",
                    &path("receipt.json"),
                    "--license",
                    &tenant.license_id,
                ],
            )
            .await
            .ok();
    }
    let list = cloud
        .cli(
            &tenant.admin_token,
            &[
                "delegation",
                "list",
                "--license",
                &tenant.license_id,
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(list["delegations"][0]["status"], "returned");
    let usage = tenant
        .admin
        .get_license(&tenant.license_id)
        .await
        .unwrap()
        .usage
        .unwrap();
    assert_eq!((usage.delegated, usage.available), (0, 3));

    // A tampered file is refused with its code (exit 1).
    let text = std::fs::read_to_string(path("delegation.json")).unwrap();
    let mut tampered: serde_json::Value = serde_json::from_str(&text).unwrap();
    let jws = tampered["delegation"].as_str().unwrap().to_owned();
    let (head, sig) = jws.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    tampered["delegation"] = format!("{head}.{flipped}{}", &sig[1..]).into();
    std::fs::write(path("tampered.json"), tampered.to_string()).unwrap();
    let bad = local
        .cli(ROOT, &["delegation", "import", &path("tampered.json")])
        .await;
    assert_eq!(bad.code, 1, "{bad:#?}");
    assert!(
        bad.stderr.contains("delegation_signature_invalid"),
        "{bad:#?}"
    );
}
