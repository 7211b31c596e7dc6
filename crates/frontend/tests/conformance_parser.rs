//! Parser conformance against BuildKit's own parser corpus
//! (`testdata/conformance/buildkit/parser-testfiles*`, from `frontend/dockerfile/parser`).
//!
//! BuildKit's `parser_test.go` parses each `Dockerfile` and compares
//! `result.AST.Dump() + "\n"` with the `result` file; every Dockerfile of the
//! negative corpus must fail to parse. kiln dumps its parser layer the same way.

#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use std::path::{Path, PathBuf};

use kiln_frontend::syntax::{dump, parse_nodes};

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/conformance/buildkit")
        .join(name)
}

/// Every case directory of a corpus; a missing corpus fails the test, it is never
/// skipped silently.
fn cases(name: &str) -> Vec<PathBuf> {
    let dir = corpus(name);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("conformance corpus `{}` is missing: {e}", dir.display()));
    let mut v: Vec<PathBuf> = entries.map(|e| e.expect("readable corpus entry").path()).collect();
    v.sort();
    assert!(!v.is_empty(), "conformance corpus `{}` is empty", dir.display());
    v
}

#[test]
fn parser_dump_matches_buildkit() {
    let mut failures = Vec::new();
    let all = cases("parser-testfiles");
    for case in &all {
        let df = std::fs::read_to_string(case.join("Dockerfile")).expect("Dockerfile");
        let want = std::fs::read_to_string(case.join("result")).expect("result");
        match parse_nodes(&df) {
            Ok((_, nodes)) => {
                let got = dump::dump(&nodes);
                if got != want {
                    failures.push(format!("{}:\n--- want\n{want}--- got\n{got}", case.display()));
                }
            }
            Err(e) => failures.push(format!("{}: parse error: {e}", case.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from BuildKit:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_cases_are_rejected() {
    let all = cases("parser-testfiles-negative");
    for case in &all {
        let df = std::fs::read_to_string(case.join("Dockerfile")).expect("Dockerfile");
        assert!(parse_nodes(&df).is_err(), "{} should be rejected", case.display());
        // The typed layer (what builds use) rejects them too.
        assert!(
            kiln_frontend::syntax::parse(&df).is_err(),
            "{} should be rejected",
            case.display()
        );
    }
}
