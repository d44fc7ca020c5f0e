//! `include/leasehold.h` is what cbindgen makes of the crate today: regenerated and compared,
//! so that a change of the C API cannot land without its header. `LEASEHOLD_UPDATE_HEADER=1`
//! writes the new header instead of failing.

use std::path::Path;

#[test]
fn header_is_up_to_date() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .unwrap()
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = crate_dir.join("include/leasehold.h");
    if std::env::var_os("LEASEHOLD_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is out of date: run `LEASEHOLD_UPDATE_HEADER=1 cargo test -p leasehold-ffi --test ffi` \
         and commit the result",
        path.display()
    );
}
