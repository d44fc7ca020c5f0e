//! Marks the PostgreSQL tests as ignored (visibly, with the reason) when the test build has no
//! PostgreSQL to run them against: `cargo test` without `LEASEHOLD_TEST_DATABASE_URL` lists
//! them as "ignored, needs PostgreSQL…" instead of passing them silently. Under CI (`CI` set)
//! they are always built to run, so a missing database fails them.

fn main() {
    println!("cargo::rerun-if-env-changed=LEASEHOLD_TEST_DATABASE_URL");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    let url = std::env::var("LEASEHOLD_TEST_DATABASE_URL").unwrap_or_default();
    if !url.is_empty() || std::env::var_os("CI").is_some() {
        println!("cargo::rustc-cfg=postgres_tests");
    }
}
