//! The README's walk-throughs, pasted: the five-minute tour's shell blocks and the licensing
//! models' (those that talk to the tour's server, `$S`) run in one `bash` against the real binary started as the tour
//! starts it, and every output the README shows (a `# {...}` or `# [...]` comment) must be
//! printed; the admin CLI's, the offline borrow's and the dark site's blocks run against the
//! same kind of server, with `leasehold` on `PATH`.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{ServerProcess, BIN};

/// The README's `sh` blocks from the heading `from` up to the heading `to`, in order.
fn sh_blocks(readme: &str, from: &str, to: &str) -> Vec<String> {
    let start = readme.find(from).expect("the README has the section");
    let end = readme[start..].find(to).map_or(readme.len(), |i| start + i);
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme[start..end].lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
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

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap()
}

/// The tour's server address, as the README writes it.
const TOUR_URL: &str = "http://127.0.0.1:8470";

/// Runs `script` in `bash` in `dir` (`-e -o pipefail` when `strict`) against `server` (the
/// tour's address replaced by the server's), with `leasehold` on `PATH`.
fn run_pasted(script: &str, dir: &Path, server: &ServerProcess, strict: bool) -> Output {
    assert!(
        script.contains(TOUR_URL),
        "the block talks to the tour's server"
    );
    let script = script.replace(TOUR_URL, &server.url);
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut bash = Command::new("bash");
    if strict {
        bash.args(["-e", "-o", "pipefail"]);
    }
    bash.args(["-c", &script])
        .current_dir(dir)
        .env("PATH", path)
        .env("HOME", dir)
        .env_remove("LEASEHOLD_URL")
        .env_remove("LEASEHOLD_TOKEN")
        .output()
        .expect("bash runs (curl and jq are needed too)")
}

fn tour_server(dir: &Path) -> ServerProcess {
    ServerProcess::start(&dir.join("data"), &[("LEASEHOLD_ADMIN_TOKEN", "change-me")])
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
    // Arrange: the tour's server (root token change-me) and the blocks that use it, up to the
    // licensing models.
    let blocks: Vec<String> =
        sh_blocks(&readme(), "## A five-minute tour", "## Waiting for a seat")
            .into_iter()
            .filter(|b| b.contains("$S"))
            .collect();
    assert!(blocks.len() >= 4, "the tour's blocks: {blocks:?}");
    let dir = tempfile::tempdir().unwrap();
    let server = tour_server(dir.path());
    let script = blocks.concat();
    let promised = promised_outputs(&script);
    assert!(promised.len() >= 4, "outputs shown: {promised:?}");
    let cookies = dir.path().join("lh.cookies");
    let script = script.replace("/tmp/lh.cookies", cookies.to_str().unwrap());

    // Act: as pasted, but stopping at the first command that fails.
    let out = run_pasted(&script, dir.path(), &server, true);

    // Assert: it ran through, and printed what the README shows.
    let (stdout, stderr) = texts(&out);
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

/// Runs the one `sh` block of the README's section `from` (up to `to`) against a tour server:
/// its exit status, stdout and stderr.
fn run_section(from: &str, to: &str, strict: bool) -> (Output, String, String) {
    let blocks = sh_blocks(&readme(), from, to);
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    let dir = tempfile::tempdir().unwrap();
    let server = tour_server(dir.path());
    let out = run_pasted(&blocks[0], dir.path(), &server, strict);
    let (stdout, stderr) = texts(&out);
    (out, stdout, stderr)
}

fn assert_printed(stdout: &str, stderr: &str, said: &[&str]) {
    for s in said {
        assert!(stdout.contains(s), "{s} missing from:\n{stdout}\n{stderr}");
    }
}

#[test]
fn the_readme_admin_cli_walk_through_works_when_pasted() {
    // Act
    let (out, stdout, stderr) = run_section("## The admin CLI", "## Running it", true);

    // Assert: every command ran; the plan list and the node-locked device did their part.
    assert!(out.status.success(), "stopped:\n{stdout}\n{stderr}");
    assert_printed(
        &stdout,
        &stderr,
        &[
            "small-business-basic",
            "1 of 2 devices activated",
            "3f:9a:01 is now deactivated",
        ],
    );
}

#[test]
fn the_readme_borrow_walk_through_works_when_pasted() {
    // Act: not strict: its last command fails on purpose (exit 77, the reclaimed lease).
    let (out, stdout, stderr) = run_section("## Borrowing a seat offline", "## Dark sites", false);

    // Assert: offline work on the lease, the return, the reclaim; and the last refusal.
    assert_printed(
        &stdout,
        &stderr,
        &[
            "licensed work",
            "1 borrowed",
            "dora (borrowed)",
            "returned session",
            "reclaimed",
        ],
    );
    assert!(
        !stdout.contains("never"),
        "a reclaimed lease ran:\n{stdout}"
    );
    assert_eq!(out.status.code(), Some(77), "{stdout}\n{stderr}");
    assert!(stderr.contains("was reclaimed"), "{stderr}");
}

#[test]
fn the_readme_dark_site_walk_through_works_when_pasted() {
    // Arrange: the first block of the section (the second starts a server in online mode and
    // runs until stopped); the site's server gets a free port in place of the README's 8471.
    let blocks = sh_blocks(&readme(), "## Dark sites", "## The admin CLI");
    let walk = blocks.first().expect("the walk-through's block");
    assert!(walk.contains("127.0.0.1:8471"), "{walk}");
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let site = free.local_addr().unwrap().to_string();
    drop(free);
    let dir = tempfile::tempdir().unwrap();
    let cloud = tour_server(dir.path());

    // Act
    // A block that stops early leaves no site server behind (it would hold the output open).
    let script = format!(
        "trap 'kill $(jobs -p) 2>/dev/null' EXIT\n{}",
        walk.replace("127.0.0.1:8471", &site)
    );
    let out = run_pasted(&script, dir.path(), &cloud, true);

    // Assert: the seats went and came back, the site's work ran, its report reached the cloud.
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "stopped:\n{stdout}\n{stderr}");
    assert_printed(
        &stdout,
        &stderr,
        &[
            "written    request.json",
            "(6 available)",
            "licensed work",
            "outcome     renewed",
            "\"site\": \"plant-7\"",
            "kept             yes",
            "status      returned",
        ],
    );
}

#[test]
fn every_error_code_is_named_in_the_readme() {
    // The codes as `ErrorCode::as_str` spells them (`unknown` is the client's, for codes it
    // does not know: the server never answers it).
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/src/error.rs"),
    )
    .unwrap();
    let codes: Vec<&str> = source
        .split("=> \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|code| *code != "unknown")
        .collect();
    assert!(codes.len() > 30, "{codes:?}");
    let readme = readme();
    let unnamed: Vec<&&str> = codes
        .iter()
        .filter(|code| !readme.contains(&format!("`{code}`")))
        .collect();
    assert!(
        unnamed.is_empty(),
        "codes the README never names: {unnamed:?}"
    );
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_metric_family_is_in_the_readmes_table() {
    // The names the server and the store give their metrics (string literals `leasehold_...`;
    // the store's PostgreSQL NOTIFY channels are the only other such literals).
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&crates.join("server/src"), &mut files);
    rust_files(&crates.join("store/src"), &mut files);
    let mut families = std::collections::BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for literal in text.split("\"leasehold_").skip(1) {
            let Some((rest, _)) = literal.split_once('"') else {
                continue;
            };
            if rest.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                families.insert(format!("leasehold_{rest}"));
            }
        }
    }
    for channel in ["leasehold_events", "leasehold_queue"] {
        families.remove(channel);
    }
    assert!(families.len() > 25, "{families:?}");

    // The README's table: its rows start with a family's name.
    let readme = readme();
    let rows: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| `leasehold_"))
        .collect();
    let missing: Vec<&String> = families
        .iter()
        .filter(|f| !rows.iter().any(|row| row.contains(&format!("`{f}`"))))
        .collect();
    assert!(
        missing.is_empty(),
        "families not in the README's table: {missing:?}"
    );
}

fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
