//! Nested `WORKDIR`s (issue 18 item 15): every step adds one directory below the last,
//! so a step's files sit DEPTH directories deep. DEPTH is 120, not the 1,000: a
//! debug build of 1,000 steps takes 15–30 minutes here, too long for the suite (the
//! 1,000-step build is bench/nested-workdir.sh's, and paths past PATH_MAX are covered
//! by the unit tests of `snapshotter::cursor`, `clone`, `tarw` and `worker::copy::view`). The chain is built once; a RUN at
//! the bottom then runs with each snapshotter (an ARG tells the two RUNs apart, so the
//! second reuses the WORKDIR steps). The directory chain must be in the image, and both
//! RUNs must see it and write the same files. (How long each step takes is
//! bench/nested-workdir.sh's business, not a test's.)

use std::path::{Path, PathBuf};

use crate::common::*;

const DEPTH: usize = 120;

fn dockerfile(base: &str, snapshotter: &str) -> String {
    let mut df = format!("FROM {base}\n");
    for _ in 0..DEPTH {
        df.push_str("WORKDIR d\n");
    }
    df.push_str(&format!("ARG SNAPSHOTTER={snapshotter}\nRUN pwd > /pwd.txt\n"));
    df
}

/// Builds the nested-WORKDIR image with `snapshotter`; returns the image config and the
/// exported root file system (with its temp dir).
fn build(k: &Kiln, base: &str, snapshotter: &str) -> (serde_json::Value, tempfile::TempDir, PathBuf) {
    let ctx = context(&[("Dockerfile", &dockerfile(base, snapshotter))]);
    let c = ctx.path().to_str().unwrap();
    let id = k.ok(&["build", "-q", "--snapshotter", snapshotter, "-t", snapshotter, c]);
    let config = json(&k.ok(&["inspect", id.trim()]))[0]["Config"].clone();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs");
    let local = format!("type=local,dest={}", dest.display());
    // Every step is cached now: this only exports.
    k.ok(&["build", "-q", "--snapshotter", snapshotter, "-o", &local, c]);
    (config, out, dest)
}

/// The names below `dir`, sorted (`a/`, `a/b`, …).
fn names(dir: &Path) -> Vec<String> {
    tree(dir)
}

#[test]
fn nested_workdirs_build_and_run_with_both_snapshotters() {
    if !require(kiln_testkit::is_root(), "the overlay snapshotter needs root") {
        return;
    }
    let k = kiln();
    let Some(base) = crate::run::busybox_base(&k) else {
        return;
    };
    let (overlay, _o, overlay_fs) = build(&k, base, "overlay");
    let (copy, _c, copy_fs) = build(&k, base, "copy");
    let want = "/d".repeat(DEPTH);
    for (config, fs) in [(&overlay, &overlay_fs), (&copy, &copy_fs)] {
        assert_eq!(config["config"]["WorkingDir"], want.as_str());
        // The base's layer, one per WORKDIR, the RUN's.
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1 + DEPTH + 1);
        let deepest = fs.join(want.trim_start_matches('/'));
        assert!(deepest.is_dir(), "{} is missing", deepest.display());
        assert_eq!(std::fs::read_dir(&deepest).unwrap().count(), 0);
        assert_eq!(
            std::fs::read_to_string(fs.join("pwd.txt")).unwrap(),
            format!("{want}\n")
        );
    }
    let ids = |c: &serde_json::Value| c["rootfs"]["diff_ids"].as_array().unwrap()[..=DEPTH].to_vec();
    assert_eq!(ids(&overlay), ids(&copy), "the WORKDIR layers differ");
    assert_eq!(names(&overlay_fs), names(&copy_fs), "the snapshotters' trees differ");
}
