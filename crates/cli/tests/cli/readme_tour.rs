//! The README's five-minute tour, pasted: its shell blocks (those that talk to the tour's
//! server, `$S`) run in one `bash` against the real binary started as the tour starts it, and
//! every output the README shows (a `# {...}` or `# [...]` comment) must be printed.

use std::path::Path;
use std::process::Command;

use crate::support::{ServerProcess, BIN};

/// The README's `sh` blocks from the tour's heading up to the licensing models, that use the
/// tour's server (`$S`), in order.
fn tour_blocks(readme: &str) -> Vec<String> {
    let start = readme
        .find("## A five-minute tour")
        .expect("the README has its tour");
    let end = readme[start..]
        .find("## Licensing models and options")
        .map_or(readme.len(), |i| start + i);
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme[start..end].lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                if block.contains("$S") {
                    blocks.push(std::mem::take(block));
                }
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The outputs the blocks promise: comments that are JSON (`# {...}`, `# [...]`, on their own
/// line or after a command), leaving out those with elisions (`...`).
fn promised_outputs(script: &str) -> Vec<String> {
    script
        .lines()
        .filter_map(|line| {
            let comment = line.rfind("# {").or_else(|| line.rfind("# ["))?;
            let shown = line[comment + 2..].trim();
            (!shown.contains("...")).then(|| shown.to_owned())
        })
        .collect()
}

#[test]
fn the_readme_tour_works_when_pasted() {
    // Arrange: the tour's server (root token change-me) and its blocks, aimed at it.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let blocks = tour_blocks(&readme);
    assert!(blocks.len() >= 4, "the tour's blocks: {blocks:?}");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &[("LEASEHOLD_ADMIN_TOKEN", "change-me")],
    );
    let script = blocks.concat();
    let promised = promised_outputs(&script);
    assert!(promised.len() >= 4, "outputs shown: {promised:?}");
    let tour_url = "S=http://127.0.0.1:8470";
    assert!(script.contains(tour_url), "the tour sets S to its server");
    let cookies = dir.path().join("lh.cookies");
    let script = script
        .replace(tour_url, &format!("S={}", server.url))
        .replace("/tmp/lh.cookies", cookies.to_str().unwrap());
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // Act: as pasted, but stopping at the first command that fails.
    let out = Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("LEASEHOLD_URL")
        .env_remove("LEASEHOLD_TOKEN")
        .output()
        .expect("bash runs (curl and jq are needed too)");

    // Assert: it ran through, and printed what the README shows.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the tour stopped ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for shown in &promised {
        assert!(
            stdout.contains(shown.as_str()),
            "the README shows {shown} but the tour printed:\n{stdout}"
        );
    }
    // And what the README says in words: the logout's 204, the service's bearer token, the
    // dashboard's sign-in and sign-out (303), the inactivity end in the audit log.
    for said in [
        "204",
        "\"token_type\":\"Bearer\"",
        "303",
        "[\"ended\",\"carol\",\"inactivity\"]",
    ] {
        assert!(stdout.contains(said), "{said} missing from:\n{stdout}");
    }
}
