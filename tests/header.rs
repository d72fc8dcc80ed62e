//! The committed C header `include/tcpchat.h` is what cbindgen generates from
//! the sources today, and everything it declares is named `tcpchat_*` or
//! `TCPCHAT_*`.
//!
//! build.rs generates the header into `OUT_DIR` and copies it to `include/`
//! when it differs, except when `CI` or `TCPCHAT_NO_HEADER_UPDATE` is set: in
//! CI the copy is skipped, so a source change whose header was not committed
//! makes `committed_header_is_fresh` fail. (Cargo sets `OUT_DIR` for every
//! target of a package with a build script, integration tests included.)
//!
//! The symbols `libtcpchat.so` exports are checked by `make -C tests/c check`
//! (`nm -D`), which needs the shared library this test does not build.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

const FRESH: &str = concat!(env!("OUT_DIR"), "/tcpchat.h");

fn committed() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("include")
        .join("tcpchat.h");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn committed_header_is_fresh() {
    let fresh = fs::read_to_string(FRESH).unwrap_or_else(|e| {
        panic!("reading the header build.rs generated at {FRESH}: {e} (did cbindgen fail? see the build warnings)")
    });
    let committed = committed();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(fresh.lines().count()));
        panic!(
            "include/tcpchat.h is stale: it differs from a fresh generation from line {}:\n  committed: {:?}\n  fresh:     {:?}\n\
             Run `cargo build` without CI/TCPCHAT_NO_HEADER_UPDATE set to update it, and commit it.",
            line + 1,
            committed.lines().nth(line).unwrap_or("(end of file)"),
            fresh.lines().nth(line).unwrap_or("(end of file)"),
        );
    }
}

/// The header without comments, without the C++-only lines, and with its
/// `#define`s taken out: (code, [(macro name, macro value)]).
fn parse(header: &str) -> (String, Vec<(String, String)>) {
    // Comments: /* ... */ and // ... (no string literal in the header holds either).
    let mut text = String::new();
    let mut rest = header;
    while let Some(i) = rest.find("/*") {
        text.push_str(&rest[..i]);
        let end = rest[i..]
            .find("*/")
            .expect("unterminated comment in the header");
        rest = &rest[i + end + 2..];
    }
    text.push_str(rest);
    let mut code = String::new();
    let mut defines = Vec::new();
    let mut cplusplus = false;
    for line in text.lines() {
        let line = line.split("//").next().unwrap().trim();
        if line == "#ifdef __cplusplus" {
            cplusplus = true;
        } else if cplusplus {
            cplusplus = line != "#endif";
        } else if let Some(def) = line.strip_prefix("#define") {
            let mut parts = def.trim().splitn(2, char::is_whitespace);
            let name = parts.next().unwrap_or_default().to_string();
            defines.push((name, parts.next().unwrap_or_default().trim().to_string()));
        } else if !line.starts_with('#') {
            code.push_str(line);
            code.push('\n');
        }
    }
    (code, defines)
}

fn identifiers(s: &str) -> Vec<&str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty() && !w.starts_with(|c: char| c.is_ascii_digit()))
        .collect()
}

/// Every name the header declares at file scope: macros, typedef names,
/// enumerators, functions. (Struct fields and parameters are not global.)
fn declared_names(header: &str) -> (BTreeSet<String>, Vec<(String, String)>) {
    let (code, defines) = parse(header);
    let mut names: BTreeSet<String> = defines.iter().map(|(n, _)| n.clone()).collect();
    // Split the code into top-level declarations at `;` outside braces.
    let mut decls = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in code.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ';' if depth == 0 => {
                decls.push(code[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    assert!(
        code[start..].trim().is_empty(),
        "trailing code in the header: {:?}",
        &code[start..]
    );
    for decl in &decls {
        if let Some(open) = decl.find('{') {
            let close = decl.rfind('}').expect("unbalanced braces");
            if identifiers(&decl[..open]).contains(&"enum") {
                for entry in decl[open + 1..close].split(',') {
                    if let Some(first) = identifiers(entry).first() {
                        names.insert(first.to_string());
                    }
                }
            }
            // The typedef name after the closing brace.
            names.extend(
                identifiers(&decl[close + 1..])
                    .iter()
                    .map(|s| s.to_string()),
            );
        } else if let Some(i) = decl.find("(*") {
            // typedef RET (*NAME)(ARGS)
            let name = identifiers(&decl[i + 2..])[0];
            names.insert(name.to_string());
        } else if let Some(i) = decl.find('(') {
            // A function: the identifier just before its parameter list.
            let name = *identifiers(&decl[..i])
                .last()
                .expect("a function without a name");
            names.insert(name.to_string());
        } else {
            // typedef OLD NEW / typedef struct TAG NEW: the last word.
            let name = *identifiers(decl).last().expect("an empty declaration");
            names.insert(name.to_string());
        }
    }
    (names, defines)
}

#[test]
fn header_declares_only_tcpchat_names() {
    let (names, defines) = declared_names(&committed());
    let bad: Vec<&String> = names
        .iter()
        .filter(|n| !(n.starts_with("tcpchat_") || n.starts_with("TCPCHAT_")))
        .collect();
    assert!(
        bad.is_empty(),
        "the header declares names outside tcpchat_/TCPCHAT_: {bad:?}"
    );
    // The parse found the API, not nothing.
    for expected in [
        "tcpchat_conn_connect",
        "tcpchat_server_free",
        "tcpchat_status",
        "TCPCHAT_STATUS_OK",
        "TCPCHAT_STATUS_INTERNAL",
        "TCPCHAT_FRAMING_LINE",
        "tcpchat_chat_callbacks",
        "tcpchat_log_callback",
        "TCPCHAT_ADDR_MAX",
        "TCPCHAT_H",
    ] {
        assert!(
            names.contains(expected),
            "the parse of the header missed {expected}: {names:?}"
        );
    }
    assert!(
        names.iter().filter(|n| n.starts_with("tcpchat_")).count() >= 40,
        "{names:?}"
    );
    // Every macro (but the include guard) is a plain number that C can use:
    // no expansion naming Rust items that do not exist in C.
    for (name, value) in defines.iter().filter(|(n, _)| n != "TCPCHAT_H") {
        assert!(
            !value.is_empty() && value.chars().all(|c| c.is_ascii_digit()),
            "#define {name} {value}: not a plain number"
        );
    }
}

#[test]
fn the_parser_catches_foreign_names() {
    let sample = "#ifndef TCPCHAT_H\n#define TCPCHAT_H\n#define FOO 1\n/* a comment naming bar() */\n\
                  typedef enum { TCPCHAT_X = 0, Y = 1, } tcpchat_e;\ntypedef struct thing thing;\n\
                  typedef void (*cb)(void *user_data);\nint tcpchat_f(int a);\nvoid helper(void);\n\
                  #ifdef __cplusplus\nextern \"C\" {\n#endif\n#ifdef __cplusplus\n}\n#endif\n#endif\n";
    let (names, _) = declared_names(sample);
    let want: BTreeSet<String> = [
        "TCPCHAT_H",
        "FOO",
        "TCPCHAT_X",
        "Y",
        "tcpchat_e",
        "thing",
        "cb",
        "tcpchat_f",
        "helper",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names, want);
}
