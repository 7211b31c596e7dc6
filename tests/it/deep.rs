//! 1,000 nested `WORKDIR`s (issue 18 item 15): every step adds one directory below the
//! last, so a step's files sit 1,000 directories deep. The build must work with both
//! snapshotters and give the same layers; the directory chain must be in the image, and
//! a RUN at the bottom runs in it.
//! (How long each step takes is bench/nested-workdir.sh's business, not a test's.)

use std::path::PathBuf;

use crate::common::*;

const DEPTH: usize = 1000;

fn dockerfile(base: &str) -> String {
    let mut df = format!("FROM {base}\n");
    for _ in 0..DEPTH {
        df.push_str("WORKDIR d\n");
    }
    // A RUN at the bottom, so that the snapshotter (which only RUN uses) matters too.
    df.push_str("RUN pwd > /pwd.txt\n");
    df
}

/// Builds the nested-WORKDIR image with `snapshotter` in a fresh root; returns the
/// image config and the exported root file system (with its temp dir).
fn build(snapshotter: &str) -> Option<(serde_json::Value, tempfile::TempDir, PathBuf)> {
    let k = kiln();
    let base = crate::run::busybox_base(&k)?;
    let ctx = context(&[("Dockerfile", &dockerfile(base))]);
    let c = ctx.path().to_str().unwrap();
    let id = k.ok(&["build", "-q", "--snapshotter", snapshotter, "-t", "deep:1", c]);
    let config = json(&k.ok(&["inspect", id.trim()]))[0]["Config"].clone();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs");
    let local = format!("type=local,dest={}", dest.display());
    // Every step is cached now: this only exports.
    k.ok(&["build", "-q", "--snapshotter", snapshotter, "-o", &local, c]);
    Some((config, out, dest))
}

#[test]
fn a_thousand_nested_workdirs_build_the_same_with_both_snapshotters() {
    if !require(kiln_testkit::is_root(), "the overlay snapshotter needs root") {
        return;
    }
    let Some((overlay, _o, overlay_fs)) = build("overlay") else {
        return;
    };
    let Some((copy, _c, copy_fs)) = build("copy") else {
        return;
    };
    let want = "/d".repeat(DEPTH);
    for (config, fs) in [(&overlay, &overlay_fs), (&copy, &copy_fs)] {
        assert_eq!(config["config"]["WorkingDir"], want.as_str());
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        // The base's layer, one per WORKDIR, the RUN's.
        assert_eq!(diff_ids.len(), 1 + DEPTH + 1);
        assert_eq!(
            std::fs::read_to_string(fs.join("pwd.txt")).unwrap(),
            format!("{want}\n")
        );
        let deepest = fs.join(want.trim_start_matches('/'));
        assert!(deepest.is_dir(), "{} is missing", deepest.display());
        assert_eq!(std::fs::read_dir(&deepest).unwrap().count(), 0);
        assert!(fs.join("bin/busybox").is_file());
    }
    assert_eq!(
        overlay["rootfs"]["diff_ids"], copy["rootfs"]["diff_ids"],
        "the snapshotters made different layers"
    );
}
