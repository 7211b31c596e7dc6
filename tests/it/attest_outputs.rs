//! `BUILDKIT_SBOM_SCAN_STAGE` / `BUILDKIT_SBOM_SCAN_CONTEXT` as BuildKit reads them (an
//! extra SPDX statement per marked stage, only through a declared `ARG`), and
//! attestations written as files beside the root filesystem by `-o type=local` and
//! `-o type=tar`, named as BuildKit's local exporter names them.

use std::collections::BTreeMap;
use std::process::Command;

use sha2::Digest as _;

use crate::attest::{attested, build_oci};
use crate::common::*;

const SPDX: &str = "https://spdx.dev/Document";
const INSTALLER: &str = "pip\n";

/// A two-stage build: the `builder` stage holds a Python distribution (requests
/// 2.31.0) the final image lacks; `stage_args` go into the builder stage, `global`
/// before the first FROM, `final_args` into the final stage.
fn two_stages(global: &str, stage_args: &str, final_args: &str) -> tempfile::TempDir {
    let df = format!(
        "{global}\n\
         FROM scratch AS builder\n\
         {stage_args}\n\
         COPY site/ /usr/local/lib/python3.11/dist-packages/\n\
         FROM scratch\n\
         {final_args}\n\
         COPY --from=builder /usr/local/lib/python3.11/dist-packages/requests-2.31.0.dist-info/INSTALLER /installer\n"
    );
    context(&[
        ("Dockerfile", &df),
        (
            "site/requests-2.31.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nLicense: Apache 2.0\n",
        ),
        ("site/requests-2.31.0.dist-info/INSTALLER", INSTALLER),
    ])
}

/// The SPDX documents' names, and whether each lists requests 2.31.0.
fn sboms(k: &Kiln, ctx: &std::path::Path, flags: &[&str]) -> Vec<(String, bool)> {
    let mut args = vec!["--provenance=false"];
    args.extend_from_slice(flags);
    if !flags.iter().any(|f| f.starts_with("--attest")) {
        args.push("--sbom=true");
    }
    let (archive, progress) = build_oci(k, ctx, &args, true);
    attested(&archive)
        .statements
        .iter()
        .map(|s| {
            assert_eq!(s["predicateType"], SPDX, "{progress}");
            let has = s["predicate"]["packages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "requests" && p["versionInfo"] == "2.31.0");
            (s["predicate"]["name"].as_str().unwrap().to_string(), has)
        })
        .collect()
}

fn owned(v: &[(&str, bool)]) -> Vec<(String, bool)> {
    v.iter().map(|(n, b)| (n.to_string(), *b)).collect()
}

#[test]
fn marked_stages_are_scanned_as_buildkit_reads_the_args() {
    let k = kiln();
    let image_only = owned(&[("image", false)]);
    let with_stage = owned(&[("image", false), ("stage builder", true)]);
    // Unmarked: only the final image, which lacks the package.
    let plain = two_stages("", "", "");
    assert_eq!(sboms(&k, plain.path(), &[]), image_only);
    // As BuildKit: a --build-arg alone, with no ARG declared, does nothing ...
    assert_eq!(
        sboms(&k, plain.path(), &["--build-arg", "BUILDKIT_SBOM_SCAN_STAGE=true"]),
        image_only
    );
    // ... while kiln's `scan-stage=true` scans every stage the target needs.
    assert_eq!(
        sboms(&k, plain.path(), &["--attest=type=sbom,scan-stage=true"]),
        with_stage
    );
    // `ARG BUILDKIT_SBOM_SCAN_STAGE=true` in the stage marks it; a --build-arg overrides it.
    let marked = two_stages("", "ARG BUILDKIT_SBOM_SCAN_STAGE=true", "");
    assert_eq!(sboms(&k, marked.path(), &[]), with_stage);
    assert_eq!(
        sboms(&k, marked.path(), &["--build-arg", "BUILDKIT_SBOM_SCAN_STAGE=false"]),
        image_only
    );
    // A global ARG, set by --build-arg to a list of stage names.
    let global = two_stages("ARG BUILDKIT_SBOM_SCAN_STAGE", "", "");
    assert_eq!(sboms(&k, global.path(), &[]), image_only);
    assert_eq!(
        sboms(
            &k,
            global.path(),
            &["--build-arg", "BUILDKIT_SBOM_SCAN_STAGE=base,builder"]
        ),
        with_stage
    );
    assert_eq!(
        sboms(&k, global.path(), &["--build-arg", "BUILDKIT_SBOM_SCAN_STAGE=base"]),
        image_only
    );
    // BUILDKIT_SBOM_SCAN_CONTEXT likewise, declared in the final stage.
    let ctx = two_stages(
        "",
        "ARG BUILDKIT_SBOM_SCAN_STAGE=true",
        "ARG BUILDKIT_SBOM_SCAN_CONTEXT=true",
    );
    assert_eq!(
        sboms(&k, ctx.path(), &[]),
        // BuildKit's order: the core first, then the extras by file name
        // (`sbom-builder.spdx.json` before `sbom-context.spdx.json`).
        owned(&[("image", false), ("stage builder", true), ("context", true)])
    );
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Checks the attestation files of a local/tar output: exactly BuildKit's names, whole
/// in-toto statements naming every regular file (`installer`) by sha256.
fn check_statements(files: &BTreeMap<String, Vec<u8>>) {
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "provenance.json",
            "sbom-builder.spdx.json",
            "sbom-context.spdx.json",
            "sbom.spdx.json"
        ]
    );
    for (name, bytes) in files {
        let s: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(s["_type"], "https://in-toto.io/Statement/v0.1", "{name}");
        assert_eq!(
            s["subject"],
            serde_json::json!([{ "name": "installer", "digest": { "sha256": sha256(INSTALLER.as_bytes()) } }]),
            "{name}"
        );
        let kind = if name == "provenance.json" {
            "https://slsa.dev/provenance/v0.2"
        } else {
            SPDX
        };
        assert_eq!(s["predicateType"], kind, "{name}");
    }
    let image = json(std::str::from_utf8(&files["sbom.spdx.json"]).unwrap());
    assert_eq!(image["predicate"]["name"], "image");
    let stage = json(std::str::from_utf8(&files["sbom-builder.spdx.json"]).unwrap());
    assert!(stage["predicate"]["packages"].to_string().contains("requests"));
    if require_tool("pyspdxtools") {
        let d = tempfile::tempdir().unwrap();
        for name in ["sbom.spdx.json", "sbom-builder.spdx.json", "sbom-context.spdx.json"] {
            let s = json(std::str::from_utf8(&files[name]).unwrap());
            let path = d.path().join(name);
            std::fs::write(&path, serde_json::to_vec_pretty(&s["predicate"]).unwrap()).unwrap();
            run_ok(Command::new("pyspdxtools").arg("-i").arg(&path));
        }
    }
}

#[test]
fn local_and_tar_outputs_carry_the_statements_as_buildkit_names_them() {
    let k = kiln();
    let ctx = two_stages(
        "",
        "ARG BUILDKIT_SBOM_SCAN_STAGE=true",
        "ARG BUILDKIT_SBOM_SCAN_CONTEXT=true",
    );
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("rootfs");
    let o = run(k
        .cmd()
        .args(["build", "--provenance=true", "--sbom=true", "-o"])
        .arg(format!("type=local,dest={}", dir.display()))
        .arg(ctx.path()));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("gets none"), "{err}");
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name.ends_with(".json") {
            assert_eq!(mode_of(&e.path()) & 0o777, 0o600, "{name}");
            files.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    assert_eq!(std::fs::read_to_string(dir.join("installer")).unwrap(), INSTALLER);
    check_statements(&files);

    // type=tar: the same files at the top of the tarball, after the tree.
    let tarball = out.path().join("rootfs.tar");
    k.ok(&[
        "build",
        "-q",
        "--provenance=true",
        "--sbom=true",
        "-o",
        &format!("type=tar,dest={}", tarball.display()),
        ctx.path().to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&tarball).unwrap();
    let mut files = BTreeMap::new();
    let mut ar = tar::Archive::new(bytes.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".json") {
            assert_eq!(e.header().mode().unwrap(), 0o600, "{name}");
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut b).unwrap();
            files.insert(name, b);
        }
    }
    check_statements(&files);
    assert_eq!(tar_member(&bytes, "installer").as_deref(), Some(INSTALLER));

    // The default provenance is buildx's `inline-only`: none in a local output.
    let plain = out.path().join("plain");
    let mut c = k.cmd();
    c.env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS");
    run_ok(
        c.args(["build", "-q", "-o"])
            .arg(format!("type=local,dest={}", plain.display()))
            .arg(ctx.path()),
    );
    assert!(plain.join("installer").exists());
    assert!(!plain.join("provenance.json").exists());
}

/// The attestation files in `dir` (`*.json` at its top), name → bytes; each mode 0600.
fn json_files(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name.ends_with(".json") {
            assert_eq!(mode_of(&e.path()) & 0o777, 0o600, "{name}");
            files.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    files
}

/// With several platforms, as buildx's platform split: each `linux_arm64/` directory
/// holds that platform's root filesystem and its own statements about it.
#[test]
fn each_platform_directory_gets_its_own_statements() {
    let k = kiln();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch AS pick\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nARG TARGETARCH\nCOPY $TARGETARCH /arch\n\
             FROM scratch\nCOPY --from=pick /arch /arch\n",
        ),
        ("amd64", "amd64\n"),
        ("arm64", "arm64\n"),
    ]);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("rootfs");
    let o = run(k
        .cmd()
        .args([
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "--provenance=mode=max",
            "--sbom=true",
            "-o",
        ])
        .arg(format!("type=local,dest={}", dir.display()))
        .arg(ctx.path()));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        !dir.join("provenance.json").exists(),
        "the top holds the platform directories only"
    );
    let tarball = out.path().join("rootfs.tar");
    k.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/amd64,linux/arm64",
        "--provenance=mode=max",
        "--sbom=true",
        "-o",
        &format!("type=tar,dest={}", tarball.display()),
        ctx.path().to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&tarball).unwrap();
    for arch in ["amd64", "arm64"] {
        let pdir = dir.join(format!("linux_{arch}"));
        let content = format!("{arch}\n");
        assert_eq!(std::fs::read_to_string(pdir.join("arch")).unwrap(), content);
        let files = json_files(&pdir);
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["provenance.json", "sbom-pick.spdx.json", "sbom.spdx.json"],
            "{arch}"
        );
        let subject = serde_json::json!([{ "name": "arch", "digest": { "sha256": sha256(content.as_bytes()) } }]);
        for (name, b) in &files {
            let s: serde_json::Value = serde_json::from_slice(b).unwrap();
            assert_eq!(s["subject"], subject, "{arch} {name}");
        }
        // The provenance is that platform's.
        let prov = json(std::str::from_utf8(&files["provenance.json"]).unwrap());
        crate::attest::assert_slsa(&prov);
        assert!(
            prov["predicate"].to_string().contains(&format!("linux/{arch}")),
            "{arch}: {prov:#}"
        );
        // Each platform's stage is scanned on its own: the SPDX documents validate.
        let stage = json(std::str::from_utf8(&files["sbom-pick.spdx.json"]).unwrap());
        assert_eq!(stage["predicate"]["name"], "stage pick", "{arch}");
        if require_tool("pyspdxtools") {
            let d = tempfile::tempdir().unwrap();
            for name in ["sbom.spdx.json", "sbom-pick.spdx.json"] {
                let s = json(std::str::from_utf8(&files[name]).unwrap());
                let path = d.path().join(name);
                std::fs::write(&path, serde_json::to_vec_pretty(&s["predicate"]).unwrap()).unwrap();
                run_ok(Command::new("pyspdxtools").arg("-i").arg(&path));
            }
        }
        // The tarball holds the same files under the same directory.
        for name in ["provenance.json", "sbom-pick.spdx.json", "sbom.spdx.json"] {
            let member =
                tar_member(&bytes, &format!("linux_{arch}/{name}")).unwrap_or_else(|| panic!("linux_{arch}/{name}"));
            let s = json(&member);
            assert_eq!(s["subject"], subject, "tar {arch} {name}");
            assert_eq!(
                s["predicateType"],
                json(std::str::from_utf8(&files[name]).unwrap())["predicateType"]
            );
        }
        assert_eq!(
            tar_member(&bytes, &format!("linux_{arch}/arch")).as_deref(),
            Some(content.as_str())
        );
    }
}
