//! Whole-tree scans of small hand-made roots, hostile ones included.

#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::binary::tests::{dep_v0, go_section};
use crate::elf::tests::elf64;
use crate::{scan, scan_packages, Kind, Limits, SbomError, ScanOptions};

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn purls(root: &Path, limits: &Limits) -> Vec<String> {
    scan_packages(root, limits)
        .unwrap()
        .into_iter()
        .map(|p| p.purl)
        .collect()
}

/// A root with one package of every kind the scanners read.
fn every_kind(root: &Path) {
    write(root, "etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n");
    write(
        root,
        "var/lib/dpkg/status",
        include_bytes!("../../../testdata/sbom/dpkg/status"),
    );
    write(
        root,
        "var/lib/dpkg/status.d/base-files",
        b"Package: base-files\nVersion: 12.4\nArchitecture: amd64\n",
    );
    write(
        root,
        "var/lib/dpkg/status.d/base-files.md5sums",
        b"Package: nope\nVersion: 1\n",
    );
    write(
        root,
        "usr/share/doc/jq/copyright",
        b"Files: *\nLicense: MIT\n\nFiles: src/x.c\nLicense: public-domain\n",
    );
    write(
        root,
        "lib/apk/db/installed",
        include_bytes!("../../../testdata/sbom/apk/installed"),
    );
    write(
        root,
        "usr/lib/sysimage/rpm/rpmdb.sqlite",
        include_bytes!("../../../testdata/sbom/rpm/rpmdb.sqlite"),
    );
    write(
        root,
        "usr/lib/python3/dist-packages/Typing_Extensions-4.9.0.dist-info/METADATA",
        include_bytes!("../../../testdata/sbom/python/Typing_Extensions-4.9.0.dist-info/METADATA"),
    );
    write(
        root,
        "usr/lib/python3/dist-packages/six-1.16.0.egg-info",
        b"Name: six\nVersion: 1.16.0\nLicense: MIT\n",
    );
    write(
        root,
        "app/node_modules/@scope/pkg/package.json",
        br#"{"name":"@scope/pkg","version":"1.0.0","license":"ISC"}"#,
    );
    write(
        root,
        "app/package-lock.json",
        include_bytes!("../../../testdata/sbom/npm/package-lock.json"),
    );
    let go = go_section(
        "go1.22.1",
        "path\tex.com/cmd\nmod\tex.com/cmd\tv1.0.0\t\ndep\tgithub.com/a/b\tv0.3.0\th1:x=\n",
    );
    let rust = dep_v0(r#"{"packages":[{"name":"tool","version":"0.2.0","source":"local","root":true}]}"#);
    write(
        root,
        "usr/local/bin/tool",
        &elf64(&[(".go.buildinfo", &go), (".dep-v0", &rust)]),
    );
    std::fs::set_permissions(root.join("usr/local/bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn every_scanner_contributes_and_the_order_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    every_kind(dir.path());
    let ps = scan_packages(dir.path(), &Limits::default()).unwrap();
    let kinds: std::collections::BTreeSet<Kind> = ps.iter().map(|p| p.kind).collect();
    assert_eq!(kinds.len(), 7, "{ps:#?}");
    let got: Vec<&str> = ps.iter().map(|p| p.purl.as_str()).collect();
    for want in [
        "pkg:deb/debian/base-files@12.4?arch=amd64&distro=debian-12",
        "pkg:deb/debian/jq@1.6-2.1?arch=amd64&distro=debian-12",
        "pkg:apk/debian/musl@1.2.4-r2?arch=x86_64&distro=debian-12",
        "pkg:rpm/debian/bash@5.2.15-3.fc38?arch=x86_64&epoch=1&upstream=bash-5.2.15-3.fc38.src.rpm&distro=debian-12",
        "pkg:pypi/six@1.16.0",
        "pkg:pypi/typing-extensions@4.9.0",
        "pkg:npm/%40scope/pkg@1.0.0",
        "pkg:npm/ms@2.1.3",
        "pkg:golang/github.com/a/b@v0.3.0",
        "pkg:golang/stdlib@1.22.1",
        "pkg:cargo/tool@0.2.0",
    ] {
        assert!(got.contains(&want), "{want} missing from {got:#?}");
    }
    assert!(!got.iter().any(|p| p.contains("nope")), "md5sums read as a record");
    let jq = ps.iter().find(|p| p.name == "jq").unwrap();
    assert_eq!(jq.license.as_deref(), Some("MIT\npublic-domain"));
    let tool = ps.iter().find(|p| p.name == "tool").unwrap();
    assert_eq!(tool.path, "/usr/local/bin/tool");

    let opts = ScanOptions {
        name: "example".into(),
        created: Some(1_700_000_000),
        ..ScanOptions::default()
    };
    let a = scan(dir.path(), &opts).unwrap().to_json();
    let b = scan(dir.path(), &opts).unwrap().to_json();
    assert_eq!(a, b, "two scans of one tree differ");
    assert!(a.contains("\"created\": \"2023-11-14T22:13:20Z\""), "{a}");
    assert!(
        a.contains("\"licenseDeclared\": \"MIT AND LicenseRef-public-domain\""),
        "{a}"
    );
    assert!(a.contains("\"licenseId\": \"LicenseRef-public-domain\""), "{a}");
}

#[test]
fn symlinks_never_lead_out_of_the_root() {
    let outside = tempfile::tempdir().unwrap();
    write(
        outside.path(),
        "status",
        b"Package: host-secret\nStatus: install ok installed\nVersion: 1\n",
    );
    write(
        outside.path(),
        "mods/evil/package.json",
        br#"{"name":"host-npm","version":"1.0.0"}"#,
    );
    write(outside.path(), "copyright", b"License: HOST-LICENSE\n");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/doc/jq")).unwrap();
    // Absolute and relative escapes, a directory symlink and a last-component one.
    symlink(outside.path().join("status"), root.join("var/lib/dpkg/status")).unwrap();
    symlink(outside.path(), root.join("var/lib/dpkg/status.d")).unwrap();
    symlink(outside.path().join("mods"), root.join("app/node_modules")).unwrap();
    symlink(
        "../../../../../../../../copyright",
        root.join("usr/share/doc/jq/copyright"),
    )
    .unwrap();
    let ps = purls(root, &Limits::default());
    assert!(ps.is_empty(), "read through a symlink out of the root: {ps:?}");
}

#[test]
fn a_huge_status_file_is_read_only_up_to_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut head = b"Package: first\nStatus: install ok installed\nVersion: 1\n\n".to_vec();
    head.resize(4096, b'\n');
    write(dir.path(), "var/lib/dpkg/status", &head);
    // A 10 GB sparse file: everything past the cap (and the package at its end) is unread.
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("var/lib/dpkg/status"))
        .unwrap();
    f.set_len(10 << 30).unwrap();
    let limits = Limits {
        max_file_bytes: 1 << 20,
        ..Limits::default()
    };
    let ps = purls(dir.path(), &limits);
    assert_eq!(ps, ["pkg:deb/debian/first@1"]);
}

#[test]
fn too_many_packages_is_an_error_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut status = String::new();
    for i in 0..50 {
        status.push_str(&format!("Package: p{i}\nStatus: install ok installed\nVersion: 1\n\n"));
    }
    write(dir.path(), "var/lib/dpkg/status", status.as_bytes());
    let limits = Limits {
        max_packages: 10,
        ..Limits::default()
    };
    let err = scan_packages(dir.path(), &limits).unwrap_err();
    assert!(matches!(err, SbomError::TooManyPackages { limit: 10, .. }), "{err}");
    assert!(err.to_string().contains("more than 10 packages"), "{err}");
}

#[test]
fn too_many_entries_is_an_error_not_a_partial_list() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        write(dir.path(), &format!("d/f{i}"), b"");
    }
    let limits = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let err = scan_packages(dir.path(), &limits).unwrap_err();
    assert!(matches!(err, SbomError::TooManyEntries { limit: 10, .. }), "{err}");
    assert!(scan_packages(dir.path(), &Limits::default()).unwrap().is_empty());
}

#[test]
fn garbage_everywhere_gives_no_packages_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let junk: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for rel in [
        "etc/os-release",
        "var/lib/dpkg/status",
        "lib/apk/db/installed",
        "var/lib/rpm/rpmdb.sqlite",
        "x/y.dist-info/METADATA",
        "node_modules/z/package.json",
        "package-lock.json",
    ] {
        write(root, rel, &junk);
    }
    let mut bin = b"\x7fELF\x02\x01".to_vec();
    bin.extend_from_slice(&junk);
    write(root, "bin/fake", &bin);
    std::fs::set_permissions(root.join("bin/fake"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let _ = scan(root, &ScanOptions::default()).unwrap();
    let err = scan(&root.join("missing"), &ScanOptions::default()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}
