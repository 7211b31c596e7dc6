//! One conformance suite for every [`Snapshotter`] backend: the same steps (shell
//! commands run on the mounted root, through a real overlay mount for the overlay
//! backend) on the same base give byte-identical layers, and a step on the result sees
//! the same parent entries.

#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_cache::KilnRoot;
use kiln_snapshotter::{
    CommitOptions, Compression, CopySnapshotter, Layer, OverlaySnapshotter, Prepared, RootMount, Snapshots, Snapshotter,
};

/// What each step does, run with `sh` in the step's root.
const STEPS: [&str; 2] = [
    // Deletions (a whiteout), a directory removed and made again (opaque), new files,
    // a symlink out of the root, a hard link, a chmod and nested directories.
    "rm etc/motd && rm -r root && mkdir root && echo new > root/new && echo x > a && \
     ln -s /etc/passwd link && mkdir -p d/e && echo y > d/e/f && chmod 600 etc/passwd && ln a hard && echo b > b",
    // On the first step's result: a file of the layer below deleted, one appended to
    // (copied up), one renamed. (Not a write through a hard link of a lower layer:
    // overlayfs copies up one name of it, the copy backend's clone keeps the link.)
    "rm d/e/f && echo z >> b && mv root/new root/renamed && mkdir -p d/e/deeper",
];

fn backends(snaps: &Snapshots) -> Vec<Box<dyn Snapshotter>> {
    vec![
        Box::new(OverlaySnapshotter::new(snaps.clone())),
        Box::new(CopySnapshotter::new(snaps.clone())),
    ]
}

/// Runs `script` in the step's root: for an overlay, mounted in a private mount
/// namespace (`unshare -m`), as the executor's sandbox mounts it.
fn run_step(mount: &RootMount, script: &str) {
    let status = match mount {
        RootMount::Tree(tree) => Command::new("sh").arg("-c").arg(script).current_dir(tree).status(),
        RootMount::Overlay { lower, upper, work } => {
            let target = tempfile::tempdir().unwrap();
            let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
            let opts = format!(
                "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off",
                lower.join(":"),
                upper.display(),
                work.display()
            );
            Command::new("unshare")
                .args(["-m", "sh", "-c"])
                .arg(format!(
                    "mount -t overlay overlay -o {opts} {t} && cd {t} && {script}",
                    t = target.path().display()
                ))
                .status()
        }
    };
    assert!(status.unwrap().success(), "step failed: {script}");
}

/// A base layer written by the file-op path: a few files and directories.
fn base(snaps: &Snapshots, root: &KilnRoot) -> Layer {
    let snap = snaps.prepare(&[]).unwrap();
    let up = snap.upper();
    for d in ["etc", "root", "bin"] {
        std::fs::create_dir(up.join(d)).unwrap();
    }
    std::fs::write(up.join("etc/motd"), "welcome\n").unwrap();
    std::fs::write(up.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(up.join("root/.profile"), "# root\n").unwrap();
    snap.commit(&root.content(), Some(0), Compression::default()).unwrap()
}

struct Outcome {
    layers: Vec<Layer>,
    /// The third step's view of its parent: each probe's content (or `None`).
    seen: Vec<(String, Option<String>)>,
    /// How many lower directories each step got.
    depths: Vec<usize>,
}

const PROBES: [&str; 10] = [
    "etc/motd",
    "b",
    "etc/passwd",
    "root/.profile",
    "root/renamed",
    "root/new",
    "a",
    "d/e/f",
    "link/x",
    "hard",
];

fn conform(make: usize) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let root = KilnRoot::open(dir.path()).unwrap();
    let snaps = Snapshots::new(&root).unwrap();
    let backend = backends(&snaps).remove(make);
    let mut chain = vec![base(&snaps, &root)];
    let mut depths = Vec::new();
    let opts = CommitOptions {
        clamp_mtime: Some(0),
        compression: Compression::default(),
    };
    for script in STEPS {
        let scratch = tempfile::Builder::new().tempdir_in(root.tmp_dir()).unwrap();
        let step = backend.prepare(&chain, scratch.path(), true).unwrap();
        let mount = step.mount();
        depths.push(match &mount {
            RootMount::Overlay { lower, .. } => lower.len(),
            RootMount::Tree(_) => 1,
        });
        run_step(&mount, script);
        chain.push(step.commit(&root.content(), opts).unwrap());
    }
    let scratch = tempfile::Builder::new().tempdir_in(root.tmp_dir()).unwrap();
    let step: Box<dyn Prepared> = backend.prepare(&chain, scratch.path(), true).unwrap();
    if let RootMount::Overlay { lower, .. } = step.mount() {
        depths.push(lower.len());
    }
    let seen = PROBES
        .iter()
        .map(|p| {
            let found: Option<PathBuf> = step.parent_entry(Path::new(p));
            (
                p.to_string(),
                found.map(|f| std::fs::read_to_string(f).unwrap_or_default()),
            )
        })
        .collect();
    Outcome {
        layers: chain,
        seen,
        depths,
    }
}

#[test]
fn every_backend_makes_the_same_layers_and_parent_views() {
    if !kiln_testkit::require(
        kiln_testkit::is_root() && kiln_testkit::which("unshare").is_some(),
        "the snapshotter conformance suite mounts overlays: it needs root and unshare",
    ) {
        return;
    }
    let overlay = conform(0);
    let copy = conform(1);
    let ids = |o: &Outcome| o.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&overlay), ids(&copy), "the backends' layers differ");
    assert_eq!(overlay.seen, copy.seen);
    let want: Vec<(String, Option<String>)> = [
        ("etc/motd", None),
        ("b", Some("b\nz\n")),
        ("etc/passwd", Some("root:x:0:0:root:/root:/bin/sh\n")),
        ("root/.profile", None),
        ("root/renamed", Some("new\n")),
        ("root/new", None),
        ("a", Some("x\n")),
        ("d/e/f", None),
        ("link/x", None),
        ("hard", Some("x\n")),
    ]
    .iter()
    .map(|(p, c)| (p.to_string(), c.map(str::to_string)))
    .collect();
    assert_eq!(overlay.seen, want);
    // The overlay stacks: the base's merged tree, then one layer directory per step.
    assert_eq!(overlay.depths, [1, 2, 3]);
    assert_eq!(copy.depths, [1, 1]);
}
