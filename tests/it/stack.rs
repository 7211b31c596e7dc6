//! Stacked overlay snapshots (issue 20 item 0): a RUN step's upper directory is kept as
//! its layer's own directory (`layerdirs-v1/`) and later RUN steps mount the stack of
//! layer directories as overlay lower directories instead of a hard-link clone of the
//! whole tree; deep stacks are flattened into a merged tree.

use std::path::{Path, PathBuf};

use crate::common::*;
use crate::run::{build_plain, busybox_base, step_lines};

/// The entries of one bucket directory of `k`'s root that are directories.
fn bucket_dirs(k: &Kiln, bucket: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(k.root().join(bucket))
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Whether the overlay snapshotter tests can run here (they run RUN steps as root).
fn root_overlay() -> bool {
    require(
        kiln_testkit::is_root(),
        "the overlay snapshotter tests run RUN steps as root",
    )
}

/// Builds `df` with `--no-cache` and clamped times with the overlay and then the copy
/// snapshotter into two OCI archives (`overlay.tar`, `copy.tar` in the returned
/// directory), calls `after_overlay` with the overlay build's progress before the copy
/// build, and requires the same layers from both.
fn build_overlay_and_copy(
    k: &Kiln,
    df: &str,
    after_overlay: impl FnOnce(&str),
) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let out = tempfile::tempdir().unwrap();
    let (a, b) = (out.path().join("overlay.tar"), out.path().join("copy.tar"));
    let mut after_overlay = Some(after_overlay);
    for (snapshotter, dest) in [("overlay", &a), ("copy", &b)] {
        let progress = build_plain(
            k,
            df,
            &[
                "--no-cache",
                "--build-arg",
                "SOURCE_DATE_EPOCH=1000000000",
                "--snapshotter",
                snapshotter,
                "-o",
                &format!("type=oci,dest={}", dest.display()),
            ],
        );
        if let Some(f) = after_overlay.take() {
            f(&progress);
        }
    }
    crate::run::assert_same_layers(&crate::run::layer_listings(&a), &crate::run::layer_listings(&b));
    (out, a, b)
}

#[test]
fn run_steps_see_the_link_counts_of_the_image() {
    if !root_overlay() {
        return;
    }
    // As under BuildKit: three RUN steps in a row all see /bin/busybox with the link
    // count it has in the image. A hard-link clone of the parent per step gave 1, 2, 3.
    for snapshotter in ["overlay", "copy"] {
        let k = kiln();
        let Some(base) = busybox_base(&k) else { return };
        let mut df = format!("FROM {base}\n");
        for i in 1..=3 {
            df.push_str(&format!("RUN echo \"links{i} $(stat -c %h /bin/busybox)\"\n"));
        }
        let out = build_plain(&k, &df, &["--snapshotter", snapshotter]);
        let counts: Vec<String> = step_lines(&out)
            .into_iter()
            .filter_map(|l| l.strip_prefix("links").map(|s| s[2..].to_string()))
            .collect();
        assert_eq!(counts, ["1", "1", "1"], "{snapshotter}:\n{out}");
    }
}

#[test]
fn run_steps_stack_layer_directories_and_flatten_deep_stacks() {
    if !root_overlay() {
        return;
    }
    // More steps than one page of `lowerdir=` paths holds (each path is the root's
    // path plus 80 bytes), with deletions, opaque directories and overwrites on the
    // way: the image is the copy snapshotter's, layer by layer and byte for byte (the
    // times clamped, so two builds can be equal).
    const STEPS: usize = 45;
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    // The base's own file steps kept theirs.
    let base_dirs = bucket_dirs(&k, "layerdirs-v1").len();
    let mut df = format!("FROM {base}\nRUN mkdir -p /d/keep && echo 0 > /count && echo gone > /d/gone\n");
    for i in 1..STEPS {
        let op = match i % 4 {
            0 => format!("rm -rf /d && mkdir -p /d/new{i}"),
            1 => format!("echo {i} > /count && rm -f /d/gone"),
            2 => format!("mkdir -p /d/sub{i} && echo {i} > /d/sub{i}/f && echo gone > /d/gone"),
            _ => "cat /count >> /log && ls /d >> /log".to_string(),
        };
        df.push_str(&format!("RUN {op}\n"));
    }
    let (_out, a, b) = build_overlay_and_copy(&k, &df, |_| {
        // Every RUN's upper was kept as its layer directory...
        let dirs = bucket_dirs(&k, "layerdirs-v1");
        assert_eq!(dirs.len(), base_dirs + STEPS, "{dirs:#?}");
        // ...and the stack was flattened at least once (the base is a layer
        // directory of its own: no merged tree is needed below it).
        let merged = bucket_dirs(&k, "snapshots-v1");
        assert!(!merged.is_empty(), "no flattened tree: {merged:#?}");
        assert!(merged.len() <= 4, "flattened too often: {merged:#?}");
    });
    let digests = |p: &Path| -> Vec<String> {
        let m = oci_manifest(p);
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(digests(&a), digests(&b), "the layer blobs differ");
    let (ok, text) = fsck(&k, &["--deep"]);
    assert!(ok, "{text}");
}

#[test]
fn fsck_checks_layer_directories_and_repair_removes_a_bad_one() {
    if !root_overlay() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let df =
        format!("FROM {base}\nRUN mkdir /m && echo one > /m/a && echo two > /m/b\nRUN rm /m/a && echo three > /m/c\n");
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("first.tar");
    let oci = |dest: &Path| format!("type=oci,dest={}", dest.display());
    build_plain(&k, &df, &["--snapshotter", "overlay", "-o", &oci(&dest)]);
    let (ok, text) = fsck(&k, &["--deep"]);
    assert!(ok && text.contains(" 0 problems"), "{text}");
    // Same names and sizes, other bytes in the first RUN's layer directory: only the
    // deep check sees it, and names the entry.
    let dir = bucket_dirs(&k, "layerdirs-v1")
        .into_iter()
        .find(|d| d.join("m/b").is_file())
        .expect("the first RUN's layer directory");
    let chain = dir.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::remove_file(dir.join("m/b")).unwrap();
    std::fs::write(dir.join("m/b"), "TWO\n").unwrap();
    let (ok, text) = fsck(&k, &[]);
    assert!(ok && text.contains(" 0 problems"), "{text}");
    let (ok, text) = fsck(&k, &["--deep"]);
    assert!(
        !ok && text.contains(&format!("layer directory {chain}")) && text.contains("m/b"),
        "{text}"
    );
    // An entry gone: the cheap check sees it.
    std::fs::remove_file(dir.join("m/b")).unwrap();
    let (ok, text) = fsck(&k, &[]);
    assert!(!ok && text.contains(&chain), "{text}");
    let (ok, text) = fsck(&k, &["--repair"]);
    assert!(
        ok && text.contains(&format!("REPAIRED: removed layer directory {chain}")),
        "{text}"
    );
    assert!(!dir.exists());
    // The next build does not stack what was removed: same image, read from its blobs.
    let again = out.path().join("again.tar");
    let df2 = format!("{df}RUN cat /m/b /m/c > /both\n");
    build_plain(&k, &df2, &["--snapshotter", "overlay", "-o", &oci(&again)]);
    let layers = crate::run::layer_listings(&again);
    assert!(
        layers.last().unwrap().iter().any(|e| e.starts_with("both 644 0/0 10")),
        "{layers:#?}"
    );
    // `prune -a` removes layer directories with the rest.
    k.ok(&["prune", "--all"]);
    assert!(bucket_dirs(&k, "layerdirs-v1").is_empty());
}

/// Runs `kiln fsck ARGS`: whether it succeeded, and its stdout and stderr.
fn fsck(k: &Kiln, args: &[&str]) -> (bool, String) {
    let mut a = vec!["fsck"];
    a.extend_from_slice(args);
    let out = run(k.cmd().args(&a));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The manifest of the single image in an OCI archive.
fn oci_manifest(archive: &Path) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = dir
        .path()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap()
}

#[test]
fn file_steps_see_the_overlay_of_their_stack() {
    if !root_overlay() {
        return;
    }
    // File steps look up their destinations through the parent's stack of layer
    // directories, not a merged tree: what a RUN deleted (a whiteout) or replaced (an
    // opaque directory, a file over a directory) must be gone for them too. A view that
    // saw the hidden `/d/link` would write `/etc/a` through it; one that saw the hidden
    // file `/w` would refuse `/w/y`. The image is the copy snapshotter's (whose file
    // steps see one merged tree), layer by layer, and the file steps kept their uppers
    // as layer directories.
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let df = overlay_views(base);
    let before = bucket_dirs(&k, "layerdirs-v1").len();
    let check = |progress: &str| {
        assert!(step_lines(progress).contains(&"seen-ok".to_string()), "{progress}");
        // Two RUNs, four file steps and the last RUN, and the three heredocs' own
        // sources (a file step on scratch each): every upper kept.
        let after = bucket_dirs(&k, "layerdirs-v1").len();
        assert_eq!(after - before, 10, "{progress}");
    };
    build_overlay_and_copy(&k, &df, check);
    let (ok, text) = fsck(&k, &["--deep"]);
    assert!(ok, "{text}");
}

/// [`file_steps_see_the_overlay_of_their_stack`]'s Dockerfile: its last RUN says
/// `seen-ok` when the file steps saw what the overlay shows.
fn overlay_views(base: &str) -> String {
    format!(
        "FROM {base}\n\
     RUN mkdir -p /d/old && ln -s /etc /d/link && echo x > /d/f && echo w > /w && mkdir -p /v/sub\n\
     RUN rm -rf /d /w /v && mkdir /d && echo v > /v && echo new > /d/new\n\
     COPY <<EOT /d/link/a\n\
     a\n\
     EOT\n\
     COPY <<EOT /w/y\n\
     y\n\
     EOT\n\
     WORKDIR /v2/deep\n\
     COPY <<EOT /d/old/b\n\
     b\n\
     EOT\n\
     RUN test -f /d/link/a && ! test -L /d/link && ! test -e /etc/a && ! test -e /d/f \\\n\
      && test -f /w/y && test -f /v && test -f /d/old/b && test -d /v2/deep && echo seen-ok\n"
    )
}

#[test]
fn rootless_file_steps_see_the_overlay_of_their_stack() {
    // Rootless overlays mark opaque directories with `user.overlay.opaque`.
    let Some(u) = crate::rootless::User::get(crate::rootless::SUB_USER, true) else {
        return;
    };
    let Some(base) = u.busybox_base() else { return };
    let ctx = u.context("views", &overlay_views(base));
    let progress = u.kiln_ok(&["build", "--progress=plain", ctx.to_str().unwrap()]);
    assert!(step_lines(&progress).contains(&"seen-ok".to_string()), "{progress}");
    let dirs = std::fs::read_dir(u.path("root/layerdirs-v1"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .count();
    // Three RUNs, four file steps, three heredoc sources (and the base's).
    assert!(dirs >= 10, "the file steps kept no layer directory: {dirs}");
}
