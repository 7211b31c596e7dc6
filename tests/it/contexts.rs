//! Offline sources: `FROM oci-layout://DIR[:TAG]` and `--build-context NAME=…`
//! (a directory, `docker-image://`, `oci-layout://`), with no registry anywhere.

use crate::common::*;

#[test]
fn oci_layouts_and_named_contexts_need_no_registry() {
    let k = kiln();
    // A base image written as an OCI layout directory (tagged `1`).
    let base = context(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY base.txt /base.txt\nENV FROM_BASE=yes\n",
        ),
        ("base.txt", "from the layout\n"),
    ]);
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("layout");
    k.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=oci,dest={},tar=false,name=base:1", layout.display()),
        "-o",
        "type=image,name=base:1",
        base.path().to_str().unwrap(),
    ]);
    let extra = context(&[("extra.txt", "from a named directory\n")]);
    let app = |from: &str| {
        context(&[
            (
                "Dockerfile",
                &format!("FROM {from}\nCOPY app.txt /app.txt\nCOPY --from=extra extra.txt /extra.txt\n"),
            ),
            ("app.txt", "app\n"),
        ])
    };
    let check = |args: &[&str], from: &str| {
        let ctx = app(from);
        let out = d.path().join(format!("out-{}", from.len()));
        let mut all = vec!["build", "-q", "-o", out.to_str().unwrap()];
        let extra_arg = format!("extra={}", extra.path().display());
        all.extend_from_slice(&["--build-context", &extra_arg]);
        all.extend_from_slice(args);
        all.push(ctx.path().to_str().unwrap());
        k.ok(&all);
        assert_eq!(
            std::fs::read_to_string(out.join("base.txt")).unwrap(),
            "from the layout\n"
        );
        assert_eq!(std::fs::read_to_string(out.join("app.txt")).unwrap(), "app\n");
        assert_eq!(
            std::fs::read_to_string(out.join("extra.txt")).unwrap(),
            "from a named directory\n"
        );
    };
    // FROM oci-layout:// directly, by tag.
    check(&[], &format!("oci-layout://{}:1", layout.display()));
    // A named context standing for the layout, and one for an image in the local store
    // (`alpine` is never asked of a registry).
    let l = format!("base=oci-layout://{}:1", layout.display());
    check(&["--build-context", &l], "base");
    check(
        &["--build-context", "alpine=docker-image://base:1", "--pull=never"],
        "alpine",
    );

    // The config comes from the layout too.
    let ctx = app(&format!("oci-layout://{}:1", layout.display()));
    let iid = k.ok(&[
        "build",
        "-q",
        "--build-context",
        &format!("extra={}", extra.path().display()),
        ctx.path().to_str().unwrap(),
    ]);
    let cfg = json(&k.ok(&["inspect", iid.trim()]));
    assert!(
        cfg[0]["Config"]["config"]["Env"].to_string().contains("FROM_BASE=yes"),
        "{cfg}"
    );

    // Errors name the problem: an unknown tag, a directory used as a base, a bad value.
    let err = k.fails(&[
        "build",
        app(&format!("oci-layout://{}:nope", layout.display()))
            .path()
            .to_str()
            .unwrap(),
    ]);
    assert!(err.contains("no such image in the layout (tags: 1)"), "{err}");
    let ctx = app("extra");
    let err = k.fails(&[
        "build",
        "--build-context",
        &format!("extra={}", extra.path().display()),
        ctx.path().to_str().unwrap(),
    ]);
    assert!(
        err.contains("Dockerfile:1") && err.contains("build context `extra` is a directory"),
        "{err}"
    );
    let err = k.fails(&[
        "build",
        "--build-context",
        "x=/nonexistent-dir",
        ctx.path().to_str().unwrap(),
    ]);
    assert!(err.contains("invalid --build-context `x=/nonexistent-dir`"), "{err}");
}
