#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use super::*;

/// One block of `testdata/lint/messages.txt`.
struct Vector {
    rule: String,
    description: String,
    url: String,
    args: Vec<String>,
    message: String,
}

fn vectors() -> Vec<Vector> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/lint/messages.txt");
    let text = std::fs::read_to_string(&path).expect("testdata/lint/messages.txt");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut v = Vector {
            rule: String::new(),
            description: String::new(),
            url: String::new(),
            args: Vec::new(),
            message: String::new(),
        };
        for line in block.lines().filter(|l| !l.starts_with('#')) {
            let (k, val) = line.split_once(':').expect("key: value");
            let val = val.strip_prefix(' ').unwrap_or(val).to_string();
            match k {
                "rule" => v.rule = val,
                "description" => v.description = val,
                "url" => v.url = val,
                "args" => v.args = val.split('|').map(str::to_string).collect(),
                "message" => v.message = val,
                "source" => {}
                other => panic!("unknown key {other}"),
            }
        }
        if !v.rule.is_empty() {
            out.push(v);
        }
    }
    out
}

fn format(rule: Rule, a: &[String]) -> String {
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let opt = |i: usize| a.get(i).copied().filter(|s| !s.is_empty());
    match rule {
        Rule::StageNameCasing => msg::stage_name_casing(a[0]),
        Rule::FromAsCasing => msg::from_as_casing(a[0], a[1]),
        Rule::NoEmptyContinuation => msg::empty_continuation(),
        Rule::ConsistentInstructionCasing => msg::casing(a[0], a[1]),
        Rule::DuplicateStageName => msg::duplicate_stage(a[0]),
        Rule::ReservedStageName => msg::reserved_stage(a[0]),
        Rule::JsonArgsRecommended => msg::json_args(a[0]),
        Rule::MaintainerDeprecated => msg::maintainer(),
        Rule::UndefinedArgInFrom => msg::undefined_arg_in_from(a[0], opt(1)),
        Rule::WorkdirRelativePath => msg::workdir_relative(a[0]),
        Rule::UndefinedVar => msg::undefined_var(a[0], opt(1)),
        Rule::MultipleInstructionsDisallowed => msg::multiple(a[0]),
        Rule::LegacyKeyValueFormat => msg::legacy_key_value(a[0]),
        Rule::InvalidBaseImagePlatform => msg::invalid_base_platform(a[0], a[1], a[2]),
        Rule::RedundantTargetPlatform => msg::redundant_target_platform(a[0]),
        Rule::SecretsUsedInArgOrEnv => msg::secrets_in_arg_or_env(a[0], a[1]),
        Rule::InvalidDefaultArgInFrom => msg::invalid_default_arg_in_from(a[0]),
        Rule::FromPlatformFlagConstDisallowed => msg::from_platform_const(a[0]),
        Rule::CopyIgnoredFile => msg::copy_ignored_file(a[0], a[1]),
        Rule::ExposeProtoCasing => msg::expose_proto_casing(a[0]),
        Rule::ExposeInvalidFormat => msg::expose_invalid_format(a[0]),
    }
}

#[test]
fn every_rule_matches_buildkit_ruleset() {
    let vs = vectors();
    assert_eq!(vs.len(), Rule::ALL.len(), "one vector per rule");
    for v in &vs {
        let rule = Rule::from_name(&v.rule).unwrap_or_else(|| panic!("no rule {}", v.rule));
        assert_eq!(rule.description(), v.description, "{}", v.rule);
        assert_eq!(rule.url().unwrap_or(""), v.url, "{}", v.rule);
        assert_eq!(format(rule, &v.args), v.message, "{}", v.rule);
    }
    for r in Rule::ALL {
        assert!(vs.iter().any(|v| v.rule == r.name()), "{} has no vector", r.name());
    }
}

#[test]
fn check_directive_grammar_is_buildkits() {
    let c = CheckConfig::parse("skip=JSONArgsRecommended, UndefinedVar;error=true").unwrap();
    assert!(c.error);
    assert!(c.skips(Rule::UndefinedVar));
    assert!(c.skips(Rule::JsonArgsRecommended));
    assert!(!c.skips(Rule::FromAsCasing));
    // Only exactly `all` skips everything; names are case-sensitive.
    assert!(CheckConfig::parse("skip=all").unwrap().skips(Rule::FromAsCasing));
    assert!(!CheckConfig::parse("skip=all,Foo").unwrap().skips(Rule::FromAsCasing));
    assert!(!CheckConfig::parse("skip=fromascasing")
        .unwrap()
        .skips(Rule::FromAsCasing));
    // Go's ParseBool spellings.
    for t in ["1", "t", "T", "TRUE", "true", "True"] {
        assert!(CheckConfig::parse(&format!("error={t}")).unwrap().error, "{t}");
    }
    assert!(!CheckConfig::parse("error=False").unwrap().error);
    assert!(CheckConfig::parse("experimental=all").is_ok());
    assert!(CheckConfig::parse("").unwrap() == CheckConfig::default());
    assert_eq!(
        CheckConfig::parse("bogus").unwrap_err(),
        "invalid check option \"bogus\""
    );
    assert_eq!(
        CheckConfig::parse("skip=A;level=1").unwrap_err(),
        "invalid check option \"level\""
    );
    assert_eq!(
        CheckConfig::parse("error=yes").unwrap_err(),
        "failed to parse check option \"error=yes\": strconv.ParseBool: parsing \"yes\": invalid syntax"
    );
}

#[test]
fn violation_lists_rules_once() {
    let mut l = Linter {
        config: CheckConfig::parse("error=true").unwrap(),
        ..Linter::default()
    };
    assert_eq!(l.violation(), None);
    l.note("unused build arg".into());
    assert_eq!(l.violation(), None, "a note is no rule");
    l.report(Rule::FromAsCasing, "a".into(), 1);
    l.report(Rule::UndefinedVar, "b".into(), 2);
    l.report(Rule::FromAsCasing, "c".into(), 3);
    assert_eq!(l.violation().as_deref(), Some("FromAsCasing, UndefinedVar"));
}

#[test]
fn secret_keys_as_buildkit_matches_them() {
    for k in [
        "api_key",
        "DATABASE_PASSWORD",
        "GITHUB_TOKEN",
        "secret_MESSAGE",
        "AUTH",
        "aws_apikey",
        "PWORD",
    ] {
        assert!(is_secret_key(k), "{k}");
    }
    for k in [
        "PUBLIC_KEY",
        "key_file",
        "TOKEN_VERSION",
        "MONKEY",
        "PASSWORDS",
        "tokenizer",
        "KEYS",
        "USER",
    ] {
        assert!(!is_secret_key(k), "{k}");
    }
}

#[test]
fn expose_findings_split_as_parse_port() {
    assert_eq!(expose_findings("80"), (false, false));
    assert_eq!(expose_findings("80/tcp"), (false, false));
    assert_eq!(expose_findings("80/TCP"), (true, false));
    assert_eq!(expose_findings("8080:80"), (false, true));
    assert_eq!(expose_findings("127.0.0.1:8080:80/Udp"), (true, true));
    assert_eq!(expose_findings("[::1]:8080:80"), (false, true));
}

#[test]
fn display_like_buildx() {
    let w = Warning {
        rule: Some("JSONArgsRecommended".into()),
        message: msg::json_args("CMD"),
        line: Some(3),
    };
    assert_eq!(
        w.to_string(),
        "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)"
    );
    assert_eq!(w.rule(), Some(Rule::JsonArgsRecommended));
}

#[test]
fn instruction_checks_follow_buildkits_comment_rules() {
    let text = "# check=skip=A\n# syntax=x\n\nFROM a\n# check=skip=B // why\nRUN x \\\n# check=skip=C\n  y\n# note\n# check=skip=D\n\n#check=skip=E\nCMD z\n";
    let spans = [(4, 4), (6, 8), (13, 13)];
    let m = instruction_checks(text, &spans);
    // The directives at the top are not comments of the first FROM.
    assert!(!m.contains_key(&4), "{m:?}");
    assert_eq!(m[&6].skip, ["B"]);
    // A comment inside the continued RUN belongs to no instruction; the first check=
    // comment above CMD counts.
    assert_eq!(m[&13].skip, ["D"]);
    assert_eq!(m.len(), 2);
}
