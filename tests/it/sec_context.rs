//! A hostile build context or base image cannot make COPY/ADD read the host: every
//! source resolves inside its root (the context, or the `--from` stage), as BuildKit's
//! `fs.RootPath` does; symlinks below a copied directory are copied as symlinks; the
//! cache-key walk never hashes a host file; FIFOs, sockets and devices in the context
//! are recreated as BuildKit's context transfer does, never read, and whatever is left
//! out is named in a warning; `--chown` names resolve in the image's own root.
//!
//! Each case plants a host canary file of known, unique content outside the context and
//! checks that its content (and its sha256) appears nowhere: not in the image, not in
//! kiln's state root, not in the output.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;

use sha2::Digest as _;

use crate::common::*;
use crate::rootless::{User, SUB_USER};

/// Canary is a host file (and a host directory holding one) outside any context.
struct Canary {
    _dir: tempfile::TempDir,
    text: String,
    file: PathBuf,
    dir: PathBuf,
}

impl Canary {
    fn new() -> Canary {
        let d = tempfile::Builder::new().prefix("kiln-host-").tempdir().unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let text = format!("KILN-HOST-CANARY-{}-{nanos}\n", std::process::id());
        let file = d.path().join("secret");
        std::fs::write(&file, &text).unwrap();
        let dir = d.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f"), &text).unwrap();
        // The rootless tests read through these as another user.
        run_ok(std::process::Command::new("chmod").arg("-R").arg("a+rX").arg(d.path()));
        Canary {
            _dir: d,
            text,
            file,
            dir,
        }
    }

    fn sha(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.text.as_bytes()))
    }

    /// Plants the escaping links (and one that stays inside) in `ctx`.
    fn plant(&self, ctx: &Path) {
        symlink(&self.file, ctx.join("shadow")).unwrap();
        symlink(&self.dir, ctx.join("absdir")).unwrap();
        // Enough `..` to climb from anywhere to `/`, then down to the host directory.
        let up = "../".repeat(32);
        symlink(
            format!("{up}{}", self.dir.strip_prefix("/").unwrap().display()),
            ctx.join("reldir"),
        )
        .unwrap();
        std::fs::create_dir_all(ctx.join("sub")).unwrap();
        symlink(&self.file, ctx.join("sub/inner")).unwrap();
        std::fs::create_dir_all(ctx.join("data")).unwrap();
        std::fs::write(ctx.join("data/real.txt"), "in-context content\n").unwrap();
        // Absolute, but inside the context once resolved in its root.
        symlink("/data/real.txt", ctx.join("inroot")).unwrap();
    }

    /// Fails if the canary's text or digest is in `bytes`.
    fn assert_absent(&self, what: &str, bytes: &[u8]) {
        for needle in [self.text.trim_end().as_bytes(), self.sha().as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the host canary leaked into {what}"
            );
        }
    }

    /// Fails if any file of kiln's state root holds the canary or its digest (the
    /// context checksum memo would hold the digest of a hashed host file).
    fn assert_absent_from_root(&self, root: &Path) {
        for e in walkdir::WalkDir::new(root).into_iter().filter_map(Result::ok) {
            if e.file_type().is_file() {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    self.assert_absent(&e.path().display().to_string(), &bytes);
                }
            }
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Builds `ctx` to a rootfs tar, returning the tar (or None) and the output.
fn build_tar(k: &Kiln, ctx: &Path) -> (Option<Vec<u8>>, Output) {
    let d = tempfile::tempdir().unwrap();
    let tarball = d.path().join("rootfs.tar");
    let out = run(k.cmd().args([
        "build",
        "-q",
        "-o",
        &format!("type=tar,dest={}", tarball.display()),
        ctx.to_str().unwrap(),
    ]));
    let tar = out.status.success().then(|| std::fs::read(&tarball).unwrap());
    (tar, out)
}

/// One tar member: (kind, link target or content).
fn member(tar: &[u8], name: &str) -> Option<(tar::EntryType, String)> {
    let mut ar = tar::Archive::new(tar);
    ar.entries().unwrap().map(|e| e.unwrap()).find_map(|mut e| {
        if e.path().unwrap().to_str() != Some(name) {
            return None;
        }
        let kind = e.header().entry_type();
        let text = match e.link_name().unwrap() {
            Some(l) => l.display().to_string(),
            None => {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap_or_default();
                s
            }
        };
        Some((kind, text))
    })
}

/// Dockerfiles whose matched source is a symlink out of the context: each must fail,
/// naming the source, and read nothing of the host.
const ESCAPES: &[(&str, &str)] = &[
    ("COPY shado? /stolen/", "shadow"),
    ("COPY sh*w /stolen/", "shadow"),
    ("COPY [s]hadow /stolen/", "shadow"),
    ("COPY absdi*/ /d/", "absdir"),
    ("COPY reldi*/ /d/", "reldir"),
    ("ADD shado? /stolen/", "shadow"),
    ("COPY --chown=7:8 shado? /stolen/", "shadow"),
    ("COPY --exclude=nothing shado? /stolen/", "shadow"),
    ("COPY --chmod=600 absdi* /d/", "absdir"),
];

#[test]
fn wildcard_symlink_out_of_the_context_is_refused() {
    let k = kiln();
    let canary = Canary::new();
    for (line, named) in ESCAPES {
        let ctx = context(&[("Dockerfile", &format!("FROM scratch\n{line}\n"))]);
        canary.plant(ctx.path());
        let (tar, out) = build_tar(&k, ctx.path());
        let err = stderr(&out);
        if let Some(tar) = &tar {
            canary.assert_absent(&format!("the image of `{line}`"), tar);
        }
        assert!(tar.is_none(), "`{line}` must fail (its target is not in the context)");
        assert!(
            err.contains("Dockerfile:2") && err.contains(&format!("/{named}`")),
            "`{line}`: {err}"
        );
        canary.assert_absent(&format!("the output of `{line}`"), err.as_bytes());
    }
    canary.assert_absent_from_root(k.root());
}

#[test]
fn symlink_sources_resolve_inside_the_context() {
    let k = kiln();
    let canary = Canary::new();
    let ctx = context(&[(
        "Dockerfile",
        "FROM scratch\n\
         COPY inroo? /glob/\n\
         COPY inroot /lit/\n\
         COPY inroot /named\n\
         COPY sub/ /sub/\n\
         COPY su? /subglob/\n\
         COPY --parents shado? /parents/\n\
         COPY --parents sub/./inner /pivot/\n",
    )]);
    canary.plant(ctx.path());
    let (tar, out) = build_tar(&k, ctx.path());
    let tar = tar.unwrap_or_else(|| panic!("{}", stderr(&out)));
    canary.assert_absent("the image", &tar);
    canary.assert_absent_from_root(k.root());
    let file = |content: &str| Some((tar::EntryType::Regular, content.to_string()));
    let link = |target: &Path| Some((tar::EntryType::Symlink, target.display().to_string()));
    // A matched or named symlink is followed inside the context, under its own name.
    assert_eq!(member(&tar, "glob/inroot"), file("in-context content\n"));
    assert_eq!(member(&tar, "lit/inroot"), file("in-context content\n"));
    assert_eq!(member(&tar, "named"), file("in-context content\n"));
    // Below a copied directory, and below a `--parents` walk, a symlink stays one.
    assert_eq!(member(&tar, "sub/inner"), link(&canary.file));
    assert_eq!(member(&tar, "subglob/inner"), link(&canary.file));
    assert_eq!(member(&tar, "parents/shadow"), link(&canary.file));
    assert_eq!(member(&tar, "pivot/inner"), link(&canary.file));
}

#[test]
fn copy_from_a_stage_resolves_in_the_stage() {
    let k = kiln();
    let canary = Canary::new();
    for line in ["COPY --from=stage /s/inne? /x/", "COPY --from=stage /s/inner /x/"] {
        let ctx = context(&[(
            "Dockerfile",
            &format!("FROM scratch AS stage\nCOPY sub/ /s/\nFROM scratch\n{line}\n"),
        )]);
        canary.plant(ctx.path());
        let (tar, out) = build_tar(&k, ctx.path());
        if let Some(tar) = &tar {
            canary.assert_absent(&format!("the image of `{line}`"), tar);
        }
        let err = stderr(&out);
        assert!(tar.is_none(), "`{line}` must fail: its target is not in the stage");
        assert!(err.contains("Dockerfile:4"), "`{line}`: {err}");
    }
}

#[test]
fn chown_name_resolves_in_the_image_root() {
    let k = kiln();
    let canary = Canary::new();
    // The image's /etc/passwd and /etc/group are absolute links to host files.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("passwd"), "hostuser:x:4242:4343::/:/bin/sh\n").unwrap();
    std::fs::write(host.path().join("group"), "hostgroup:x:4444:\n").unwrap();
    for (line, named) in [
        ("COPY --chown=hostuser f /f", "hostuser"),
        ("COPY --chown=0:hostgroup f /f", "hostgroup"),
    ] {
        let ctx = context(&[
            (
                "Dockerfile",
                &format!("FROM scratch AS base\nCOPY etc/ /etc/\nFROM base\n{line}\n"),
            ),
            ("f", "x"),
        ]);
        std::fs::create_dir(ctx.path().join("etc")).unwrap();
        symlink(host.path().join("passwd"), ctx.path().join("etc/passwd")).unwrap();
        symlink(host.path().join("group"), ctx.path().join("etc/group")).unwrap();
        canary.plant(ctx.path());
        let (tar, out) = build_tar(&k, ctx.path());
        if let Some(tar) = &tar {
            let owners = tar_listing(tar);
            panic!("`{line}` took the host's ids: {owners:?}");
        }
        let err = stderr(&out);
        assert!(
            err.contains("Dockerfile:4")
                && err.contains(&format!(
                    "unknown {}",
                    if named.contains("user") { "user" } else { "group" }
                ))
                && err.contains(named),
            "`{line}`: {err}"
        );
    }
    // The same files inside the image are used.
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch AS base\nCOPY etc/ /etc/\nFROM base\nCOPY --chown=app f /f\nCOPY --chown=app:grp f /g\nCOPY --chown=9 f /h\n",
        ),
        ("f", "x"),
        ("etc/passwd", "app:x:1000:1001::/home/app:/bin/sh\nnine:x:9:77::/:/bin/sh\n"),
        ("etc/group", "grp:x:1234:\n"),
    ]);
    let (tar, out) = build_tar(&k, ctx.path());
    let tar = tar.unwrap_or_else(|| panic!("{}", stderr(&out)));
    let listing = tar_listing(&tar);
    assert!(listing.contains(&"f 644 1000/1001".to_string()), "{listing:?}");
    assert!(listing.contains(&"g 644 1000/1234".to_string()), "{listing:?}");
    // A numeric user without a group is uid:uid, as BuildKit's `readUser`.
    assert!(listing.contains(&"h 644 9/9".to_string()), "{listing:?}");
}

#[test]
fn rootless_wildcard_symlink_out_of_the_context_is_refused() {
    let Some(u) = User::get(SUB_USER, true) else { return };
    let canary = Canary::new();
    for (n, (line, named)) in ESCAPES.iter().enumerate() {
        let ctx = u.context(&format!("esc{n}"), &format!("FROM scratch\n{line}\n"));
        canary.plant(&ctx);
        u.own(&ctx);
        let tarball = u.path(&format!("out{n}.tar"));
        let out = u.kiln(&[
            "build",
            "-q",
            "-o",
            &format!("type=tar,dest={}", tarball.display()),
            ctx.to_str().unwrap(),
        ]);
        let err = stderr(&out);
        if let Ok(tar) = std::fs::read(&tarball) {
            canary.assert_absent(&format!("the image of `{line}`"), &tar);
        }
        assert!(!out.status.success(), "`{line}` must fail as {}", u.name);
        assert!(err.contains(&format!("/{named}`")), "`{line}`: {err}");
    }
    canary.assert_absent_from_root(&u.path("root"));
}

#[test]
fn rootless_symlinks_in_a_copied_directory_stay_symlinks() {
    let Some(u) = User::get(SUB_USER, true) else { return };
    let canary = Canary::new();
    let ctx = u.context("keep", "FROM scratch\nCOPY sub/ /sub/\nCOPY inroo? /glob/\n");
    canary.plant(&ctx);
    u.own(&ctx);
    let tarball = u.path("keep.tar");
    u.kiln_ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=tar,dest={}", tarball.display()),
        ctx.to_str().unwrap(),
    ]);
    let tar = std::fs::read(&tarball).unwrap();
    canary.assert_absent("the image", &tar);
    assert_eq!(
        member(&tar, "sub/inner"),
        Some((tar::EntryType::Symlink, canary.file.display().to_string()))
    );
    assert_eq!(
        member(&tar, "glob/inroot"),
        Some((tar::EntryType::Regular, "in-context content\n".to_string()))
    );
}

/// Watches a FIFO: if anything opens it for reading, records that and lets the reader
/// go (a writer that opens and closes gives it end-of-file), so a regression fails the
/// test instead of hanging it.
struct FifoWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<bool>>,
}

impl FifoWatch {
    fn new(path: PathBuf) -> FifoWatch {
        use std::os::unix::fs::OpenOptionsExt;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut opened = false;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                // Opening for writing without blocking succeeds only with a reader.
                if std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&path)
                    .is_ok()
                {
                    opened = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened
        });
        FifoWatch {
            stop,
            handle: Some(handle),
        }
    }

    fn was_read(mut self) -> bool {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// A context with a FIFO, a socket and (as root) a character device.
fn special_context(dockerfile: &str, device: bool) -> (tempfile::TempDir, std::os::unix::net::UnixListener) {
    let ctx = context(&[("Dockerfile", dockerfile), ("plain", "p\n")]);
    std::fs::create_dir(ctx.path().join("d")).unwrap();
    run_ok(std::process::Command::new("mkfifo").arg(ctx.path().join("d/fifo")));
    let sock = std::os::unix::net::UnixListener::bind(ctx.path().join("d/sock")).unwrap();
    if device {
        run_ok(
            std::process::Command::new("mknod")
                .arg(ctx.path().join("d/null"))
                .args(["c", "1", "3"]),
        );
    }
    (ctx, sock)
}

#[test]
fn fifos_sockets_and_devices_in_the_context_are_as_buildkit_sends_them() {
    let k = kiln();
    let root = kiln_testkit::is_root();
    let (ctx, _sock) = special_context("FROM scratch\nCOPY d/fifo /f\nCOPY d/ /all/\nCOPY d/sock /s\n", root);
    let watch = FifoWatch::new(ctx.path().join("d/fifo"));
    let (tar, out) = build_tar(&k, ctx.path());
    assert!(!watch.was_read(), "kiln opened the FIFO for reading");
    let err = stderr(&out);
    let tar = tar.unwrap_or_else(|| panic!("{err}"));
    let kind = |name: &str| member(&tar, name).map(|(k, _)| k);
    // FIFOs are recreated (fsutil's receiver mknods them), never read.
    assert_eq!(kind("f"), Some(tar::EntryType::Fifo), "{err}");
    assert_eq!(kind("all/fifo"), Some(tar::EntryType::Fifo), "{err}");
    // A socket arrives as an empty regular file (fsutil clears its type bit).
    assert_eq!(member(&tar, "all/sock"), Some((tar::EntryType::Regular, String::new())));
    assert_eq!(member(&tar, "s"), Some((tar::EntryType::Regular, String::new())));
    assert!(err.contains("socket") && err.contains("d/sock"), "{err}");
    if root {
        assert_eq!(kind("all/null"), Some(tar::EntryType::Char), "{err}");
    }
}

#[test]
fn rootless_devices_in_the_context_are_left_out_with_a_warning() {
    let Some(u) = User::get(SUB_USER, true) else { return };
    let ctx = u.context("special", "FROM scratch\nCOPY d/ /all/\nCOPY d/fifo /f\n");
    std::fs::create_dir(ctx.join("d")).unwrap();
    run_ok(std::process::Command::new("mkfifo").arg(ctx.join("d/fifo")));
    run_ok(
        std::process::Command::new("mknod")
            .arg(ctx.join("d/null"))
            .args(["c", "1", "3"]),
    );
    u.own(&ctx);
    let watch = FifoWatch::new(ctx.join("d/fifo"));
    let tarball = u.path("special.tar");
    let out = u.kiln(&[
        "build",
        "-o",
        &format!("type=tar,dest={}", tarball.display()),
        ctx.to_str().unwrap(),
    ]);
    assert!(!watch.was_read(), "kiln opened the FIFO for reading");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let tar = std::fs::read(&tarball).unwrap();
    assert_eq!(member(&tar, "f").map(|m| m.0), Some(tar::EntryType::Fifo), "{err}");
    assert_eq!(
        member(&tar, "all/fifo").map(|m| m.0),
        Some(tar::EntryType::Fifo),
        "{err}"
    );
    assert_eq!(member(&tar, "all/null"), None);
    assert!(err.contains("WARN") && err.contains("d/null"), "{err}");
}

#[test]
fn special_files_are_part_of_the_cache_key() {
    let k = kiln();
    let (ctx, _sock) = special_context("FROM scratch\nCOPY d/ /all/\n", false);
    let fifo = ctx.path().join("d/fifo");
    run_ok(std::process::Command::new("chmod").arg("644").arg(&fifo));
    let (tar, out) = build_tar(&k, ctx.path());
    let tar = tar.unwrap_or_else(|| panic!("{}", stderr(&out)));
    assert!(tar_listing(&tar).contains(&"all/fifo 644 0/0".to_string()));
    // A FIFO's mode is part of the step: changing it makes the step run again.
    run_ok(std::process::Command::new("chmod").arg("600").arg(&fifo));
    let (tar, out) = build_tar(&k, ctx.path());
    let tar = tar.unwrap_or_else(|| panic!("{}", stderr(&out)));
    assert!(
        tar_listing(&tar).contains(&"all/fifo 600 0/0".to_string()),
        "{:?}",
        tar_listing(&tar)
    );
}

#[test]
fn rootless_chown_name_resolves_in_the_image_root() {
    let Some(u) = User::get(SUB_USER, true) else { return };
    let host = u.path("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("passwd"), "hostuser:x:4242:4343::/:/bin/sh\n").unwrap();
    let ctx = u.context(
        "chown",
        "FROM scratch AS base\nCOPY etc/ /etc/\nFROM base\nCOPY --chown=hostuser f /f\n",
    );
    std::fs::write(ctx.join("f"), "x").unwrap();
    std::fs::create_dir(ctx.join("etc")).unwrap();
    symlink(host.join("passwd"), ctx.join("etc/passwd")).unwrap();
    u.own(&host);
    u.own(&ctx);
    let tarball = u.path("chown.tar");
    let out = u.kiln(&[
        "build",
        "-q",
        "-o",
        &format!("type=tar,dest={}", tarball.display()),
        ctx.to_str().unwrap(),
    ]);
    if let Ok(tar) = std::fs::read(&tarball) {
        panic!("the host's passwd was used: {:?}", tar_listing(&tar));
    }
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:4") && err.contains("unknown user `hostuser`"),
        "{err}"
    );
}

#[test]
fn dockerfile_and_dockerignore_resolve_inside_the_context() {
    let k = kiln();
    let canary = Canary::new();
    // The default Dockerfile is a link to a host file: its lines would be shown in the
    // parse error.
    let ctx = context(&[("f", "x")]);
    symlink(&canary.file, ctx.path().join("Dockerfile")).unwrap();
    let (tar, out) = build_tar(&k, ctx.path());
    assert!(tar.is_none());
    let err = stderr(&out);
    canary.assert_absent("the error", err.as_bytes());
    assert!(err.contains("Dockerfile"), "{err}");
    // A link inside the context is followed there.
    let ctx = context(&[("docker/real", "FROM scratch\nCOPY f /f\n"), ("f", "x")]);
    symlink("/docker/real", ctx.path().join("Dockerfile")).unwrap();
    let (tar, out) = build_tar(&k, ctx.path());
    let tar = tar.unwrap_or_else(|| panic!("{}", stderr(&out)));
    assert_eq!(member(&tar, "f"), Some((tar::EntryType::Regular, "x".to_string())));
    // A .dockerignore linking to a host file is not read (an invalid pattern would be
    // shown): the context has no ignore file.
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("ignore"), format!("f\n[{}\n", canary.text.trim_end())).unwrap();
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "x")]);
    symlink(bad.path().join("ignore"), ctx.path().join(".dockerignore")).unwrap();
    let (tar, out) = build_tar(&k, ctx.path());
    let err = stderr(&out);
    canary.assert_absent("the output", err.as_bytes());
    let tar = tar.unwrap_or_else(|| panic!("{err}"));
    assert_eq!(member(&tar, "f"), Some((tar::EntryType::Regular, "x".to_string())));
    // A FIFO as the Dockerfile is refused, never read.
    let ctx = context(&[("f", "x")]);
    run_ok(std::process::Command::new("mkfifo").arg(ctx.path().join("Dockerfile")));
    let watch = FifoWatch::new(ctx.path().join("Dockerfile"));
    let (tar, out) = build_tar(&k, ctx.path());
    assert!(!watch.was_read(), "kiln opened the FIFO Dockerfile for reading");
    assert!(tar.is_none(), "{}", stderr(&out));
    assert!(stderr(&out).contains("Dockerfile"), "{}", stderr(&out));
}

#[test]
fn copy_of_a_symlink_source_keeps_its_name() {
    let k = kiln();
    let Some(base) = crate::run::busybox_base(&k) else {
        return;
    };
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM scratch\nCOPY --from={base} /bin/sh /stage/\nCOPY --from={base} /bin/[s]h /glob/\n"),
    )]);
    let (tar, out) = build_tar(&k, ctx.path());
    let tar = tar.unwrap_or_else(|| panic!("{}", stderr(&out)));
    let size = std::fs::metadata("/bin/busybox").unwrap().len();
    let listing = tar_listing(&tar);
    for name in ["stage/sh", "glob/sh"] {
        let mut ar = tar::Archive::new(&tar[..]);
        let found = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().to_str() == Some(name))
            .unwrap_or_else(|| panic!("no `{name}` in {listing:?}"));
        assert_eq!(found.header().entry_type(), tar::EntryType::Regular);
        assert_eq!(found.header().size().unwrap(), size);
    }
    assert!(!listing.iter().any(|l| l.starts_with("stage/busybox")), "{listing:?}");
}
