//! BuildKit's word-expansion vectors (vendored in `testdata/conformance/buildkit/shell-vectors`), read
//! the way BuildKit's `lex_test.go` reads them. Every `A` and `U`
//! line of envVarTest and every wordsTest line must pass; a missing folder is a failure,
//! not a skip. Also BuildKit's table of matched/unmatched variables and patterns.

#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kiln_frontend::shell::{Lexer, ShellError};

fn vectors(name: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/conformance/buildkit/shell-vectors");
    let p = dir.join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "BuildKit shell vectors `{}` are missing ({e}); they must be present, this test never skips",
            p.display()
        )
    })
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn report(file: &str, ran: usize, failures: &[String]) {
    assert!(ran > 0, "no vectors ran from {file}");
    assert!(
        failures.is_empty(),
        "{} of {ran} {file} vectors fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{file}: {ran} vectors passed");
}

#[test]
fn env_var_vectors() {
    let text = vectors("envVarTest");
    let e = env(&[("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어"), ("NULL", "")]);
    let lexer = Lexer::new('\\');
    let (mut ran, mut skipped, mut failures) = (0, 0, Vec::new());
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        // As lex_test.go: comments only in column 1, then trim, then skip blank lines.
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        let [platform, input, expected] = fields[..] else {
            failures.push(format!("line {n}: want 3 `|`-separated fields in {line:?}"));
            continue;
        };
        let (platform, input, expected) = (platform.trim(), input.trim(), expected.trim());
        match platform {
            "A" | "U" => {}
            "W" => {
                skipped += 1;
                continue;
            }
            other => {
                failures.push(format!("line {n}: unknown platform {other:?}"));
                continue;
            }
        }
        ran += 1;
        let got = lexer.expand_word(input, &e);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(r), exp) => r.value == exp,
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!("line {n}: {input:?} → {got:?}, want {expected:?}"));
        }
    }
    assert!(skipped > 0, "envVarTest has Windows lines; none were seen");
    report("envVarTest", ran, &failures);
}

#[test]
fn words_vectors() {
    let text = vectors("wordsTest");
    let lexer = Lexer::new('\\');
    let mut e = BTreeMap::new();
    let (mut ran, mut failures) = (0, Vec::new());
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            // As lex_test.go: left-trim spaces only, keep trailing ones; `k` alone is empty.
            let kv = rest.trim_start_matches(' ');
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            e.insert(k.to_string(), v.to_string());
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        let [input, expected] = fields[..] else {
            failures.push(format!("line {n}: want exactly one `|` in {line:?}"));
            continue;
        };
        let input = input.trim();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        ran += 1;
        let got = match lexer.expand_words(input, &e) {
            Ok(r) => r.words,
            Err(_) => vec!["error".to_string()],
        };
        if got != expected {
            failures.push(format!("line {n}: {input:?} → {got:?}, want {expected:?}"));
        }
    }
    report("wordsTest", ran, &failures);
}

/// BuildKit's `TestProcessWithMatches`: (input, env, result or None for an error,
/// variables found, variables not found).
#[test]
fn matches_and_patterns() {
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        Option<&'static str>,
        &'static [&'static str],
        &'static [&'static str],
    );
    const FB: &[(&str, &str)] = &[("FOO", "xxx"), ("BAR", "")];
    let cases: &[Case] = &[
        ("x", &[("DUMMY", "dummy")], Some("x"), &[], &[]),
        ("x ${UNUSED}", &[("DUMMY", "dummy")], Some("x "), &[], &["UNUSED"]),
        ("x ${FOO}", &[("FOO", "y")], Some("x y"), &["FOO"], &[]),
        (
            "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
            FB,
            Some("xxx  ccc"),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        (
            "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
            FB,
            Some("xxx bbb ccc"),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        ("${FOO:-}", FB, Some("xxx"), &["FOO"], &[]),
        ("${FOO:-}", &[], Some(""), &[], &["FOO"]),
        (
            "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
            FB,
            Some("aaa bbb "),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        (
            "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
            FB,
            Some("aaa  "),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        ("${FOO?aaa}", FB, Some("xxx"), &["FOO"], &[]),
        ("${BAR?bbb}", FB, Some(""), &["BAR"], &[]),
        ("${BAZ?ccc}", FB, None, &[], &[]),
        ("${FOO:?aaa}", FB, Some("xxx"), &["FOO"], &[]),
        ("${BAR:?bbb}", FB, None, &[], &[]),
        ("${BAZ:?ccc}", FB, None, &[], &[]),
        ("${BAZ:?}", FB, None, &[], &[]),
        ("${FOO=aaa}", FB, None, &[], &[]),
        ("${FOO=:aaa}", FB, None, &[], &[]),
        ("${FOO=}", &[], None, &[], &[]),
        (
            "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
            &[("FOO", "()[]{}^$.*?|\\x")],
            Some("x"),
            &["FOO"],
            &[],
        ),
        ("${FOO%%\\**}", &[("FOO", "xx**")], Some("xx"), &["FOO"], &[]),
        ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y"), &["FOO"], &[]),
        ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        (
            "${FOO#$BAR}",
            &[("FOO", "xxyy"), ("BAR", "x")],
            Some("xyy"),
            &["FOO", "BAR"],
            &[],
        ),
        (
            "${FOO#$BAR}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("xxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        ("${FOO#}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy"), &["FOO"], &[]),
        ("${FOO##}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        ("${FOO#?\\?}", &[("FOO", "???y")], Some("?y"), &["FOO"], &[]),
        (
            "${ABC:-.}${FOO%x}${ABC:-.}",
            &[("FOO", "xxyy")],
            Some(".xxyy."),
            &["FOO"],
            &["ABC"],
        ),
        ("${FOO%%\\**\\*}", &[("FOO", "a***yy*")], Some("a"), &["FOO"], &[]),
        ("${FOO%}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        (
            "${FOO%%$BAR}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("xxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
            &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")],
            Some("/foo.*/*.txt - /foo..*.txt"),
            &["FOO", "NEEDLE"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
            &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
            Some("/tmp/bar.txt - /bar.txt"),
            &["FOO", "NEEDLE"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
            &[("FOO", "/a/foo/b/c.txt"), ("NEEDLE", "/?/"), ("REPLACEMENT", "/")],
            Some("/foo/b/c.txt - /foo/c.txt"),
            &["FOO", "NEEDLE", "REPLACEMENT"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "http://google.de"),
                ("NEEDLE", "http://"),
                ("REPLACEMENT", "https://"),
            ],
            Some("https://google.de"),
            &["FOO", "NEEDLE", "REPLACEMENT"],
            &[],
        ),
        (
            "${FOO//\\//\\/}",
            &[("FOO", "/tmp/foo.txt")],
            Some("\\/tmp\\/foo.txt"),
            &["FOO"],
            &[],
        ),
        (
            "${FOO/$BAR/ww}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("wwxxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        ("${FOO//ww}", &[("FOO", "xxyy")], None, &[], &[]),
        ("${FOO//}", &[("FOO", "xxyy")], None, &[], &[]),
        ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        ("${FOO///}", &[], Some(""), &[], &["FOO"]),
        (
            "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
            &[
                ("VERSION", "v1.2.3"),
                ("TARGETOS", "linux"),
                ("TARGETARCH", "arm"),
                ("TARGETVARIANT", "v7"),
            ],
            Some("something-v1.2.3.linux-arm-v7.tar.gz"),
            &["VERSION", "TARGETOS", "TARGETARCH", "TARGETVARIANT"],
            &[],
        ),
    ];
    let lexer = Lexer::new('\\');
    let mut failures = Vec::new();
    for (i, (input, pairs, want, matched, unmatched)) in cases.iter().enumerate() {
        let got = lexer.expand_word(input, &env(pairs));
        let set = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let ok = match (&got, want) {
            (Err(_), None) => true,
            (Ok(r), Some(w)) => {
                // BuildKit's "matched" are the referenced variables that are set.
                let found: BTreeSet<String> = r.used.difference(&r.unmatched).cloned().collect();
                r.value == *w && found == set(matched) && r.unmatched == set(unmatched)
            }
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "case {}: {input:?} → {got:?}, want {want:?} {matched:?} {unmatched:?}",
                i + 1
            ));
        }
    }
    report("TestProcessWithMatches", cases.len(), &failures);
}

/// BuildKit's `TestShellParserMandatoryEnvVars`.
#[test]
fn mandatory_variables() {
    let lexer = Lexer::new('\\');
    let set = env(&[("VAR", "plain"), ("ARG", "x")]);
    let empty = env(&[("VAR", ""), ("ARG", "x")]);
    let unset = env(&[("ARG", "x")]);
    let (no_empty, no_unset) = ("${VAR:?message here$ARG}", "${VAR?message here$ARG}");
    let required = |r: Result<_, ShellError>| match r {
        Err(ShellError::Required { name, message }) => format!("{name}: {message}"),
        other => panic!("want a required-variable error, got {other:?}"),
    };
    assert_eq!(lexer.expand_word(no_empty, &set).map(|r| r.value), Ok("plain".into()));
    assert_eq!(required(lexer.expand_word(no_empty, &empty)), "VAR: message herex");
    assert_eq!(required(lexer.expand_word(no_empty, &unset)), "VAR: message herex");
    assert_eq!(lexer.expand_word(no_unset, &set).map(|r| r.value), Ok("plain".into()));
    assert_eq!(lexer.expand_word(no_unset, &empty).map(|r| r.value), Ok(String::new()));
    assert_eq!(required(lexer.expand_word(no_unset, &unset)), "VAR: message herex");
}
