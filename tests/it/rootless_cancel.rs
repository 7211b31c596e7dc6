//! Ctrl-C of a rootless build. The kiln the user started waits for a kiln re-executed in
//! a user namespace, which dies with it (PDEATHSIG); the signal must reach the inner
//! kiln and let it cancel as the root path does: exit code 1, the step CANCELED, no
//! process, network helper or mount left, the next build sweeping the temp dir clean.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::rootless::{User, SUB_USER};
use crate::sec_network::{alive, descendants};

/// How the signal is sent.
#[derive(Debug, Clone, Copy)]
enum Interrupt {
    /// `kill -INT` of the kiln the user started.
    Kiln,
    /// A terminal's Ctrl-C: SIGINT to every process of the foreground process group.
    Group,
    /// The two copies of a terminal's Ctrl-C as separate deliveries, made so on purpose:
    /// the inner kiln's own copy first, then (the inner kiln stopped until it is pending)
    /// the copy the outer kiln passes on, which must not count as a second Ctrl-C.
    OwnThenForwarded,
}

/// Field `n` (1-based, after the command name) of /proc/PID/stat.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split_whitespace().nth(n - 1).map(str::to_string)
}

/// Whether `sig` is pending for the whole process `pid` (`ShdPnd`).
fn pending(pid: u32, sig: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap();
    mask & (1 << (sig - 1)) != 0
}

/// Sends `sig` to `pid` (a negative pid: a process group, which testkit's `kill` cannot
/// name).
#[allow(unsafe_code)]
fn signal(pid: i32, sig: i32) {
    // SAFETY: signalling a process (or process group) this test started.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// Polls `cond` until it holds (at most 10 s).
fn until(what: &str, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::yield_now();
    }
}

fn cancel_rootless_build(u: &User, base: &str, how: Interrupt, sig: i32) {
    let secs = format!("{}", 50_000 + (std::process::id() + sig as u32 * 7) % 9_000);
    let name = format!("cancel-{how:?}-{sig}");
    let ctx = u.context(&name, &format!("FROM {base}\nRUN sleep {secs}\n"));
    let mut child = Command::new("runuser")
        .args(["-u", u.name, "--", "env"])
        .arg(format!("KILN_ROOT={}", u.path("root").display()))
        .arg(format!("HOME={}", u.dir.path().display()))
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--progress=plain", ctx.to_str().unwrap()])
        .current_dir(u.dir.path())
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut seen: Vec<(u32, String)>;
    loop {
        seen = descendants(child.id());
        if seen.iter().any(|(_, c)| c == "sleep") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the step never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "kiln ended before the step started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The inner kiln, the sandbox helper, the network namespace holder (both re-executed
    // kilns: `exe`) and slirp4netns.
    assert!(
        seen.iter().any(|(_, c)| c == "slirp4netns") && seen.iter().filter(|(_, c)| c == "exe").count() >= 3,
        "the step has no user-mode network: {seen:?}"
    );
    let outer = seen
        .iter()
        .find(|(_, c)| c == "kiln")
        .unwrap_or_else(|| panic!("no kiln among {seen:?}"))
        .0;
    match how {
        Interrupt::Kiln => signal(outer as i32, sig),
        Interrupt::Group => signal(-(child.id() as i32), sig),
        Interrupt::OwnThenForwarded => {
            let inner = seen
                .iter()
                .find(|(p, c)| c == "exe" && stat_field(*p, 2).as_deref() == Some(&outer.to_string()))
                .unwrap_or_else(|| panic!("no inner kiln among {seen:?}"))
                .0;
            signal(inner as i32, sig);
            until("the inner kiln never took its signal", || !pending(inner, sig));
            signal(inner as i32, libc::SIGSTOP);
            until("the inner kiln did not stop", || {
                stat_field(inner, 1).as_deref() == Some("T")
            });
            signal(outer as i32, sig);
            until("the outer kiln did not pass the signal on", || pending(inner, sig));
            signal(inner as i32, libc::SIGCONT);
        }
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{how:?} {sig}: a canceled build exits 1:\n{err}"
    );
    assert!(
        err.contains(" CANCELED") && err.contains("ERROR: the build was canceled"),
        "{how:?} {sig}:\n{err}"
    );
    let t0 = Instant::now();
    loop {
        let left: Vec<&(u32, String)> = seen.iter().filter(|(p, _)| alive(*p)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{how:?} {sig}: processes outlived the build: {left:?}\n{err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<_> = std::fs::read_dir(u.path("root/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "{how:?} {sig}: the canceled build left {left:?} in tmp/"
    );
    let root = u.path("root").display().to_string();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(mounts.lines().all(|l| !l.contains(&root)), "{mounts}");
}

#[test]
fn interrupting_a_rootless_build_cancels_it_cleanly() {
    let Some(u) = User::get(SUB_USER, true) else { return };
    let Some(base) = u.busybox_base() else { return };
    cancel_rootless_build(&u, base, Interrupt::Kiln, libc::SIGINT);
    cancel_rootless_build(&u, base, Interrupt::Group, libc::SIGINT);
    cancel_rootless_build(&u, base, Interrupt::OwnThenForwarded, libc::SIGINT);
    cancel_rootless_build(&u, base, Interrupt::Kiln, libc::SIGTERM);
    // The next build sweeps what the interrupted ones left in tmp/ and works.
    let ctx = u.context("again", &format!("FROM {base}\nRUN echo again\n"));
    let progress = u.kiln_ok(&["build", "--progress=plain", ctx.to_str().unwrap()]);
    assert!(
        crate::run::step_lines(&progress).contains(&"again".to_string()),
        "{progress}"
    );
    assert_eq!(std::fs::read_dir(u.path("root/tmp")).unwrap().count(), 0);
}
