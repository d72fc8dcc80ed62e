//! Generates the C header `include/tcpchat.h` from the Rust sources with
//! cbindgen (configuration in `cbindgen.toml`).
//!
//! Cargo expects build scripts to write only inside `OUT_DIR`, so the header
//! is generated there first. It is then copied to `include/tcpchat.h` (which
//! is committed, for C users who never run cargo) only when its content
//! differs, so a build that changes nothing leaves the file untouched. When
//! the environment variable `CI` or `TCPCHAT_NO_HEADER_UPDATE` is set the
//! copy is skipped: the test `tests/header.rs` then fails if the committed
//! header is stale, instead of the build silently fixing it.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=TCPCHAT_NO_HEADER_UPDATE");

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("reading cbindgen.toml");
    let generated = out_dir.join("tcpchat.h");
    match cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
    {
        Ok(bindings) => {
            bindings.write_to_file(&generated);
        }
        Err(e) => {
            // A source that does not parse fails the compile itself with a
            // better message; do not mask it here.
            println!("cargo:warning=cbindgen could not generate tcpchat.h: {e}");
            return;
        }
    }

    let no_update = env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
        || env::var_os("TCPCHAT_NO_HEADER_UPDATE").is_some();
    if no_update {
        return;
    }
    let fresh = fs::read(&generated).expect("reading the generated header");
    let committed = crate_dir.join("include").join("tcpchat.h");
    if fs::read(&committed).ok().as_deref() != Some(&fresh[..]) {
        fs::create_dir_all(committed.parent().unwrap()).expect("creating include/");
        fs::write(&committed, &fresh).expect("writing include/tcpchat.h");
    }
}
