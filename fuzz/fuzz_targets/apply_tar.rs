//! The layer applier on any bytes: it must return Ok or an error — never panic, hang,
//! or write outside the root it was given. Each input is applied to a fresh root
//! inside a fresh parent directory that also holds a canary; afterwards the parent must
//! hold exactly the root and the unchanged canary.
#![no_main]

use std::path::Path;

use kiln_snapshotter::{apply_tar, ApplyOptions};
use libfuzzer_sys::fuzz_target;

const CANARY: &[u8] = b"kiln fuzz canary\n";

fn base() -> &'static Path {
    // tmpfs when there is one: the applier creates and removes many small files.
    if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm")
    } else {
        Path::new("/tmp")
    }
}

fuzz_target!(|data: &[u8]| {
    let parent = tempfile::Builder::new()
        .prefix("kiln-fuzz-apply-")
        .tempdir_in(base())
        .expect("temp dir");
    let root = parent.path().join("root");
    let canary = parent.path().join("canary");
    std::fs::create_dir(&root).expect("root");
    std::fs::write(&canary, CANARY).expect("canary");
    // Never as the privileged applier: devices and chown are the kernel's business,
    // and what is fuzzed here is path handling.
    let opts = ApplyOptions {
        privileged: false,
        devices: false,
    };
    let _ = apply_tar(&root, data, &opts);
    let mut names: Vec<String> = std::fs::read_dir(parent.path())
        .expect("parent readable")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["canary", "root"], "the applier wrote beside its root");
    let meta = std::fs::symlink_metadata(&canary).expect("canary");
    assert!(meta.file_type().is_file(), "canary replaced");
    assert_eq!(std::fs::read(&canary).expect("canary"), CANARY, "canary changed");
    // Let the tree be removed even where a layer left a directory without write bits.
    for e in walkdir::WalkDir::new(&root).into_iter().flatten() {
        if e.file_type().is_dir() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o755));
        }
    }
});
