//! Every user error exits non-zero with one clear message and changes nothing.

use crate::common::*;

/// Runs a failing build and checks the message and that the store is unchanged.
fn fails_cleanly(k: &Kiln, args: &[&str], expect: &[&str]) -> String {
    let before = k.snapshot_store();
    let images_before = k.ok(&["images"]);
    let err = k.fails(args);
    for e in expect {
        assert!(err.contains(e), "error output should contain {e:?}:\n{err}");
    }
    // One final error line (progress may also mark the failing step `#N ERROR:`).
    assert_eq!(
        err.lines().filter(|l| l.starts_with("ERROR:")).count(),
        1,
        "one error message:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let after = k.snapshot_store();
    let store = |v: &Vec<(String, u64)>| {
        v.iter()
            .filter(|(p, _)| p.starts_with("store/"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(store(&before), store(&after), "the image store changed");
    assert_eq!(images_before, k.ok(&["images"]));
    err
}

fn seeded() -> (Kiln, tempfile::TempDir) {
    // A store with one image in it, so "unchanged" means something.
    let k = kiln();
    let ctx = context(&[("a.txt", "a"), ("Dockerfile", "FROM scratch\nCOPY a.txt /\n")]);
    k.ok(&["build", "-q", "-t", "seed:1", ctx.path().to_str().unwrap()]);
    (k, ctx)
}

#[test]
fn missing_context() {
    let (k, _c) = seeded();
    fails_cleanly(
        &k,
        &["build", "/nonexistent/kiln-context"],
        &["build context `/nonexistent/kiln-context` does not exist"],
    );
}

#[test]
fn missing_dockerfile() {
    let (k, _c) = seeded();
    let ctx = context(&[("a.txt", "a")]);
    let c = ctx.path().to_str().unwrap();
    fails_cleanly(&k, &["build", c], &["cannot read Dockerfile", "Dockerfile`"]);
    fails_cleanly(
        &k,
        &["build", "-f", "nope.Dockerfile", c],
        &["cannot read Dockerfile `nope.Dockerfile`"],
    );
}

#[test]
fn missing_copy_source_names_path_and_line() {
    let (k, _c) = seeded();
    let ctx = context(&[
        ("a.txt", "a"),
        ("Dockerfile", "FROM scratch\nCOPY a.txt /a\nCOPY missing.txt /m\n"),
    ]);
    let err = fails_cleanly(
        &k,
        &["build", "-t", "seed:1", ctx.path().to_str().unwrap()],
        &["Dockerfile:3", "missing.txt", "not found"],
    );
    assert!(err.contains(">>> COPY missing.txt /m"), "shows the line:\n{err}");
}

#[test]
fn excluded_copy_source_is_not_found() {
    let (k, _c) = seeded();
    let ctx = context(&[
        ("secret.txt", "s"),
        (".dockerignore", "secret.txt\n"),
        ("Dockerfile", "FROM scratch\nCOPY secret.txt /\n"),
    ]);
    fails_cleanly(
        &k,
        &["build", ctx.path().to_str().unwrap()],
        &["Dockerfile:2", "secret.txt", "not found"],
    );
}

#[test]
fn unknown_instruction_suggests() {
    let (k, _c) = seeded();
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPPY a /\n")]);
    fails_cleanly(
        &k,
        &["build", ctx.path().to_str().unwrap()],
        &["Dockerfile:2", "COPPY", "did you mean"],
    );
}

#[test]
fn bad_instruction_flag() {
    let (k, _c) = seeded();
    let ctx = context(&[("a", "a"), ("Dockerfile", "FROM scratch\nCOPY --bogus=1 a /\n")]);
    fails_cleanly(&k, &["build", ctx.path().to_str().unwrap()], &["Dockerfile:2", "bogus"]);
}

#[test]
fn bad_cli_flags() {
    let (k, c) = seeded();
    let ctx = c.path().to_str().unwrap();
    // clap's own usage errors are not "ERROR:" lines; check them separately.
    let err = k.fails(&["build", "--bogus", ctx]);
    assert!(err.contains("--bogus"), "{err}");
    fails_cleanly(&k, &["build", "-o", "type=nope,dest=x", ctx], &["unknown type `nope`"]);
    fails_cleanly(&k, &["build", "-t", "Bad:Tag!", ctx], &["invalid tag `Bad:Tag!`"]);
    fails_cleanly(&k, &["build", "--build-arg", "=x", ctx], &["invalid --build-arg `=x`"]);
}

#[test]
fn unwritable_destination() {
    let (k, c) = seeded();
    let ctx = c.path().to_str().unwrap();
    fails_cleanly(
        &k,
        &[
            "build",
            "-t",
            "new:1",
            "-o",
            "type=oci,dest=/nonexistent/dir/out.tar",
            "-o",
            "type=image",
            ctx,
        ],
        &["/nonexistent/dir/out.tar"],
    );
    let dir = tempfile::tempdir().unwrap();
    fails_cleanly(
        &k,
        &[
            "build",
            "-o",
            &format!("type=docker,dest={}", dir.path().display()),
            ctx,
        ],
        &["is a directory"],
    );
    assert!(!k.ok(&["images"]).contains("new"), "no tag from a failed build");
}

#[test]
fn store_commands_name_unknown_images() {
    let (k, _c) = seeded();
    for args in [
        &["rmi", "nope:1"][..],
        &["inspect", "nope:1"],
        &["tag", "nope:1", "x:1"],
        &["save", "-o", "/tmp/x.tar", "nope:1"],
    ] {
        let err = k.fails(args);
        assert!(err.contains("no image `nope:1`"), "{args:?}: {err}");
    }
}

#[test]
fn stdin_dockerfile_has_an_empty_context() {
    let (k, _c) = seeded();
    let out = k.with_stdin(&["build", "-q", "-"], "FROM scratch\nCOPY a.txt /\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:2") && err.contains("a.txt") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn dockerfile_from_stdin() {
    let (k, c) = seeded();
    let out = k.with_stdin(
        &["build", "-q", "-f", "-", c.path().to_str().unwrap()],
        "FROM scratch\nCOPY a.txt /x\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = k.with_stdin(&["build", "-q", "-"], "FROM scratch\nENV A=1\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sha256:"));
}
