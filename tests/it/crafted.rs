//! The crafted-layer suite: layer tars written header by header by the test — `../`
//! names (plain, GNU long name, PAX path), absolute and relative symlinks written
//! through (in the same layer and from a later one), symlinked parent directories, hard
//! links out of the layer (by `..`, by absolute path, through a symlink, to a symlink
//! that points out), symlink loops, device nodes, whiteouts and opaque markers through
//! symlinks, and the legitimate formats (GNU `L`/`K`, PAX path/linkpath/size/mtime/
//! uid/gid/xattrs, hard links within a layer and to a lower layer, whiteouts and opaque
//! directories over a lower layer). Each is a layer above a busybox layer in an OCI
//! layout, built with `FROM oci-layout://` and looked at by RUN, with both snapshotters,
//! as root and as the rootless test users.
//!
//! What kiln's applier does with a hostile entry, and what these tests hold it to:
//! - a name or hard-link target that climbs out with `..` fails the build with one
//!   error naming the layer digest and the entry (as Docker's `breakout` error; there is
//!   no sensible inside meaning for it);
//! - symlinks (absolute or relative, from any layer) are followed as if the snapshot
//!   were `/`: a write through one lands where the link points *inside the image*, which
//!   is what RUN sees; absolute entry names and absolute hard-link targets are re-rooted
//!   the same way, so a hard link can only name a file of the image;
//! - a hard link to a symlink links the symlink, never the file it points at;
//! - device nodes are created as root and skipped with a warning when rootless.
//!
//! After every build: the canaries outside (a directory the runner may write, the
//! absolute targets the entries name) are unchanged, no crafted name exists anywhere
//! outside the unpacked snapshots, and `kiln fsck` finds every blob matching its digest.

mod layers;
mod legit;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::*;
use crate::rootless::{User, NOSUB_USER, SUB_USER};
use crate::run::step_lines;
use layers::*;

const SNAPSHOTTERS: [&str; 2] = ["overlay", "copy"];
/// Runs the context's `check.sh` without putting it in a layer.
const RUN_CHECK: &str = "RUN --mount=type=bind,source=check.sh,target=/check.sh sh /check.sh\n";

/// Who runs kiln: root, or a rootless test user (through `runuser`).
struct Mode {
    label: &'static str,
    user: Option<User>,
    work: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Mode {
    fn root() -> Option<Mode> {
        if !require(kiln_testkit::is_root(), "the root crafted-layer builds need root") || busybox_layer().is_none() {
            return None;
        }
        let tmp = tempfile::Builder::new().prefix("kiln-crafted-").tempdir().unwrap();
        Some(Mode {
            label: "root",
            user: None,
            work: tmp.path().to_path_buf(),
            _tmp: Some(tmp),
        })
    }

    fn user(name: &'static str, range: bool) -> Option<Mode> {
        let u = User::get(name, range)?;
        busybox_layer()?;
        Some(Mode {
            label: name,
            work: u.dir.path().to_path_buf(),
            user: Some(u),
            _tmp: None,
        })
    }

    fn rootless(&self) -> bool {
        self.user.is_some()
    }

    /// Rootless with one id only: the applier cannot give files their recorded owners.
    fn single_id(&self) -> bool {
        self.label == NOSUB_USER
    }

    fn own(&self, p: &Path) {
        if let Some(u) = &self.user {
            u.own(p);
        }
    }

    /// `kiln ARGS` with `KILN_ROOT=root`, as this mode's user.
    fn kiln(&self, root: &Path, args: &[&str]) -> Output {
        let bin = env!("CARGO_BIN_EXE_kiln");
        let mut c = match &self.user {
            None => {
                let mut c = Command::new(bin);
                c.env("KILN_ROOT", root).env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1");
                c
            }
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u.name, "--", "env"])
                    .arg(format!("KILN_ROOT={}", root.display()))
                    .arg(format!("HOME={}", u.dir.path().display()))
                    .arg("BUILDX_NO_DEFAULT_ATTESTATIONS=1")
                    .arg(bin);
                c
            }
        };
        c.args(args)
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null())
            .current_dir(&self.work);
        run(&mut c)
    }
}

/// One mode's run of the suite: canaries outside every snapshot, a kiln root per
/// snapshotter.
struct Suite {
    mode: Mode,
    /// A directory the runner may write, named by absolute symlinks in the layers.
    canary: PathBuf,
    /// An absolute path the `..` entries aim at; it must never appear.
    abs_escape: PathBuf,
    passwd_links: u64,
    n: std::cell::Cell<u32>,
}

/// What a build left: whether it succeeded, stderr, the step output lines, and the
/// digests of the crafted layers.
struct Built {
    ok: bool,
    stderr: String,
    lines: Vec<String>,
    digests: Vec<String>,
}

impl Suite {
    fn new(mode: Mode) -> Suite {
        let canary = mode.work.join("canary");
        std::fs::create_dir_all(canary.join("sub2")).unwrap();
        std::fs::write(canary.join("keep"), "host").unwrap();
        std::fs::write(canary.join("secret"), "secret").unwrap();
        std::fs::write(canary.join("sub2/victim"), "victim").unwrap();
        mode.own(&canary);
        let abs_escape = PathBuf::from(format!(
            "/tmp/kiln-crafted-escaped-{}-{}",
            std::process::id(),
            mode.label
        ));
        Suite {
            canary,
            abs_escape,
            passwd_links: std::fs::metadata("/etc/passwd").unwrap().nlink(),
            n: std::cell::Cell::new(0),
            mode,
        }
    }

    fn c(&self) -> String {
        self.canary.display().to_string()
    }

    fn root(&self, snapshotter: &str) -> PathBuf {
        self.mode.work.join(format!("root-{snapshotter}"))
    }

    /// Builds `FROM oci-layout://…` (busybox + `layers`) followed by `rest`, with
    /// `--snapshotter`; `files` go into the build context; `out` gets an OCI archive.
    /// Then checks the canaries and runs `kiln fsck`.
    fn build(
        &self,
        snapshotter: &str,
        layers: &[Vec<u8>],
        rest: &str,
        files: &[(&str, &str)],
        out: Option<&Path>,
    ) -> Built {
        self.n.set(self.n.get() + 1);
        let dir = self.mode.work.join(format!("case-{}-{snapshotter}", self.n.get()));
        let layout = dir.join("layout");
        let digests = write_layout(&layout, layers);
        let ctx = dir.join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM oci-layout://{}:1\n{rest}", layout.display()),
        )
        .unwrap();
        for (name, text) in files {
            std::fs::write(ctx.join(name), text).unwrap();
        }
        self.mode.own(&dir);
        let root = self.root(snapshotter);
        let mut args = vec![
            "build".to_string(),
            "--progress=plain".into(),
            "--no-cache".into(),
            "--snapshotter".into(),
            snapshotter.into(),
        ];
        if let Some(o) = out {
            args.push("-o".into());
            args.push(format!("type=oci,dest={}", o.display()));
        }
        args.push(ctx.display().to_string());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = self.mode.kiln(&root, &argv);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        self.assert_nothing_escaped(&stderr);
        let fsck = self.mode.kiln(&root, &["fsck"]);
        let fsck_out = String::from_utf8_lossy(&fsck.stdout);
        assert!(
            fsck.status.success() && fsck_out.contains(": 0 problems"),
            "{}/{snapshotter}: kiln fsck after the build:\n{fsck_out}\n{}",
            self.mode.label,
            String::from_utf8_lossy(&fsck.stderr)
        );
        Built {
            ok: o.status.success(),
            lines: step_lines(&stderr),
            stderr,
            digests,
        }
    }

    /// The canary directory holds what it held, with one link per file; no crafted
    /// name exists outside the unpacked snapshots; the absolute targets do not exist.
    fn assert_nothing_escaped(&self, log: &str) {
        let who = self.mode.label;
        let mut found = Vec::new();
        for e in walkdir::WalkDir::new(&self.canary).min_depth(1).sort_by_file_name() {
            let e = e.unwrap();
            let md = e.path().symlink_metadata().unwrap();
            let rel = e.path().strip_prefix(&self.canary).unwrap().display().to_string();
            if md.is_file() {
                let text = std::fs::read_to_string(e.path()).unwrap();
                found.push(format!("{rel}={text} links={}", md.nlink()));
            } else if md.is_dir() {
                found.push(format!("{rel}/"));
            } else {
                found.push(format!("{rel} {:?}", md.file_type()));
            }
        }
        assert_eq!(
            found,
            [
                "keep=host links=1".to_string(),
                "secret=secret links=1".to_string(),
                "sub2/".to_string(),
                "sub2/victim=victim links=1".to_string(),
            ],
            "{who}: the canary directory outside the snapshot changed:\n{log}"
        );
        assert!(
            !self.abs_escape.exists(),
            "{who}: {} was written:\n{log}",
            self.abs_escape.display()
        );
        assert_eq!(
            std::fs::metadata("/etc/passwd").unwrap().nlink(),
            self.passwd_links,
            "{who}: the host's /etc/passwd gained a link"
        );
        for p in ["/planted-up", "/escaped-dotdot", "/escaped-pax"] {
            assert!(!Path::new(p).exists(), "{who}: {p} was written");
        }
        // Crafted names may exist only inside unpacked snapshots (where confined entries
        // land) — never next to them, in the kiln root or beside it.
        let mut it = walkdir::WalkDir::new(&self.mode.work).into_iter();
        while let Some(e) = it.next() {
            let e = e.unwrap();
            if (e.file_name() == "snapshots-v1" || e.file_name() == "layerdirs-v1") && e.file_type().is_dir() {
                it.skip_current_dir();
                continue;
            }
            let name = e.file_name().to_string_lossy();
            if e.path().starts_with(&self.canary) || e.path().components().any(|c| c.as_os_str() == "layout") {
                continue;
            }
            assert!(
                !(name.starts_with("escaped") || name.starts_with("planted") || name.starts_with("kept-l2")),
                "{who}: crafted entry written outside its snapshot: {}\n{log}",
                e.path().display()
            );
        }
    }
}

/// A build that must fail with one error naming the layer and the entry.
fn assert_rejected(b: &Built, who: &str, entry: &str, reason: &str) {
    assert!(!b.ok, "{who}: a layer with `{entry}` must be refused:\n{}", b.stderr);
    let digest = b.digests.last().unwrap();
    let errors: Vec<&str> = b.stderr.lines().filter(|l| l.starts_with("ERROR:")).collect();
    assert_eq!(errors.len(), 1, "{who}: want one error:\n{}", b.stderr);
    let error = errors[0];
    assert!(
        error.contains(&format!("cannot apply layer `{digest}`"))
            && error.contains(&format!("layer entry `{entry}` rejected"))
            && error.contains(reason),
        "{who}: want one error naming layer {digest}, entry `{entry}` and `{reason}`:\n{}",
        b.stderr
    );
}

/// Entries that leave the snapshot by `..`, or name files that exist only outside it:
/// each makes the build fail with one error.
fn rejected_cases(s: &Suite) {
    let who = s.mode.label;
    let c = s.c();
    let esc = s.abs_escape.display().to_string();
    let up = "../".repeat(40);
    let cases: Vec<(Vec<u8>, String, String)> = vec![
        (
            Tar::default()
                .file("ok", "fine")
                .file("../escaped-dotdot", "x")
                .finish(),
            "../escaped-dotdot".into(),
            "path climbs out of the layer root with `..`".into(),
        ),
        (
            {
                let name = format!("data/{up}{}", &esc[1..]);
                Tar::gnu().gnu_long(b'L', &name).file("data/escaped-gnu", "x").finish()
            },
            format!("data/{up}{}", &esc[1..]),
            "path climbs out of the layer root with `..`".into(),
        ),
        (
            Tar::default()
                .pax(&[("path", b"a/../../escaped-pax")])
                .file("placeholder", "x")
                .finish(),
            "a/../../escaped-pax".into(),
            "path climbs out of the layer root with `..`".into(),
        ),
        (
            Tar::default()
                .hardlink("escaped-hl", &format!("{}etc/passwd", "../".repeat(12)))
                .finish(),
            "escaped-hl".into(),
            "path climbs out of the layer root with `..`".into(),
        ),
        (
            Tar::default()
                .pax(&[("linkpath", format!("../{}", &esc[1..]).as_bytes())])
                .hardlink("escaped-hl2", "placeholder")
                .finish(),
            "escaped-hl2".into(),
            "path climbs out of the layer root with `..`".into(),
        ),
        (
            Tar::default().hardlink("escaped-hl3", &format!("{c}/secret")).finish(),
            "escaped-hl3".into(),
            format!("hard link target `{}/secret` does not exist", &c[1..]),
        ),
        (
            Tar::default()
                .symlink("out", &c)
                .hardlink("escaped-hl4", "out/secret")
                .finish(),
            "escaped-hl4".into(),
            "hard link target `out/secret` does not exist".into(),
        ),
        (
            Tar::default()
                .symlink("loop-a", "loop-b")
                .symlink("loop-b", "/loop-a")
                .file("loop-a/escaped-loop", "x")
                .finish(),
            "loop-a/escaped-loop".into(),
            "too many levels of symbolic links".into(),
        ),
        (
            Tar::default().file(".wh..", "").finish(),
            ".wh..".into(),
            "invalid whiteout".into(),
        ),
    ];
    for snapshotter in SNAPSHOTTERS {
        for (layer, entry, reason) in &cases {
            let b = s.build(snapshotter, std::slice::from_ref(layer), "RUN true\n", &[], None);
            assert_rejected(&b, &format!("{who}/{snapshotter}"), entry, reason);
        }
    }
}

/// Symlinks out of the snapshot, written through in their own layer and the next one;
/// symlinked parents; `..` symlinks; absolute names and hard-link targets: all land
/// inside, where RUN sees them.
fn confined_case(s: &Suite) {
    let who = s.mode.label;
    let c = s.c();
    let mut l1 = Tar::default();
    l1.symlink("abs", &c)
        .file("abs/planted", "p1")
        .file("abs/keep", "overwritten")
        .entry(b'5', "abs/newdir/", "", b"", meta(0o700))
        .symlink("rel", &format!("{}{}", "../".repeat(10), &c[1..]))
        .file("rel/planted-rel", "p2")
        .symlink("dirlink", &format!("{c}/sub2"))
        .file("dirlink/sub/deep/planted-deep", "p3")
        .symlink("up", "..")
        .file("up/up/up/planted-up", "p4")
        .hardlink("hl-passwd", "/etc/passwd")
        .symlink("secret-link", &format!("{c}/secret"))
        .hardlink("hl-secret", "secret-link")
        .file("/etc/abs-name", "abs-name")
        .pax(&[("path", format!("{c}/pax-abs").as_bytes())])
        .file("placeholder", "pax-abs")
        .symlink("final-link", &format!("{c}/keep"))
        .file("final-link", "replaced");
    let mut l2 = Tar::default();
    l2.file("abs/planted-l2", "p5")
        .file("abs/.wh.keep", "")
        .file("dirlink/.wh..wh..opq", "")
        .file("dirlink/kept-l2", "p6");
    let layers = [l1.finish(), l2.finish()];
    // Scripts are bind-mounted from the context: no layer, no Dockerfile quoting.
    let script = format!(
        "for f in {c}/planted {c}/planted-rel /planted-up {c}/planted-l2 {c}/pax-abs /etc/abs-name /final-link; do\n\
           echo \"c=$(cat $f)\"\n\
         done\n\
         test -e {c}/keep || echo keep=whited-out\n\
         ls {c}/sub2 | sed 's/^/sub2=/'\n\
         head -1 /hl-passwd | sed 's/^/hl=/'\n\
         stat -c 'nlink=%h' /etc/passwd\n\
         readlink /hl-secret | sed 's/^/hlsecret=/'\n\
         test -e /hl-secret || echo hlsecret=dangling\n\
         test -L /final-link || echo final=regular\n\
         stat -c 'newdir=%a' {c}/newdir\n"
    );
    for snapshotter in SNAPSHOTTERS {
        let b = s.build(snapshotter, &layers, RUN_CHECK, &[("check.sh", &script)], None);
        assert!(b.ok, "{who}/{snapshotter}: {}", b.stderr);
        let mut want: Vec<String> = [
            "c=p1",
            "c=p2",
            "c=p4",
            "c=p5",
            "c=pax-abs",
            "c=abs-name",
            "c=replaced",
            "keep=whited-out",
            "sub2=kept-l2",
            "hl=root:x:0:0:root:/root:/bin/sh",
            "nlink=2",
            "hlsecret=dangling",
            "final=regular",
            "newdir=700",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        want.push(format!("hlsecret={c}/secret"));
        for w in &want {
            assert!(
                b.lines.contains(w),
                "{who}/{snapshotter}: RUN must see `{w}`:\n{}",
                b.stderr
            );
        }
        // The opaque marker cleared the directory the symlink led to inside.
        assert!(!b.lines.iter().any(|l| l == "sub2=sub"), "{}", b.stderr);
    }
}

/// Character and block devices and a fifo: made as root; rootless, the devices are
/// skipped with a warning naming them and the build goes on.
fn devices_case(s: &Suite) {
    let who = s.mode.label;
    let mut t = Tar::default();
    t.dir("devs/")
        .entry(
            b'3',
            "devs/null",
            "",
            b"",
            Meta {
                dev: (1, 3),
                ..meta(0o666)
            },
        )
        .entry(
            b'4',
            "devs/loop9",
            "",
            b"",
            Meta {
                dev: (7, 9),
                ..meta(0o660)
            },
        )
        .entry(b'6', "devs/fifo", "", b"", meta(0o644));
    let layers = [t.finish()];
    let script = "RUN for f in /devs/*; do stat -c 'dev=%n %F %t:%T %a' \"$f\"; done\n";
    for snapshotter in SNAPSHOTTERS {
        let b = s.build(snapshotter, &layers, script, &[], None);
        assert!(b.ok, "{who}/{snapshotter}: {}", b.stderr);
        let devs: Vec<&String> = b.lines.iter().filter(|l| l.starts_with("dev=")).collect();
        let digest = &b.digests[0];
        if s.mode.rootless() {
            assert_eq!(
                devs,
                ["dev=/devs/fifo fifo 0:0 644"],
                "{who}/{snapshotter}: {}",
                b.stderr
            );
            for name in ["devs/null", "devs/loop9"] {
                let warning =
                    format!("WARN: layer {digest}: skipped device node `{name}`: creating devices needs root");
                assert_eq!(
                    b.stderr.matches(&warning).count(),
                    1,
                    "{who}/{snapshotter}: want `{warning}` once:\n{}",
                    b.stderr
                );
            }
        } else {
            assert_eq!(
                devs,
                [
                    "dev=/devs/fifo fifo 0:0 644",
                    "dev=/devs/loop9 block special file 7:9 660",
                    "dev=/devs/null character special file 1:3 666",
                ],
                "{who}/{snapshotter}: {}",
                b.stderr
            );
            assert!(!b.stderr.contains("skipped device node"), "{}", b.stderr);
        }
    }
}

fn suite(mode: Mode) {
    let s = Suite::new(mode);
    rejected_cases(&s);
    confined_case(&s);
    devices_case(&s);
    legit::legit_case(&s);
}

#[test]
fn crafted_layers_as_root() {
    let Some(m) = Mode::root() else { return };
    suite(m);
}

#[test]
fn crafted_layers_rootless_with_a_subuid_range() {
    let Some(m) = Mode::user(SUB_USER, true) else { return };
    suite(m);
}

#[test]
fn crafted_layers_rootless_with_a_single_id() {
    let Some(m) = Mode::user(NOSUB_USER, false) else { return };
    suite(m);
}
