//! Every export format, read back by skopeo, umoci and tar.

use std::process::Command;

use crate::common::*;

fn build_to(k: &Kiln, output: &str) {
    let ctx = fixture("every-instruction");
    k.ok(&["build", "-q", "-t", "app:1", "-o", output, ctx.to_str().unwrap()]);
}

#[test]
fn oci_archive_reads_in_skopeo_and_umoci() {
    let k = kiln();
    let d = tempfile::tempdir().unwrap();
    let archive = d.path().join("app.tar");
    build_to(&k, &format!("type=oci,dest={}", archive.display()));
    // index.json names the tag as BuildKit's OCI exporter does.
    let bytes = std::fs::read(&archive).unwrap();
    let index = tar_member(&bytes, "index.json").expect("index.json in the archive");
    let index = json(&index);
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "docker.io/library/app:1"
    );

    let Some(cfg) = skopeo_inspect(&format!("oci-archive:{}", archive.display()), true) else {
        return;
    };
    assert_eq!(cfg["config"]["WorkingDir"], "/app");
    assert_eq!(cfg["config"]["Entrypoint"], serde_json::json!(["/app/bin/start"]));
    let info = skopeo_inspect(&format!("oci-archive:{}", archive.display()), false).unwrap();
    assert_eq!(
        info["Layers"].as_array().unwrap().len(),
        4,
        "WORKDIR + three COPY layers"
    );

    // umoci reads a layout directory: unpack the archive and check files, modes, owners.
    let layout = d.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    run_ok(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&layout));
    let Some((_b, rootfs)) = umoci_unpack(&layout, "1") else {
        return;
    };
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/bin/start")).unwrap(),
        "#!/bin/sh\necho start\n"
    );
    assert_eq!(mode_of(&rootfs.join("app/bin/start")), 0o755);
    assert_eq!(std::fs::read_to_string(rootfs.join("etc/app/a.conf")).unwrap(), "a=1\n");
    assert!(!rootfs.join("etc/app/c.txt").exists(), "the glob selects *.conf only");
    assert_eq!(std::fs::read_to_string(rootfs.join("app/data.txt")).unwrap(), "data\n");
    if kiln_testkit::is_root() {
        assert_eq!(owner_of(&rootfs.join("app/bin/start")), (1000, 1000));
        assert_eq!(owner_of(&rootfs.join("app/bin")), (1000, 1000));
        assert_eq!(owner_of(&rootfs.join("app/README.md")), (0, 0));
    }
}

#[test]
fn oci_layout_directory() {
    let k = kiln();
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("layout");
    build_to(&k, &format!("type=oci,dest={},tar=false", layout.display()));
    let Some(info) = skopeo_inspect(&format!("oci:{}:1", layout.display()), false) else {
        return;
    };
    assert_eq!(info["Layers"].as_array().unwrap().len(), 4);
    let Some((_b, rootfs)) = umoci_unpack(&layout, "1") else {
        return;
    };
    assert!(rootfs.join("app/README.md").is_file());
}

#[test]
fn docker_archive_reads_in_skopeo_and_docker() {
    let k = kiln();
    let d = tempfile::tempdir().unwrap();
    let archive = d.path().join("app-docker.tar");
    build_to(&k, &format!("type=docker,dest={}", archive.display()));
    let iid = k.ok(&["build", "-q", fixture("every-instruction").to_str().unwrap()]);
    if let Some(cfg) = skopeo_inspect(&format!("docker-archive:{}", archive.display()), true) {
        assert_eq!(cfg["config"]["User"], "1000:1000");
    }
    let Some(dockerd) = Dockerd::start() else { return };
    let out = run_ok(dockerd.docker().arg("load").arg("-i").arg(&archive));
    assert!(out.contains("app:1"), "{out}");
    let inspect = json(&run_ok(dockerd.docker().args(["image", "inspect", "app:1"])));
    assert_eq!(
        inspect[0]["Id"].as_str().unwrap(),
        iid.trim(),
        "docker's image id is kiln's config digest"
    );
    assert_eq!(inspect[0]["Config"]["WorkingDir"], "/app");
    assert_eq!(inspect[0]["Config"]["Cmd"], serde_json::json!(["--port", "8080"]));
    assert_eq!(inspect[0]["RootFS"]["Layers"].as_array().unwrap().len(), 4);
}

#[test]
fn local_and_tar_rootfs() {
    let k = kiln();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("rootfs");
    let tarball = d.path().join("rootfs.tar");
    let ctx = fixture("every-instruction");
    k.ok(&[
        "build",
        "-q",
        "-o",
        dir.to_str().unwrap(),
        "-o",
        &format!("type=tar,dest={}", tarball.display()),
        ctx.to_str().unwrap(),
    ]);
    let files = tree(&dir);
    assert_eq!(
        files,
        [
            "app/",
            "app/README.md",
            "app/bin/",
            "app/bin/helper",
            "app/bin/start",
            "app/data.txt",
            "etc/",
            "etc/app/",
            "etc/app/a.conf",
            "etc/app/b.conf"
        ]
    );
    let listing = tar_listing(&std::fs::read(&tarball).unwrap());
    let names: Vec<&str> = listing.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "app/",
            "app/README.md",
            "app/bin/",
            "app/bin/helper",
            "app/bin/start",
            "app/data.txt",
            "etc/",
            "etc/app/",
            "etc/app/a.conf",
            "etc/app/b.conf"
        ]
    );
    if kiln_testkit::is_root() {
        assert!(
            listing.contains(&"app/bin/start 755 1000/1000".to_string()),
            "{listing:?}"
        );
    }
}

#[test]
fn stdout_outputs() {
    let k = kiln();
    let ctx = fixture("every-instruction");
    let out = run(k.cmd().args(["build", "-q", "-o", "-", ctx.to_str().unwrap()]));
    assert!(out.status.success());
    // -q prints the image id on stdout after the tarball; the tar part ends in zero blocks.
    let listing = tar_listing(&out.stdout);
    assert!(listing.iter().any(|l| l.starts_with("app/data.txt ")), "{listing:?}");
}
