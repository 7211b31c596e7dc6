//! BuildKit's build checks end to end: `kiln build --check` prints what `docker build
//! --check` (buildx `--call=check`) prints and exits as it does; `# check=` and the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg skip rules or fail the build.
//!
//! dockerd 20.10's BuildKit has no checks, so the oracle is BuildKit's and buildx's
//! source: the messages are pinned by `testdata/lint/messages.txt` (BuildKit commit and
//! line), the output shape by buildx `commands/build.go` `printResult` and BuildKit
//! `frontend/subrequests/lint` `Warning.PrintTo` / `errdefs.Source.Print`.

use crate::common::*;

fn check(k: &Kiln, args: &[&str]) -> (Option<i32>, String, String) {
    let out = kiln_testkit::run(k.cmd().args(["build", "--check"]).args(args));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const DOCKERFILE: &str = "FROM scratch as base\nARG GITHUB_TOKEN\nEXPOSE 80/TCP\n\nFROM scratch AS unused\nCOPY secret.txt /\n\nFROM base\nCMD echo hi\n";

#[test]
fn check_prints_every_stages_warnings_as_buildx_and_exits_1() {
    let k = kiln();
    let ctx = context(&[
        ("Dockerfile", DOCKERFILE),
        (".dockerignore", "secret.txt\n"),
        ("secret.txt", "s"),
    ]);
    let (code, stdout, stderr) = check(&k, &[ctx.path().to_str().unwrap()]);
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stderr.contains("ERROR"), "no error line for warnings:\n{stderr}");
    let expected = "Check complete, 5 warnings have been found!

WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/
'as' and 'FROM' keywords' casing do not match
Dockerfile:1
--------------------
   1 | >>> FROM scratch as base
   2 |     ARG GITHUB_TOKEN
   3 |     EXPOSE 80/TCP
--------------------

WARNING: SecretsUsedInArgOrEnv - https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/
Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\")
Dockerfile:2
--------------------
   1 |     FROM scratch as base
   2 | >>> ARG GITHUB_TOKEN
   3 |     EXPOSE 80/TCP
   4 |     
--------------------

WARNING: ExposeProtoCasing - https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/
Defined protocol '80/TCP' in EXPOSE instruction should be lowercase
Dockerfile:3
--------------------
   1 |     FROM scratch as base
   2 |     ARG GITHUB_TOKEN
   3 | >>> EXPOSE 80/TCP
   4 |     
   5 |     FROM scratch AS unused
--------------------

WARNING: CopyIgnoredFile - https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/
Attempting to Copy file \"secret.txt\" that is excluded by .dockerignore
Dockerfile:6
--------------------
   4 |     
   5 |     FROM scratch AS unused
   6 | >>> COPY secret.txt /
   7 |     
   8 |     FROM base
--------------------

WARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/
JSON arguments recommended for CMD to prevent unintended behavior related to OS signals
Dockerfile:9
--------------------
   7 |     
   8 |     FROM base
   9 | >>> CMD echo hi
  10 |     
--------------------
";
    assert_eq!(stdout, expected);
    // Nothing was built.
    assert_eq!(k.ok(&["images", "-q"]).trim(), "");
}

#[test]
fn check_without_warnings_exits_0_and_skip_silences() {
    let k = kiln();
    let clean = context(&[("Dockerfile", "FROM scratch AS base\nCMD [\"true\"]\n")]);
    let (code, stdout, _) = check(&k, &[clean.path().to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(stdout, "Check complete, no warnings found.\n");

    let skipped = context(&[(
        "Dockerfile",
        "# check=skip=FromAsCasing,SecretsUsedInArgOrEnv\nFROM scratch as base\nARG API_KEY\n",
    )]);
    let (code, stdout, _) = check(&k, &[skipped.path().to_str().unwrap()]);
    assert_eq!(
        (code, stdout.as_str()),
        (Some(0), "Check complete, no warnings found.\n")
    );
    let (code, stdout, _) = check(
        &k,
        &[
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=FromAsCasing",
            skipped.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1), "the build arg replaces the directive:\n{stdout}");
    assert!(
        stdout.starts_with("Check complete, 1 warning has been found!\n"),
        "{stdout}"
    );
    assert!(stdout.contains("\nWARNING: SecretsUsedInArgOrEnv - "), "{stdout}");
    // A check= comment above one instruction skips there only (BuildKit 0.26+).
    let local = context(&[(
        "Dockerfile",
        "FROM scratch AS base\n# check=skip=SecretsUsedInArgOrEnv // ok here\nARG API_KEY\nARG AUTH\n",
    )]);
    let (code, stdout, _) = check(&k, &[local.path().to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.starts_with("Check complete, 1 warning has been found!\n"),
        "{stdout}"
    );
    assert!(stdout.contains("(ARG \"AUTH\")\nDockerfile:4\n"), "{stdout}");
}

#[test]
fn check_error_true_fails_the_build_and_builds_nothing() {
    let k = kiln();
    let ctx = context(&[(
        "Dockerfile",
        "# check=error=true\nFROM scratch as base\nCMD [\"true\"]\n",
    )]);
    let dir = ctx.path().to_str().unwrap();
    let err = k.fails(&["build", "-q", "-t", "checked:1", dir]);
    assert!(
        err.contains("WARN: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)"),
        "{err}"
    );
    assert!(
        err.contains("ERROR: Dockerfile: lint violation found for rules: FromAsCasing"),
        "{err}"
    );
    assert_eq!(k.ok(&["images", "-q"]).trim(), "");
    // The same with --check: the warning, then the error, exit 1.
    let (code, stdout, stderr) = check(&k, &[dir]);
    assert_eq!(code, Some(1));
    assert!(
        stdout.starts_with("Check complete, 1 warning has been found!\n"),
        "{stdout}"
    );
    assert!(
        stderr.contains("lint violation found for rules: FromAsCasing"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("WARN:"),
        "the warning is shown once, on stdout:\n{stderr}"
    );
    // Skipping the rule lets the build through.
    k.ok(&[
        "build",
        "-q",
        "--build-arg",
        "BUILDKIT_DOCKERFILE_CHECK=skip=FromAsCasing;error=true",
        "-t",
        "checked:1",
        dir,
    ]);
    // And the build arg alone can ask for the error.
    let plain = context(&[("Dockerfile", "FROM scratch as base\n")]);
    let err = k.fails(&[
        "build",
        "-q",
        "--build-arg",
        "BUILDKIT_DOCKERFILE_CHECK=error=true",
        plain.path().to_str().unwrap(),
    ]);
    assert!(err.contains("lint violation found for rules: FromAsCasing"), "{err}");
}
