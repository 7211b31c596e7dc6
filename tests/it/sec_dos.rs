//! Hostile Dockerfiles that try to exhaust the builder (issue 18, items 14, 15 and 17):
//! memory stays a small multiple of the Dockerfile, deep trees cost what they hold, and
//! a full disk is named as such.

use std::process::{Command, Stdio};

use crate::common::{context, kiln};

/// Runs `cmd` to completion; returns whether it succeeded, its stderr and its peak
/// resident set size in bytes (from `wait4`, so only this child is counted).
// The child is reaped by `wait4`, which clippy does not know.
#[allow(clippy::zombie_processes)]
// rustix has no wait4 with a resource usage: the call stays unsafe.
#[allow(unsafe_code)]
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

/// SmallRoot is a tmpfs of `size` mounted over a [`Kiln`]'s root, unmounted on drop.
struct SmallRoot<'a> {
    kiln: &'a kiln_testkit::Kiln,
}

impl<'a> SmallRoot<'a> {
    fn mount(kiln: &'a kiln_testkit::Kiln, size: &str) -> Option<Self> {
        if !crate::common::require(
            kiln_testkit::is_root(),
            "mounting a small tmpfs as the state root needs root",
        ) {
            return None;
        }
        crate::common::run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(kiln.root()),
        );
        Some(SmallRoot { kiln })
    }

    /// Names under `tmp/` of the root: what a failed build left behind.
    fn tmp_leftovers(&self) -> Vec<String> {
        match std::fs::read_dir(self.kiln.root().join("tmp")) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for SmallRoot<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.kiln.root()).status();
    }
}

fn random_file(len: usize) -> Vec<u8> {
    // xorshift: incompressible enough that the layer is as large as the file.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Asserts a failed build's stderr names ENOSPC and a path inside the root, that it left
/// nothing in `tmp/`, and that `kiln fsck` finds the store clean.
fn assert_full_disk_error(root: &SmallRoot<'_>, stderr: &str, what: &str) {
    let ours = root.kiln.root().to_string_lossy().into_owned();
    let error = stderr
        .lines()
        .find(|l| l.starts_with("ERROR:"))
        .unwrap_or_else(|| panic!("{what}: no ERROR line:\n{stderr}"));
    assert!(
        error.contains("No space left on device") && error.contains(&format!("`{ours}/")),
        "{what}: the error must name the cause and the path:\n{stderr}"
    );
    // The progress line of the failed step says the same.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with('#') && l.contains("ERROR: ") && l.contains("No space left on device")),
        "{what}: the step's progress error lacks the cause:\n{stderr}"
    );
    assert_eq!(root.tmp_leftovers(), Vec::<String>::new(), "{what}: temp files left");
    let fsck = root.kiln.ok(&["fsck"]);
    assert!(fsck.contains(" 0 problems"), "{what}: fsck after the failure:\n{fsck}");
}

#[test]
fn full_disk_copy_and_commit_name_enospc_and_the_path() {
    let k = kiln();
    let Some(root) = SmallRoot::mount(&k, "8m") else { return };
    // 20 MB does not fit in the step's upper directory: the copy itself fails.
    let ctx = crate::common::context(&[("Dockerfile", "FROM scratch\nCOPY big /big\n")]);
    std::fs::write(ctx.path().join("big"), random_file(20 << 20)).unwrap();
    let err = k.fails(&["build", "--progress=plain", ctx.path().to_str().unwrap()]);
    assert_full_disk_error(&root, &err, "COPY of 20 MB");
    // 5 MB fits once, but not again as the layer blob: writing the layer fails (this
    // was `cannot archive `…`` and nothing more).
    std::fs::write(ctx.path().join("big"), random_file(5 << 20)).unwrap();
    let err = k.fails(&["build", "--progress=plain", ctx.path().to_str().unwrap()]);
    assert_full_disk_error(&root, &err, "layer of 5 MB");
    // With space again the same root builds.
    std::fs::write(ctx.path().join("big"), b"small").unwrap();
    k.ok(&["build", "-q", ctx.path().to_str().unwrap()]);
}

#[test]
fn full_disk_unpack_names_enospc_and_the_path() {
    // An image with a 5 MB layer, as an OCI layout made in a roomy root.
    let roomy = kiln();
    let ctx = crate::common::context(&[("Dockerfile", "FROM scratch\nCOPY big /big\n")]);
    std::fs::write(ctx.path().join("big"), random_file(5 << 20)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    roomy.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=oci,dest={},tar=false,name=big:1", layout.display()),
        ctx.path().to_str().unwrap(),
    ]);
    // Its blob fits in 8 MB, the blob and its unpacked tree do not.
    let k = kiln();
    let Some(root) = SmallRoot::mount(&k, "8m") else { return };
    let df = format!("FROM oci-layout://{}:1\nCOPY Dockerfile /x\n", layout.display());
    let ctx = crate::common::context(&[("Dockerfile", &df)]);
    let err = k.fails(&["build", "--progress=plain", ctx.path().to_str().unwrap()]);
    assert_full_disk_error(&root, &err, "unpacking a 5 MB layer");
}

#[test]
fn full_disk_after_run_names_enospc_and_the_path() {
    let k = kiln();
    let Some(root) = SmallRoot::mount(&k, "12m") else {
        return;
    };
    let Some(base) = crate::run::busybox_base(&k) else {
        return;
    };
    // 6 MB fits in the step's upper directory, not again as the layer blob.
    let df = format!("FROM {base}\nRUN head -c 6000000 /dev/urandom > /f\n");
    let ctx = crate::common::context(&[("Dockerfile", &df)]);
    let err = k.fails(&["build", "--progress=plain", ctx.path().to_str().unwrap()]);
    assert_full_disk_error(&root, &err, "RUN writing 6 MB");
}
