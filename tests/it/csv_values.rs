//! Flag values with commas and quotes, split as buildx splits them (Go's encoding/csv):
//! a quote quotes a whole field (`"dest=a,b"`), a quote inside a field is an error.

use std::process::{Command, Output};

use crate::common::*;

/// `kiln build --progress=plain ARGS .` run in the context directory (so relative
/// `src=`/`dest=` paths land there).
fn build_in(k: &Kiln, ctx: &std::path::Path, args: &[&str]) -> Output {
    let mut c: Command = k.cmd();
    c.current_dir(ctx)
        .args(["build", "--progress=plain"])
        .args(args)
        .arg(".");
    run(&mut c)
}

fn scratch_context() -> tempfile::TempDir {
    context(&[
        ("Dockerfile", "FROM scratch\nCOPY f /f\n"),
        ("f", "hello\n"),
        ("x,y", "s3cret\n"),
    ])
}

fn fails_with(out: &Output, flag: &str, why: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the build must be refused:\n{err}");
    assert!(
        err.contains(flag) && err.contains(why),
        "want `{flag}` and `{why}`:\n{err}"
    );
}

#[test]
fn a_quote_inside_a_secret_field_is_refused_as_buildx_does() {
    let k = kiln();
    let ctx = scratch_context();
    // buildx: `parse error on line 1, column 10: bare " in non-quoted-field`.
    let out = build_in(
        &k,
        ctx.path(),
        &["--secret", r#"id=a,src="x,y""#, "-o", "type=tar,dest=out.tar"],
    );
    fails_with(&out, "--secret", "column 10: bare \" in non-quoted field");
    assert!(!ctx.path().join("out.tar").exists());
    // Quoting the whole field is how a comma gets into a value.
    let out = build_in(
        &k,
        ctx.path(),
        &["--secret", r#"id=a,"src=x,y""#, "-o", "type=tar,dest=out.tar"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_quote_inside_an_output_field_is_refused_and_a_quoted_field_keeps_its_comma() {
    let k = kiln();
    let ctx = scratch_context();
    let out = build_in(&k, ctx.path(), &["-o", r#"type=local,dest="a,b""#]);
    fails_with(&out, "invalid output", "column 17: bare \" in non-quoted field");
    assert!(!ctx.path().join("a,b").exists());
    let out = build_in(&k, ctx.path(), &["-o", r#"type=local,"dest=a,b""#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(ctx.path().join("a,b/f")).unwrap(), "hello\n");
}

#[test]
fn a_cache_destination_may_hold_a_comma_when_quoted() {
    let k = kiln();
    let ctx = scratch_context();
    let out = build_in(&k, ctx.path(), &["--cache-to", r#"type=local,"dest=c,d""#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ctx.path().join("c,d/index.json").is_file());
    let out = build_in(&k, ctx.path(), &["--cache-from", r#"type=local,"src=c,d""#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = build_in(&k, ctx.path(), &["--cache-to", r#"type=local,dest="c,d""#]);
    fails_with(&out, "--cache-to", "column 17: bare \" in non-quoted field");
}
