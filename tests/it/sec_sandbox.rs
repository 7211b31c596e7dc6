//! The RUN sandbox against a hostile step: no inherited descriptors, no host block
//! devices (a loop device over a scratch file stands in for the host's disks), no host
//! keyring, and `--ulimit` / `--pids-limit` with a bounded fork bomb (never an unbounded
//! one: the machine is shared).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::*;
use crate::rootless::{User, SUB_USER};
use crate::run::{busybox_base, busybox_context, step_lines};

fn root_sandbox() -> bool {
    require(kiln_testkit::is_root(), "the root-mode sandbox tests need root")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `kiln ARGS` (as `user`, else as root) started from bash with `canary` open
/// read-write on descriptor 7, as `7<>canary` in a shell leaves it (not close-on-exec).
fn kiln_with_fd7(k: Option<&Kiln>, user: Option<&User>, canary: &Path, args: &[&str]) -> Output {
    let script = "exec 7<>\"$1\"; shift; exec \"$@\"";
    let mut c = match user {
        None => {
            let mut c = Command::new("bash");
            c.env("KILN_ROOT", k.expect("a kiln").root())
                .env_remove("SOURCE_DATE_EPOCH")
                .stdin(Stdio::null())
                .args(["-c", script, "bash"])
                .arg(canary)
                .arg(env!("CARGO_BIN_EXE_kiln"));
            c
        }
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u.name, "--", "bash", "-c", script, "bash"])
                .arg(canary)
                .arg("env")
                .arg(format!("KILN_ROOT={}", u.path("root").display()))
                .arg(format!("HOME={}", u.dir.path().display()))
                .arg(env!("CARGO_BIN_EXE_kiln"))
                .current_dir(u.dir.path())
                .stdin(Stdio::null());
            c
        }
    };
    c.args(args);
    run(&mut c)
}

/// The step writes to descriptor 7 if it has one and lists the descriptors of its
/// shell (pid 1; listed from a subshell, so that no redirection of its own shows).
const FD_STEP: &str = "RUN (echo pwned-by-run >&7) 2>/dev/null; echo fd7=$(readlink /proc/self/fd/7 || echo none) \\\n\
     && (ls /proc/1/fd > /tmp/fds) && echo fds=$(sort -n /tmp/fds | tr '\\n' ' ')\n";

fn check_fd_build(o: &Output, canary: &Path, who: &str) {
    let p = stderr(o);
    assert!(o.status.success(), "{who}: {p}");
    assert_eq!(
        std::fs::read_to_string(canary).unwrap(),
        "host canary\n",
        "{who}: the step wrote to kiln's inherited descriptor 7:\n{p}"
    );
    let lines = step_lines(&p);
    assert!(
        lines.iter().any(|l| l == "fd7=none"),
        "{who}: fd 7 reached the step:\n{p}"
    );
    assert!(
        lines.iter().any(|l| l == "fds=0 1 2"),
        "{who}: the step has descriptors above 2:\n{p}"
    );
}

#[test]
fn run_does_not_inherit_kilns_descriptors() {
    if !root_sandbox() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let dir = tempfile::tempdir().unwrap();
    let canary = dir.path().join("canary");
    let ctx = context(&[("Dockerfile", &format!("FROM {base}\n{FD_STEP}"))]);
    let mut runtimes = vec![None];
    if require_tool("runc") {
        runtimes.push(Some("runc"));
    }
    for runtime in runtimes {
        std::fs::write(&canary, "host canary\n").unwrap();
        let mut args = vec!["build", "--progress=plain", "--no-cache"];
        if let Some(r) = runtime {
            args.extend(["--runtime", r]);
        }
        args.push(ctx.path().to_str().unwrap());
        let o = kiln_with_fd7(Some(&k), None, &canary, &args);
        check_fd_build(&o, &canary, runtime.unwrap_or("sandbox"));
    }
}

#[test]
fn rootless_run_does_not_inherit_kilns_descriptors() {
    let Some(u) = User::get(SUB_USER, true) else { return };
    let Some(base) = u.busybox_base() else { return };
    let canary = u.path("canary");
    std::fs::write(&canary, "host canary\n").unwrap();
    u.own(&canary);
    let ctx = u.context("fd", &format!("FROM {base}\n{FD_STEP}"));
    let o = kiln_with_fd7(
        None,
        Some(&u),
        &canary,
        &["build", "--progress=plain", ctx.to_str().unwrap()],
    );
    check_fd_build(&o, &canary, SUB_USER);
}

/// The busybox context with Debian's `keyctl` and the libraries it loads.
fn keyctl_context() -> Option<tempfile::TempDir> {
    if !require_tool("keyctl") || !require_tool("ldd") {
        return None;
    }
    let ctx = busybox_context()?;
    let rootfs = ctx.path().join("rootfs");
    let keyctl = kiln_testkit::which("keyctl")?;
    let ldd = run_ok(Command::new("ldd").arg(&keyctl));
    let libs = ldd
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .chain([keyctl]);
    for lib in libs {
        let to = rootfs.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&lib, &to).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
    }
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib64\n",
    )
    .unwrap();
    Some(ctx)
}

/// The step looks the canary key up through its session keyring and prints it.
const KEY_STEP: &str = "RUN (keyctl print %user:kiln-canary || echo key=unreachable) 2>&1; \\\n\
     keyctl show @s 2>&1 | sed 's/^/session: /'\n";
const KEY_VALUE: &str = "kiln-keyring-canary-value";

/// `sh -c SCRIPT` in a new session keyring holding the canary key; `$@` is kiln + args.
fn in_keyring_session(c: &mut Command) {
    c.args(["session", "-", "sh", "-c"]).arg(format!(
        "keyctl add user kiln-canary {KEY_VALUE} @s >/dev/null && exec \"$@\""
    ));
    c.arg("sh");
}

fn check_key_build(o: &Output, who: &str) {
    let p = stderr(o);
    assert!(o.status.success(), "{who}: {p}");
    assert!(
        !p.contains(KEY_VALUE),
        "{who}: the step read the host's session key:\n{p}"
    );
    assert!(
        step_lines(&p).iter().any(|l| l == "key=unreachable"),
        "{who}: the key lookup did not run:\n{p}"
    );
}

#[test]
fn run_cannot_read_the_session_keyring_kiln_started_in() {
    if !root_sandbox() {
        return;
    }
    let Some(kctx) = keyctl_context() else { return };
    let k = kiln();
    k.ok(&["build", "-q", "-t", "bbkey:1", kctx.path().to_str().unwrap()]);
    let ctx = context(&[("Dockerfile", &format!("FROM bbkey:1\n{KEY_STEP}"))]);
    let mut c = Command::new("keyctl");
    in_keyring_session(&mut c);
    c.env("KILN_ROOT", k.root())
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--progress=plain", ctx.path().to_str().unwrap()])
        .stdin(Stdio::null());
    check_key_build(&run(&mut c), "root");
}

#[test]
fn rootless_run_cannot_read_the_session_keyring_kiln_started_in() {
    let Some(u) = User::get(SUB_USER, true) else { return };
    let Some(kctx) = keyctl_context() else { return };
    let mine = u.path("key-context");
    run_ok(Command::new("cp").arg("-a").arg(kctx.path()).arg(&mine));
    u.own(&mine);
    u.kiln_ok(&["build", "-q", "-t", "bbkey:1", mine.to_str().unwrap()]);
    let ctx = u.context("key", &format!("FROM bbkey:1\n{KEY_STEP}"));
    let mut c = Command::new("runuser");
    c.args(["-u", u.name, "--", "keyctl"]);
    in_keyring_session(&mut c);
    c.arg("env")
        .arg(format!("KILN_ROOT={}", u.path("root").display()))
        .arg(format!("HOME={}", u.dir.path().display()))
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--progress=plain", ctx.to_str().unwrap()])
        .current_dir(u.dir.path())
        .stdin(Stdio::null());
    check_key_build(&run(&mut c), SUB_USER);
}

/// A loop device over a 1 MiB scratch file of zeros, detached on drop.
struct Loop {
    _dir: tempfile::TempDir,
    file: PathBuf,
    dev: String,
    minor: u32,
}

impl Loop {
    fn new() -> Option<Loop> {
        if !require_tool("losetup") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("scratch.img");
        std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
        let o = run(Command::new("losetup").args(["-f", "--show"]).arg(&file));
        if !require(
            o.status.success(),
            &format!("losetup cannot attach a loop device: {}", stderr(&o)),
        ) {
            return None;
        }
        let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let minor = dev.trim_start_matches("/dev/loop").parse().unwrap();
        Some(Loop {
            _dir: dir,
            file,
            dev,
            minor,
        })
    }

    fn assert_untouched(&self, who: &str, log: &str) {
        let data = std::fs::read(&self.file).unwrap();
        assert!(
            data.iter().all(|b| *b == 0),
            "{who}: a step wrote to the host's {} (the scratch file changed):\n{log}",
            self.dev
        );
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[test]
fn run_cannot_write_host_block_devices() {
    if !root_sandbox() {
        return;
    }
    let Some(lo) = Loop::new() else { return };
    let n = lo.minor;
    // The step makes a node of the loop device in its root, in /dev, in a cache mount
    // and in a writable bind mount, and writes to each; then a later build writes to a
    // node that came in a base layer. The standard /dev nodes keep working.
    let write = |path: &str, tag: &str| {
        format!("( (printf PWNED > {path}) 2>/dev/null && sync && echo {tag}=written || echo {tag}=denied)")
    };
    let steps = format!(
        "RUN mknod /tmp/l b 7 {n} && {}\n\
         RUN mknod /dev/l b 7 {n} && {}\n\
         RUN --mount=type=cache,target=/c mknod /c/l{n} b 7 {n} && {}\n\
         RUN --mount=type=bind,target=/ctx,rw mknod /ctx/l b 7 {n} && {}\n\
         RUN mknod /base-l b 7 {n}\n\
         RUN echo x > /dev/null && echo devs=$(head -c 4 /dev/zero | wc -c)$(head -c 4 /dev/urandom | wc -c)\n",
        write("/tmp/l", "root"),
        write("/dev/l", "dev"),
        write(&format!("/c/l{n}"), "cache"),
        write("/ctx/l", "bind"),
    );
    let mut runs: Vec<(&str, Vec<&str>)> = vec![
        ("overlay", vec!["--snapshotter", "overlay"]),
        ("copy", vec!["--snapshotter", "copy"]),
    ];
    if require_tool("runc") {
        runs.push(("runc", vec!["--runtime", "runc", "--snapshotter", "overlay"]));
    }
    for (who, flags) in runs {
        let k = kiln();
        let Some(base) = busybox_base(&k) else { return };
        let ctx = context(&[("Dockerfile", &format!("FROM {base}\n{steps}"))]);
        let mut args = vec!["build", "--progress=plain", "-t", "devs:1"];
        args.extend(&flags);
        args.push(ctx.path().to_str().unwrap());
        let o = run(k.cmd().args(&args));
        let p = stderr(&o);
        lo.assert_untouched(who, &p);
        assert!(o.status.success(), "{who}: {p}");
        let lines = step_lines(&p);
        for tag in ["root", "dev", "cache", "bind"] {
            assert!(
                lines.contains(&format!("{tag}=denied")),
                "{who}: the {tag} device node was writable:\n{p}"
            );
        }
        assert!(
            lines.iter().any(|l| l == "devs=44"),
            "{who}: /dev/zero or /dev/urandom broke:\n{p}"
        );

        let ctx = context(&[(
            "Dockerfile",
            &format!("FROM devs:1\nRUN {}\n", write("/base-l", "base")),
        )]);
        let mut args = vec!["build", "--progress=plain", "--no-cache"];
        args.extend(&flags);
        args.push(ctx.path().to_str().unwrap());
        let o = run(k.cmd().args(&args));
        let p = stderr(&o);
        lo.assert_untouched(who, &p);
        assert!(o.status.success(), "{who}: {p}");
        assert!(
            step_lines(&p).iter().any(|l| l == "base=denied"),
            "{who}: the base layer's device node was writable:\n{p}"
        );
    }
}

/// Two steps print their limits: `--ulimit` applies to every RUN.
const LIMITS_STEPS: &str = "RUN echo n=$(ulimit -Sn):$(ulimit -Hn) c=$(ulimit -Sc):$(ulimit -Hc)\n\
     RUN echo again=$(ulimit -Sn):$(ulimit -Hn)\n";

fn check_limits(p: &str, who: &str, n: &str, c: &str) {
    let lines = step_lines(p);
    assert!(lines.contains(&format!("n={n} c={c}")), "{who}: want n={n} c={c}:\n{p}");
    assert!(lines.contains(&format!("again={n}")), "{who}: {p}");
}

#[test]
fn ulimit_flags_apply_to_every_run_step() {
    if !root_sandbox() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let ctx = context(&[("Dockerfile", &format!("FROM {base}\n{LIMITS_STEPS}"))]);
    let mut runtimes = vec![None];
    if require_tool("runc") {
        runtimes.push(Some("runc"));
    }
    for runtime in runtimes {
        let mut args = vec![
            "build",
            "--progress=plain",
            "--no-cache",
            "--ulimit",
            "nofile=123:456",
            "--ulimit=core=0:-1",
        ];
        if let Some(r) = runtime {
            args.extend(["--runtime", r]);
        }
        args.push(ctx.path().to_str().unwrap());
        let o = run(k.cmd().args(&args));
        let p = stderr(&o);
        assert!(o.status.success(), "{p}");
        check_limits(&p, runtime.unwrap_or("sandbox"), "123:456", "0:unlimited");
    }
    // One value sets both limits, as docker's grammar.
    let o = run(k.cmd().args([
        "build",
        "--progress=plain",
        "--no-cache",
        "--ulimit",
        "nofile=77",
        "--ulimit",
        "core=0",
        ctx.path().to_str().unwrap(),
    ]));
    check_limits(&stderr(&o), "soft only", "77:77", "0:0");
}

#[test]
fn bad_ulimit_and_pids_limit_values_are_named() {
    let k = kiln();
    let ctx = context(&[("Dockerfile", "FROM scratch\n")]);
    let c = ctx.path().to_str().unwrap();
    for (flag, want) in [
        (
            "nofile=abc",
            "invalid value 'nofile=abc' for '--ulimit <NAME=SOFT[:HARD]>': `abc` is not a number",
        ),
        (
            "bogus=1",
            "invalid value 'bogus=1' for '--ulimit <NAME=SOFT[:HARD]>': unknown resource `bogus`",
        ),
        ("nofile=10:5", "soft limit 10 is above the hard limit 5"),
        ("nofile", "expected NAME=SOFT[:HARD]"),
    ] {
        let err = k.fails(&["build", "--ulimit", flag, c]);
        assert!(err.contains(want), "--ulimit {flag}: want `{want}`:\n{err}");
    }
    let err = k.fails(&["build", "--pids-limit", "many", c]);
    assert!(err.contains("--pids-limit"), "{err}");
}

/// Starts `count` background `sleep`s (a bounded bomb) and says how many it started.
fn bomb(count: u32) -> String {
    format!("RUN i=0; while [ $i -lt {count} ]; do sleep 30 & i=$((i+1)); done; echo started=$i\n")
}

fn assert_bomb_stopped(o: &Output, who: &str) {
    let p = stderr(o);
    assert!(
        !o.status.success(),
        "{who}: the bounded fork bomb was not stopped:\n{p}"
    );
    assert!(
        p.contains("can't fork") && p.contains("Resource temporarily unavailable"),
        "{who}: want fork to fail with EAGAIN:\n{p}"
    );
    assert!(!step_lines(&p).iter().any(|l| l.starts_with("started=")), "{who}: {p}");
}

#[test]
fn pids_limit_stops_a_bounded_fork_bomb_but_not_parallel_jobs() {
    if !root_sandbox() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let mut runtimes = vec![None];
    if require_tool("runc") {
        runtimes.push(Some("runc"));
    }
    for runtime in runtimes {
        let who = runtime.unwrap_or("sandbox");
        let mut rt: Vec<&str> = Vec::new();
        if let Some(r) = runtime {
            rt.extend(["--runtime", r]);
        }
        // An explicit limit well below the bomb.
        let ctx = context(&[("Dockerfile", &format!("FROM {base}\n{}", bomb(60)))]);
        let mut args = vec!["build", "--progress=plain", "--no-cache", "--pids-limit", "25"];
        args.extend(&rt);
        args.push(ctx.path().to_str().unwrap());
        assert_bomb_stopped(&run(k.cmd().args(&args)), who);
        // The default limit (4096): a bomb just above it is stopped...
        let ctx = context(&[("Dockerfile", &format!("FROM {base}\n{}", bomb(4200)))]);
        let mut args = vec!["build", "--progress=plain", "--no-cache"];
        args.extend(&rt);
        args.push(ctx.path().to_str().unwrap());
        assert_bomb_stopped(&run(k.cmd().args(&args)), &format!("{who} default"));
        // ...while 200 parallel jobs (a `make -j` worth) run.
        let ctx = context(&[(
            "Dockerfile",
            &format!("FROM {base}\nRUN i=0; while [ $i -lt 200 ]; do sleep 1 & i=$((i+1)); done; wait; echo jobs=$i\n"),
        )]);
        let mut args = vec!["build", "--progress=plain", "--no-cache"];
        args.extend(&rt);
        args.push(ctx.path().to_str().unwrap());
        let o = run(k.cmd().args(&args));
        let p = stderr(&o);
        assert!(o.status.success(), "{who}: {p}");
        assert!(step_lines(&p).contains(&"jobs=200".to_string()), "{who}: {p}");
    }
}

#[test]
fn rootless_ulimits_and_process_limit() {
    let Some(u) = User::get(SUB_USER, true) else { return };
    let Some(base) = u.busybox_base() else { return };
    let ctx = u.context(
        "limits",
        &format!("FROM {base}\n{LIMITS_STEPS}RUN echo u=$(ulimit -u)\n"),
    );
    let p = u.kiln_ok(&[
        "build",
        "--progress=plain",
        "--ulimit",
        "nofile=123:456",
        "--ulimit",
        "core=0",
        ctx.to_str().unwrap(),
    ]);
    check_limits(&p, SUB_USER, "123:456", "0:0");
    // A hard limit above the user's own cannot be granted rootless: one clear error.
    let o = u.kiln(&[
        "build",
        "--progress=plain",
        "--no-cache",
        "--ulimit",
        "memlock=-1",
        ctx.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("cannot set --ulimit memlock=unlimited:unlimited: Operation not permitted")
            && err.contains("needs root"),
        "{err}"
    );
    // Rootless, the process limit is RLIMIT_NPROC (no cgroup to write): the default.
    assert!(step_lines(&p).contains(&"u=4096".to_string()), "{p}");
    let ctx = u.context("bomb", &format!("FROM {base}\n{}", bomb(60)));
    for flag in ["--pids-limit=25", "--ulimit=nproc=25"] {
        let o = u.kiln(&["build", "--progress=plain", flag, ctx.to_str().unwrap()]);
        assert_bomb_stopped(&o, &format!("{SUB_USER} {flag}"));
    }
}
