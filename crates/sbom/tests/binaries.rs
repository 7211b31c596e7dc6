//! Real binaries: a Go program built by Debian's Go (runc, which .ci/run installs) and a
//! Rust program built here by `cargo auditable`, each copied into a tree and scanned.

#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use kiln_sbom::{scan_packages, Kind, Limits};
use kiln_testkit::{require, require_tool, run_ok};

fn tree_with(bin: &Path, name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("usr/local/bin").join(name);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(bin, &dest).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn debians_runc_lists_the_go_standard_library_it_was_built_with() {
    let runc = Path::new("/usr/sbin/runc");
    if !require(runc.is_file(), "Debian's runc (/usr/sbin/runc) is not installed") {
        return;
    }
    let bytes = std::fs::read(runc).unwrap();
    // The toolchain version as the binary spells it, found without kiln-sbom's parser.
    let at = bytes
        .windows(14)
        .position(|w| w == b"\xff Go buildinf:")
        .expect("runc has Go build info");
    let tail = &bytes[at + 32..at + 64];
    let v = &tail[1..1 + usize::from(tail[0])];
    let go = String::from_utf8(v.to_vec()).unwrap();
    assert!(go.starts_with("go1."), "{go}");
    let tree = tree_with(runc, "runc");
    let ps = scan_packages(tree.path(), &Limits::default()).unwrap();
    let std = ps
        .iter()
        .find(|p| p.kind == Kind::Go && p.name == "stdlib")
        .unwrap_or_else(|| panic!("no stdlib in {ps:#?}"));
    assert_eq!(std.version, go);
    assert_eq!(std.purl, format!("pkg:golang/stdlib@{}", &go[2..]));
    assert_eq!(std.path, "/usr/local/bin/runc");
}

#[test]
fn a_cargo_auditable_binary_lists_its_crates() {
    if !require_tool("cargo-auditable") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let krate = work.path().join("hello-sbom");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"hello-sbom\"\nversion = \"0.3.1\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(krate.join("src/main.rs"), "fn main() { println!(\"hi\"); }\n").unwrap();
    run_ok(
        Command::new("cargo")
            .args(["auditable", "build", "--release", "--offline", "-q"])
            .env("CARGO_TARGET_DIR", work.path().join("target"))
            .current_dir(&krate),
    );
    let tree = tree_with(&work.path().join("target/release/hello-sbom"), "hello-sbom");
    let ps = scan_packages(tree.path(), &Limits::default()).unwrap();
    let purls: Vec<&str> = ps
        .iter()
        .filter(|p| p.kind == Kind::Rust)
        .map(|p| p.purl.as_str())
        .collect();
    assert_eq!(purls, ["pkg:cargo/hello-sbom@0.3.1"], "{ps:#?}");
}
