//! The SBOM of a real Debian bookworm tree with `jq` installed by dpkg, plus a wheel
//! installed from PyPI and an npm package, checked by the SPDX project's own validator.
//!
//! The tree is made once by `debootstrap --variant=minbase --include=jq bookworm` and
//! cached under `target/kiln-fixtures/` (beside the `it` suite's Debian layout); each run
//! copies it and adds the Python and npm packages.

#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_image::Digest;
use kiln_sbom::{scan, BaseImage, ScanOptions};
use kiln_testkit::{require, require_tool, run, run_ok};
use serde_json::Value;

const MIRROR: &str = "http://deb.debian.org/debian";

/// The cached bookworm root with jq, and the cached `six` wheel, built on first use.
fn fixture() -> Option<(PathBuf, PathBuf)> {
    if !require(kiln_testkit::is_root(), "debootstrap needs root")
        || !require_tool("debootstrap")
        || !require_tool("pyspdxtools")
        || !require_tool("python3")
    {
        return None;
    }
    let fixtures = kiln_testkit::workspace_root().join("target/kiln-fixtures");
    let rootfs = fixtures.join("debian-bookworm-jq-rootfs");
    let wheels = fixtures.join("sbom-wheels");
    std::fs::create_dir_all(&fixtures).unwrap();
    if !rootfs.join("var/lib/dpkg/status").is_file() {
        let work = tempfile::Builder::new()
            .prefix("debian-jq-")
            .tempdir_in(&fixtures)
            .unwrap();
        let mirror = std::env::var("KILN_TEST_DEBIAN_MIRROR").unwrap_or_else(|_| MIRROR.to_string());
        run_ok(
            Command::new("debootstrap")
                .args(["--variant=minbase", "--include=jq", "bookworm"])
                .arg(work.path().join("rootfs"))
                .arg(&mirror),
        );
        std::fs::rename(work.path().join("rootfs"), &rootfs).unwrap();
    }
    if !wheels.join("done").is_file() {
        run_ok(
            Command::new("python3")
                .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d"])
                .arg(&wheels)
                .arg("six==1.16.0"),
        );
        std::fs::write(wheels.join("done"), "").unwrap();
    }
    Some((rootfs, wheels))
}

/// The `(version, purl, licenseDeclared)` of the package named `name` in the document.
fn package(doc: &Value, name: &str) -> (String, String, String) {
    let p = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("package {name} missing from the SBOM"));
    let purl = p["externalRefs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["referenceType"] == "purl")
        .unwrap()["referenceLocator"]
        .as_str()
        .unwrap()
        .to_string();
    (
        p["versionInfo"].as_str().unwrap().to_string(),
        purl,
        p["licenseDeclared"].as_str().unwrap().to_string(),
    )
}

/// The version dpkg itself reports for `name` in the tree.
fn dpkg_version(root: &Path, name: &str) -> String {
    run_ok(
        Command::new("dpkg-query")
            .arg("--admindir")
            .arg(root.join("var/lib/dpkg"))
            .args(["-W", "-f=${Version}", name]),
    )
}

#[test]
fn debian_with_jq_pip_and_npm_packages_validates_with_pyspdxtools() {
    let Some((rootfs, wheels)) = fixture() else { return };
    let work = tempfile::Builder::new()
        .prefix("sbom-")
        .tempdir_in(rootfs.parent().unwrap())
        .unwrap();
    let root = work.path().join("rootfs");
    run_ok(Command::new("cp").arg("-a").arg(&rootfs).arg(&root));
    // `pip install` of a wheel is an unzip into site-packages.
    let wheel = std::fs::read_dir(&wheels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("the six wheel");
    let site = root.join("usr/local/lib/python3.11/dist-packages");
    std::fs::create_dir_all(&site).unwrap();
    run_ok(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&site),
    );
    let npm = root.join("srv/app/node_modules/left-pad");
    std::fs::create_dir_all(&npm).unwrap();
    std::fs::write(
        npm.join("package.json"),
        r#"{"name":"left-pad","version":"1.3.0","license":"WTFPL","main":"index.js"}"#,
    )
    .unwrap();

    let base = BaseImage {
        name: "docker.io/library/debian:bookworm".into(),
        digest: Digest::of(b"a manifest"),
        platform: None,
    };
    let opts = ScanOptions {
        name: "debian-jq".into(),
        created: Some(1_700_000_000),
        base_images: vec![base.clone()],
        ..ScanOptions::default()
    };
    let json = scan(&root, &opts).unwrap().to_json();
    assert_eq!(json, scan(&root, &opts).unwrap().to_json(), "not reproducible");
    let file = work.path().join("sbom.spdx.json");
    std::fs::write(&file, &json).unwrap();
    let out = run(Command::new("pyspdxtools").arg("-i").arg(&file));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !said.contains("ERROR"),
        "pyspdxtools rejected the SBOM:\n{said}"
    );

    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    for (name, upstream) in [
        ("jq", ""),
        ("libjq1", "&upstream=jq"),
        ("libonig5", "&upstream=libonig"),
    ] {
        let (version, purl, _) = package(&doc, name);
        assert_eq!(version, dpkg_version(&root, name), "{name}");
        assert_eq!(
            purl,
            format!("pkg:deb/debian/{name}@{version}?arch=amd64{upstream}&distro=debian-12"),
            "{name}"
        );
    }
    let (_, _, jq_license) = package(&doc, "jq");
    assert!(jq_license.contains("MIT"), "jq's copyright says MIT: {jq_license}");
    assert_eq!(
        package(&doc, "six"),
        ("1.16.0".into(), "pkg:pypi/six@1.16.0".into(), "MIT".into())
    );
    assert_eq!(
        package(&doc, "left-pad"),
        ("1.3.0".into(), "pkg:npm/left-pad@1.3.0".into(), "WTFPL".into())
    );
    let (version, _, _) = package(&doc, &base.name);
    assert_eq!(version, base.digest.to_string());
    let packages = doc["packages"].as_array().unwrap().len();
    assert!(
        packages > 90,
        "a minbase bookworm has about 100 packages, got {packages}"
    );
}
