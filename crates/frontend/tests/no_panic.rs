//! The frontend must not panic on any input: every prefix of every Dockerfile in the
//! corpora, and token soups from a fixed-seed generator, must parse or fail cleanly.

#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use std::path::Path;

use kiln_frontend::{build_plan, syntax, BuildOptions};

fn dockerfiles() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = [
        root.join("../../testdata/conformance/buildkit/parser-testfiles"),
        root.join("../../testdata/conformance/buildkit/parser-testfiles-negative"),
        root.join("../../testdata/dockerfile"),
        root.join("../../testdata/dockerfile/errors"),
    ];
    let mut out = Vec::new();
    for d in dirs {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("`{}` is missing: {e}", d.display()));
        for e in entries {
            if let Ok(t) = std::fs::read_to_string(e.expect("entry").path().join("Dockerfile")) {
                out.push(t);
            }
        }
    }
    assert!(out.len() > 30, "too few Dockerfiles found");
    out
}

fn exercise(text: &str, opts: &BuildOptions) {
    let _ = syntax::parse_nodes(text);
    let _ = build_plan(text, opts);
}

#[test]
fn prefixes_never_panic() {
    let opts = BuildOptions::new("Dockerfile");
    for df in dockerfiles() {
        for (i, _) in df.char_indices() {
            exercise(&df[..i], &opts);
        }
    }
}

#[test]
fn token_soup_never_panics() {
    const TOKENS: &[&str] = &[
        "FROM ",
        "scratch",
        " AS ",
        "a",
        "RUN ",
        "COPY ",
        "ADD ",
        "ARG ",
        "ENV ",
        "ONBUILD ",
        "HEALTHCHECK ",
        "CMD ",
        "WORKDIR ",
        "EXPOSE ",
        "--from=",
        "--chmod=",
        "--mount=",
        "<<EOF",
        "<<-'X'",
        "EOF",
        "\n",
        "\\\n",
        "`",
        "$",
        "${",
        "}",
        ":-",
        ":?",
        "\"",
        "'",
        "[",
        "]",
        ",",
        "=",
        " ",
        "\t",
        "#",
        "# escape=`\n",
        "é",
        "0",
        "-",
        "/",
    ];
    let opts = BuildOptions::new("Dockerfile");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..3000 {
        let mut s = String::new();
        let len = (seed % 40) as usize;
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            s.push_str(TOKENS[(seed % TOKENS.len() as u64) as usize]);
        }
        exercise(&s, &opts);
        exercise(&format!("FROM scratch\n{s}"), &opts);
    }
}
