//! Hostile Dockerfiles that try to exhaust the builder (issue 18, items 14, 15 and 17):
//! memory stays a small multiple of the Dockerfile, deep trees cost what they hold, and
//! a full disk is named as such.

use std::process::{Command, Stdio};

use crate::common::{context, kiln, require};

/// Runs `cmd` to completion; returns whether it succeeded, its stderr and its peak
/// resident set size in bytes, or None (a skip) without GNU time.
///
/// The peak comes from GNU `time` (`%M`, its child's `ru_maxrss`), which forks kiln
/// from its own small process. A child spawned by this test process directly would not
/// do: at execve Linux records the old address space's high-water mark in the process's
/// `maxrss`, and a child forked or vforked from the test binary starts with the test
/// binary's (hundreds of MiB while other tests hold archives in memory: this test once
/// saw 361 MiB for a kiln that used 32).
fn run_measured(cmd: &Command) -> Option<(bool, String, u64)> {
    if !require(
        std::path::Path::new("/usr/bin/time").is_file(),
        "GNU time (/usr/bin/time, Debian's `time`) is not installed",
    ) {
        return None;
    }
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(out.path())
        .arg(cmd.get_program());
    timed.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let o = timed
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("spawn /usr/bin/time");
    let kib: u64 = std::fs::read_to_string(out.path())
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("time -f %M wrote no number");
    Some((
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        kib * 1024,
    ))
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
        let (ok, stderr, rss) = run_measured(k.cmd().args(["build", "-q", ctx.path().to_str().unwrap()]))?;
        assert!(ok, "kiln build failed:\n{stderr}");
        Some(rss)
    };
    let Some(small) = peak("small\n") else { return };
    let Some(big) = peak(&body) else { return };
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
    let Some((ok, stderr, rss)) = run_measured(k.cmd().args(["build", "-q", ctx.path().to_str().unwrap()])) else {
        return;
    };
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
