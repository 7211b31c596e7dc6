//! The build checks, each triggered and not triggered, with BuildKit's exact message
//! (the formats are pinned by `testdata/lint/messages.txt`; the triggers by
//! `dockerfile2llb/validations.go` and its callers at the commit named there).

use kiln_image::Platform;

use super::{build_plan, check, BuildOptions, ImageResolver, ResolvedImage};
use crate::ErrorKind;

fn opts() -> BuildOptions {
    let p = Platform::parse("linux/amd64").expect("platform");
    let mut o = BuildOptions::new("Dockerfile");
    o.platform = p.clone();
    o.build_platform = p;
    o
}

/// `rule: message (line N)` of every warning of a build of `df` with `o`.
fn warnings_with(df: &str, o: &BuildOptions) -> Vec<String> {
    let p = build_plan(df, o).unwrap_or_else(|e| panic!("{e}"));
    p.warnings.iter().map(ToString::to_string).collect()
}

fn warnings(df: &str) -> Vec<String> {
    warnings_with(df, &opts())
}

/// Asserts `df` reports exactly `expected` for `rule` (and whatever else it reports
/// for other rules).
fn assert_rule(df: &str, rule: &str, expected: &[&str]) {
    assert_rule_with(df, &opts(), rule, expected);
}

fn assert_rule_with(df: &str, o: &BuildOptions, rule: &str, expected: &[&str]) {
    let prefix = format!("{rule}: ");
    let got: Vec<String> = warnings_with(df, o)
        .into_iter()
        .filter(|w| w.starts_with(&prefix))
        .collect();
    let want: Vec<String> = expected.iter().map(|e| format!("{prefix}{e}")).collect();
    assert_eq!(got, want, "{df}");
}

#[test]
fn reserved_stage_name() {
    assert_rule(
        "FROM busybox AS scratch\nFROM busybox AS Context\nFROM busybox AS build\n",
        "ReservedStageName",
        &[
            "Stage name should not use the same name as reserved stage \"scratch\" (line 1)",
            "Stage name should not use the same name as reserved stage \"context\" (line 2)",
        ],
    );
    assert_rule("FROM busybox AS scratchy\n", "ReservedStageName", &[]);
}

#[test]
fn secrets_used_in_arg_or_env() {
    assert_rule(
        "FROM scratch\nARG GITHUB_TOKEN\nENV api_key=1 AUTH=2\nENV DB_PASSWORD x\n",
        "SecretsUsedInArgOrEnv",
        &[
            "Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\") (line 2)",
            "Do not use ARG or ENV instructions for sensitive data (ENV \"api_key\") (line 3)",
            "Do not use ARG or ENV instructions for sensitive data (ENV \"AUTH\") (line 3)",
            "Do not use ARG or ENV instructions for sensitive data (ENV \"DB_PASSWORD\") (line 4)",
        ],
    );
    assert_rule(
        "ARG SECRET_TOKEN=1\nFROM scratch\nARG PUBLIC_KEY\nENV KEY_FILE=/k TOKENS=1 MONKEY=1\n",
        "SecretsUsedInArgOrEnv",
        &[],
    );
}

#[test]
fn undefined_arg_in_from() {
    assert_rule(
        "ARG VERSION=1\nFROM busybox${VERSON}\n",
        "UndefinedArgInFrom",
        &["FROM argument 'VERSON' is not declared (did you mean VERSION?) (line 2)"],
    );
    assert_rule(
        "FROM --platform=${PLATFROM:-linux/amd64} busybox\n",
        "UndefinedArgInFrom",
        &["FROM argument 'PLATFROM' is not declared (line 1)"],
    );
    // Declared without a value, predefined, or set: no warning.
    assert_rule(
        "ARG TAG\nARG V=1\nFROM busybox${TAG}:$V\nFROM --platform=$BUILDPLATFORM busybox\n",
        "UndefinedArgInFrom",
        &[],
    );
}

#[test]
fn invalid_default_arg_in_from() {
    // The --build-arg makes this build work, but the defaults alone would not: warned.
    let mut o = opts();
    o.build_args.insert("VARIANT".into(), "1".into());
    assert_rule_with(
        "ARG VARIANT\nFROM busybox:${VARIANT}\n",
        &o,
        "InvalidDefaultArgInFrom",
        &["Default value for ARG busybox:${VARIANT} results in empty or invalid base image name (line 2)"],
    );
    assert_rule(
        "ARG VARIANT=1\nFROM busybox:${VARIANT}\nFROM busybox:${NONE:-2}\n",
        "InvalidDefaultArgInFrom",
        &[],
    );
}

#[test]
fn redundant_target_platform() {
    assert_rule(
        "FROM --platform=$TARGETPLATFORM busybox\nFROM --platform=${TARGETPLATFORM} busybox\n",
        "RedundantTargetPlatform",
        &[
            "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior (line 1)",
            "Setting platform to predefined ${TARGETPLATFORM} in FROM is redundant as this is the default behavior (line 2)",
        ],
    );
    assert_rule(
        "FROM --platform=$BUILDPLATFORM busybox\nFROM --platform=${TARGETOS}/${TARGETARCH} busybox\n",
        "RedundantTargetPlatform",
        &[],
    );
}

#[test]
fn from_platform_flag_const_disallowed() {
    assert_rule(
        "FROM --platform=linux/amd64 busybox AS build\n",
        "FromPlatformFlagConstDisallowed",
        &["FROM --platform flag should not use constant value \"linux/amd64\" (line 1)"],
    );
    // A variable, or the OS or architecture in the stage name: no warning.
    assert_rule(
        "FROM --platform=linux/amd64 busybox AS build-amd64\nFROM --platform=$BUILDPLATFORM busybox\n",
        "FromPlatformFlagConstDisallowed",
        &[],
    );
}

#[derive(Debug)]
struct ArmResolver;

impl ImageResolver for ArmResolver {
    fn resolve(&self, reference: &str, _: &Platform) -> Result<ResolvedImage, String> {
        let arch = if reference.contains("armonly") {
            "arm64"
        } else {
            "amd64"
        };
        Ok(ResolvedImage {
            reference: reference.to_string(),
            config: {
                let mut c = kiln_image::ImageConfig {
                    architecture: arch.into(),
                    os: "linux".into(),
                    ..Default::default()
                };
                // A layer, or BuildKit treats the base as scratch and checks nothing.
                if !reference.contains("nolayers") {
                    c.rootfs.diff_ids = vec![kiln_image::Digest::of(b"layer")];
                }
                c
            },
        })
    }
}

#[test]
fn invalid_base_image_platform() {
    let mut o = opts();
    o.resolver = Some(std::sync::Arc::new(ArmResolver));
    assert_rule_with(
        "FROM armonly:1\n",
        &o,
        "InvalidBaseImagePlatform",
        &["Base image armonly:1 was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build (line 1)"],
    );
    assert_rule_with("FROM busybox\n", &o, "InvalidBaseImagePlatform", &[]);
    assert_rule_with("FROM armonly-nolayers:1\n", &o, "InvalidBaseImagePlatform", &[]);
}

#[test]
fn copy_ignored_file() {
    let mut o = opts();
    o.ignore_patterns = vec!["secret.txt".into(), "build".into()];
    assert_rule_with(
        "FROM scratch\nCOPY ./secret.txt /\nADD build/out.bin /\nCOPY app.txt /\n",
        &o,
        "CopyIgnoredFile",
        &[
            "Attempting to Copy file \"secret.txt\" that is excluded by .dockerignore (line 2)",
            "Attempting to Add file \"build/out.bin\" that is excluded by .dockerignore (line 3)",
        ],
    );
    // From another stage, the context root, or with `!` patterns: not checked.
    assert_rule_with(
        "FROM scratch AS a\nFROM scratch\nCOPY --from=a secret.txt /\nCOPY . /\n",
        &o,
        "CopyIgnoredFile",
        &[],
    );
    o.ignore_patterns.push("!build/keep".into());
    assert_rule_with("FROM scratch\nCOPY secret.txt /\n", &o, "CopyIgnoredFile", &[]);
    // `*` excludes every root entry, so `COPY .` is reported.
    o.ignore_patterns = vec!["*".into()];
    assert_rule_with(
        "FROM scratch\nCOPY . /\n",
        &o,
        "CopyIgnoredFile",
        &["Attempting to Copy file \".\" that is excluded by .dockerignore (line 2)"],
    );
}

#[test]
fn expose_proto_casing_and_invalid_format() {
    // BuildKit's parser sorts EXPOSE's ports (`parseExpose`), so they report in that order.
    let df = "FROM scratch\nEXPOSE 80/TCP 8080:80 127.0.0.1:53:53/Udp 443/tcp\n";
    assert_rule(
        df,
        "ExposeProtoCasing",
        &[
            "Defined protocol '127.0.0.1:53:53/Udp' in EXPOSE instruction should be lowercase (line 2)",
            "Defined protocol '80/TCP' in EXPOSE instruction should be lowercase (line 2)",
        ],
    );
    assert_rule(
        df,
        "ExposeInvalidFormat",
        &[
            "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:53:53/Udp' (line 2)",
            "EXPOSE instruction should not define an IP address or host-port mapping, found '8080:80' (line 2)",
        ],
    );
    assert!(warnings("FROM scratch\nEXPOSE 80 443/tcp 53/udp\n").is_empty());
}

#[test]
fn legacy_key_value_format() {
    assert_rule(
        "FROM scratch\nENV A 1\nLABEL b 2\nENV C=3\n",
        "LegacyKeyValueFormat",
        &[
            "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format (line 2)",
            "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format (line 3)",
        ],
    );
}

#[test]
fn check_directive_skips_and_errors() {
    let df = "# check=skip=SecretsUsedInArgOrEnv\nFROM scratch\nARG TOKEN\nEXPOSE 80/TCP\n";
    assert_rule(df, "SecretsUsedInArgOrEnv", &[]);
    assert_rule(
        df,
        "ExposeProtoCasing",
        &["Defined protocol '80/TCP' in EXPOSE instruction should be lowercase (line 4)"],
    );
    assert!(warnings("# check=skip=all\nFROM scratch\nARG TOKEN\nEXPOSE 80/TCP\n").is_empty());

    let df = "# check=error=true;skip=ExposeProtoCasing\nFROM scratch\nARG TOKEN\nEXPOSE 80/TCP\n";
    let e = build_plan(df, &opts()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile: lint violation found for rules: SecretsUsedInArgOrEnv"
    );
    let ErrorKind::Lint { warnings, .. } = e.kind() else {
        panic!("{e:?}")
    };
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    // Everything skipped: nothing to fail on.
    build_plan("# check=error=true;skip=all\nFROM scratch\nARG TOKEN\n", &opts()).unwrap();
}

#[test]
fn buildkit_dockerfile_check_arg_replaces_the_directive() {
    let mut o = opts();
    o.build_args
        .insert("BUILDKIT_DOCKERFILE_CHECK".into(), "skip=ExposeProtoCasing".into());
    let df = "# check=skip=SecretsUsedInArgOrEnv;error=true\nFROM scratch\nARG TOKEN\nEXPOSE 80/TCP\n";
    assert_rule_with(
        df,
        &o,
        "SecretsUsedInArgOrEnv",
        &["Do not use ARG or ENV instructions for sensitive data (ARG \"TOKEN\") (line 3)"],
    );
    assert_rule_with(df, &o, "ExposeProtoCasing", &[]);
    o.build_args.insert("BUILDKIT_DOCKERFILE_CHECK".into(), "skip".into());
    let e = build_plan(df, &o).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile: failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: invalid check option \"skip\""
    );
    let e = build_plan("# check=skip\nFROM scratch\n", &opts()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:1: invalid `check` directive `skip`: invalid check option \"skip\""
    );
}

#[test]
fn check_lowers_every_stage() {
    // The build reports nothing for a stage the target does not need; the check does.
    let df = "FROM scratch AS unused\nARG TOKEN\nFROM scratch\n";
    assert!(warnings(df).is_empty());
    let r = check(df, &opts());
    assert!(r.error.is_none());
    let got: Vec<String> = r.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        ["SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ARG \"TOKEN\") (line 2)"]
    );
    // With a target, only the stages it needs (BuildKit's lint sets AllStages only
    // without one).
    let mut o = opts();
    o.target = Some("final".into());
    let r = check("FROM scratch AS unused\nARG TOKEN\nFROM scratch AS final\n", &o);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    // Build option notes are no check results; an error comes with the warnings so far.
    let mut o = opts();
    o.build_args.insert("NOPE".into(), "1".into());
    assert!(check("FROM scratch\n", &o).warnings.is_empty());
    let r = check("# check=error=true\nFROM scratch as a\n", &opts());
    assert_eq!(r.warnings.len(), 1);
    assert!(r.error.is_some());
}

#[test]
fn check_comment_above_an_instruction_skips_there_only() {
    // BuildKit's own cases (dockerfile_lint_test.go, commit a248d48d0 "add syntax to
    // skip a check"): the comment applies to the instruction below it only.
    let df = "FROM scratch
ARG public_token
# check=skip=SecretsUsedInArgOrEnv // allow secret in environment
ENV password=bar
# check=skip=SecretsUsedInArgOrEnv // allow secret in arg
ARG password
# check=skip=all // is local to only this instruction
ENV alternate_password=bar
# check=skip=all // is local to only this instruction
ARG alternate_password
ARG api_key
";
    assert_rule(
        df,
        "SecretsUsedInArgOrEnv",
        &["Do not use ARG or ENV instructions for sensitive data (ARG \"api_key\") (line 11)"],
    );
    for (df, rule) in [
        ("FROM scratch\n# check=skip=JSONArgsRecommended\nCMD mycommand\n", "JSONArgsRecommended"),
        ("FROM scratch\n# check=skip=MaintainerDeprecated\nMAINTAINER me@example.org\n", "MaintainerDeprecated"),
        ("FROM scratch\n# check=skip=WorkdirRelativePath\nWORKDIR app/\n", "WorkdirRelativePath"),
        (
            "FROM scratch\n# check=skip=LegacyKeyValueFormat\nENV testkey value\n# check=skip=LegacyKeyValueFormat\nLABEL key value\n",
            "LegacyKeyValueFormat",
        ),
        ("# check=skip=RedundantTargetPlatform\nFROM --platform=$TARGETPLATFORM scratch\n", "RedundantTargetPlatform"),
        // Blank lines keep the comment; it must be a check= comment that parses.
        ("FROM scratch\n# check=skip=JSONArgsRecommended\n\n# why\nCMD mycommand\n", "JSONArgsRecommended"),
    ] {
        assert_rule(df, rule, &[]);
    }
    // A bare `#` clears the comments; an unparsable check= comment counts as none.
    assert_rule(
        "FROM scratch\n# check=skip=JSONArgsRecommended\n#\nCMD mycommand\n",
        "JSONArgsRecommended",
        &["JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 4)"],
    );
    assert_rule(
        "FROM scratch\n# check=skip\nCMD mycommand\n",
        "JSONArgsRecommended",
        &["JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)"],
    );
    // Whole-file checks do not look at the comments (BuildKit runs them with the
    // file's configuration).
    assert_rule(
        "FROM scratch AS a\n# check=skip=DuplicateStageName\nFROM scratch AS a\n",
        "DuplicateStageName",
        &["Duplicate stage name \"a\", stage names should be unique (line 3)"],
    );
    // MultipleInstructionsDisallowed is reported at the first CMD, skipped by the
    // comment of the second (the one being lowered when BuildKit reports it).
    assert_rule(
        "FROM scratch\nCMD [\"a\"]\n# check=skip=MultipleInstructionsDisallowed\nCMD [\"b\"]\n",
        "MultipleInstructionsDisallowed",
        &[],
    );
    // With error=true, a skipped rule does not fail the build.
    build_plan(
        "# check=error=true\nFROM scratch\n# check=skip=JSONArgsRecommended\nCMD mycommand\n",
        &opts(),
    )
    .unwrap();
}
