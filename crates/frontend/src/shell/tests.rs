//! Unit tests of word expansion.

use super::*;

fn env() -> BTreeMap<String, String> {
    [
        ("A", "a"),
        ("EMPTY", ""),
        ("PATHY", "/usr/local/bin/tool.tar.gz"),
        ("SP", " x  y "),
        ("TEMPLATE", "a$$b${0}c$0d"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn expand(word: &str) -> Result<String, ShellError> {
    Lexer::new('\\').expand_word(word, &env()).map(|r| r.value)
}

#[test]
fn tracks_used_and_unmatched() {
    let r = Lexer::new('\\')
        .expand_word("$A-${B:-x}-${EMPTY}-${C:+$D}", &env())
        .unwrap();
    assert_eq!(r.value, "a-x--");
    assert_eq!(r.used, set(&["A", "B", "C", "D", "EMPTY"]));
    assert_eq!(r.unmatched, set(&["B", "C", "D"]));
    // Quoted or escaped references are not references.
    let r = Lexer::new('\\').expand_word("'$X' \\$Y \"$A\"", &env()).unwrap();
    assert_eq!(r.value, "$X $Y a");
    assert_eq!((r.used, r.unmatched), (set(&["A"]), set(&[])));
    // Nested references in patterns and replacements count too.
    let r = Lexer::new('\\')
        .expand_words("${PATHY#$P} ${Q//$R/$S}", &env())
        .unwrap();
    assert_eq!(r.used, set(&["P", "PATHY", "Q", "R", "S"]));
    assert_eq!(r.unmatched, set(&["P", "Q", "R", "S"]));
}

#[test]
fn required_variables_name_themselves() {
    assert_eq!(expand("${B:?must be set}").unwrap_err().to_string(), "B: must be set");
    assert_eq!(
        expand("${B?}").unwrap_err().to_string(),
        "B: is not allowed to be unset"
    );
    assert_eq!(
        expand("${B:?}").unwrap_err().to_string(),
        "B: is not allowed to be unset"
    );
    assert_eq!(
        expand("${EMPTY:?}").unwrap_err().to_string(),
        "EMPTY: is not allowed to be empty"
    );
    assert_eq!(expand("${EMPTY:?no $A}").unwrap_err().to_string(), "EMPTY: no a");
    assert_eq!(expand("${EMPTY?}").unwrap(), "");
    assert_eq!(expand("${A:?x}").unwrap(), "a");
}

#[test]
fn syntax_error_messages() {
    let msg = |w: &str| expand(w).unwrap_err().to_string();
    assert_eq!(
        msg("'abc"),
        "unexpected end of statement while looking for matching single-quote"
    );
    assert_eq!(
        msg("\"abc"),
        "unexpected end of statement while looking for matching double-quote"
    );
    assert_eq!(msg("${A"), "syntax error: missing '}'");
    assert_eq!(msg("${A:-\"x}"), "syntax error: missing '}'");
    assert_eq!(msg("${}"), "syntax error: bad substitution");
    assert_eq!(msg("${A/x"), "syntax error: missing '/' in ${}");
    assert_eq!(msg("${A:=x}"), "unsupported modifier (:=) in substitution of `A`");
    assert_eq!(
        msg("${A#\\x}"),
        "invalid pattern (\\x) in substitution: invalid escape '\\x'"
    );
    assert_eq!(msg("${A%a\\}"), "syntax error: missing '}'");
    assert!(matches!(expand("${A/\\q/}"), Err(ShellError::InvalidPattern { .. })));
}

#[test]
fn pattern_substitutions() {
    let cases = [
        ("${PATHY#*/}", "usr/local/bin/tool.tar.gz"),
        ("${PATHY##*/}", "tool.tar.gz"),
        ("${PATHY:##*/}", "tool.tar.gz"),
        ("${PATHY%.*}", "/usr/local/bin/tool.tar"),
        ("${PATHY%%.*}", "/usr/local/bin/tool"),
        ("${PATHY/o/0}", "/usr/l0cal/bin/tool.tar.gz"),
        ("${PATHY//o/0}", "/usr/l0cal/bin/t00l.tar.gz"),
        // The replacement keeps escapes; `$` references are expanded by Go's template rules.
        ("${PATHY//o/<$0>}", "/usr/l<>cal/bin/t<><>l.tar.gz"),
        ("${PATHY//o/<\\$0>}", "/usr/l<\\o>cal/bin/t<\\o><\\o>l.tar.gz"),
        ("${PATHY/o/<\\$0>}", "/usr/l<\\$0>cal/bin/tool.tar.gz"),
        ("${PATHY//o/\\$\\$}", "/usr/l\\$\\$cal/bin/t\\$\\$\\$\\$l.tar.gz"),
        ("${A//a/$TEMPLATE}", "a$bac"),
        ("${A/a/$TEMPLATE}", "a$$b${0}c$0d"),
        // `[` is literal in BuildKit patterns.
        ("${PATHY//[a-c]/_}", "/usr/local/bin/tool.tar.gz"),
        ("${A//*/x}", "x"),
        ("${A///-}", "-a-"),
        ("${PATHY/#/x}", "/usr/local/bin/tool.tar.gz"),
        ("${EMPTY//*/x}", "x"),
    ];
    for (w, want) in cases {
        assert_eq!(expand(w).unwrap(), want, "{w}");
    }
}

#[test]
fn word_splitting() {
    let l = Lexer::new('\\');
    let words = |w: &str| l.expand_words(w, &env()).unwrap().words;
    assert_eq!(words("a${SP}b"), ["a", "x", "y", "b"]);
    assert_eq!(words("a\"${SP}\"b"), ["a x  y b"]);
    assert_eq!(words("  '' \"\"  c "), ["c"]);
    assert_eq!(words("a\\ b c"), ["a b", "c"]);
}

#[test]
fn backtick_escape() {
    let l = Lexer::new('`');
    assert_eq!(l.expand_word("a`$A\\b", &env()).unwrap().value, "a$A\\b");
    assert_eq!(l.expand_word("\"`\"`$A\"", &env()).unwrap().value, "\"$A");
}

#[test]
fn never_panics_on_odd_input() {
    let l = Lexer::new('\\');
    let deep = "${A:-".repeat(10_000);
    assert_eq!(
        l.expand_word(&deep, &env()),
        Err(ShellError::TooDeep { limit: MAX_DEPTH })
    );
    for w in [
        "${",
        "${A",
        "${A:",
        "${A/",
        "${A//x",
        "$",
        "\\",
        "\"\\",
        "'",
        "${A:-${B",
        "${#}",
        "${A:#x}",
        "é$Aé${A%é}",
        "${A%\\",
        "${é}",
        "\u{feff}$A",
        "${A//\\}}",
        "${A/$/$}",
        "${A//a/$}",
    ] {
        let _ = l.expand_word(w, &env());
        let _ = l.expand_words(w, &env());
    }
}
