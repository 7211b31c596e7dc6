//! BuildKit's word-expansion vectors (`shared/conformance/buildkit/shell-vectors`), read
//! from the shared folder. Every `A` and `U` line of envVarTest and every wordsTest line
//! must pass; a missing folder is a failure, not a skip.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_frontend::shell::Lexer;

fn vectors(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance/buildkit/shell-vectors")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("conformance vectors `{}` are missing: {e}", p.display()))
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn env_var_vectors() {
    let text = vectors("envVarTest");
    let e = env(&[("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어"), ("NULL", "")]);
    let lexer = Lexer::new('\\');
    let (mut ran, mut failures) = (0, Vec::new());
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.splitn(3, '|').collect();
        assert_eq!(parts.len(), 3, "line {}: malformed vector {line:?}", n + 1);
        let (platform, input, expected) = (parts[0].trim(), parts[1].trim(), parts[2].trim());
        if platform == "W" {
            continue;
        }
        ran += 1;
        let got = lexer.expand_word(input, &e);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(r), exp) => r.value == exp,
            _ => false,
        };
        if !ok {
            failures.push(format!("line {}: {input:?} → {got:?}, want {expected:?}", n + 1));
        }
    }
    assert!(ran > 100, "only {ran} vectors ran");
    assert!(
        failures.is_empty(),
        "{} of {ran} envVarTest vectors fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn words_vectors() {
    let text = vectors("wordsTest");
    let lexer = Lexer::new('\\');
    let mut e = BTreeMap::new();
    let (mut ran, mut failures) = (0, Vec::new());
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(kv) = line.strip_prefix("ENV ") {
            let (k, v) = kv.split_once('=').expect("ENV k=v");
            e.insert(k.to_string(), v.to_string());
            continue;
        }
        let (input, expected) = line
            .split_once('|')
            .unwrap_or_else(|| panic!("line {}: malformed", n + 1));
        let input = input.trim();
        let expected = expected.trim_start();
        ran += 1;
        let got = lexer.expand_words(input, &e);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(r), exp) => r.words == exp.split(',').collect::<Vec<_>>(),
            _ => false,
        };
        if !ok {
            failures.push(format!("line {}: {input:?} → {got:?}, want {expected:?}", n + 1));
        }
    }
    assert!(ran > 20, "only {ran} vectors ran");
    assert!(
        failures.is_empty(),
        "{} of {ran} wordsTest vectors fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
