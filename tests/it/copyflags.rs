//! COPY flags beyond the basics: symbolic `--chmod`, `--parents`, `--exclude`.
//!
//! The expected trees and modes are BuildKit's (dockerfile frontend + fsutil copier),
//! worked out by hand in each test. `docker build` on this machine (dockerd 20.10 with
//! BuildKit 0.8) cannot be the oracle here: it predates symbolic modes, `--parents`
//! and `--exclude`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::cache::{outcomes, ran};
use crate::common::*;

fn chmod(ctx: &Path, rel: &str, mode: u32) {
    std::fs::set_permissions(ctx.join(rel), std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Builds `ctx` and returns the final rootfs as a tar: `path → mode` (directories end
/// in `/`), from the tar headers, so it does not depend on who runs the test.
fn build_modes(k: &Kiln, ctx: &Path) -> BTreeMap<String, u32> {
    let bytes = build_rootfs_tar(k, ctx);
    let mut ar = tar::Archive::new(bytes.as_slice());
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            let mut name = e.path().unwrap().display().to_string();
            name = name.trim_start_matches("./").to_string();
            if h.entry_type().is_dir() && !name.ends_with('/') {
                name.push('/');
            }
            (name, h.mode().unwrap() & 0o7777)
        })
        .filter(|(n, _)| !n.is_empty() && n != "/")
        .collect()
}

fn modes(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(p, m)| (p.to_string(), *m)).collect()
}

#[test]
fn symbolic_chmod_applies_to_each_file_from_its_own_mode() {
    let k = kiln();
    let ctx = context(&[
        ("tree/script.sh", "#!/bin/sh\n"),
        ("tree/data.txt", "data\n"),
        ("tree/sub/secret", "s\n"),
        ("one.txt", "1\n"),
        (
            "Dockerfile",
            "FROM scratch\n\
             COPY --chmod=u=rwX,go=rX tree /sym/\n\
             COPY --chmod=go-w,+x one.txt /plus/one.txt\n\
             COPY --chmod=g=u tree/sub /gu\n\
             COPY --chmod=a+rX tree/sub /new/sym/\n\
             COPY --chmod=0750 one.txt /oct/dir/one.txt\n\
             ARG MODE=o=\n\
             COPY --chmod=$MODE one.txt /arg.txt\n",
        ),
    ]);
    let c = ctx.path();
    chmod(c, "tree", 0o755);
    chmod(c, "tree/script.sh", 0o750);
    chmod(c, "tree/data.txt", 0o664);
    chmod(c, "tree/sub", 0o700);
    chmod(c, "tree/sub/secret", 0o600);
    chmod(c, "one.txt", 0o666);
    assert_eq!(
        build_modes(&k, c),
        modes(&[
            // `X`: directories and files with an execute bit get x, others do not.
            ("sym/", 0o755),
            ("sym/data.txt", 0o644),
            ("sym/script.sh", 0o755),
            ("sym/sub/", 0o755),
            ("sym/sub/secret", 0o644),
            ("plus/", 0o755),
            ("plus/one.txt", 0o755),
            // The destination directory a copy creates is 0755: a symbolic mode only
            // applies to what is copied.
            ("gu/", 0o755),
            ("gu/secret", 0o660),
            ("new/", 0o755),
            ("new/sym/", 0o755),
            ("new/sym/secret", 0o644),
            // An octal mode also makes the missing parents (BuildKit ≥ 0.21).
            ("oct/", 0o750),
            ("oct/dir/", 0o750),
            ("oct/dir/one.txt", 0o750),
            ("arg.txt", 0o660),
        ])
    );
}

#[test]
fn bad_chmod_names_the_line() {
    let k = kiln();
    for (mode, why) in [
        (
            "u+q",
            "expected `r`, `w`, `x`, `X`, `s`, `t`, `u`, `g`, `o`, an operator or `,` at character 3",
        ),
        ("17777", "expected an octal mode between 0 and 07777"),
        ("go", "the mode ends where `+`, `-` or `=` is expected"),
    ] {
        let ctx = context(&[
            ("a", "a"),
            ("Dockerfile", &format!("FROM scratch\n\nCOPY --chmod={mode} a /a\n")),
        ]);
        let err = k.fails(&["build", "-q", ctx.path().to_str().unwrap()]);
        assert!(
            err.contains(&format!("Dockerfile:3: invalid value `{mode}` for `--chmod`: {why}")),
            "{mode}: {err}"
        );
    }
}

#[test]
fn copy_parents_keeps_the_paths_below_the_pivot() {
    let k = kiln();
    let ctx = context(&[
        ("x/a.txt", "xa"),
        ("y/a.txt", "ya"),
        ("src/pkg/a.go", "a"),
        ("src/pkg/b.go", "b"),
        ("src/other/c.go", "c"),
        ("t/y/1.txt", "1"),
        ("t/y/2.txt", "2"),
        ("t/y/3.md", "3"),
        ("docs/a.txt", "a"),
        ("docs/x/b.txt", "b"),
        ("docs/x/y/c.txt", "c"),
        ("docs/x/y/d.md", "d"),
        (
            "Dockerfile",
            "FROM scratch AS build\n\
             COPY --parents ./x/a.txt ./y/a.txt /parents/\n\
             COPY ./x/a.txt /no_parents/\n\
             COPY --parents ./src/./pkg/a.go /app\n\
             COPY --parents ./t/./y/*.txt /pivot/\n\
             COPY --parents ./docs/**/*.txt /stars/\n\
             COPY --parents --exclude=src/other src /dirs/\n\
             COPY --parents --chmod=a+rX,u+w ./src/./pkg/b.go /sym/\n\
             FROM scratch\n\
             COPY --from=build / /\n\
             COPY --from=build --parents /app/./pkg /from-stage/\n",
        ),
    ]);
    let c = ctx.path();
    chmod(c, "src/pkg", 0o700);
    chmod(c, "src/pkg/b.go", 0o400);
    let (_out, dest) = build_rootfs_dir(&k, c);
    assert_eq!(
        tree(&dest),
        [
            "app/",
            "app/pkg/",
            "app/pkg/a.go",
            "dirs/",
            "dirs/src/",
            "dirs/src/pkg/",
            "dirs/src/pkg/a.go",
            "dirs/src/pkg/b.go",
            "from-stage/",
            "from-stage/pkg/",
            "from-stage/pkg/a.go",
            "no_parents/",
            "no_parents/a.txt",
            "parents/",
            "parents/x/",
            "parents/x/a.txt",
            "parents/y/",
            "parents/y/a.txt",
            "pivot/",
            "pivot/y/",
            "pivot/y/1.txt",
            "pivot/y/2.txt",
            "stars/",
            "stars/docs/",
            "stars/docs/a.txt",
            "stars/docs/x/",
            "stars/docs/x/b.txt",
            "stars/docs/x/y/",
            "stars/docs/x/y/c.txt",
            "sym/",
            "sym/pkg/",
            "sym/pkg/b.go",
        ]
    );
    assert_eq!(std::fs::read_to_string(dest.join("parents/y/a.txt")).unwrap(), "ya");
    // The directories on the way are copies of the source ones (mode 0700 here), with
    // `--chmod` applied like any copied entry.
    let modes = build_modes(&k, c);
    assert_eq!(modes["app/"], 0o755);
    assert_eq!(modes["app/pkg/"], 0o700);
    assert_eq!(modes["sym/pkg/"], 0o755);
    assert_eq!(modes["sym/pkg/b.go"], 0o644);
}

#[test]
fn copy_parents_history_and_missing_paths() {
    let k = kiln();
    let ctx = context(&[
        ("a/b.txt", "b"),
        ("Dockerfile", "FROM scratch\nCOPY --parents --chmod=+r a/b.txt /d/\n"),
    ]);
    let id = k.ok(&["build", "-q", ctx.path().to_str().unwrap()]);
    let config = json(&k.ok(&["inspect", id.trim()]))[0]["Config"].clone();
    assert_eq!(
        config["history"][0]["created_by"],
        "COPY --parents --chmod=+r a/b.txt /d/ # buildkit"
    );

    // Without wildcards the path must exist; with them, matching nothing is fine.
    let ctx = context(&[
        ("a/b.txt", "b"),
        ("Dockerfile", "FROM scratch\nCOPY --parents ./a/./missing.txt /d/\n"),
    ]);
    let err = k.fails(&["build", "-q", ctx.path().to_str().unwrap()]);
    assert!(
        err.contains("`/a/missing.txt`: not found in the build context"),
        "{err}"
    );
    let ctx = context(&[
        ("a/b.txt", "b"),
        ("Dockerfile", "FROM scratch\nCOPY --parents ./a/./*.md /d/\n"),
    ]);
    k.ok(&["build", "-q", ctx.path().to_str().unwrap()]);
}

#[test]
fn exclude_leaves_out_matches_below_each_source() {
    let k = kiln();
    let ctx = context(&[
        ("docs/a.txt", "a"),
        ("docs/b.md", "b"),
        ("docs/sub/skip/x", "x"),
        ("docs/sub/keep/y.md", "y"),
        ("dir1/f.png", "p"),
        ("dir1/f.txt", "t"),
        ("dir2/g.png", "p"),
        (
            "Dockerfile",
            "FROM scratch\n\
             COPY --exclude=*.md --exclude=sub/skip docs/ /docs/\n\
             COPY --exclude=*.png dir* /globbed/\n\
             COPY --exclude=*/*.txt --exclude=docs --exclude=Dockerfile . /all/\n",
        ),
    ]);
    let (_out, dest) = build_rootfs_dir(&k, ctx.path());
    assert_eq!(
        tree(&dest),
        [
            "all/",
            "all/dir1/",
            "all/dir1/f.png",
            "all/dir2/",
            "all/dir2/g.png",
            "docs/",
            "docs/a.txt",
            "docs/sub/",
            // `*.md` matches at the top of the source only, as Docker patterns do.
            "docs/sub/keep/",
            "docs/sub/keep/y.md",
            "globbed/",
            "globbed/f.txt",
        ]
    );
}

#[test]
fn excluded_and_unselected_files_do_not_invalidate_the_copy() {
    let k = kiln();
    let ctx = context(&[
        ("src/keep/a.txt", "a"),
        ("src/keep/notes.md", "n"),
        ("src/other/b.txt", "b"),
        (
            "Dockerfile",
            "FROM scratch\n\
             COPY --parents ./src/./keep/*.txt /par/\n\
             COPY --exclude=**/*.md src /ex/\n",
        ),
    ]);
    let build = || {
        let out = run(k
            .cmd()
            .args(["build", "--progress=plain", ctx.path().to_str().unwrap()]));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        ran(&outcomes(&err))
    };
    let both = ["COPY --parents", "COPY --exclude=**/*.md"];
    assert_eq!(build(), both);
    std::fs::write(ctx.path().join("src/keep/notes.md"), "changed").unwrap();
    assert_eq!(build(), Vec::<String>::new(), "a file neither COPY selects changed");
    std::fs::write(ctx.path().join("src/other/b.txt"), "changed").unwrap();
    assert_eq!(
        build(),
        ["COPY --exclude=**/*.md"],
        "a file off the --parents pattern does not count"
    );
    std::fs::write(ctx.path().join("src/keep/a.txt"), "changed").unwrap();
    assert_eq!(build(), both);
}

/// `--chmod` modes that take the search bit off directories work in an unprivileged
/// build too, and reach the layer as written.
#[test]
fn rootless_copy_with_modes_that_drop_search_bits() {
    use crate::rootless::{User, NOSUB_USER};
    let Some(u) = User::get(NOSUB_USER, false) else { return };
    let ctx = u.context(
        "modes",
        "FROM scratch\n\
         COPY --chmod=644 tree /oct/\n\
         COPY --chmod=a-x tree /sym/\n",
    );
    std::fs::create_dir_all(ctx.join("tree/sub")).unwrap();
    std::fs::write(ctx.join("tree/sub/f"), "f").unwrap();
    u.own(&ctx);
    let tarball = u.path("rootfs.tar");
    u.kiln_ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=tar,dest={}", tarball.display()),
        ctx.to_str().unwrap(),
    ]);
    let listing = tar_listing(&std::fs::read(&tarball).unwrap());
    for want in ["oct/sub 644", "oct/sub/f 644", "sym/sub 644", "sym/sub/f 644"] {
        assert!(
            listing
                .iter()
                .any(|l| l.trim_start_matches("./").replace("/ ", " ").starts_with(want)),
            "{want} missing in {listing:?}"
        );
    }
}
