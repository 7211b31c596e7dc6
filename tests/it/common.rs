use std::path::{Path, PathBuf};
use std::process::Command;

pub use kiln_testkit::{require, require_tool, run, run_ok, Dockerd, Kiln, Registry};

pub fn kiln() -> Kiln {
    Kiln::new(env!("CARGO_BIN_EXE_kiln"))
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/contexts")
        .join(name)
}

/// Copies a fixture into a temp dir (so tests can change modes and files).
pub fn fixture_copy(name: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("kiln-ctx-").tempdir().unwrap();
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", fixture(name).display()))
            .arg(d.path()),
    );
    d
}

/// Writes a context from (path, contents) pairs.
pub fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("kiln-ctx-").tempdir().unwrap();
    for (p, c) in files {
        let path = d.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, c).unwrap();
    }
    d
}

/// Builds `ctx` with `-o type=tar` and returns the final root filesystem's tar bytes.
pub fn build_rootfs_tar(k: &Kiln, ctx: &Path) -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let tarball = d.path().join("rootfs.tar");
    k.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=tar,dest={}", tarball.display()),
        ctx.to_str().unwrap(),
    ]);
    std::fs::read(&tarball).unwrap()
}

/// Builds `ctx` with `-o type=local` into `<temp dir>/rootfs`; returns both (the temp
/// dir keeps the tree alive).
pub fn build_rootfs_dir(k: &Kiln, ctx: &Path) -> (tempfile::TempDir, PathBuf) {
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs");
    k.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=local,dest={}", dest.display()),
        ctx.to_str().unwrap(),
    ]);
    (out, dest)
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

/// `skopeo inspect [--config] REF` as JSON (`docker://` over plain HTTP), or None
/// when skopeo is missing.
pub fn skopeo_inspect(reference: &str, config: bool) -> Option<serde_json::Value> {
    if !require_tool("skopeo") {
        return None;
    }
    let mut c = Command::new("skopeo");
    c.arg("inspect");
    // The test registries are plain HTTP on loopback.
    if reference.starts_with("docker://") {
        c.arg("--tls-verify=false");
    }
    if config {
        c.arg("--config");
    }
    Some(json(&run_ok(c.arg(reference))))
}

/// Unpacks `layout:tag` with umoci and returns (bundle dir guard, rootfs path).
pub fn umoci_unpack(layout: &Path, tag: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    if !require_tool("umoci") {
        return None;
    }
    let d = tempfile::Builder::new().prefix("kiln-umoci-").tempdir().unwrap();
    let bundle = d.path().join("bundle");
    let mut c = Command::new("umoci");
    c.arg("unpack");
    if !kiln_testkit::is_root() {
        c.arg("--rootless");
    }
    run_ok(c.arg("--image").arg(format!("{}:{tag}", layout.display())).arg(&bundle));
    Some((d, bundle.join("rootfs")))
}

pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

pub fn owner_of(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

/// Lists a tar file's entries as `name mode uid/gid` lines.
pub fn tar_listing(bytes: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(bytes);
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            format!(
                "{} {:o} {}/{}",
                e.path().unwrap().display(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap()
            )
        })
        .collect()
}

/// The files under `dir`, relative, sorted (directories end in `/`).
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// The text of the member `name` of a tar archive, if present.
pub fn tar_member(archive: &[u8], name: &str) -> Option<String> {
    let mut ar = tar::Archive::new(archive);
    ar.entries().unwrap().map(|e| e.unwrap()).find_map(|mut e| {
        (e.path().unwrap().to_str() == Some(name)).then(|| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            s
        })
    })
}
