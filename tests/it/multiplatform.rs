//! Multi-platform builds with real emulation and a real registry: a busybox base that
//! is an index of linux/amd64 and linux/arm64 images, each made from Debian's
//! `busybox-static` of that architecture (the arm64 package is downloaded with
//! `apt-get download busybox-static:arm64` — `.ci/run` adds the arm64 architecture —
//! and cached under `target/kiln-fixtures/`), built by kiln and pushed to the loopback
//! registry as one index. RUN steps for arm64 run under Debian's qemu-user-static.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::rootless::{User, SUB_USER};

/// Debian's arm64 `busybox`, downloaded once into `target/kiln-fixtures/`.
fn arm64_busybox() -> Option<PathBuf> {
    let fixtures = kiln_testkit::workspace_root().join("target/kiln-fixtures");
    let cached = fixtures.join("busybox-static-arm64/bin/busybox");
    if cached.is_file() {
        return Some(cached);
    }
    if !require_tool("apt-get") || !require_tool("dpkg-deb") {
        return None;
    }
    let foreign = run_ok(Command::new("dpkg").arg("--print-foreign-architectures"));
    if !require(
        foreign.lines().any(|a| a == "arm64"),
        "dpkg has no arm64 architecture (.ci/run: dpkg --add-architecture arm64 && apt-get update)",
    ) {
        return None;
    }
    std::fs::create_dir_all(&fixtures).unwrap();
    let work = tempfile::Builder::new()
        .prefix("bb-arm64-")
        .tempdir_in(&fixtures)
        .unwrap();
    run_ok(
        Command::new("apt-get")
            .args(["download", "busybox-static:arm64"])
            .current_dir(work.path()),
    );
    let deb = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("apt-get download wrote a .deb");
    let tree = work.path().join("tree");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree));
    // Another test may have cached it meanwhile: either copy is the same package.
    let _ = std::fs::rename(&tree, fixtures.join("busybox-static-arm64"));
    cached.is_file().then_some(cached)
}

/// Whether arm64 binaries can run here: the host is arm64, a handler is registered,
/// or qemu-user-static's definition is installed for kiln (as root) to register.
fn arm64_emulation() -> bool {
    require(
        kiln_testkit::is_root()
            && (Path::new("/usr/share/binfmts/qemu-aarch64").is_file()
                || Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").is_file()),
        "no arm64 emulation: qemu-user-static is not installed (or the tests do not run as root)",
    )
}

/// A context whose Dockerfile makes the two-platform busybox base (`rootfs-amd64/`,
/// `rootfs-arm64/`, each with every applet).
fn base_context() -> Option<tempfile::TempDir> {
    if !require(
        Path::new("/bin/busybox").is_file(),
        "busybox-static (/bin/busybox) is not installed",
    ) {
        return None;
    }
    let arm64 = arm64_busybox()?;
    let ctx = tempfile::Builder::new().prefix("kiln-mp-").tempdir().unwrap();
    let applets = run_ok(Command::new("/bin/busybox").arg("--list"));
    for (arch, bin) in [("amd64", Path::new("/bin/busybox")), ("arm64", arm64.as_path())] {
        let root = ctx.path().join(format!("rootfs-{arch}"));
        for d in ["bin", "etc", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(bin, root.join("bin/busybox")).unwrap();
        for a in applets.lines().filter(|a| *a != "busybox") {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    }
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nARG TARGETARCH\nCOPY rootfs-${TARGETARCH}/ /\nCMD [\"sh\"]\n",
    )
    .unwrap();
    Some(ctx)
}

/// The registry with the base pushed as `HOST/busybox:multi`, if everything is there.
fn registry_with_base(k: &Kiln) -> Option<(Registry, String)> {
    if !arm64_emulation() {
        return None;
    }
    let ctx = base_context()?;
    let reg = Registry::start()?;
    let base = format!("{}/busybox:multi", reg.host);
    k.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/amd64,linux/arm64",
        "--push",
        "-t",
        &base,
        ctx.path().to_str().unwrap(),
    ]);
    Some((reg, base))
}

fn raw_index(reference: &str) -> Option<(String, serde_json::Value)> {
    if !require_tool("skopeo") {
        return None;
    }
    let raw = run_ok(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", reference]));
    let digest = format!("sha256:{}", kiln_image::Digest::of(raw.as_bytes()).hex());
    Some((digest, json(&raw)))
}

fn platforms_of(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn uname_for_two_platforms_is_one_pushed_index_with_each_architecture() {
    let k = kiln();
    let Some((reg, base)) = registry_with_base(&k) else {
        return;
    };
    let (_, base_index) = raw_index(&format!("docker://{base}")).unwrap();
    assert_eq!(platforms_of(&base_index), ["linux/amd64", "linux/arm64"]);

    let ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN uname -m > /arch\n"))]);
    let image = format!("{}/uname:1", reg.host);
    let meta = ctx.path().join("meta.json");
    let before = reg.requests().len();
    let out = k
        .cmd()
        .args([
            "build",
            "--progress",
            "plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "--push",
            "-t",
            &image,
        ])
        .arg("--metadata-file")
        .arg(&meta)
        .arg(ctx.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Each step line names its platform, as BuildKit's.
    assert!(err.contains("[linux/arm64 2/2] RUN uname -m > /arch"), "{err}");
    assert!(err.contains("[linux/amd64 2/2] RUN uname -m > /arch"), "{err}");

    // The registry: one index, two manifests with their platforms; pushed children first.
    let (digest, index) = raw_index(&format!("docker://{image}")).unwrap();
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(platforms_of(&index), ["linux/amd64", "linux/arm64"]);
    let metadata = json(&std::fs::read_to_string(&meta).unwrap());
    assert_eq!(metadata["containerimage.digest"], digest.as_str(), "{metadata}");
    assert_eq!(
        metadata["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let puts: Vec<String> = reg.requests()[before..]
        .iter()
        .filter(|r| r.starts_with("PUT /v2/uname/manifests/"))
        .cloned()
        .collect();
    assert_eq!(puts.len(), 3, "{puts:#?}");
    assert_eq!(puts[2], "PUT /v2/uname/manifests/1", "the index goes last: {puts:#?}");

    // Each platform's config, and its /arch, unpacked by umoci from a `skopeo copy --all`.
    let layout = tempfile::tempdir().unwrap();
    let dir = layout.path().join("oci");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--all", "--src-tls-verify=false"])
            .arg(format!("docker://{image}"))
            .arg(format!("oci:{}:all", dir.display())),
    );
    for (arch, uname) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let config = json(&run_ok(
            Command::new("skopeo")
                .args(["--override-arch", arch, "inspect", "--config", "--tls-verify=false"])
                .arg(format!("docker://{image}")),
        ));
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["os"], "linux");
        run_ok(
            Command::new("skopeo")
                .args(["--override-arch", arch, "copy"])
                .arg(format!("oci:{}:all", dir.display()))
                .arg(format!("oci:{}:{arch}", dir.display())),
        );
        let Some((_g, rootfs)) = umoci_unpack(&dir, arch) else {
            return;
        };
        assert_eq!(
            std::fs::read_to_string(rootfs.join("arch")).unwrap(),
            format!("{uname}\n")
        );
    }

    // The local store holds the same index; a second build runs nothing.
    let stored = json(&run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}/store:{image}", k.root().display())),
    ));
    assert_eq!(platforms_of(&stored), ["linux/amd64", "linux/arm64"]);
    let again = k
        .cmd()
        .args([
            "build",
            "--progress",
            "plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &image,
        ])
        .arg(ctx.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert_eq!(
        err.matches(" CACHED").count(),
        2,
        "both RUN steps come from the cache:\n{err}"
    );

    // `kiln push` of the stored image pushes the same index.
    let copy = format!("{}/copy:1", reg.host);
    k.ok(&["push", &image, &copy]);
    let (copied, _) = raw_index(&format!("docker://{copy}")).unwrap();
    assert_eq!(copied, digest);
}

#[test]
fn the_cross_compilation_pattern_runs_the_builder_natively_once_per_target() {
    let k = kiln();
    let Some((_reg, base)) = registry_with_base(&k) else {
        return;
    };
    let host = kiln_image::Platform::host().to_string();
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM --platform=$BUILDPLATFORM {base} AS build\n\
             RUN echo shared > /shared\n\
             ARG BUILDPLATFORM TARGETPLATFORM\n\
             RUN echo \"$BUILDPLATFORM $TARGETPLATFORM $(uname -m)\" > /out\n\
             FROM {base}\n\
             COPY --from=build /out /shared /\n"
        ),
    )]);
    let dest = ctx.path().join("out");
    let out = k
        .cmd()
        .args([
            "build",
            "--progress",
            "plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
        ])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(ctx.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let native = run_ok(Command::new("uname").arg("-m"));
    for target in ["linux/amd64", "linux/arm64"] {
        let dir = dest.join(target.replace('/', "_"));
        assert_eq!(
            std::fs::read_to_string(dir.join("out")).unwrap(),
            format!("{host} {target} {native}"),
            "the builder ran natively with {target}'s TARGET args"
        );
        assert_eq!(std::fs::read_to_string(dir.join("shared")).unwrap(), "shared\n");
    }
    // The step with no TARGET* variable ran once; the one with them once per target,
    // natively (`linux/amd64->arm64`, as BuildKit names such a step).
    let started = |needle: &str| err.lines().filter(|l| l.starts_with('#') && l.contains(needle)).count();
    assert_eq!(started("build 2/3] RUN echo shared > /shared"), 1, "{err}");
    assert_eq!(started("build 3/3] RUN echo \""), 2, "{err}");
    if host == "linux/amd64" {
        assert_eq!(
            started("[linux/amd64->arm64 build 3/3] RUN echo \"linux/amd64 linux/arm64"),
            1,
            "{err}"
        );
    }
}

#[test]
fn a_platform_with_no_handler_fails_before_any_step_and_stores_nothing() {
    let k = kiln();
    let Some(ctx) = base_context() else { return };
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs-amd64/ /\nRUN echo hi > /x\n",
    )
    .unwrap();
    // A binfmt_misc with nothing registered, whatever this machine has.
    let none = tempfile::tempdir().unwrap();
    k.ok(&["images"]);
    let before = k.snapshot_store();
    let out = k
        .cmd()
        .env("KILN_BINFMT_MISC", none.path())
        .args([
            "build",
            "--progress",
            "plain",
            "--platform",
            "linux/amd64,linux/s390x",
            "-t",
            "never:1",
        ])
        .arg(ctx.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("platform `linux/s390x`")
            && err.contains("no binfmt_misc handler for `s390x`")
            && err.contains("apt-get install qemu-user-static"),
        "{err}"
    );
    assert_eq!(err.matches("ERROR").count(), 1, "one error:\n{err}");
    assert!(!err.contains("COPY rootfs-amd64"), "no step started:\n{err}");
    assert_eq!(k.snapshot_store(), before, "nothing stored");
}

#[test]
fn oci_and_docker_archives_hold_the_index() {
    let k = kiln();
    if !arm64_emulation() {
        return;
    }
    let Some(ctx) = base_context() else { return };
    let out = tempfile::tempdir().unwrap();
    for kind in ["oci", "docker"] {
        let tar = out.path().join(format!("{kind}.tar"));
        k.ok(&[
            "build",
            "-q",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "app:1",
            "--annotation",
            "index:org.opencontainers.image.description=two platforms",
            "-o",
            &format!("type={kind},dest={}", tar.display()),
            ctx.path().to_str().unwrap(),
        ]);
        let bytes = std::fs::read(&tar).unwrap();
        let index = json(&tar_member(&bytes, "index.json").unwrap());
        assert_eq!(
            index["manifests"][0]["mediaType"], "application/vnd.oci.image.index.v1+json",
            "{kind}"
        );
        // `--annotation index:` is in the image index itself.
        let digest = index["manifests"][0]["digest"].as_str().unwrap().replace(':', "/");
        let image_index = json(&tar_member(&bytes, &format!("blobs/{digest}")).unwrap());
        assert_eq!(
            image_index["annotations"]["org.opencontainers.image.description"], "two platforms",
            "{kind}: {image_index}"
        );
        let raw = json(&run_ok(
            Command::new("skopeo")
                .args(["inspect", "--raw"])
                .arg(format!("oci-archive:{}", tar.display())),
        ));
        assert_eq!(platforms_of(&raw), ["linux/amd64", "linux/arm64"], "{kind}");
        if kind == "docker" {
            // What `docker load` reads: one image, the host's.
            let manifest = json(&tar_member(&bytes, "manifest.json").unwrap());
            assert_eq!(manifest.as_array().unwrap().len(), 1);
            let config_path = manifest[0]["Config"].as_str().unwrap();
            let config = json(&tar_member(&bytes, config_path).unwrap());
            assert_eq!(config["architecture"], kiln_image::Platform::host().architecture);
        }
    }
    // -o type=tar: one tarball, a directory per platform, as buildx.
    let tar = out.path().join("rootfs.tar");
    k.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=tar,dest={}", tar.display()),
        ctx.path().to_str().unwrap(),
    ]);
    let listing = tar_listing(&std::fs::read(&tar).unwrap());
    for p in ["linux_amd64/bin/busybox", "linux_arm64/bin/busybox"] {
        assert!(listing.iter().any(|l| l.contains(p)), "{p} in {listing:#?}");
    }
}

/// `--load` of two platforms: the daemon gets the docker-archive `-o type=docker`
/// writes; a classic image store (dockerd 20.10 here) loads the host's image from its
/// `manifest.json`, and it runs.
#[test]
fn load_of_two_platforms_gives_the_daemon_the_hosts_image() {
    let k = kiln();
    if !arm64_emulation() {
        return;
    }
    let Some(ctx) = base_context() else { return };
    let Some(d) = Dockerd::start() else { return };
    let o = run(k
        .cmd()
        .env("DOCKER_HOST", d.host())
        .args([
            "build",
            "--progress=plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "--load",
            "-t",
            "multi:1",
        ])
        .arg(ctx.path()));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("Loaded image: multi:1"), "{err}");
    let arch = kiln_testkit::docker_ok(|| {
        let mut c = d.docker();
        c.args(["image", "inspect", "--format", "{{.Architecture}}", "multi:1"]);
        c
    });
    assert_eq!(arch.trim(), kiln_image::Platform::host().architecture);
    let out = kiln_testkit::docker_ok(|| {
        let mut c = d.docker();
        c.args(["run", "--rm", "--network", "none", "multi:1", "uname", "-m"]);
        c
    });
    assert_eq!(out.trim(), std::env::consts::ARCH);
}

#[test]
fn each_platform_gets_its_own_attestation_manifest() {
    let k = kiln();
    if !arm64_emulation() {
        return;
    }
    let Some(ctx) = base_context() else { return };
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("oci.tar");
    k.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/amd64,linux/arm64",
        "--provenance=mode=max",
        "--sbom=true",
        "-t",
        "app:att",
        "-o",
        &format!("type=oci,dest={}", tar.display()),
        ctx.path().to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&tar).unwrap();
    let entry = json(&tar_member(&bytes, "index.json").unwrap());
    let index_digest = entry["manifests"][0]["digest"].as_str().unwrap().to_string();
    let blob = |d: &str| tar_member(&bytes, &format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))).unwrap();
    let index = json(&blob(&index_digest));
    let manifests = index["manifests"].as_array().unwrap();
    // The platform images first, then one attestation manifest about each, as BuildKit.
    assert_eq!(
        platforms_of(&index),
        ["linux/amd64", "linux/arm64", "unknown/unknown", "unknown/unknown"]
    );
    for (image, att) in manifests[..2].iter().zip(&manifests[2..]) {
        let arch = image["platform"]["architecture"].as_str().unwrap();
        assert_eq!(att["annotations"]["vnd.docker.reference.type"], "attestation-manifest");
        assert_eq!(att["annotations"]["vnd.docker.reference.digest"], image["digest"]);
        let m = json(&blob(att["digest"].as_str().unwrap()));
        let kinds: Vec<&str> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["annotations"]["in-toto.io/predicate-type"].as_str().unwrap())
            .collect();
        assert!(kinds.contains(&"https://slsa.dev/provenance/v0.2"), "{kinds:?}");
        assert!(kinds.contains(&"https://spdx.dev/Document"), "{kinds:?}");
        for l in m["layers"].as_array().unwrap() {
            let statement = json(&blob(l["digest"].as_str().unwrap()));
            let subject = statement["subject"][0]["digest"]["sha256"].as_str().unwrap();
            assert_eq!(format!("sha256:{subject}"), image["digest"].as_str().unwrap());
            if l["annotations"]["in-toto.io/predicate-type"] == "https://slsa.dev/provenance/v0.2" {
                let p = statement["predicate"].to_string();
                assert!(p.contains(&format!("linux/{arch}")), "{arch} provenance: {p}");
            }
        }
    }
    // skopeo reads the index and copies every manifest it lists.
    if require_tool("skopeo") {
        let raw = json(&run_ok(
            Command::new("skopeo")
                .args(["inspect", "--raw"])
                .arg(format!("oci-archive:{}", tar.display())),
        ));
        assert_eq!(raw, index);
        let copy = out.path().join("copy");
        run_ok(
            Command::new("skopeo")
                .args(["copy", "--all"])
                .arg(format!("oci-archive:{}", tar.display()))
                .arg(format!("oci:{}:x", copy.display())),
        );
    }
    // The local store keeps the same index; inspect lists both attestations.
    k.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/amd64,linux/arm64",
        "--provenance=mode=max",
        "--sbom=true",
        "-t",
        "app:att",
        ctx.path().to_str().unwrap(),
    ]);
    let inspect = json(&k.ok(&["inspect", "app:att"]));
    assert_eq!(inspect[0]["Attestations"].as_array().unwrap().len(), 2, "{inspect:#}");
}

#[test]
fn pull_platform_fetches_only_that_platform() {
    let k = kiln();
    let Some((_reg, base)) = registry_with_base(&k) else {
        return;
    };
    let fresh = kiln();
    let arm64_config = json(&run_ok(
        Command::new("skopeo")
            .args(["--override-arch", "arm64", "inspect", "--config", "--tls-verify=false"])
            .arg(format!("docker://{base}")),
    ));
    let id = fresh.ok(&["pull", "-q", "--platform", "linux/aarch64", &base]);
    let amd64_layers = json(&run_ok(
        Command::new("skopeo")
            .args(["--override-arch", "amd64", "inspect", "--tls-verify=false"])
            .arg(format!("docker://{base}")),
    ));
    let content = fresh.root().join("content-v1/sha256");
    for l in amd64_layers["Layers"].as_array().unwrap() {
        let hex = l.as_str().unwrap().trim_start_matches("sha256:");
        assert!(!content.join(hex).exists(), "the amd64 layer {hex} was not fetched");
    }
    let stored = json(&run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci:{}/store:{base}", fresh.root().display())),
    ));
    assert_eq!(stored["architecture"], "arm64");
    assert_eq!(arm64_config["architecture"], "arm64");
    assert!(id.trim().starts_with("sha256:"));
}

#[test]
fn cache_export_carries_every_platform() {
    let k = kiln();
    let Some((_reg, base)) = registry_with_base(&k) else {
        return;
    };
    let ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN uname -m > /arch\n"))]);
    let cache = ctx.path().join("cache");
    k.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/amd64,linux/arm64",
        "--cache-to",
        &format!("type=local,dest={},mode=max", cache.display()),
        ctx.path().to_str().unwrap(),
    ]);
    let fresh = kiln();
    let out = fresh
        .cmd()
        .args([
            "build",
            "--progress",
            "plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "--cache-from",
        ])
        .arg(format!("type=local,src={}", cache.display()))
        .arg(ctx.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches(" CACHED").count(),
        2,
        "both platforms' RUN from the imported cache:\n{err}"
    );
}

#[test]
fn rootless_builds_the_two_platform_image() {
    let k = kiln();
    let Some((_reg, base)) = registry_with_base(&k) else {
        return;
    };
    let Some(u) = User::get(SUB_USER, true) else { return };
    // Rootless kiln only uses the handler; kiln as root registers it if the machine
    // has none yet (a fresh CI machine), which this root build makes sure of.
    let root_ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN uname -m > /arch\n"))]);
    k.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/arm64",
        root_ctx.path().to_str().unwrap(),
    ]);
    let ctx = u.context("mp", &format!("FROM {base}\nRUN uname -m > /arch\n"));
    let dest = u.path("out");
    u.kiln_ok(&[
        "build",
        "-q",
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=local,dest={}", dest.display()),
        ctx.to_str().unwrap(),
    ]);
    for (dir, uname) in [("linux_amd64", "x86_64"), ("linux_arm64", "aarch64")] {
        assert_eq!(
            std::fs::read_to_string(dest.join(dir).join("arch")).unwrap(),
            format!("{uname}\n")
        );
    }
}

#[test]
fn the_runc_runtime_runs_emulated_steps_too() {
    let k = kiln();
    if !arm64_emulation() || !require_tool("runc") {
        return;
    }
    let Some(base) = base_context() else { return };
    // The base from the local store this time: its tag names the index.
    k.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        "bbm:1",
        base.path().to_str().unwrap(),
    ]);
    let ctx = context(&[("Dockerfile", "FROM bbm:1\nRUN uname -m > /arch\n")]);
    let dest = ctx.path().join("out");
    k.ok(&[
        "build",
        "-q",
        "--runtime",
        "runc",
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=local,dest={}", dest.display()),
        ctx.path().to_str().unwrap(),
    ]);
    for (dir, uname) in [("linux_amd64", "x86_64"), ("linux_arm64", "aarch64")] {
        assert_eq!(
            std::fs::read_to_string(dest.join(dir).join("arch")).unwrap(),
            format!("{uname}\n")
        );
    }
}
