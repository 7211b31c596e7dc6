//! Cases from moby/patternmatcher's and ignorefile's own tests, Docker's documented
//! .dockerignore examples, and BuildKit's walker behaviour.

use super::*;

fn pm(patterns: &[&str]) -> PatternMatcher {
    let v: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
    PatternMatcher::new(&v).unwrap_or_else(|e| panic!("{patterns:?}: {e}"))
}

fn pattern(p: &str) -> Pattern {
    Pattern::compile(p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .unwrap_or_else(|| panic!("{p}: blank"))
}

#[test]
fn reads_ignore_files_like_docker() {
    // ignorefile_test.go's TestReadAll.
    let text = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
    assert_eq!(
        parse_ignore_file(text),
        [
            "test1",
            "test2",
            "a/file/here",
            "lastfile",
            "!inverted/abs/path",
            "!",
            "!"
        ]
    );
    let text = "\u{feff}# comment\r\n\n  *.log  \r\n!  keep.log\n/abs/path\n./rel/../x\n #not a comment\n/\n..//a/";
    assert_eq!(
        parse_ignore_file(text),
        ["*.log", "!keep.log", "abs/path", "x", "#not a comment", "/", "../a"]
    );
    assert!(parse_ignore_file("").is_empty());
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Want {
    Fail,
    Exact,
    Inexact,
}
use Want::*;

/// patternmatcher_test.go's TestMatches table.
const MATCHES: &[(&str, &str, Want)] = &[
    ("**", "file", Exact),
    ("**", "file/", Exact),
    ("**/", "file", Exact),
    ("**/", "file/", Exact),
    ("**", "/", Exact),
    ("**/", "/", Exact),
    ("**", "dir/file", Exact),
    ("**/", "dir/file", Exact),
    ("**", "dir/file/", Exact),
    ("**/", "dir/file/", Exact),
    ("**/**", "dir/file", Exact),
    ("**/**", "dir/file/", Exact),
    ("dir/**", "dir/file", Exact),
    ("dir/**", "dir/file/", Exact),
    ("dir/**", "dir/dir2/file", Exact),
    ("dir/**", "dir/dir2/file/", Exact),
    ("**/dir", "dir", Exact),
    ("**/dir", "dir/file", Inexact),
    ("**/dir2/*", "dir/dir2/file", Exact),
    ("**/dir2/*", "dir/dir2/file/", Inexact),
    ("**/dir2/**", "dir/dir2/dir3/file", Exact),
    ("**/dir2/**", "dir/dir2/dir3/file/", Exact),
    ("**file", "file", Exact),
    ("**file", "dir/file", Exact),
    ("**/file", "dir/file", Exact),
    ("**file", "dir/dir/file", Exact),
    ("**/file", "dir/dir/file", Exact),
    ("**/file*", "dir/dir/file", Exact),
    ("**/file*", "dir/dir/file.txt", Exact),
    ("**/file*txt", "dir/dir/file.txt", Exact),
    ("**/file*.txt", "dir/dir/file.txt", Exact),
    ("**/file*.txt*", "dir/dir/file.txt", Exact),
    ("**/**/*.txt", "dir/dir/file.txt", Exact),
    ("**/**/*.txt2", "dir/dir/file.txt", Fail),
    ("**/*.txt", "file.txt", Exact),
    ("**/**/*.txt", "file.txt", Exact),
    ("a**/*.txt", "a/file.txt", Exact),
    ("a**/*.txt", "a/dir/file.txt", Exact),
    ("a**/*.txt", "a/dir/dir/file.txt", Exact),
    ("a/*.txt", "a/dir/file.txt", Fail),
    ("a/*.txt", "a/file.txt", Exact),
    ("a/*.txt**", "a/file.txt", Exact),
    ("a[b-d]e", "ae", Fail),
    ("a[b-d]e", "ace", Exact),
    ("a[b-d]e", "aae", Fail),
    ("a[^b-d]e", "aze", Exact),
    (".*", ".foo", Exact),
    (".*", "foo", Fail),
    ("abc.def", "abcdef", Fail),
    ("abc.def", "abc.def", Exact),
    ("abc.def", "abcZdef", Fail),
    ("abc?def", "abcZdef", Exact),
    ("abc?def", "abcdef", Fail),
    ("**/foo/bar", "foo/bar", Exact),
    ("**/foo/bar", "dir/foo/bar", Exact),
    ("**/foo/bar", "dir/dir2/foo/bar", Exact),
    ("abc/**", "abc", Fail),
    ("abc/**", "abc/def", Exact),
    ("abc/**", "abc/def/ghi", Exact),
    ("**/.foo", ".foo", Exact),
    ("**/.foo", "bar.foo", Fail),
    ("a(b)c/def", "a(b)c/def", Exact),
    ("a(b)c/def", "a(b)c/xyz", Fail),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", Exact),
    (
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Exact,
    ),
    (
        "dist/*.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Exact,
    ),
    ("a\\\\", "a\\", Exact),
    ("a\\*b", "a*b", Exact),
];

const MULTI: &[(&[&str], &str, bool)] = &[
    (&["**", "!util/docker/web"], "util/docker/web/foo", false),
    (
        &["**", "!util/docker/web", "util/docker/web/foo"],
        "util/docker/web/foo",
        true,
    ),
    (
        &["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        false,
    ),
    (
        &["**", "!dist/*.whl"],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        false,
    ),
];

#[test]
fn patternmatcher_matches_table() {
    let mut failures = Vec::new();
    for &(p, text, want) in MATCHES {
        let exact = pattern(p).matches(text);
        let or_parent = pm(&[p]).matches_or_parent_matches(text);
        if exact != (want == Exact) || or_parent != (want != Fail) {
            failures.push(format!(
                "{p:?} {text:?}: exact {exact}, or-parent {or_parent}, want {want:?}"
            ));
        }
        if !text.starts_with('/') && pm(&[p]).is_excluded(text) != (want != Fail) {
            failures.push(format!("{p:?} {text:?}: is_excluded wrong, want {want:?}"));
        }
    }
    for &(ps, text, want) in MULTI {
        if pm(ps).is_excluded(text) != want || pm(ps).matches_or_parent_matches(text) != want {
            failures.push(format!("{ps:?} {text:?}: want {want}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn patternmatcher_compile_table() {
    // (pattern, kind, regexp for regexp kinds)
    let cases = [
        ("*", "regexp", "^[^/]*$"),
        ("file*", "regexp", "^file[^/]*$"),
        ("*file", "regexp", "^[^/]*file$"),
        ("a*/b", "regexp", "^a[^/]*/b$"),
        ("**", "suffix", ""),
        ("**/**", "regexp", "^(.*/)?.*$"),
        ("dir/**", "prefix", ""),
        ("**/dir", "suffix", ""),
        ("**/dir2/*", "regexp", "^(.*/)?dir2/[^/]*$"),
        ("**/dir2/**", "regexp", "^(.*/)?dir2/.*$"),
        ("**file", "suffix", ""),
        ("**/file*txt", "regexp", "^(.*/)?file[^/]*txt$"),
        ("**/**/*.txt", "regexp", "^(.*/)?(.*/)?[^/]*\\.txt$"),
        ("a[b-d]e", "regexp", "^a[b-d]e$"),
        (".*", "regexp", "^\\.[^/]*$"),
        ("abc.def", "exact", ""),
        ("abc?def", "regexp", "^abc[^/]def$"),
        ("**/foo/bar", "suffix", ""),
        ("a(b)c/def", "exact", ""),
        ("a.|)$(}+{bc", "exact", ""),
        ("dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", "exact", ""),
    ];
    for (p, kind, re) in cases {
        let compiled = pattern(p);
        let got = match &compiled.kind {
            Kind::Exact => ("exact", ""),
            Kind::Prefix => ("prefix", ""),
            Kind::Suffix => ("suffix", ""),
            Kind::Regexp(r) => ("regexp", r.as_str()),
        };
        assert_eq!(got, (kind, re), "{p}");
    }
}

/// patternmatcher_test.go's TestMatch (Go's filepath.Match table through Docker).
#[test]
fn go_filepath_match_table() {
    let cases: &[(&str, &str, Option<bool>)] = &[
        ("abc", "abc", Some(true)),
        ("*", "abc", Some(true)),
        ("*c", "abc", Some(true)),
        ("a*", "a", Some(true)),
        ("a*", "abc", Some(true)),
        ("a*", "ab/c", Some(true)),
        ("a*/b", "abc/b", Some(true)),
        ("a*/b", "a/c/b", Some(false)),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Some(false)),
        ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
        ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
        ("ab[c]", "abc", Some(true)),
        ("ab[b-d]", "abc", Some(true)),
        ("ab[e-g]", "abc", Some(false)),
        ("ab[^c]", "abc", Some(false)),
        ("ab[^b-d]", "abc", Some(false)),
        ("ab[^e-g]", "abc", Some(true)),
        ("a\\*b", "a*b", Some(true)),
        ("a\\*b", "ab", Some(false)),
        ("a?b", "a☺b", Some(true)),
        ("a[^a]b", "a☺b", Some(true)),
        ("a???b", "a☺b", Some(false)),
        ("a[^a][^a][^a]b", "a☺b", Some(false)),
        ("[a-ζ]*", "α", Some(true)),
        ("*[a-ζ]", "A", Some(false)),
        ("a?b", "a/b", Some(false)),
        ("a*b", "a/b", Some(false)),
        ("[\\]a]", "]", Some(true)),
        ("[\\-]", "-", Some(true)),
        ("[x\\-]", "x", Some(true)),
        ("[x\\-]", "-", Some(true)),
        ("[x\\-]", "z", Some(false)),
        ("[\\-x]", "x", Some(true)),
        ("[\\-x]", "-", Some(true)),
        ("[\\-x]", "a", Some(false)),
        ("[]a]", "]", None),
        ("[-]", "-", None),
        ("[x-]", "x", None),
        ("[-x]", "x", None),
        ("\\", "a", None),
        ("[a-b-c]", "a", None),
        ("[", "a", None),
        ("[^", "a", None),
        ("[^bc", "a", None),
        ("a[", "a", None),
        ("*x", "xxx", Some(true)),
    ];
    for &(p, s, want) in cases {
        let got = PatternMatcher::new(&[p.to_string()]).map(|m| m.is_excluded(s)).ok();
        assert_eq!(got, want, "pattern {p:?} path {s:?}");
    }
}

#[test]
fn documented_dockerignore_cases() {
    // (patterns, path, excluded)
    let cases: &[(&[&str], &str, bool)] = &[
        (&["*/temp*"], "somedir/temporary.txt", true),
        (&["*/temp*"], "somedir/temp", true),
        (&["*/temp*"], "temp", false),
        (&["*/temp*"], "a/b/temp", false),
        (&["*/temp*"], "somedir/temp/inside", true),
        (&["*/*/temp*"], "somedir/subdir/temporary.txt", true),
        (&["*/*/temp*"], "somedir/temporary.txt", false),
        (&["temp?"], "tempa", true),
        (&["temp?"], "temp12", false),
        (&["temp?"], "dir/tempa", false),
        (&["**/*.go"], "fileutils.go", true),
        (&["**/*.go"], "a/b/c/x.go", true),
        (&["**/*.go"], "a/b/c/x.go.txt", false),
        (&["*.go"], "dir/fileutils.go", false),
        (&["*.md", "!README*.md"], "README-x.md", false),
        (&["*.md", "!README*.md"], "CHANGES.md", true),
        (&["*.md", "!README*.md", "README-secret.md"], "README-secret.md", true),
        (&["docs", "!docs/README.md"], "docs/README.md", false),
        (&["docs", "!docs/README.md"], "docs/other.md", true),
        (&["docs/", "!docs/README.md"], "docs/README.md", false),
        (&["docs/*", "!docs/README.md"], "docs/README.md", false),
        (&["docs"], "docsfile", false),
        (&["!x", "x"], "x", true),
        (&["x", "!x"], "x", false),
        (&["*.go", "!fileutils.go"], "fileutils.go", false),
        (&["!fileutils.go", "*.go"], "fileutils.go", true),
        (&["/abs"], "abs", false),
        (&["./dot"], "dot", true),
        (&["a/../b"], "b", true),
        (&["!a/../b"], "b", true),
        (&["dir/*"], "dir/sub/file", true),
        (&["a\\[b"], "a[b", true),
        (&["a\\?"], "ab", false),
        (&["[!a]"], "!", true),
        (&["[!a]"], "b", false),
        (&["a^b"], "a^b", true),
        (&["a^b*"], "a^bc", false),
        (&["*"], "a/b/c", true),
        (&["**"], "a/b/c", true),
        (&["a/**/b"], "a/b", true),
        (&["a/**/b"], "a/x/y/b", true),
        (&["a**b"], "axb", false),
        (&["a**b"], "ax/b", true),
    ];
    let mut failures = Vec::new();
    for &(ps, path, want) in cases {
        if pm(ps).is_excluded(path) != want {
            failures.push(format!("{ps:?} {path:?}: want {want}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Through the ignore-file reader, a leading `/` is dropped.
    let from_file = PatternMatcher::new(&parse_ignore_file("/abs\n")).unwrap();
    assert!(from_file.is_excluded("abs") && from_file.is_excluded("abs/x"));
}

#[test]
fn walker_and_classic_rules_differ_only_where_expected() {
    // BuildKit matches `a/b` against the patterns with `a`'s per-pattern results: `!a`
    // was never tried on `a` (it was not excluded then), so it does not apply below.
    let m = pm(&["a/b", "!a"]);
    assert!(m.is_excluded("a/b"));
    assert!(!m.matches_or_parent_matches("a/b"));
}

#[test]
fn bad_patterns_are_errors() {
    let new = |p: &str| PatternMatcher::new(&[p.to_string()]);
    assert_eq!(new("!").unwrap_err(), IgnoreError::EmptyExclusion);
    assert_eq!(new(" ! ").unwrap_err(), IgnoreError::EmptyExclusion);
    assert_eq!(new("a[").unwrap_err(), IgnoreError::BadPattern { pattern: "a[".into() });
    assert_eq!(new("a[").unwrap_err().to_string(), "syntax error in pattern `a[`");
    assert!(matches!(new("[^"), Err(IgnoreError::BadPattern { .. })));
    // Valid for filepath.Match, invalid as a Go regexp: Docker fails when matching.
    let e = new("[Local-Only]/").unwrap_err();
    assert!(matches!(e, IgnoreError::BadRegexp { .. }), "{e:?}");
    assert!(e.to_string().contains("[Local-Only]/"));
    assert!(matches!(new("\\q"), Err(IgnoreError::BadRegexp { .. })));
    // Blank patterns are skipped.
    assert!(PatternMatcher::new(&["  ".to_string(), String::new()])
        .unwrap()
        .is_empty());
}

#[test]
fn skipping_directories() {
    let p = pm(&["logs", "!logs/keep.txt", "cache"]);
    assert!(!p.can_skip_dir("logs"));
    assert!(!p.is_excluded("logs/keep.txt"));
    assert!(p.is_excluded("logs/other"));
    assert!(p.can_skip_dir("cache"));
    assert!(!p.can_skip_dir("src"));
    // Any `!` pattern with a wildcard makes the walker enter every excluded directory.
    let p = pm(&["vendor", "!**/LICENSE"]);
    assert!(!p.can_skip_dir("vendor"));
    assert!(p.is_excluded("vendor/x") && !p.is_excluded("vendor/LICENSE") && !p.is_excluded("vendor/a/LICENSE"));
    // A trailing `/**` or `/*` does not count as a wildcard.
    let p = pm(&["a", "!a/b/**", "c"]);
    assert!(!p.can_skip_dir("a") && !p.can_skip_dir("a/b") && p.can_skip_dir("a/x") && p.can_skip_dir("c"));
    // No `!` at all: every excluded directory is skipped.
    let p = pm(&["node_modules", "*.log"]);
    assert!(p.can_skip_dir("node_modules") && p.can_skip_dir("x.log") && !p.can_skip_dir("src"));
    assert!(!pm(&[]).can_skip_dir("a") && !pm(&[]).is_excluded("a"));
}

#[test]
fn odd_inputs_never_panic() {
    let alphabet = [
        'a', '/', '*', '?', '[', ']', '^', '!', '-', '\\', '.', 'é', '(', '$', ' ',
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let len = (next() % 9) as usize;
        let p: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let len = (next() % 9) as usize;
        let path: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        if let Ok(m) = PatternMatcher::new(&parse_ignore_file(&p)) {
            let _ = (
                m.is_excluded(&path),
                m.can_skip_dir(&path),
                m.matches_or_parent_matches(&path),
            );
        }
    }
}

/// Go regexp syntax the `regex` crate reads otherwise (why kiln keeps its own engine,
/// see docs/dev/architecture.md): inside a class Go has no nested classes and no set
/// operations, and `\<`/`\>` are escaped punctuation, not word boundaries. In `regex`
/// 1.x `[[]` is an unclosed class, `[a&&b]` an intersection, `[a~~b]` a symmetric
/// difference, `\<` a start-of-word assertion. (`[a--b]` is not a valid glob: Go's
/// `filepath.Match` refuses `-` as a range end.)
#[test]
fn go_syntax_the_regex_crate_reads_otherwise() {
    for (pattern, path) in [
        ("[[]", "["),
        ("x[a&&b]", "x&"),
        ("x[a~~b]", "x~"),
        ("a\\<b", "a<b"),
        ("a\\>b", "a>b"),
    ] {
        assert!(
            pm(&[pattern]).is_excluded(path),
            "`{pattern}` should match `{path}` as in Go"
        );
    }
}
