//! Pushing to a real registry (Debian's docker-registry on loopback), read back with
//! skopeo and docker; faults injected by loopback proxies.

use std::process::Command;

use crate::common::*;
use crate::registry::{assert_blobs_whole, push_busybox, CuttingProxy};
use kiln_testkit::Registry;

/// A context `FROM base` adding a 2 MB incompressible file and a small one.
fn app_context(base: &str) -> tempfile::TempDir {
    let ctx = context(&[
        (
            "Dockerfile",
            &format!("FROM {base}\nCOPY hello /hello\nCOPY blob /blob\nCMD [\"/bin/busybox\", \"cat\", \"/hello\"]\n"),
        ),
        ("hello", "hello from kiln\n"),
    ]);
    let mut state = 0x9e3779b97f4a7c15u64;
    let bytes: Vec<u8> = (0..2 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(ctx.path().join("blob"), bytes).unwrap();
    ctx
}

fn uploads(reg: &Registry) -> usize {
    reg.requests()
        .iter()
        .filter(|r| r.starts_with("PUT ") && r.contains("/blobs/uploads/"))
        .count()
}

#[test]
fn build_push_reads_back_in_skopeo_and_docker() {
    let Some(reg) = Registry::start() else { return };
    let k = kiln();
    let Some(_) = push_busybox(&k, &reg) else { return };
    let ctx = app_context(&format!("{}/busybox:1", reg.host));
    let d = tempfile::tempdir().unwrap();
    let (meta, iid) = (d.path().join("meta.json"), d.path().join("iid"));
    let app = format!("{}/app:1", reg.host);
    k.ok(&[
        "build",
        "-q",
        "--push",
        "-t",
        &app,
        "--metadata-file",
        meta.to_str().unwrap(),
        "--iidfile",
        iid.to_str().unwrap(),
        ctx.path().to_str().unwrap(),
    ]);
    let meta = json(&std::fs::read_to_string(&meta).unwrap());
    let digest = meta["containerimage.digest"].as_str().unwrap().to_string();
    assert_eq!(meta["containerimage.descriptor"]["digest"], digest.as_str());
    assert_eq!(
        meta["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(meta["image.name"], app.as_str());
    assert_eq!(
        meta["containerimage.config.digest"].as_str().unwrap(),
        std::fs::read_to_string(&iid).unwrap()
    );
    let Some(remote) = skopeo_inspect(&format!("docker://{app}"), false) else {
        return;
    };
    assert_eq!(remote["Digest"], digest.as_str(), "the registry serves kiln's manifest");
    let local = json(&k.ok(&["inspect", &app]));
    let layers: Vec<&str> = remote["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(layers.len(), 3, "busybox's layer plus two COPYs: {layers:?}");
    let m = &local[0]["Manifest"]["layers"];
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(m[i]["digest"], *l);
    }

    // `kiln push` to another repository of the same registry mounts every blob.
    let copy = format!("{}/copy:2", reg.host);
    let out = k.cmd().args(["push", &app, &copy]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("Mounted from another repository").count(),
        4,
        "3 layers and the config: {stderr}"
    );
    assert!(stderr.contains(&format!("2: digest: {digest}")), "{stderr}");

    // skopeo copies it out; docker pulls and runs it.
    let layout = d.path().join("layout");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{copy}"))
            .arg(format!("oci:{}:x", layout.display())),
    );
    let Some(dockerd) = Dockerd::start() else { return };
    run_ok(dockerd.docker().args(["pull", "-q", &app]));
    let out = run_ok(dockerd.docker().args(["run", "--rm", "--network", "none", &app]));
    assert_eq!(out, "hello from kiln\n");
}

#[test]
fn a_second_push_uploads_nothing() {
    let Some(reg) = Registry::start() else { return };
    let k = kiln();
    let Some(_) = push_busybox(&k, &reg) else { return };
    let ctx = app_context(&format!("{}/busybox:1", reg.host));
    let app = format!("{}/app:1", reg.host);
    let before = uploads(&reg);
    k.ok(&["build", "-q", "--push", "-t", &app, ctx.path().to_str().unwrap()]);
    // Two new layers and the config; busybox's layer is in the registry already
    // (the first HEAD finds it... in another repository, so it is mounted).
    assert_eq!(uploads(&reg) - before, 3, "{:#?}", reg.requests());
    let before = uploads(&reg);
    let requests = reg.requests().len();
    let out = k.cmd().args(["push", &app]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(uploads(&reg), before, "no blob uploaded the second time");
    let second: Vec<String> = reg.requests()[requests..].to_vec();
    assert!(
        second
            .iter()
            .all(|r| r.starts_with("HEAD ") || r.starts_with("PUT /v2/app/manifests/")),
        "only HEADs and the manifest: {second:#?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .matches("Layer already exists")
            .count(),
        4
    );
}

/// A loopback proxy to `upstream` that drops every connection once more than `limit`
/// bytes have come from the client (blob uploads never get through), and holds each
/// response back for `delay` (a slow registry).
fn fault_proxy(upstream: String, limit: usize, delay: std::time::Duration) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().take(500) {
            let Ok(mut client) = client else { continue };
            let Ok(mut server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut first = [0u8; 1];
                if s2.peek(&mut first).is_ok() {
                    std::thread::sleep(delay);
                }
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                let mut sent = 0usize;
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    sent += n;
                    if sent > limit || server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Both);
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

#[test]
fn push_faults_are_retried_or_fail_without_a_tag() {
    let Some(reg) = Registry::start() else { return };
    let k = kiln();
    let Some(_) = push_busybox(&k, &reg) else { return };
    let ctx = app_context(&format!("{}/busybox:1", reg.host));
    k.ok(&["build", "-q", "-t", "app:1", ctx.path().to_str().unwrap()]);

    // 500s on the first connections: retried, pushed.
    let proxy = CuttingProxy::start_with(reg.host.clone(), usize::MAX, 3, 0);
    let dest = format!("{}/flaky:1", proxy.addr);
    let out = k.cmd().args(["push", "app:1", &dest]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let Some(remote) = skopeo_inspect(&format!("docker://{}/flaky:1", reg.host), false) else {
        return;
    };
    assert_eq!(remote["Layers"].as_array().unwrap().len(), 3);

    // A slow registry (every response a second late): pushed.
    let slow = fault_proxy(reg.host.clone(), usize::MAX, std::time::Duration::from_secs(1));
    k.ok(&["push", "-q", "app:1", &format!("{slow}/slow:1")]);
    assert!(skopeo_inspect(&format!("docker://{}/slow:1", reg.host), false).is_some());

    // Every upload cut mid-body: the push fails naming the destination, and the tag
    // is never published.
    let cutter = fault_proxy(reg.host.clone(), 512 << 10, std::time::Duration::ZERO);
    let dest = format!("{cutter}/broken:1");
    let err = k.fails(&["push", "app:1", &dest]);
    assert!(err.contains(&format!("cannot push `{dest}`")), "{err}");
    assert!(err.contains("gave up after"), "{err}");
    assert!(
        !reg.requests()
            .iter()
            .any(|r| r.starts_with("PUT /v2/broken/manifests/")),
        "the manifest must not be pushed after a failed blob"
    );
    let status = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/broken:1", reg.host))
        .output()
        .unwrap();
    assert!(!status.status.success(), "the tag must not exist");
    assert_blobs_whole(&k);
}

#[test]
fn registry_cache_makes_a_fresh_root_run_nothing() {
    if !kiln_testkit::is_root() && !require(false, "the registry cache test runs RUN steps as root") {
        return;
    }
    let Some(reg) = Registry::start() else { return };
    let Some(bb) = crate::run::busybox_context() else {
        return;
    };
    let runner_a = kiln();
    let base = format!("{}/bb:1", reg.host);
    runner_a.ok(&["build", "-q", "--push", "-t", &base, bb.path().to_str().unwrap()]);
    let df = format!(
        "FROM {base} AS deps\nRUN echo deps > /deps\nFROM {base}\nCOPY app.txt /app.txt\nCOPY --from=deps /deps /deps\nRUN cat /deps /app.txt > /both\n"
    );
    let ctx = context(&[("Dockerfile", &df), ("app.txt", "app\n")]);
    let cache = format!("{}/cache:main", reg.host);
    let d = tempfile::tempdir().unwrap();
    let build = |k: &Kiln, extra: &[&str]| {
        let iid = d.path().join("iid");
        let mut args = vec!["build", "--progress=plain", "--iidfile", iid.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(ctx.path().to_str().unwrap());
        let out = run(k.cmd().args(&args));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        let mut steps = crate::cache::ran(&crate::cache::outcomes(&err));
        steps.sort();
        (steps, std::fs::read_to_string(&iid).unwrap(), err)
    };
    let (steps, id_a, _) = build(
        &runner_a,
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    assert_eq!(steps, ["COPY --from=deps", "COPY app.txt", "RUN cat", "RUN echo"]);
    if require_tool("skopeo") {
        let raw = json(&run_ok(
            Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{cache}")),
        ));
        assert_eq!(raw["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(raw["config"]["mediaType"], "application/vnd.kiln.cache.v1+json");
    }

    // Another runner, empty root: every step is a hit, nothing runs, same image.
    let runner_b = kiln();
    let (steps, id_b, progress) = build(&runner_b, &["--cache-from", &format!("type=registry,ref={cache}")]);
    assert!(steps.is_empty(), "{progress}");
    assert_eq!(id_a, id_b);
    assert!(runner_b.ok(&["fsck"]).contains(" 0 problems"));

    // A cache that is not there is a warning, as with buildx.
    let runner_c = kiln();
    let (steps, _, progress) = build(
        &runner_c,
        &["--cache-from", &format!("type=registry,ref={}/nothing:here", reg.host)],
    );
    assert!(progress.contains("WARN: --cache-from"), "{progress}");
    assert_eq!(steps.len(), 4);
}

/// The layer media types of `reference`'s manifest, read with skopeo.
fn layer_types(reference: &str) -> Option<Vec<String>> {
    if !require_tool("skopeo") {
        return None;
    }
    let raw = json(&run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(reference),
    ));
    Some(
        raw["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["mediaType"].as_str().unwrap().rsplit('.').next().unwrap().to_string())
            .collect(),
    )
}

#[test]
fn layer_compression_is_chosen_per_output_and_base_layers_stay_unless_forced() {
    let Some(reg) = Registry::start() else { return };
    let k = kiln();
    let Some(_) = push_busybox(&k, &reg) else { return };
    let ctx = app_context(&format!("{}/busybox:1", reg.host));
    let c = ctx.path().to_str().unwrap();
    let d = tempfile::tempdir().unwrap();
    let archive = |name: &str| d.path().join(name).display().to_string();

    // zstd: the new layers; busybox's layer stays gzip as pulled.
    k.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=oci,dest={},compression=zstd", archive("z.tar")),
        c,
    ]);
    let Some(types) = layer_types(&format!("oci-archive:{}", archive("z.tar"))) else {
        return;
    };
    assert_eq!(types, ["tar+gzip", "tar+zstd", "tar+zstd"]);
    // force-compression: every layer; a second output in the same build keeps gzip.
    k.ok(&[
        "build",
        "-q",
        "-o",
        &format!(
            "type=oci,dest={},compression=zstd,compression-level=9,force-compression=true",
            archive("zf.tar")
        ),
        "-o",
        &format!("type=oci,dest={}", archive("g.tar")),
        c,
    ]);
    assert_eq!(
        layer_types(&format!("oci-archive:{}", archive("zf.tar"))).unwrap(),
        ["tar+zstd", "tar+zstd", "tar+zstd"]
    );
    assert_eq!(
        layer_types(&format!("oci-archive:{}", archive("g.tar"))).unwrap(),
        ["tar+gzip", "tar+gzip", "tar+gzip"]
    );
    // uncompressed: a layer's digest is its diff id.
    k.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=oci,dest={},compression=uncompressed", archive("u.tar")),
        c,
    ]);
    let raw = json(&run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", archive("u.tar"))),
    ));
    let cfg = json(&run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci-archive:{}", archive("u.tar"))),
    ));
    assert_eq!(raw["layers"][2]["digest"], cfg["rootfs"]["diff_ids"][2]);
    // Every variant is the same image: the same config (diff ids).
    for a in ["z.tar", "zf.tar", "g.tar"] {
        let other = json(&run_ok(
            Command::new("skopeo")
                .args(["inspect", "--config"])
                .arg(format!("oci-archive:{}", archive(a))),
        ));
        assert_eq!(other["rootfs"], cfg["rootfs"], "{a}");
    }
    // skopeo reads every zstd blob back (digests verified on copy).
    run_ok(
        Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("oci-archive:{}", archive("zf.tar")))
            .arg(format!("dir:{}", archive("zf-dir"))),
    );

    // A zstd image pushed and used as a base in another root: it unpacks, its layers
    // stay zstd, and the new layer is gzip.
    let zbase = format!("{}/zbase:1", reg.host);
    k.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=registry,name={zbase},compression=zstd,force-compression=true"),
        c,
    ]);
    assert_eq!(
        layer_types(&format!("docker://{zbase}")).unwrap(),
        ["tar+zstd", "tar+zstd", "tar+zstd"]
    );
    let other = kiln();
    let ctx2 = context(&[
        ("Dockerfile", &format!("FROM {zbase}\nCOPY more /more\n")),
        ("more", "more\n"),
    ]);
    let out = d.path().join("from-zstd");
    other.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=oci,dest={}", archive("fz.tar")),
        "-o",
        out.to_str().unwrap(),
        ctx2.path().to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(out.join("hello")).unwrap(), "hello from kiln\n");
    assert_eq!(
        layer_types(&format!("oci-archive:{}", archive("fz.tar"))).unwrap(),
        ["tar+zstd", "tar+zstd", "tar+zstd", "tar+gzip"]
    );
    assert!(k.ok(&["fsck"]).contains(" 0 problems"));
}

#[test]
fn push_uses_the_pull_credentials_and_names_a_refusal() {
    let Some(reg) = Registry::start_with_htpasswd("kiln", "s3cret") else {
        return;
    };
    let k = kiln();
    let docker_config = tempfile::tempdir().unwrap();
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY hello /hello\n"), ("hello", "hi\n")]);
    k.ok(&["build", "-q", "-t", "app:1", ctx.path().to_str().unwrap()]);
    let dest = format!("{}/private/app:1", reg.host);
    let push = || {
        run(k
            .cmd()
            .env("DOCKER_CONFIG", docker_config.path())
            .args(["push", "app:1", &dest]))
    };
    let out = push();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&reg.host) && err.contains("kiln login"),
        "{err}"
    );
    run_ok(
        k.cmd()
            .env("DOCKER_CONFIG", docker_config.path())
            .args(["login", "-u", "kiln", "-p", "wrong", &reg.host]),
    );
    let out = push();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("cannot push `{dest}`")) && err.contains("401"),
        "{err}"
    );
    run_ok(
        k.cmd()
            .env("DOCKER_CONFIG", docker_config.path())
            .args(["login", "-u", "kiln", "-p", "s3cret", &reg.host]),
    );
    let out = push();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    if require_tool("skopeo") {
        run_ok(
            Command::new("skopeo")
                .args(["inspect", "--tls-verify=false", "--creds", "kiln:s3cret"])
                .arg(format!("docker://{dest}")),
        );
    }
}
