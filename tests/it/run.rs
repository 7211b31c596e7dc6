//! RUN in the built-in sandbox, as root: real containers over a busybox base.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

mod layers;
pub use layers::*;

/// A build context whose image is busybox with every applet, `/etc/passwd` and
/// `/etc/group`, and a `/root` with a file in it.
pub fn busybox_context() -> Option<tempfile::TempDir> {
    if !require(
        Path::new("/bin/busybox").is_file(),
        "busybox-static (/bin/busybox) is not installed",
    ) {
        return None;
    }
    let ctx = tempfile::Builder::new().prefix("kiln-bb-").tempdir().unwrap();
    let rootfs = ctx.path().join("rootfs");
    for d in ["bin", "etc", "proc", "dev", "sys", "tmp", "root", "home"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let list = run_ok(Command::new("/bin/busybox").arg("--list"));
    for applet in list.lines().filter(|a| *a != "busybox") {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(rootfs.join("root/.profile"), "# root\n").unwrap();
    std::fs::write(rootfs.join("etc/motd"), "welcome\n").unwrap();
    std::fs::write(rootfs.join("etc/issue"), "busybox\n").unwrap();
    run_ok(Command::new("chmod").arg("1777").arg(rootfs.join("tmp")));
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nCMD [\"sh\"]\n",
    )
    .unwrap();
    Some(ctx)
}

/// The busybox image of [`busybox_context`] as `bb:1` in `k`'s store.
pub fn busybox_base(k: &Kiln) -> Option<&'static str> {
    let ctx = busybox_context()?;
    k.ok(&["build", "-q", "-t", "bb:1", ctx.path().to_str().unwrap()]);
    Some("bb:1")
}

/// Whether RUN can be tested here as root.
fn root_sandbox() -> bool {
    require(kiln_testkit::is_root(), "the root-mode RUN tests need root")
}

/// Builds `dockerfile` (with `--progress=plain`) and returns stderr.
pub fn build_plain(k: &Kiln, dockerfile: &str, extra: &[&str]) -> String {
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let mut args = vec!["build", "--progress=plain"];
    args.extend_from_slice(extra);
    args.push(ctx.path().to_str().unwrap());
    let out = run(k.cmd().args(&args));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{err}");
    err
}

/// The step's output lines (`#N 0.123 text` → `text`).
pub fn step_lines(progress: &str) -> Vec<String> {
    progress
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let (n, t, rest) = (it.next()?, it.next()?, it.next()?);
            (n.starts_with('#') && t.contains('.') && t.parse::<f64>().is_ok()).then(|| rest.to_string())
        })
        .collect()
}

#[test]
fn run_as_user_keeps_owners_in_the_layer() {
    if !root_sandbox() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    // Debian's busybox-static has no adduser applet: add the user by hand as it would.
    let df = format!(
        "FROM {base}\n\
         RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1000:' >> /etc/group \\\n\
          && echo 'wheel:x:10:app' >> /etc/group && mkdir -p /home/app && chown app:app /home/app\n\
         USER app\n\
         RUN touch /home/app/x && id && echo home=$HOME && pwd\n"
    );
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("oci");
    let progress = build_plain(
        &k,
        &df,
        &[
            "-t",
            "app:1",
            "-o",
            &format!("type=oci,dest={},tar=false", layout.display()),
        ],
    );
    // BuildKit's plain format: `#N 0.512 line`.
    let lines = step_lines(&progress);
    assert!(
        lines.contains(&"uid=1000(app) gid=1000(app) groups=10(wheel)".to_string()),
        "{progress}"
    );
    assert!(lines.contains(&"home=/home/app".to_string()), "{progress}");
    let Some((_g, rootfs)) = umoci_unpack(&layout, "1") else {
        return;
    };
    assert_eq!(owner_of(&rootfs.join("home/app/x")), (1000, 1000));
    assert_eq!(owner_of(&rootfs.join("home/app")), (1000, 1000));
    // The sandbox's mount points and files never reach the image.
    for p in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        assert!(!rootfs.join(p).exists(), "{p} leaked into the image");
    }
}

#[test]
fn run_is_isolated() {
    if !root_sandbox() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("host-marker");
    std::fs::write(&marker, "host secret").unwrap();
    let m = marker.display();
    let df = format!(
        "FROM {base}\n\
         RUN echo pid=$$ && ps -o pid= > /tmp/ps && echo procs=$(wc -l < /tmp/ps) && hostname | sed 's/^/host=/' \\\n\
          && grep NoNewPrivs /proc/self/status | tr -d '\\t' && (cat {m} 2>/dev/null || echo marker=unreadable) \\\n\
          && grep CapEff /proc/self/status | tr -d '\\t' && echo timers=$(wc -c < /proc/timer_list) \\\n\
          && ({{ echo x > /proc/sys/kernel/hostname; }} 2>/dev/null && echo procsys=writable || echo procsys=readonly)\n\
         RUN --network=none ip -o link | cut -d: -f2 | tr -d ' ' | sed 's/^/link=/'\n\
         RUN ip -o link | cut -d: -f2 | tr -d ' ' | sed 's/^/deflink=/'\n"
    );
    let progress = build_plain(&k, &df, &[]);
    let lines = step_lines(&progress);
    let has = |s: &str| lines.iter().any(|l| l == s);
    assert!(has("pid=1"), "the step is not pid 1:\n{progress}");
    // ps itself and the shell: nothing from the host.
    assert!(has("procs=2"), "host processes visible:\n{progress}");
    assert!(has("host=kilnsandbox"), "{progress}");
    assert!(has("NoNewPrivs:1"), "{progress}");
    assert!(has("marker=unreadable"), "host file readable:\n{progress}");
    assert!(!progress.contains("host secret"));
    // Docker's default capability set, exactly.
    assert!(has("CapEff:00000000a80425fb"), "{progress}");
    // Docker's masked and read-only /proc paths.
    assert!(has("timers=0"), "{progress}");
    assert!(has("procsys=readonly"), "{progress}");
    let links: Vec<&String> = lines.iter().filter(|l| l.starts_with("link=")).collect();
    assert_eq!(links, ["link=lo"], "--network=none must have only lo:\n{progress}");
    // The default network is private: lo and the user-mode network's interface.
    let links: Vec<&String> = lines.iter().filter(|l| l.starts_with("deflink=")).collect();
    assert_eq!(links, ["deflink=lo", "deflink=eth0"], "{progress}");
    // --network=none on the command line applies to every step.
    let progress = build_plain(
        &k,
        &format!("FROM {base}\nRUN ip -o link | wc -l | sed 's/^/n=/'\n"),
        &["--network=none"],
    );
    assert!(step_lines(&progress).contains(&"n=1".to_string()), "{progress}");
}

#[test]
fn run_deletions_become_whiteouts_and_opaque_dirs() {
    if !root_sandbox() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let df = format!("FROM {base}\nRUN rm /bin/vi && rm -rf /root && mkdir /root && echo new > /root/new\n");
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("img.tar");
    build_plain(
        &k,
        &df,
        &["-t", "wh:1", "-o", &format!("type=oci,dest={}", archive.display())],
    );
    let bytes = std::fs::read(&archive).unwrap();
    let index = json(&tar_member(&bytes, "index.json").unwrap());
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().replace("sha256:", "");
    let manifest = json(&tar_member(&bytes, &format!("blobs/sha256/{manifest_digest}")).unwrap());
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    let last = layers[1]["digest"].as_str().unwrap().replace("sha256:", "");
    let mut ar = tar::Archive::new(bytes.as_slice());
    let blob = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find_map(|mut e| {
            (e.path().unwrap().to_str() == Some(&format!("blobs/sha256/{last}"))).then(|| {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&mut e), &mut v).unwrap();
                v
            })
        })
        .unwrap();
    let listing = tar_listing(&blob);
    assert!(listing.contains(&"bin/.wh.vi 0 0/0".to_string()), "{listing:#?}");
    assert!(listing.contains(&"root/.wh..wh..opq 0 0/0".to_string()), "{listing:#?}");
    // Nothing but the step's own changes.
    let names: Vec<&str> = listing.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        ["bin/", "bin/.wh.vi", "root/", "root/.wh..wh..opq", "root/new"],
        "{listing:#?}"
    );

    let layout = out.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    run_ok(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&layout));
    let Some((_g, rootfs)) = umoci_unpack(&layout, "1") else {
        return;
    };
    assert!(!rootfs.join("bin/vi").exists());
    assert!(rootfs.join("bin/sh").exists());
    assert_eq!(tree(&rootfs.join("root")), ["new"]);
}

#[test]
fn run_failure_reports_exit_code_line_and_output_and_commits_nothing() {
    if !root_sandbox() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    // Unpacked base trees (snapshots-v1/) and the base layers' verified diff ids
    // (diffids-v1/) are caches the failed build may fill.
    let store = || {
        let mut s = k.snapshot_store();
        s.retain(|(p, _)| !p.starts_with("snapshots-v1/") && !p.starts_with("diffids-v1/"));
        s
    };
    let before = store();
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {base}\nRUN echo out-one && echo err-two >&2 && touch /made && exit 3\nRUN echo never\n"),
    )]);
    let err = k.fails(&[
        "build",
        "--progress=plain",
        "-t",
        "broken:1",
        ctx.path().to_str().unwrap(),
    ]);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("RUN failed (exit code 3)"), "{err}");
    assert!(err.contains("err-two"), "{err}");
    assert!(err.contains(">>> RUN echo out-one"), "{err}");
    assert!(!err.contains("[3/3]"), "the next step must not start:\n{err}");
    // No image, no new blob, no leftover temp state.
    assert!(store() == before, "the failed build changed the store");
    assert!(!k.ok(&["images"]).contains("broken"));
    assert_eq!(
        std::fs::read_dir(k.root().join("tmp")).unwrap().count(),
        0,
        "temp state left behind"
    );

    // A command that does not exist.
    let ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN [\"no-such-tool\", \"x\"]\n"))]);
    let err = k.fails(&["build", ctx.path().to_str().unwrap()]);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(
        err.contains("\"no-such-tool\": executable file not found in $PATH"),
        "{err}"
    );
    assert!(store() == before, "the failed build changed the store");

    // An unknown USER is named.
    let ctx = context(&[("Dockerfile", &format!("FROM {base}\nUSER ghost\nRUN true\n"))]);
    let err = k.fails(&["build", ctx.path().to_str().unwrap()]);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains("unable to find user ghost"), "{err}");
}

/// Pids whose command line is exactly `argv`.
fn pids_running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

#[test]
fn interrupting_kiln_kills_the_step_and_leaves_no_mounts() {
    if !root_sandbox() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    // A unique duration so that only this test's sleeper matches.
    let secs = format!("{}", 40_000 + std::process::id() % 10_000);
    let ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN sleep {secs}\n"))]);
    let mut child = k
        .cmd()
        .args(["build", "--progress=plain", ctx.path().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while pids_running(&["sleep", &secs]).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the step never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "kiln ended before the step started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let root = k.root().display().to_string();
    assert!(
        std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .lines()
            .all(|l| !l.contains(&root)),
        "the step's mounts must not be visible on the host"
    );
    // Ctrl-C.
    kiln_testkit::kill(child.id(), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a canceled build exits 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(" CANCELED") && err.contains("ERROR: the build was canceled"),
        "{err}"
    );
    let t0 = Instant::now();
    while !pids_running(&["sleep", &secs]).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "the step outlived kiln");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(mounts.lines().all(|l| !l.contains(&root)), "{mounts}");
    // The next build sweeps what the interrupted one left in tmp/ and works.
    let progress = build_plain(&k, &format!("FROM {base}\nRUN echo again\n"), &[]);
    assert!(step_lines(&progress).contains(&"again".to_string()));
    assert_eq!(std::fs::read_dir(k.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn run_sees_args_env_workdir_and_shell() {
    if !root_sandbox() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let df = format!(
        "FROM {base}\n\
         ARG VERSION=1.0\n\
         ENV GREETING=\"hello world\"\n\
         WORKDIR /srv/app\n\
         RUN echo \"v=$VERSION g=$GREETING cwd=$(pwd)\"\n\
         RUN [\"/bin/echo\", \"exec\", \"$VERSION\"]\n\
         SHELL [\"/bin/sh\", \"-ec\"]\n\
         RUN echo shell=$0\n"
    );
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("img.tar");
    let progress = build_plain(
        &k,
        &df,
        &[
            "--build-arg",
            "VERSION=2.5",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
        ],
    );
    let lines = step_lines(&progress);
    assert!(
        lines.contains(&"v=2.5 g=hello world cwd=/srv/app".to_string()),
        "{progress}"
    );
    // Exec form is not expanded.
    assert!(lines.contains(&"exec $VERSION".to_string()), "{progress}");
    assert!(lines.contains(&"shell=/bin/sh".to_string()), "{progress}");
    // ARG values are not persisted in the image.
    let bytes = std::fs::read(&archive).unwrap();
    let index = json(&tar_member(&bytes, "index.json").unwrap());
    let m = index["manifests"][0]["digest"].as_str().unwrap().replace("sha256:", "");
    let manifest = json(&tar_member(&bytes, &format!("blobs/sha256/{m}")).unwrap());
    let c = manifest["config"]["digest"].as_str().unwrap().replace("sha256:", "");
    let config = json(&tar_member(&bytes, &format!("blobs/sha256/{c}")).unwrap());
    let env = config["config"]["Env"].to_string();
    assert!(env.contains("GREETING=hello world"), "{env}");
    assert!(!env.contains("VERSION"), "{env}");
}

#[test]
fn runc_runtime_runs_steps_like_the_sandbox() {
    if !root_sandbox() || !require_tool("runc") {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let df = format!(
        "FROM {base}\n{CHANGES}RUN id && hostname && echo pid=$$ && grep NoNewPrivs /proc/self/status | tr -d '\\t'\n"
    );
    let out = tempfile::tempdir().unwrap();
    let (a, b) = (out.path().join("sandbox.tar"), out.path().join("runc.tar"));
    let pa = build_plain(&k, &df, &["-o", &format!("type=oci,dest={}", a.display())]);
    let pb = build_plain(
        &k,
        &df,
        &[
            "--no-cache",
            "--runtime",
            "runc",
            "-o",
            &format!("type=oci,dest={}", b.display()),
        ],
    );
    assert_eq!(step_lines(&pa), step_lines(&pb));
    assert!(
        step_lines(&pb)
            .iter()
            .any(|l| l.starts_with("uid=1000(app) gid=1000(app)")),
        "{pb}"
    );
    assert_same_layers(&layer_listings(&a), &layer_listings(&b));

    let ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN true\n"))]);
    let err = k.fails(&["build", "--runtime", "no-such-runtime", ctx.path().to_str().unwrap()]);
    assert!(
        err.contains("--runtime no-such-runtime: `no-such-runtime` is not installed"),
        "{err}"
    );
}

#[test]
fn copy_and_overlay_snapshotters_make_the_same_layers() {
    if !root_sandbox() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let build = |df: &str, dest: &Path| {
        let kind = if df.starts_with("# copy") { "copy" } else { "overlay" };
        build_plain(
            &k,
            df,
            &[
                "--no-cache",
                "--snapshotter",
                kind,
                "-o",
                &format!("type=oci,dest={}", dest.display()),
            ],
        )
    };
    let (overlay, copy) = changes_with_both_snapshotters(&build, base);
    assert_changes_layer(&overlay);
    assert_same_layers(&overlay, &copy);
}

#[test]
fn run_mounts_bind_cache_tmpfs_and_heredoc_scripts() {
    if !root_sandbox() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let df = format!(
        "FROM {base} AS builder\n\
         RUN mkdir /out && echo built > /out/artifact\n\
         FROM {base}\n\
         WORKDIR /work\n\
         RUN --mount=type=bind,source=src,target=/ctx cat /ctx/data.txt && ls /ctx | sed 's/^/ctx: /' && (touch /ctx/x 2>/dev/null || echo ctx-readonly)\n\
         RUN --mount=type=bind,from=builder,source=/out,target=/in,rw cat /in/artifact && touch /in/scratch\n\
         RUN --mount=type=cache,target=/var/cache/thing echo run >> /var/cache/thing/log && echo cache-runs=$(wc -l < /var/cache/thing/log)\n\
         RUN --mount=type=tmpfs,target=rel,size=1m df -k /work/rel | tail -1 | awk '{{print \"tmpfs-kb=\" $2}}'\n\
         RUN --mount=type=secret,id=nope test ! -e /run/secrets/nope && echo no-secret\n\
         RUN <<EOF\n#!/bin/sh\necho \"script=$0\"\nEOF\n"
    );
    let ctx = context(&[
        ("Dockerfile", &df),
        ("src/data.txt", "from context\n"),
        ("src/ignored.txt", "ignored\n"),
        (".dockerignore", "src/ignored.txt\n"),
    ]);
    let c = ctx.path().to_str().unwrap().to_string();
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("oci");
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--progress=plain", "-t", "m:1"];
        args.extend_from_slice(extra);
        args.push(&c);
        let o = run(k.cmd().args(&args));
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{e}");
        (step_lines(&e), e)
    };
    let (lines, p) = build(&["-o", &format!("type=oci,dest={},tar=false", layout.display())]);
    for want in [
        "from context",
        "ctx: data.txt",
        "ctx-readonly",
        "built",
        "cache-runs=1",
        "tmpfs-kb=1024",
        "no-secret",
        "script=/dev/pipes/EOF",
    ] {
        assert!(lines.iter().any(|l| l == want), "missing `{want}`:\n{p}");
    }
    assert!(
        !lines.iter().any(|l| l == "ctx: ignored.txt"),
        ".dockerignore applies to bind mounts:\n{p}"
    );
    // Mount points and mounted files never reach the image.
    let Some((_g, rootfs)) = umoci_unpack(&layout, "1") else {
        return;
    };
    for gone in ["ctx", "in", "var/cache/thing", "work/rel", "run/secrets"] {
        assert!(!rootfs.join(gone).exists(), "{gone} leaked into the image");
    }
    assert!(rootfs.join("var/cache").exists() || !rootfs.join("var").exists());
    // `--no-cache` re-runs the step with its cache mount emptied first, as BuildKit
    // (cachemount.rs has the rest); a changed bound file re-runs.
    let (lines, _) = build(&["--no-cache"]);
    assert!(lines.iter().any(|l| l == "cache-runs=1"), "{lines:?}");
    std::fs::write(ctx.path().join("src/data.txt"), "changed\n").unwrap();
    let (lines, p) = build(&[]);
    assert!(lines.iter().any(|l| l == "changed"), "{p}");
    // A changed ignored file does not.
    std::fs::write(ctx.path().join("src/ignored.txt"), "still ignored\n").unwrap();
    let (lines, _) = build(&[]);
    assert!(!lines.iter().any(|l| l == "changed"), "{lines:?}");

    // A required secret kiln cannot give, and a bad mount value, are named with the line.
    let bad = context(&[(
        "Dockerfile",
        &format!("FROM {base}\nRUN --mount=type=secret,id=tok,required cat /run/secrets/tok\n"),
    )]);
    let err = k.fails(&["build", bad.path().to_str().unwrap()]);
    assert!(
        err.contains("Dockerfile:2") && err.contains("secret `tok` is required"),
        "{err}"
    );
    let bad = context(&[(
        "Dockerfile",
        &format!("FROM {base}\nRUN --mount=type=nfs,target=/x true\n"),
    )]);
    let err = k.fails(&["build", bad.path().to_str().unwrap()]);
    assert!(
        err.contains("Dockerfile:2") && err.contains("unsupported mount type \"nfs\""),
        "{err}"
    );
}

/// `path mode uid/gid size` for every entry under `root`, sorted (file contents by size,
/// symlinks by target).
fn listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let md = e.path().symlink_metadata().unwrap();
        let extra = if md.file_type().is_symlink() {
            std::fs::read_link(e.path()).unwrap().display().to_string()
        } else if md.is_file() {
            format!(
                "{:x}",
                <sha2::Sha256 as sha2::Digest>::digest(std::fs::read(e.path()).unwrap())
            )
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:o} {}/{} {extra}",
            e.path().strip_prefix(root).unwrap().display(),
            md.mode() & 0o7777,
            md.uid(),
            md.gid()
        ));
    }
    out
}

#[test]
fn snapshots_made_from_a_steps_tree_equal_unpacked_layers() {
    if !root_sandbox() {
        return;
    }
    for snapshotter in ["overlay", "copy"] {
        let k = kiln();
        let Some(base) = busybox_base(&k) else { return };
        let out = tempfile::tempdir().unwrap();
        let rootfs = out.path().join("rootfs");
        // The last step's tree, as the snapshotter kept it for the next step...
        build_plain(
            &k,
            &format!("FROM {base}\n{CHANGES}RUN echo last > /tmp/last\n"),
            &[
                "--snapshotter",
                snapshotter,
                "-o",
                &format!("type=local,dest={}", rootfs.display()),
            ],
        );
        if snapshotter == "overlay" {
            // The overlay keeps each RUN's upper as its layer directory (tests/it/stack.rs),
            // which `fsck --deep` writes again as a tar and compares with the layer.
            let dirs = std::fs::read_dir(k.root().join("layerdirs-v1")).unwrap().flatten();
            assert!(dirs.map(|e| e.path()).any(|p| p.join("tmp/last").is_file()));
            let out = run(k.cmd().args(["fsck", "--deep"]));
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
            continue;
        }
        let snaps = k.root().join("snapshots-v1");
        // The final chain's tree is the one with the last step's file.
        let newest = std::fs::read_dir(&snaps)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("tmp/last").exists())
            .expect("the last step's tree was kept as a snapshot");
        // ...equals the tree unpacked from the layers (`-o type=local`).
        let (a, b) = (listing(&newest), listing(&rootfs));
        let only_a: Vec<&String> = a.iter().filter(|x| !b.contains(x)).collect();
        let only_b: Vec<&String> = b.iter().filter(|x| !a.contains(x)).collect();
        assert!(
            only_a.is_empty() && only_b.is_empty(),
            "{snapshotter}: only in the snapshot {only_a:#?}\nonly unpacked {only_b:#?}"
        );
        assert!(a.iter().any(|x| x.starts_with("tmp/last ")));
    }
}
