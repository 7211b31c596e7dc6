//! .dockerignore semantics, end to end.

use crate::common::*;

fn copied_tree(k: &Kiln, ctx: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("out");
    let mut args = vec!["build", "-q", "-o"];
    let o = format!("type=local,dest={}", dest.display());
    args.push(&o);
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    k.ok(&args);
    tree(&dest.join("ctx"))
}

#[test]
fn dockerignore_patterns() {
    let k = kiln();
    let ctx = fixture("ignore");
    // Excluded: *.log (but !important.log), logs/ (but !logs/keep.txt), docs/**/*.md,
    // the Dockerfile and .dockerignore themselves (still read by the build), secret?.txt.
    assert_eq!(
        copied_tree(&k, &ctx, &[]),
        [
            "a.txt",
            "docs/",
            "docs/sub/",
            "docs/sub/deep.txt",
            "important.log",
            "keep/",
            "keep/k.txt",
            "logs/",
            "logs/keep.txt",
            "secret10.txt"
        ]
    );
}

#[test]
fn dockerfile_specific_ignore_file_wins() {
    let k = kiln();
    let ctx = context(&[
        ("a.txt", "a"),
        ("b.txt", "b"),
        (".dockerignore", "a.txt\n"),
        ("build/app.Dockerfile", "FROM scratch\nCOPY . /ctx/\n"),
        ("build/app.Dockerfile.dockerignore", "b.txt\nbuild\n"),
    ]);
    let df = ctx.path().join("build/app.Dockerfile");
    let got = copied_tree(&k, ctx.path(), &["-f", df.to_str().unwrap()]);
    assert_eq!(got, [".dockerignore", "a.txt"]);
}
