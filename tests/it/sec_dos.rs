//! Hostile Dockerfiles that try to exhaust the builder (issue 18, items 14, 15 and 17):
//! memory stays a small multiple of the Dockerfile, deep trees cost what they hold, and
//! a full disk is named as such.

use std::process::{Command, Stdio};

use crate::common::{context, kiln};

/// Runs `cmd` to completion; returns whether it succeeded, its stderr and its peak
/// resident set size in bytes (from `wait4`, so only this child is counted).
// The child is reaped by `wait4`, which clippy does not know.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (bool, String, u64) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut stderr).expect("read stderr");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 only writes into the two
    // out-parameters, which live until it returns.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child; see above for the pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // ru_maxrss is in KiB on Linux.
    (ok, stderr, usage.ru_maxrss as u64 * 1024)
}

/// The documented bound (docs/dockerfile.md): a build's peak memory grows by at most
/// 4× the size of a heredoc in its Dockerfile (file text, the body, its expansion).
/// It was 13× (a 100 MB heredoc took 1.2 GB).
#[test]
fn big_heredoc_costs_a_small_multiple_of_its_size() {
    const SIZE: usize = 8 << 20;
    let line = format!("{}$HOME\n", "x".repeat(93));
    let body = line.repeat(SIZE / line.len());
    let peak = |body: &str| {
        let k = kiln();
        // Unquoted: the body is expanded, the costlier path.
        let ctx = context(&[(
            "Dockerfile",
            &format!("FROM scratch\nENV HOME=/h\nCOPY <<EOF /big\n{body}EOF\n"),
        )]);
        let (ok, stderr, rss) = run_measured(k.cmd().args(["build", "-q", ctx.path().to_str().unwrap()]));
        assert!(ok, "kiln build failed:\n{stderr}");
        rss
    };
    let small = peak("small\n");
    let big = peak(&body);
    let grown = big.saturating_sub(small);
    assert!(
        grown < 4 * SIZE as u64,
        "a {} MiB heredoc raised peak RSS by {} MiB ({small} → {big} bytes), over 4×",
        SIZE >> 20,
        grown >> 20
    );
}

#[test]
fn oversized_dockerfile_is_refused_before_it_is_read() {
    let k = kiln();
    let ctx = context(&[]);
    let df = ctx.path().join("Dockerfile");
    // A sparse 1 GiB file: reading it whole would take 1 GiB of memory.
    let f = std::fs::File::create(&df).unwrap();
    f.set_len(1 << 30).unwrap();
    let (ok, stderr, rss) = run_measured(k.cmd().args(["build", "-q", ctx.path().to_str().unwrap()]));
    assert!(!ok, "a 1 GiB Dockerfile was accepted");
    assert!(
        stderr.contains(&format!("Dockerfile `{}` is larger than the limit", df.display()))
            && stderr.contains("16 MiB"),
        "{stderr}"
    );
    assert!(rss < 256 << 20, "peak RSS {rss} bytes while refusing the file");
}
