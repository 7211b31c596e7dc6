//! The seccomp filter of RUN steps (Docker's default profile) and `RUN
//! --security=insecure`, as root, rootless and with `--runtime runc`.
//!
//! A tiny static C program (compiled here with `cc -static`) tries each system call the
//! profile denies and prints `name=RESULT` lines (`OK` or the errno's name).

use std::collections::BTreeMap;
use std::process::Command;

use crate::common::*;
use crate::rootless::{User, SUB_USER};
use crate::run::{build_plain, busybox_context, step_lines};

/// The probe: each line is one system call and what it returned.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *name(long r) {
    if (r >= 0) return "OK";
    switch (errno) {
    case EPERM: return "EPERM";
    case ENOSYS: return "ENOSYS";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    default: return strerror(errno);
    }
}

static void show(const char *what, long r) { printf("%s=%s\n", what, name(r)); }

/* A child made by a raw clone/clone3 exits at once. */
static void reap(long r) { if (r == 0) _exit(0); if (r > 0) waitpid((pid_t)r, 0, 0); }

int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    struct perf_event_attr pe;
    memset(&pe, 0, sizeof pe);
    pe.type = PERF_TYPE_SOFTWARE;
    pe.size = sizeof pe;
    pe.config = PERF_COUNT_SW_TASK_CLOCK;
    pe.exclude_kernel = 1;
    pe.exclude_hv = 1;
    show("perf_event_open", syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0));
    show("userfaultfd", syscall(SYS_userfaultfd, 1 /* UFFD_USER_MODE_ONLY */));
    show("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0));
    show("add_key", syscall(SYS_add_key, "user", "kiln-probe", "x", 1, -2 /* process */));
    show("unshare_user", syscall(SYS_unshare, CLONE_NEWUSER));
    show("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, 0));
    long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    reap(r);
    show("clone_newuser", r);
    r = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    reap(r);
    show("clone", r);
    unsigned long long args[11];
    memset(args, 0, sizeof args);
    args[4] = SIGCHLD; /* exit_signal */
    r = syscall(435 /* clone3 */, args, sizeof args);
    reap(r);
    show("clone3", r);
    show("socket_vsock", socket(40 /* AF_VSOCK */, SOCK_STREAM, 0));
    show("socket_unix", socket(AF_UNIX, SOCK_STREAM, 0));
    show("personality_query", personality(0xffffffff));
    show("personality_norandom", personality(ADDR_NO_RANDOMIZE));
    show("syscall_1000", syscall(1000));
    show("getpid", syscall(SYS_getpid));
#ifdef __x86_64__
    /* The i386 system call table, from a 64-bit process: keyctl is 288, getpid 20. */
    long k32;
    __asm__ volatile("int $0x80" : "=a"(k32) : "a"(288), "b"(0), "c"(-3), "d"(0) : "memory");
    printf("i386_keyctl=%s\n", k32 >= 0 ? "OK" : k32 == -EPERM ? "EPERM" : k32 == -ENOSYS ? "ENOSYS" : "other");
    long p32;
    __asm__ volatile("int $0x80" : "=a"(p32) : "a"(20) : "memory");
    printf("i386_getpid=%s\n", p32 > 0 ? "OK" : "other");
#endif
    return 0;
}
"#;

/// What the probe must print inside the sandbox (Docker's default profile).
const DENIED: &[(&str, &str)] = &[
    ("perf_event_open", "EPERM"),
    ("userfaultfd", "EPERM"),
    ("keyctl", "EPERM"),
    ("add_key", "EPERM"),
    ("unshare_user", "EPERM"),
    ("mount", "EPERM"),
    ("clone_newuser", "EPERM"),
    ("clone", "OK"),
    ("clone3", "ENOSYS"),
    ("socket_vsock", "EPERM"),
    ("socket_unix", "OK"),
    ("personality_query", "OK"),
    ("personality_norandom", "EPERM"),
    ("syscall_1000", "ENOSYS"),
    ("getpid", "OK"),
];

/// A busybox build context with the probe at `/bin/probe`, or None (with the reason
/// reported) when it cannot be compiled here.
fn probe_context() -> Option<tempfile::TempDir> {
    if !require_tool("cc") {
        return None;
    }
    let ctx = busybox_context()?;
    let src = ctx.path().join("probe.c");
    std::fs::write(&src, PROBE_C).unwrap();
    let out = run(Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(ctx.path().join("rootfs/bin/probe"))
        .arg(&src));
    if !require(
        out.status.success(),
        &format!(
            "`cc -static` cannot build the probe (static libc missing?): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    ) {
        return None;
    }
    std::fs::remove_file(&src).unwrap();
    Some(ctx)
}

/// The probe's `name=RESULT` lines among a build's output.
fn results(progress: &str) -> BTreeMap<String, String> {
    step_lines(progress)
        .iter()
        .filter_map(|l| l.split_once('=').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect()
}

/// Asserts that the probe saw Docker's default profile.
fn assert_filtered(progress: &str) {
    let got = results(progress);
    for (name, want) in DENIED {
        assert_eq!(got.get(*name).map(String::as_str), Some(*want), "{name}: {progress}");
    }
    if cfg!(target_arch = "x86_64") && got.get("i386_getpid").map(String::as_str) == Some("OK") {
        assert_eq!(got.get("i386_keyctl").map(String::as_str), Some("EPERM"), "{progress}");
    }
}

fn root() -> bool {
    require(kiln_testkit::is_root(), "the root-mode RUN tests need root")
}

/// The probe image as `probe:1` in `k`'s store.
fn probe_base(k: &Kiln) -> Option<&'static str> {
    let ctx = probe_context()?;
    k.ok(&["build", "-q", "-t", "probe:1", ctx.path().to_str().unwrap()]);
    Some("probe:1")
}

#[test]
fn run_steps_get_dockers_default_seccomp_profile() {
    if !root() {
        return;
    }
    let k = kiln();
    let Some(base) = probe_base(&k) else { return };
    let progress = build_plain(&k, &format!("FROM {base}\nRUN probe\n"), &[]);
    assert_filtered(&progress);
    // The same as another user.
    let progress = build_plain(&k, &format!("FROM {base}\nUSER nobody\nRUN probe\n"), &[]);
    assert_filtered(&progress);
}

#[test]
fn run_steps_cannot_make_user_or_mount_namespaces() {
    if !root() {
        return;
    }
    let k = kiln();
    let Some(base) = probe_base(&k) else { return };
    for cmd in ["unshare -U true", "unshare -m true", "unshare -U -m -r true"] {
        let ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN {cmd}\n"))]);
        let err = k.fails(&["build", "--progress=plain", ctx.path().to_str().unwrap()]);
        assert!(err.contains("Operation not permitted"), "{cmd}: {err}");
        assert!(err.contains("RUN failed (exit code 1)"), "{cmd}: {err}");
    }
    // Ordinary work is untouched.
    let progress = build_plain(
        &k,
        &format!("FROM {base}\nRUN sh -c 'echo a | sort | wc -l > /n; (sleep 0 &) ; wait' && cat /n\n"),
        &[],
    );
    assert!(step_lines(&progress).contains(&"1".to_string()), "{progress}");
}

#[test]
fn runc_steps_get_the_same_profile() {
    if !root() || !require_tool("runc") {
        return;
    }
    let k = kiln();
    let Some(base) = probe_base(&k) else { return };
    let progress = build_plain(&k, &format!("FROM {base}\nRUN probe\n"), &["--runtime", "runc"]);
    assert_filtered(&progress);
}

#[test]
fn rootless_steps_get_the_profile() {
    let Some(u) = User::get(SUB_USER, true) else { return };
    let Some(ctx) = probe_context() else { return };
    let mine = u.path("probe-context");
    run_ok(Command::new("cp").arg("-a").arg(ctx.path()).arg(&mine));
    u.own(&mine);
    u.kiln_ok(&["build", "-q", "-t", "probe:1", mine.to_str().unwrap()]);
    let app = u.context("app", "FROM probe:1\nRUN probe\n");
    let progress = u.kiln_ok(&["build", "--progress=plain", app.to_str().unwrap()]);
    assert_filtered(&progress);
    let bad = u.context("unshare", "FROM probe:1\nRUN unshare -U true\n");
    let out = u.kiln(&["build", "--progress=plain", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Operation not permitted"),
        "{err}"
    );
    // Insecure, rootless: every capability in kiln's user namespace, no filter.
    let ok = u.context(
        "insecure",
        "FROM probe:1\nRUN --security=insecure unshare -U true && echo unshared && probe\n",
    );
    let progress = u.kiln_ok(&[
        "build",
        "--progress=plain",
        "--allow",
        "security.insecure",
        ok.to_str().unwrap(),
    ]);
    assert!(step_lines(&progress).contains(&"unshared".to_string()), "{progress}");
    assert_eq!(
        results(&progress).get("keyctl").map(String::as_str),
        Some("OK"),
        "{progress}"
    );
}

/// The step of an insecure build: every capability, no filter, Docker's masks gone.
const INSECURE: &str = "RUN --security=insecure grep CapEff /proc/self/status | tr -d '\\t' \
     && unshare -U true && echo unshared && probe \
     && [ \"$(head -c 1 /proc/timer_list | wc -c)\" = 1 ] && echo unmasked \
     && grep ' /sys ' /proc/self/mounts | cut -d' ' -f4 | cut -d, -f1 | sed s/^/sys=/ && ls /dev\n";

fn assert_insecure(progress: &str) {
    let lines = step_lines(progress);
    let capeff = lines.iter().find_map(|l| l.strip_prefix("CapEff:")).unwrap_or("");
    // Every capability kiln has (this test's process, as root).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let want = status.lines().find_map(|l| l.strip_prefix("CapPrm:")).unwrap().trim();
    assert_eq!(capeff, want, "{progress}");
    assert!(lines.contains(&"unshared".to_string()), "{progress}");
    let got = results(progress);
    // (After its unshare the probe is in a user namespace of its own: mount and a nested
    // clone fail there for other reasons.)
    for name in [
        "keyctl",
        "add_key",
        "userfaultfd",
        "unshare_user",
        "clone3",
        "personality_norandom",
    ] {
        assert_eq!(got.get(name).map(String::as_str), Some("OK"), "{name}: {progress}");
    }
    assert!(lines.contains(&"unmasked".to_string()), "{progress}");
    assert!(lines.contains(&"sys=rw".to_string()), "{progress}");
    // As root the host's loop devices come along (BuildKit's list).
    if std::path::Path::new("/dev/loop-control").exists() {
        assert!(lines.contains(&"loop-control".to_string()), "{progress}");
    }
}

#[test]
fn insecure_steps_run_unconfined_when_allowed() {
    if !root() {
        return;
    }
    let k = kiln();
    let Some(base) = probe_base(&k) else { return };
    let df = format!("FROM {base}\n{INSECURE}");
    let progress = build_plain(&k, &df, &["--allow", "security.insecure"]);
    assert_insecure(&progress);
    if require_tool("runc") {
        let progress = build_plain(
            &k,
            &df,
            &["--no-cache", "--runtime", "runc", "--allow", "security.insecure"],
        );
        assert_insecure(&progress);
    }
    // Another user gets them too (ambient, as BuildKit).
    let user = format!("FROM {base}\nUSER nobody\n{INSECURE}");
    let progress = build_plain(&k, &user, &["--allow", "security.insecure"]);
    assert_insecure(&progress);
    // Not allowed: refused on its line before anything runs.
    let ctx = context(&[("Dockerfile", &df)]);
    let err = k.fails(&["build", "--no-cache", ctx.path().to_str().unwrap()]);
    assert!(
        err.contains("Dockerfile:2") && err.contains("needs `--allow security.insecure`"),
        "{err}"
    );
    // The same step without `--security=insecure` is filtered.
    let ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN unshare -U true\n"))]);
    k.fails(&["build", ctx.path().to_str().unwrap()]);
}
