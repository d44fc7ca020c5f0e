//! No panic crosses the C boundary: every `extern "C"` function of the crate runs its body
//! under `boundary` (fallible functions) or `guarded` (the others), both of which catch
//! panics (`src/error.rs` tests that they turn one into `LEASEHOLD_RESULT_INTERNAL` or the
//! fallback value). This test reads the sources so that a new entry point cannot skip it.

use std::path::Path;

/// The entry points of one source file: (name, body up to the next item).
fn entry_points(source: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("extern \"C\" fn ") {
        let after = &rest[at + "extern \"C\" fn ".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // The body: from the signature to the next item (`#[` or the end of the file).
        let end = after.find("\n#[").unwrap_or(after.len());
        found.push((name, after[..end].to_owned()));
        rest = &after[end..];
    }
    found
}

#[test]
fn every_entry_point_catches_panics() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for file in std::fs::read_dir(&src).unwrap() {
        let path = file.unwrap().path();
        let source = std::fs::read_to_string(&path).unwrap();
        for (name, body) in entry_points(&source) {
            // `pub type ... = Option<unsafe extern "C" fn(...)>`: a callback type, not ours.
            if name.is_empty() {
                continue;
            }
            let fallible = body.contains(&format!("boundary(\"{name}\""));
            let infallible = body.contains("guarded(");
            assert!(
                fallible || infallible,
                "{}: {name} does not run under boundary() or guarded()",
                path.display()
            );
            checked += 1;
        }
    }
    // Every function the header declares is one of them.
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/leasehold.h"))
            .unwrap();
    // A declaration starts a line with its return type: `const char *leasehold_version(void);`.
    let declared: Vec<&str> = header
        .lines()
        .filter(|line| line.starts_with(|c: char| c.is_ascii_lowercase()))
        .filter(|line| !line.starts_with("typedef"))
        .filter_map(|line| line.split_once('(').map(|(head, _)| head))
        .filter_map(|head| head.rsplit([' ', '*']).next())
        .collect();
    assert_eq!(declared.len(), checked, "declared: {declared:?}");
}
