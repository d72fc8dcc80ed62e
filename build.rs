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
//!
//! The header also gets `TCPCHAT_VERSION_MAJOR`, `_MINOR` and `_PATCH`, taken
//! from the package version (cbindgen's `after_includes`), so they cannot
//! drift from what `tcpchat_version()` returns.
//!
//! On ELF platforms the shared library gets the SONAME `libtcpchat.so.MAJOR`
//! (`libtcpchat.so.0` for every 0.x release): programs linked against it
//! record that name, and the dynamic loader finds whichever
//! `libtcpchat.so.MAJOR.MINOR.PATCH` the link points at (see README, "C").

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=TCPCHAT_NO_HEADER_UPDATE");

    if soname_platform() {
        let soname = format!("libtcpchat.so.{}", version_part("CARGO_PKG_VERSION_MAJOR"));
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
        link_soname_in_target_dir(&out_dir, &soname);
    }

    let mut config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("reading cbindgen.toml");
    config.after_includes = Some(version_macros());
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

/// `#define TCPCHAT_VERSION_*` for the header, from Cargo's package version.
fn version_macros() -> String {
    let (major, minor, patch) = (
        version_part("CARGO_PKG_VERSION_MAJOR"),
        version_part("CARGO_PKG_VERSION_MINOR"),
        version_part("CARGO_PKG_VERSION_PATCH"),
    );
    format!(
        "\n/**\n \
         * The version of tcpchat this header comes from (Cargo.toml's), for checks at\n \
         * compile time such as `#if TCPCHAT_VERSION_MAJOR == {major}`. `tcpchat_version()`\n \
         * returns the version of the library loaded at run time as the string\n \
         * \"MAJOR.MINOR.PATCH\"; a program may compare the two. Libraries with the same\n \
         * TCPCHAT_VERSION_MAJOR share the SONAME libtcpchat.so.{major}.\n \
         */\n\
         #define TCPCHAT_VERSION_MAJOR {major}\n\
         #define TCPCHAT_VERSION_MINOR {minor}\n\
         #define TCPCHAT_VERSION_PATCH {patch}"
    )
}

/// One number of the package version, as cargo gives it to build scripts.
fn version_part(name: &str) -> String {
    let value = env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    assert!(
        !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()),
        "{name}={value:?} is not a number"
    );
    value
}

/// Whether the target links shared libraries as ELF with a GNU-style
/// `-soname` (Linux, Android, the BSDs). macOS and Windows name their
/// libraries differently and are left as cargo builds them.
fn soname_platform() -> bool {
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    matches!(
        os.as_str(),
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly"
    )
}

/// Create `libtcpchat.so.0 -> libtcpchat.so` (the SONAME) beside the library cargo builds
/// (`target/release/`, `target/debug/`).
///
/// A program linked against `target/release/libtcpchat.so` records the
/// SONAME `libtcpchat.so.0` and looks for that file at run time (through its
/// rpath or `LD_LIBRARY_PATH`), so without this link the in-tree C examples,
/// tests and benchmarks would link but not start. This is the one thing the
/// script writes outside `OUT_DIR`: a symbolic link in cargo's own output
/// directory, never in the source tree, created only when the directory is
/// recognised (`OUT_DIR` is `<dir>/build/tcpchat-<hash>/out`, and `<dir>`
/// holds `deps/`). Nothing is done when a link or file is already there.
fn link_soname_in_target_dir(out_dir: &Path, soname: &str) {
    let Some(artifacts) = out_dir.ancestors().nth(3) else {
        return;
    };
    let build = out_dir.ancestors().nth(2);
    if build.and_then(Path::file_name) != Some("build".as_ref()) || !artifacts.join("deps").is_dir() {
        return;
    }
    let link = artifacts.join(soname);
    if fs::symlink_metadata(&link).is_ok() {
        return;
    }
    #[cfg(unix)]
    if let Err(e) = std::os::unix::fs::symlink("libtcpchat.so", &link) {
        println!("cargo:warning=cannot create {}: {e}", link.display());
    }
}
