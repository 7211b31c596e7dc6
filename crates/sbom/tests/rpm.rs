//! A real rpm database: Debian's `rpm` (sqlite backend) builds a package with `rpmbuild`
//! and installs it with `--justdb` into a tree's `/var/lib/rpm`; kiln-sbom's own SQLite
//! and header reader must list it with rpm's own name, version, licence and syft's purl.

#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use std::process::Command;

use kiln_sbom::{scan_packages, Limits};
use kiln_testkit::{require_tool, run_ok};

#[test]
fn a_package_installed_by_rpm_is_listed() {
    if !require_tool("rpm") || !require_tool("rpmbuild") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let top = work.path().join("build");
    std::fs::create_dir_all(top.join("SPECS")).unwrap();
    let spec = top.join("SPECS/hello.spec");
    std::fs::write(
        &spec,
        "Name: kiln-hello\nVersion: 1.2.3\nRelease: 4\nEpoch: 2\nSummary: test\n\
         License: MIT AND Apache-2.0\nBuildArch: noarch\n%description\ntest\n%files\n",
    )
    .unwrap();
    run_ok(
        Command::new("rpmbuild")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg("-bb")
            .arg(&spec),
    );
    let rpm = top.join("RPMS/noarch/kiln-hello-1.2.3-4.noarch.rpm");
    let root = work.path().join("root");
    let db = root.join("var/lib/rpm");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=fedora\nVERSION_ID=38\n").unwrap();
    let dbpath = format!("--dbpath={}", db.display());
    run_ok(Command::new("rpm").args([&dbpath, "--initdb"]));
    run_ok(
        Command::new("rpm")
            .args([&dbpath, "-i", "--justdb", "--nodeps", "--nosignature"])
            .arg(&rpm),
    );
    assert!(
        db.join("rpmdb.sqlite").is_file(),
        "rpm did not write an sqlite database"
    );
    let ps = scan_packages(&root, &Limits::default()).unwrap();
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!(ps[0].name, "kiln-hello");
    assert_eq!(ps[0].version, "1.2.3-4");
    assert_eq!(ps[0].license.as_deref(), Some("MIT AND Apache-2.0"));
    assert_eq!(
        ps[0].purl,
        "pkg:rpm/fedora/kiln-hello@1.2.3-4?arch=noarch&epoch=2&upstream=kiln-hello-1.2.3-4.src.rpm&distro=fedora-38"
    );
    assert_eq!(ps[0].path, "/var/lib/rpm/rpmdb.sqlite");
}
