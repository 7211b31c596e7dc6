//! kiln inside `docker run` (no `--privileged`), where CI runs it: `--isolation auto`
//! picks what the container allows, says so in one line, and where nothing works a
//! RUN step fails with the real errno and the fix while COPY-only builds still work.
//!
//! The container is the busybox rootfs of [`busybox_context`] imported into the private
//! dockerd, with the kiln binary and the host's glibc bind-mounted read-only.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;
use crate::run::{busybox_context, step_lines};

const RUN_DF: &str = "FROM bb:1\nCOPY f /f\nRUN echo pid=$$ && echo hi > /out && rm /etc/motd && cat /f\n";

/// One `docker run` of `script` (sh -c) in the kiln container; `user` is `root` or a
/// uid; `extra` are more `docker run` options.
struct Ctr<'a> {
    d: &'a Dockerd,
    ctx: &'a Path,
    work: &'a Path,
}

impl Ctr<'_> {
    fn run(&self, user: &str, extra: &[&str], script: &str) -> Output {
        let kiln = Path::new(env!("CARGO_BIN_EXE_kiln"));
        let mut c = self.d.docker();
        c.args(["run", "--rm", "--network", "none", "--user", user])
            .args(extra)
            .arg("-v")
            .arg(format!("{}:/k/kiln:ro", kiln.display()))
            .args(["-v", "/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro"])
            .args(["-v", "/lib64:/lib64:ro"])
            .arg("-v")
            .arg(format!("{}:/bb:ro", self.ctx.display()))
            .arg("-v")
            .arg(format!("{}:/w:ro", self.work.display()))
            .args([
                "-e",
                "KILN_ROOT=/tmp/root",
                "-e",
                "HOME=/tmp",
                "-e",
                "SOURCE_DATE_EPOCH=1700000000",
            ])
            .args(["kiln-ctr:1", "sh", "-c", script]);
        run(&mut c)
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn diff_ids(inspect: &[u8]) -> Vec<String> {
    let v = json(&String::from_utf8_lossy(inspect));
    v[0]["Config"]["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn kiln_in_a_default_docker_container() {
    if !require(
        Path::new("/lib64/ld-linux-x86-64.so.2").exists() && Path::new("/lib/x86_64-linux-gnu/libc.so.6").exists(),
        "the kiln binary is run with the host's glibc (x86_64 Debian layout)",
    ) {
        return;
    }
    let Some(ctx) = busybox_context() else { return };
    let Some(d) = Dockerd::start() else { return };
    // The container image: the busybox rootfs, plus a user with a passwd entry.
    let rootfs = ctx.path().join("rootfs");
    let passwd = rootfs.join("etc/passwd");
    let mut p = std::fs::read_to_string(&passwd).unwrap();
    p.push_str("builder:x:1000:1000::/tmp:/bin/sh\n");
    std::fs::write(&passwd, p).unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-c", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let mut import = d.docker();
    import
        .args(["import", "-", "kiln-ctr:1"])
        .stdin(std::process::Stdio::piped());
    let mut child = import.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &tar.stdout).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "docker import failed");
    // Build inputs the container reads: the base's context and a RUN build's.
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("run")).unwrap();
    std::fs::write(work.path().join("run/Dockerfile"), RUN_DF).unwrap();
    std::fs::write(work.path().join("run/f"), "from the context\n").unwrap();
    std::fs::create_dir_all(work.path().join("copy")).unwrap();
    std::fs::write(work.path().join("copy/Dockerfile"), "FROM bb:1\nCOPY f /f\n").unwrap();
    std::fs::write(work.path().join("copy/f"), "copied\n").unwrap();
    run_ok(
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(work.path())
            .arg(ctx.path()),
    );
    let c = Ctr {
        d: &d,
        ctx: ctx.path(),
        work: work.path(),
    };
    let base = "/k/kiln build -q -t bb:1 /bb >/dev/null";

    // (a) root, default seccomp: no namespace can be made; steps are chrooted.
    let o = c.run(
        "root",
        &[],
        &format!("{base} && /k/kiln build --progress=plain -t app:1 /w/run >/dev/null && /k/kiln inspect app:1"),
    );
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    let err = String::from_utf8_lossy(&o.stderr);
    let notes: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("NOTE: RUN steps use isolation"))
        .collect();
    assert_eq!(notes.len(), 1, "one line about the choice:\n{all}");
    assert!(
        notes[0].contains("`chroot`") && notes[0].contains("Operation not permitted (os error 1)"),
        "{all}"
    );
    let lines = step_lines(&err);
    assert!(lines.contains(&"from the context".to_string()), "{all}");
    // The same layers as the host's kiln gives for the same build.
    let inside = diff_ids(&o.stdout);
    let k = kiln();
    let b = run(k
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "-q", "-t", "bb:1"])
        .arg(ctx.path()));
    assert!(b.status.success(), "{}", text(&b));
    let host = run(k
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "-q", "-t", "app:1"])
        .arg(work.path().join("run")));
    assert!(host.status.success(), "{}", text(&host));
    let host_ids = diff_ids(k.ok(&["inspect", "app:1"]).as_bytes());
    assert_eq!(inside, host_ids, "a chrooted RUN gives other layers than the host's");

    // (b) non-root, default seccomp: no user namespace. --version and COPY-only builds
    // work; a RUN build fails with exit status 1, the errno and the fix.
    let o = c.run("1000:1000", &[], "/k/kiln --version && /k/kiln images >/dev/null");
    assert!(o.status.success(), "{}", text(&o));
    let o = c.run(
        "1000:1000",
        &[],
        &format!("{base} && /k/kiln build -q -o type=tar,dest=/tmp/o.tar /w/copy >/dev/null && tar -xOf /tmp/o.tar f"),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "copied\n", "{}", text(&o));
    let o = c.run("1000:1000", &[], &format!("{base} && /k/kiln build -q /w/run"));
    let all = text(&o);
    assert_eq!(o.status.code(), Some(1), "{all}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no isolation for RUN steps can be set up here; tried:"),
        "{all}"
    );
    assert!(
        err.contains("cannot create a user namespace (unshare): Operation not permitted (os error 1)"),
        "{all}"
    );
    assert!(err.contains("--security-opt seccomp=unconfined"), "{all}");
    assert!(!err.contains("did not start"), "{all}");

    // (c) non-root, seccomp and apparmor unconfined: a user namespace, but Docker's
    // masked /proc forbids a fresh one: kiln's pid namespace and its /proc.
    let unconfined = [
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
    ];
    let o = c.run(
        "1000:1000",
        &unconfined,
        &format!("{base} && /k/kiln build --network=host --progress=plain /w/run"),
    );
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    let err = String::from_utf8_lossy(&o.stderr);
    let notes: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("NOTE: RUN steps use isolation"))
        .collect();
    assert_eq!(notes.len(), 1, "{all}");
    assert!(
        notes[0].contains("`nosandbox-pid`") && notes[0].contains("cannot mount a fresh /proc"),
        "{all}"
    );
    assert!(step_lines(&err).contains(&"from the context".to_string()), "{all}");
}
