//! The store never lies: a `kiln prune` killed at any moment leaves either the old state
//! or the new, `kiln fsck` finds the damage it could not prevent, and a killed pull's
//! partial blob is shown by `kiln du` and resumed by the next pull.

use std::path::Path;
use std::process::Stdio;

use crate::cache::Rng;
use crate::common::*;
use crate::registry::{assert_blobs_whole, push_busybox};
use crate::run::busybox_base;

/// A fixed SOURCE_DATE_EPOCH makes rebuilt layers and history times identical, so a
/// rebuild after a prune must give the very same image id.
const EPOCH: &str = "1700000000";

/// Many files in the snapshots, so that deleting them takes long enough to be killed
/// mid-way; the last step reads every name the lower tree holds.
const DOCKERFILE: &str = "FROM bb:1
COPY src/ /src/
RUN mkdir /many && cd /many && i=0 && while [ $i -lt 2000 ]; do echo $i > f$i; i=$((i+1)); done
RUN find /src /many /bin | sort | md5sum > /sum
";

fn project() -> tempfile::TempDir {
    let mut files: Vec<(String, String)> = vec![("Dockerfile".into(), DOCKERFILE.into())];
    for i in 0..200 {
        files.push((format!("src/f{i}.txt"), format!("file {i}\n")));
    }
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
    context(&borrowed)
}

/// What a build gave: the image id and the root file system's listing and `/sum`.
#[derive(Debug, PartialEq)]
struct Built {
    id: String,
    tree: Vec<String>,
    sum: String,
}

/// Fails with a short account of how `got` differs from `expected`.
fn assert_same(got: &Built, expected: &Built, why: &str) {
    if got != expected {
        let missing: Vec<&String> = expected.tree.iter().filter(|p| !got.tree.contains(p)).take(5).collect();
        panic!(
            "{why}: the build differs: id {} (expected {}), sum {:?} (expected {:?}), {} entries (expected {}), missing e.g. {missing:?}",
            got.id,
            expected.id,
            got.sum,
            expected.sum,
            got.tree.len(),
            expected.tree.len()
        );
    }
}

fn build(k: &Kiln, ctx: &Path) -> Built {
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs");
    let res = run(k.cmd().env("SOURCE_DATE_EPOCH", EPOCH).args([
        "build",
        "-q",
        "-t",
        "app:1",
        "-o",
        &format!("type=local,dest={}", dest.display()),
        ctx.to_str().unwrap(),
    ]));
    assert!(
        res.status.success(),
        "build failed:\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    Built {
        id: String::from_utf8_lossy(&res.stdout).trim().to_string(),
        tree: tree(&dest),
        sum: std::fs::read_to_string(dest.join("sum")).unwrap_or_default(),
    }
}

/// Runs `kiln fsck ARGS` and returns (success, stdout + stderr).
fn fsck(k: &Kiln, args: &[&str]) -> (bool, String) {
    let out = run(k.cmd().arg("fsck").args(args));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn seed() -> u64 {
    let seed = std::env::var("KILN_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("torture seed: {seed} (KILN_TORTURE_SEED={seed} repeats this run)");
    seed
}

#[test]
fn prune_killed_at_random_moments_never_corrupts_a_later_build() {
    if !kiln_testkit::is_root() && !require(false, "the prune torture test runs RUN steps as root") {
        return;
    }
    let seed = seed();
    let mut rng = Rng(seed);
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let ctx = project();
    let expected = build(&k, ctx.path());
    assert!(
        expected.tree.iter().any(|p| p == "many/f1999"),
        "{:?}",
        expected.tree.len()
    );

    // An uninterrupted prune: how long one takes, and that a rebuild after it is equal.
    let start = std::time::Instant::now();
    k.ok(&["prune", "-a"]);
    let full = start.elapsed();
    assert_same(&build(&k, ctx.path()), &expected, "a rebuild after a whole prune");

    for round in 0..4 {
        let delay = std::time::Duration::from_micros(rng.next() % (full.as_micros() as u64).max(1));
        let mut child = k
            .cmd()
            .args(["prune", "-a"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        kiln_testkit::kill(child.id(), libc::SIGKILL);
        let _ = child.wait();
        let why = format!("seed {seed}, round {round}, prune killed after {delay:?} (a whole one took {full:?})");
        // Nothing a killed prune leaves is damage: fsck, plain and deep, finds none.
        for args in [&[][..], &["--deep"][..]] {
            let (ok, text) = fsck(&k, args);
            assert!(ok && text.contains(" 0 problems"), "{why}: fsck {args:?}:\n{text}");
        }
        // A partly deleted snapshot would be used as a lower tree: files go missing
        // from the output, or the last step lists fewer names and changes the id.
        assert_same(&build(&k, ctx.path()), &expected, &why);
    }
}

/// The snapshot directories (chain ids) of a root: merged trees and layer directories.
fn snapshot_dirs(k: &Kiln) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = ["snapshots-v1", "layerdirs-v1"]
        .iter()
        .flat_map(|b| std::fs::read_dir(k.root().join(b)).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn fsck_finds_an_incomplete_or_altered_snapshot_and_builds_never_use_one() {
    if !kiln_testkit::is_root() && !require(false, "the fsck snapshot test runs RUN steps as root") {
        return;
    }
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let ctx = project();
    let expected = build(&k, ctx.path());
    let (ok, text) = fsck(&k, &["--deep"]);
    assert!(ok && text.contains(" 0 problems"), "a fresh root is sound:\n{text}");

    // A tree holding /many (the RUN's layer directory, or with the copy snapshotter a
    // merged tree): half of /many gone, as an interrupted delete leaves it.
    let snap = snapshot_dirs(&k)
        .into_iter()
        .find(|p| p.join("many/f999").exists())
        .expect("a snapshot of the RUN's files");
    let chain = snap.file_name().unwrap().to_string_lossy().into_owned();
    for i in 0..1000 {
        std::fs::remove_file(snap.join(format!("many/f{i}"))).unwrap();
    }
    let (ok, text) = fsck(&k, &[]);
    assert!(
        !ok && text.contains(&chain) && text.contains("kiln fsck --repair"),
        "{text}"
    );
    let (ok, text) = fsck(&k, &["--repair"]);
    assert!(
        ok && text.contains("REPAIRED: removed ") && text.contains(&format!(" {chain}")),
        "{text}"
    );
    assert!(!snap.exists());
    assert_same(&build(&k, ctx.path()), &expected, "after the repair");
    let (ok, text) = fsck(&k, &["--deep"]);
    assert!(ok && text.contains(" 0 problems"), "{text}");

    // Same names and sizes, other bytes: only the deep check, which compares the tree
    // with its layers, can see it.
    let snap = snapshot_dirs(&k)
        .into_iter()
        .find(|p| p.join("src/f7.txt").exists())
        .expect("the COPY's snapshot");
    let chain = snap.file_name().unwrap().to_string_lossy().into_owned();
    let f = snap.join("src/f7.txt");
    std::fs::remove_file(&f).unwrap();
    std::fs::write(&f, "file X\n").unwrap();
    let (ok, text) = fsck(&k, &[]);
    assert!(
        ok && text.contains(" 0 problems"),
        "plain fsck reads no file contents:\n{text}"
    );
    let (ok, text) = fsck(&k, &["--deep"]);
    assert!(!ok && text.contains(&chain) && text.contains("src/f7.txt"), "{text}");
    let (ok, text) = fsck(&k, &["--deep", "--repair"]);
    assert!(ok && text.contains("REPAIRED"), "{text}");
    assert_same(&build(&k, ctx.path()), &expected, "after the deep repair");
}

#[test]
fn a_half_deleted_snapshot_left_by_an_older_kiln_is_not_used() {
    if !kiln_testkit::is_root() && !require(false, "the fsck snapshot test runs RUN steps as root") {
        return;
    }
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let ctx = project();
    let expected = build(&k, ctx.path());
    // An older kiln's `prune -a`, killed: cache records gone, trees half deleted and
    // without the record a complete snapshot has.
    for e in std::fs::read_dir(k.root().join("cache-v1")).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    for snap in snapshot_dirs(&k) {
        let _ = std::fs::remove_file(snap.with_extension("json"));
        for e in std::fs::read_dir(&snap).unwrap().flatten() {
            if e.file_name() == "many" || e.file_name() == "src" {
                std::fs::remove_dir_all(e.path()).unwrap();
            }
        }
    }
    assert_same(
        &build(&k, ctx.path()),
        &expected,
        "over an older kiln's half-deleted trees",
    );
    let (ok, text) = fsck(&k, &[]);
    assert!(ok && text.contains(" 0 problems"), "{text}");
}

/// A loopback proxy to `upstream` that logs every request head and, while `stall` is
/// set, stops forwarding a response after `stall_after` bytes (holding the connection
/// open, as a registry that hangs mid-blob).
struct StallProxy {
    addr: String,
    stall: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl StallProxy {
    fn start(upstream: String, stall_after: usize) -> StallProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stall = Arc::new(AtomicBool::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (st, sd, hd) = (stall.clone(), stalled.clone(), heads.clone());
        std::thread::spawn(move || {
            // Bounded: at most 200 connections, then the proxy stops.
            for client in listener.incoming().take(200) {
                let Ok(mut client) = client else { continue };
                let Ok(mut server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let hd = hd.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        let n = match c2.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        hd.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                        if s2.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let (st, sd) = (st.clone(), sd.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    let mut sent = 0usize;
                    loop {
                        let n = match server.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if st.load(Ordering::SeqCst) && sent + n > stall_after {
                            let _ = client.write_all(&buf[..stall_after.saturating_sub(sent)]);
                            sd.store(true, Ordering::SeqCst);
                            // Hang until the client goes away (bounded: 60 s).
                            let _ = client.set_read_timeout(Some(std::time::Duration::from_secs(60)));
                            let _ = client.read(&mut [0u8; 1]);
                            break;
                        }
                        if client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n;
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        StallProxy {
            addr,
            stall,
            stalled,
            heads,
        }
    }
}

/// The `Partial downloads` row of `kiln du`: (count, size).
fn du_partial(k: &Kiln) -> Option<(String, String)> {
    let du = k.ok(&["du"]);
    du.lines().find(|l| l.starts_with("Partial")).map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f[2].to_string(), f[3].to_string())
    })
}

#[test]
fn a_killed_pull_is_shown_by_du_and_resumed() {
    use std::sync::atomic::Ordering;
    let Some(reg) = Registry::start() else { return };
    let k = kiln();
    if push_busybox(&k, &reg).is_none() {
        return;
    }
    // The busybox layer is ~1 MB compressed: hang 300 kB into it.
    let proxy = StallProxy::start(reg.host.clone(), 300_000);
    let image = format!("{}/busybox:1", proxy.addr);
    let fresh = kiln();
    let mut child = fresh
        .cmd()
        .args(["pull", &image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !proxy.stalled.load(Ordering::SeqCst) {
        assert!(std::time::Instant::now() < deadline, "the pull never reached the blob");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Let the bytes before the stall reach the disk.
    std::thread::sleep(std::time::Duration::from_millis(500));
    kiln_testkit::kill(child.id(), libc::SIGKILL);
    let _ = child.wait();

    let (count, size) = du_partial(&fresh).expect("`kiln du` has a `Partial downloads` row");
    assert_eq!(count, "1", "one partial blob");
    assert_ne!(size, "0B");

    proxy.stall.store(false, Ordering::SeqCst);
    proxy.heads.lock().unwrap().clear();
    fresh.ok(&["pull", &image]);
    let heads = proxy.heads.lock().unwrap().join("\n").to_ascii_lowercase();
    let range = heads
        .lines()
        .find_map(|l| l.strip_prefix("range: bytes="))
        .unwrap_or_else(|| panic!("the second pull sent no Range request:\n{heads}"));
    let from: u64 = range.trim().trim_end_matches('-').parse().unwrap();
    assert!(from >= 100_000, "resumed from byte {from}");
    assert_blobs_whole(&fresh);
    assert_eq!(
        du_partial(&fresh).map(|p| p.0),
        Some("0".to_string()),
        "the partial became the blob"
    );
    let (ok, text) = fsck(&fresh, &[]);
    assert!(ok && text.contains(" 0 problems"), "{text}");
}
