//! Incremental COPY (issue 20 item 1): a COPY from the build context whose sources
//! changed in a few files shares the unchanged ones with the step's previous result
//! (hard links into its layer directory) and must give the same layer, byte for byte,
//! as a full copy of the same context.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::common::*;
use crate::run::busybox_base;

const DOCKERFILE: &str = "FROM bb:1\nCOPY . /app\nRUN test -f /app/Dockerfile && test -L /app/link\n";

/// A context of seven regular files (one of them hard-linked under a second name) and
/// a symlink, in nested directories.
fn make_context(dir: &Path) {
    let files: [(&str, &str); 6] = [
        ("Dockerfile", DOCKERFILE),
        ("a.txt", "a\n"),
        ("b.txt", "b\n"),
        ("sub/c.txt", "c\n"),
        ("sub/d.bin", "d\0d\0"),
        ("sub/deep/e.txt", "e\n"),
    ];
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
    std::fs::set_permissions(dir.join("sub/d.bin"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("hard1"), "h\n").unwrap();
    std::fs::hard_link(dir.join("hard1"), dir.join("hard2")).unwrap();
    std::os::unix::fs::symlink("a.txt", dir.join("link")).unwrap();
}

/// One edit of the context, and how many files the incremental COPY that follows it
/// must share (every regular file it copies whose path, contents and metadata the
/// previous result has).
struct Edit {
    what: &'static str,
    apply: fn(&Path),
    shared: usize,
}

fn edits() -> Vec<Edit> {
    vec![
        Edit {
            what: "append to a file",
            apply: |d| {
                let mut f = std::fs::OpenOptions::new().append(true).open(d.join("b.txt")).unwrap();
                std::io::Write::write_all(&mut f, b"more\n").unwrap();
            },
            // Dockerfile a c d e hard1 (hard2 is a link to hard1's copy).
            shared: 6,
        },
        Edit {
            what: "add a file",
            apply: |d| std::fs::write(d.join("sub/new.txt"), "new\n").unwrap(),
            shared: 7,
        },
        Edit {
            what: "remove a file",
            apply: |d| std::fs::remove_file(d.join("a.txt")).unwrap(),
            shared: 7,
        },
        Edit {
            what: "rename a file",
            apply: |d| std::fs::rename(d.join("sub/c.txt"), d.join("sub/c2.txt")).unwrap(),
            shared: 6,
        },
        Edit {
            what: "chmod a file",
            apply: |d| {
                std::fs::set_permissions(d.join("sub/deep/e.txt"), std::fs::Permissions::from_mode(0o600)).unwrap()
            },
            shared: 6,
        },
        Edit {
            what: "replace a file with a directory",
            apply: |d| {
                std::fs::remove_file(d.join("b.txt")).unwrap();
                std::fs::create_dir(d.join("b.txt")).unwrap();
                std::fs::write(d.join("b.txt/inner.txt"), "inner\n").unwrap();
            },
            shared: 6,
        },
        Edit {
            what: "break a hard link",
            apply: |d| {
                std::fs::remove_file(d.join("hard2")).unwrap();
                std::fs::write(d.join("hard2"), "h\n").unwrap();
            },
            // hard2 was a link, not a copy, in the previous result: copied now.
            shared: 7,
        },
    ]
}

/// The layer digests of the image in the OCI archive `archive`.
fn layer_digests(archive: &Path) -> Vec<String> {
    crate::run::archive_layer_descriptors(&std::fs::read(archive).unwrap())
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// How many files the build's progress says it shared with the previous result (0 when
/// it says nothing).
fn shared_count(progress: &str) -> usize {
    progress
        .lines()
        .find_map(|l| l.strip_suffix(" files shared with the previous result"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

/// Every file of every layer directory of the root: path, mode, owner, size, mtime,
/// link count aside, contents' digest.
fn layer_dirs_state(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    fn walk(d: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let md = p.symlink_metadata().unwrap();
            let sum = if md.is_file() {
                hex::encode(sha2::Sha256::digest(std::fs::read(&p).unwrap()))
            } else {
                String::new()
            };
            out.insert(
                p.clone(),
                format!(
                    "{:o} {}:{} {} {} {sum}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.size(),
                    md.mtime()
                ),
            );
            if md.is_dir() {
                walk(&p, out);
            }
        }
    }
    walk(&root.join("layerdirs-v1"), &mut out);
    out
}

/// Builds `ctx` into an OCI archive at `dest`; returns the progress.
fn build_to(k: &Kiln, ctx: &Path, dest: &Path, snapshotter: &str) -> String {
    let out = run(k.cmd().args([
        "build",
        "--progress=plain",
        "--snapshotter",
        snapshotter,
        "-o",
        &format!("type=oci,dest={}", dest.display()),
        ctx.to_str().unwrap(),
    ]));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{err}");
    err
}

fn incremental_copy_is_a_full_copy(snapshotter: &str) {
    if !require(
        kiln_testkit::is_root(),
        "the incremental COPY tests run RUN steps as root",
    ) {
        return;
    }
    let (k, full) = (kiln(), kiln());
    if busybox_base(&k).is_none() || busybox_base(&full).is_none() {
        return;
    }
    let ctx = tempfile::tempdir().unwrap();
    make_context(ctx.path());
    let out = tempfile::tempdir().unwrap();
    let first = build_to(&k, ctx.path(), &out.path().join("first.tar"), snapshotter);
    assert_eq!(shared_count(&first), 0, "nothing to share with yet:\n{first}");
    for (n, edit) in edits().into_iter().enumerate() {
        (edit.apply)(ctx.path());
        let before = layer_dirs_state(k.root());
        let inc = out.path().join(format!("inc{n}.tar"));
        let progress = build_to(&k, ctx.path(), &inc, snapshotter);
        assert_eq!(
            shared_count(&progress),
            edit.shared,
            "{snapshotter}, after `{}`: files shared:\n{progress}",
            edit.what
        );
        // The previous results' files are as they were (nothing wrote through a link).
        let after = layer_dirs_state(k.root());
        for (p, was) in &before {
            if let Some(now) = after.get(p) {
                assert_eq!(
                    now,
                    was,
                    "{snapshotter}, after `{}`: {} changed",
                    edit.what,
                    p.display()
                );
            }
        }
        // The same context copied from scratch: a root that has no previous result.
        run_ok(full.cmd().args(["prune", "--all"]));
        let whole = out.path().join(format!("full{n}.tar"));
        let progress = build_to(&full, ctx.path(), &whole, snapshotter);
        assert_eq!(shared_count(&progress), 0, "{progress}");
        let (a, b) = (layer_digests(&inc), layer_digests(&whole));
        assert_eq!(a.len(), 3, "base, COPY and RUN layers: {a:?}");
        assert_eq!(
            a[1], b[1],
            "{snapshotter}, after `{}`: the incremental COPY's layer differs from a full copy's",
            edit.what
        );
    }
}

#[test]
fn incremental_copy_gives_the_layer_of_a_full_copy() {
    incremental_copy_is_a_full_copy("overlay");
}

#[test]
fn incremental_copy_gives_the_layer_of_a_full_copy_with_the_copy_snapshotter() {
    incremental_copy_is_a_full_copy("copy");
}

#[test]
fn a_rebuild_after_its_previous_result_was_pruned_copies_everything_and_gives_the_same_layer() {
    if !require(
        kiln_testkit::is_root(),
        "the incremental COPY tests run RUN steps as root",
    ) {
        return;
    }
    let k = kiln();
    if busybox_base(&k).is_none() {
        return;
    }
    let ctx = tempfile::tempdir().unwrap();
    make_context(ctx.path());
    let out = tempfile::tempdir().unwrap();
    build_to(&k, ctx.path(), &out.path().join("0.tar"), "overlay");
    std::fs::write(ctx.path().join("a.txt"), "changed\n").unwrap();
    let shared = build_to(&k, ctx.path(), &out.path().join("1.tar"), "overlay");
    assert_eq!(shared_count(&shared), 6, "{shared}");
    run_ok(k.cmd().args(["prune", "--all"]));
    // The record of a result whose layer directory the prune removed goes with it.
    let records = std::fs::read_dir(k.root().join("copies-v1")).unwrap().count();
    assert_eq!(records, 0, "prune left incremental COPY records of removed results");
    let again = build_to(&k, ctx.path(), &out.path().join("2.tar"), "overlay");
    assert_eq!(shared_count(&again), 0, "the previous result was pruned:\n{again}");
    assert_eq!(
        layer_digests(&out.path().join("1.tar"))[1],
        layer_digests(&out.path().join("2.tar"))[1]
    );
}

#[test]
fn rootless_incremental_copy_gives_the_layer_of_a_full_copy() {
    let Some(u) = crate::rootless::User::get(crate::rootless::SUB_USER, true) else {
        return;
    };
    if u.busybox_base().is_none() {
        return;
    }
    let ctx = u.context("inc", DOCKERFILE);
    make_context_but_dockerfile(&ctx);
    u.own(&ctx);
    let dest = |n: u32| u.path(&format!("out{n}.tar"));
    let build = |n: u32| {
        u.kiln_ok(&[
            "build",
            "--progress=plain",
            "-o",
            &format!("type=oci,dest={}", dest(n).display()),
            ctx.to_str().unwrap(),
        ])
    };
    build(0);
    std::fs::write(ctx.join("sub/c.txt"), "changed\n").unwrap();
    let inc = build(1);
    assert_eq!(shared_count(&inc), 6, "{inc}");
    u.kiln_ok(&["prune", "--all"]);
    let full = build(2);
    assert_eq!(shared_count(&full), 0, "{full}");
    assert_eq!(layer_digests(&dest(1))[1], layer_digests(&dest(2))[1]);
}

/// [`make_context`] in a directory that has its Dockerfile already.
fn make_context_but_dockerfile(dir: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    make_context(tmp.path());
    std::fs::remove_file(tmp.path().join("Dockerfile")).unwrap();
    run_ok(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", tmp.path().display()))
            .arg(dir),
    );
}
