//! Base images from a real registry (Debian's docker-registry on loopback). The base is
//! made here: busybox-static's binary COPY'd FROM scratch by kiln, pushed with skopeo.

use std::process::Command;

use crate::common::*;
use kiln_testkit::Registry;

/// Builds the busybox base with kiln and pushes it to `reg` as `busybox:1`.
pub(crate) fn push_busybox(k: &Kiln, reg: &Registry) -> Option<String> {
    push_busybox_as(k, reg, "busybox:1", &[])
}

/// Builds the busybox base (busybox-static's binary FROM scratch) with kiln and pushes
/// it to `reg` as `name`, passing `skopeo_args` (credentials, certificates) to skopeo.
fn push_busybox_as(k: &Kiln, reg: &Registry, name: &str, skopeo_args: &[&str]) -> Option<String> {
    if !require(
        std::path::Path::new("/bin/busybox").is_file(),
        "busybox-static (/bin/busybox) is not installed",
    ) || !require_tool("skopeo")
    {
        return None;
    }
    let ctx = tempfile::tempdir().unwrap();
    std::fs::create_dir(ctx.path().join("bin")).unwrap();
    std::fs::copy("/bin/busybox", ctx.path().join("bin/busybox")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY bin/ /bin/\nENV BASE=busybox\nCMD [\"/bin/busybox\", \"sh\"]\n",
    )
    .unwrap();
    let archive = ctx.path().join("busybox.tar");
    k.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=oci,dest={}", archive.display()),
        ctx.path().to_str().unwrap(),
    ]);
    let dest = format!("docker://{}/{name}", reg.host);
    run_ok(
        Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .args(skopeo_args)
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(&dest),
    );
    Some(dest)
}

/// Every blob in the root's content store matches its digest.
pub(crate) fn assert_blobs_whole(k: &Kiln) {
    for entry in std::fs::read_dir(k.root().join("content-v1/blobs/sha256")).unwrap() {
        let p = entry.unwrap().path();
        let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&p).unwrap()));
        assert_eq!(
            p.file_name().unwrap().to_str().unwrap(),
            hex,
            "blob {} is corrupt or partial",
            p.display()
        );
    }
}

#[test]
fn from_registry_image_adds_one_layer() {
    let Some(reg) = Registry::start() else { return };
    let k = kiln();
    let Some(base) = push_busybox(&k, &reg) else { return };
    let base_info = json(&run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &base,
    ])));

    let ctx = context(&[
        ("a.txt", "hello"),
        (
            "Dockerfile",
            &format!("FROM {}/busybox:1\nENV OWN=1\nCOPY a.txt /a.txt\n", reg.host),
        ),
    ]);
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("app.tar");
    let fresh = kiln();
    let log = run(fresh
        .cmd()
        .args([
            "build",
            "--progress=plain",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
        ])
        .arg(ctx.path()));
    let stderr = String::from_utf8_lossy(&log.stderr);
    assert!(log.status.success(), "{stderr}");
    // The base is pinned to the digest it resolved to, as BuildKit shows it.
    assert!(
        stderr.contains(&format!("FROM {}/busybox:1@sha256:", reg.host)),
        "{stderr}"
    );
    // The pull shows its transfer as BuildKit does: `sha256:… 1.06MB / 1.06MB`.
    let base_layer = base_info["Layers"][0].as_str().unwrap().to_string();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(&base_layer) && l.contains(" / ") && l.ends_with("MB")),
        "no transfer progress for {base_layer}:\n{stderr}"
    );
    let info = skopeo_inspect(&format!("oci-archive:{}", archive.display()), false).unwrap();
    let base_layers = base_info["Layers"].as_array().unwrap();
    let layers = info["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), base_layers.len() + 1, "the base's layers plus one");
    assert_eq!(
        &layers[..base_layers.len()],
        &base_layers[..],
        "base layers by the same digests"
    );
    let cfg = skopeo_inspect(&format!("oci-archive:{}", archive.display()), true).unwrap();
    let env: Vec<&str> = cfg["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"BASE=busybox") && env.contains(&"OWN=1"),
        "base config inherited: {env:?}"
    );
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["/bin/busybox", "sh"]));
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), layers.len());
    // Every blob in the root's content store matches its digest.
    assert_blobs_whole(&fresh);
}

#[test]
fn registry_errors_name_the_reference() {
    let Some(reg) = Registry::start() else { return };
    let k = kiln();
    let ctx = context(&[("Dockerfile", &format!("FROM {}/nothing:here\n", reg.host))]);
    let err = k.fails(&["build", ctx.path().to_str().unwrap()]);
    assert!(
        err.contains("Dockerfile:1") && err.contains("nothing:here") && err.contains("404"),
        "{err}"
    );
    // A registry that is not there: one clear error after the retries.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ctx = context(&[("Dockerfile", &format!("FROM 127.0.0.1:{port}/gone:1\n"))]);
    let err = k.fails(&["build", ctx.path().to_str().unwrap()]);
    assert!(
        err.contains(&format!("127.0.0.1:{port}/gone:1")) && err.contains("cannot reach"),
        "{err}"
    );
}

/// A loopback TCP proxy to `upstream` that cuts the first large response short once
/// (after `cut_after` bytes from the server), to force a resumed download; with
/// `fail_first` it instead answers the first `fail_first` connections with HTTP 500.
pub(crate) struct CuttingProxy {
    pub(crate) addr: String,
    cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CuttingProxy {
    fn start(upstream: String, cut_after: usize) -> CuttingProxy {
        Self::start_with(upstream, cut_after, 0, 1)
    }

    pub(crate) fn start_with(upstream: String, cut_after: usize, fail_first: usize, max_cuts: usize) -> CuttingProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cuts = Arc::new(AtomicUsize::new(0));
        let c = cuts.clone();
        std::thread::spawn(move || {
            // Bounded: the proxy serves at most 200 connections, then stops.
            for (n, client) in listener.incoming().take(200).enumerate() {
                let Ok(mut client) = client else { continue };
                if n < fail_first {
                    let mut req = [0u8; 4096];
                    let _ = client.read(&mut req);
                    let body = "{\"errors\":[{\"code\":\"UNAVAILABLE\",\"message\":\"injected\"}]}";
                    let _ = write!(client, "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    continue;
                }
                let Ok(mut server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    let mut sent = 0usize;
                    loop {
                        let n = match server.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if sent + n > cut_after && c.load(Ordering::SeqCst) < max_cuts {
                            c.fetch_add(1, Ordering::SeqCst);
                            let _ = client.write_all(&buf[..cut_after.saturating_sub(sent)]);
                            break; // drop both ends mid-body
                        }
                        if client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n;
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingProxy { addr, cuts }
    }
}

#[test]
fn dropped_blob_download_resumes() {
    let Some(reg) = Registry::start() else { return };
    let k = kiln();
    if push_busybox(&k, &reg).is_none() {
        return;
    }
    // The busybox layer is ~1 MB compressed: cut the connection 100 kB into it.
    let proxy = CuttingProxy::start(reg.host.clone(), 100_000);
    let ctx = context(&[("Dockerfile", &format!("FROM {}/busybox:1\nENV X=1\n", proxy.addr))]);
    let fresh = kiln();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("a.tar");
    fresh.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=oci,dest={}", archive.display()),
        ctx.path().to_str().unwrap(),
    ]);
    assert_eq!(
        proxy.cuts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the proxy cut one download"
    );
    // The resumed blob is whole: every stored blob matches its name.
    assert_blobs_whole(&fresh);
    assert!(
        std::fs::read_dir(fresh.root().join("tmp")).unwrap().next().is_none(),
        "no temp files left"
    );
}

#[test]
fn server_errors_are_retried() {
    let Some(reg) = Registry::start() else { return };
    let k = kiln();
    if push_busybox(&k, &reg).is_none() {
        return;
    }
    // Two 500s, then the real registry: the pull retries and succeeds.
    let proxy = CuttingProxy::start_with(reg.host.clone(), usize::MAX, 2, 0);
    let ctx = context(&[("Dockerfile", &format!("FROM {}/busybox:1\nENV X=1\n", proxy.addr))]);
    kiln().ok(&["build", "-q", ctx.path().to_str().unwrap()]);
    // Always 500: one clear error naming the reference, after the retries.
    let proxy = CuttingProxy::start_with(reg.host.clone(), usize::MAX, 200, 0);
    let ctx = context(&[("Dockerfile", &format!("FROM {}/busybox:1\n", proxy.addr))]);
    let err = kiln().fails(&["build", ctx.path().to_str().unwrap()]);
    assert!(
        err.contains(&format!("{}/busybox:1", proxy.addr)) && err.contains("HTTP 500"),
        "{err}"
    );
}

#[test]
fn pull_policies_and_the_local_store() {
    let Some(reg) = Registry::start() else { return };
    let k = kiln();
    if push_busybox(&k, &reg).is_none() {
        return;
    }
    let image = format!("{}/busybox:1", reg.host);
    let fresh = kiln();
    let ctx = context(&[("Dockerfile", &format!("FROM {image}\nENV X=1\n"))]);
    let c = ctx.path().to_str().unwrap();
    // Nothing local yet: --pull=never names the image and fails.
    let err = fresh.fails(&["build", "--pull=never", c]);
    assert!(err.contains(&image) && err.contains("not in the local store"), "{err}");
    // `kiln pull` stores it; `kiln images` lists it.
    let id = fresh.ok(&["pull", "-q", &image]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert!(fresh.ok(&["images"]).contains(&format!("{}/busybox", reg.host)));
    let with_registry = fresh.ok(&["build", "-q", "--pull=never", c]);
    // With the registry gone, the default policy builds from the local store...
    drop(reg);
    assert_eq!(
        fresh.ok(&["build", "-q", c]),
        with_registry,
        "same image from the local store"
    );
    // ...and --pull (always) must reach the registry, so it fails clearly.
    let err = fresh.fails(&["build", "--pull", c]);
    assert!(err.contains("busybox:1") && err.contains("cannot reach"), "{err}");
}

#[test]
fn credentials_from_the_docker_config() {
    let Some(reg) = Registry::start_with_htpasswd("kiln", "s3cret") else {
        return;
    };
    let k = kiln();
    // Push the base with skopeo, as user kiln.
    if push_busybox_as(&k, &reg, "private:1", &["--dest-creds", "kiln:s3cret"]).is_none() {
        return;
    }
    let docker_config = tempfile::tempdir().unwrap();
    let app = context(&[("Dockerfile", &format!("FROM {}/private:1\nENV X=1\n", reg.host))]);
    let build = |k: &Kiln| {
        run(k
            .cmd()
            .env("DOCKER_CONFIG", docker_config.path())
            .args(["build", "-q"])
            .arg(app.path()))
    };
    // No credentials: one clear error naming the registry and the status.
    let out = build(&kiln());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&reg.host) && err.contains("kiln login"),
        "{err}"
    );
    // A wrong password: 401 named.
    run_ok(
        k.cmd()
            .env("DOCKER_CONFIG", docker_config.path())
            .args(["login", "-u", "kiln", "-p", "wrong", &reg.host]),
    );
    let out = build(&kiln());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&reg.host) && err.contains("401"),
        "{err}"
    );
    // `kiln login` with the right password writes config.json; the build then pulls.
    let mut login = k.cmd();
    login
        .env("DOCKER_CONFIG", docker_config.path())
        .args(["login", "-u", "kiln", "--password-stdin", &reg.host]);
    let out = {
        use std::io::Write;
        let mut child = login
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = std::fs::read_to_string(docker_config.path().join("config.json")).unwrap();
    assert!(
        config.contains(&reg.host) && !config.contains("s3cret"),
        "stored base64, as docker does: {config}"
    );
    let out = build(&kiln());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    run_ok(
        k.cmd()
            .env("DOCKER_CONFIG", docker_config.path())
            .args(["logout", &reg.host]),
    );
    assert!(!std::fs::read_to_string(docker_config.path().join("config.json"))
        .unwrap()
        .contains(&reg.host));
}

#[test]
fn tls_registry_with_a_private_ca_and_credentials() {
    let certs = tempfile::tempdir().unwrap();
    let ca = certs.path().join("ca.pem");
    let Some(reg) = Registry::start_tls_htpasswd("kiln", "s3cret", &ca) else {
        return;
    };
    let k = kiln();
    let cert_dir = certs.path().to_str().unwrap();
    let skopeo_args = ["--dest-cert-dir", cert_dir, "--dest-creds", "kiln:s3cret"];
    if push_busybox_as(&k, &reg, "secure:1", &skopeo_args).is_none() {
        return;
    }
    let docker_config = tempfile::tempdir().unwrap();
    std::fs::write(
        docker_config.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"a2lsbjpzM2NyZXQ="}}}}}}"#, reg.host),
    )
    .unwrap();
    let app = context(&[("Dockerfile", &format!("FROM {}/secure:1\nENV X=1\n", reg.host))]);
    // Without the CA the certificate is not trusted: one clear error.
    let out = run(kiln()
        .cmd()
        .env("DOCKER_CONFIG", docker_config.path())
        .args(["build", "-q"])
        .arg(app.path()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an untrusted certificate must fail");
    assert!(err.contains(&reg.host) && err.contains("certificate"), "{err}");
    // Not retried: another attempt meets the same certificate (issue 17 item 6).
    assert!(!err.contains("attempts"), "{err}");
    // With --tls-ca and the docker config's credentials, the pull goes over TLS.
    let out = run(kiln()
        .cmd()
        .env("DOCKER_CONFIG", docker_config.path())
        .args(["build", "-q", "--tls-ca"])
        .arg(&ca)
        .arg(app.path()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The system store (here `$SSL_CERT_FILE`) is trusted without --tls-ca.
    let out = run(kiln()
        .cmd()
        .env("DOCKER_CONFIG", docker_config.path())
        .env("SSL_CERT_FILE", &ca)
        .args(["build", "-q"])
        .arg(app.path()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // --insecure-registry HOST skips verification, as Docker does.
    let out = run(kiln()
        .cmd()
        .env("DOCKER_CONFIG", docker_config.path())
        .args(["build", "-q", "--insecure-registry", &reg.host])
        .arg(app.path()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_blob_that_never_arrives_whole_fails_cleanly() {
    let Some(reg) = Registry::start() else { return };
    let k = kiln();
    if push_busybox(&k, &reg).is_none() {
        return;
    }
    // Every download of the layer is cut: the retries give up with one clear error,
    // and nothing partial is stored.
    let proxy = CuttingProxy::start_with(reg.host.clone(), 100_000, 0, usize::MAX);
    let ctx = context(&[("Dockerfile", &format!("FROM {}/busybox:1\nENV X=1\n", proxy.addr))]);
    let fresh = kiln();
    let err = fresh.fails(&["build", ctx.path().to_str().unwrap()]);
    assert!(
        err.contains(&format!("{}/busybox:1", proxy.addr)) && err.contains("blob"),
        "{err}"
    );
    assert_blobs_whole(&fresh);
    assert!(
        std::fs::read_dir(fresh.root().join("tmp")).unwrap().next().is_none(),
        "no temp files left"
    );
    assert!(fresh.ok(&["images"]).lines().count() == 1, "no image was stored");
}

/// A gzip layer holding one file, as (blob, diff id hex, digest hex). Its uid, gid and
/// mtime fields are left empty, as some tar writers leave them (kiln once refused
/// such layers; Go's archive/tar, hence Docker, reads them as 0).
fn one_file_layer(name: &str, text: &str) -> (Vec<u8>, String, String) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, name, text.as_bytes()).unwrap();
    let raw = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let blob = gz.finish().unwrap();
    let hex = |b: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b));
    (blob.clone(), hex(&raw), hex(&blob))
}

#[test]
fn an_index_gives_each_platform_its_manifest() {
    let Some(reg) = Registry::start() else { return };
    if !require_tool("skopeo") {
        return;
    }
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let other = if host == "amd64" { "arm64" } else { "amd64" };
    // An OCI layout with one image per platform, each a file naming its platform.
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut entries = Vec::new();
    let mut configs = std::collections::BTreeMap::new();
    for arch in [host, other] {
        let (layer, diff_id, _) = one_file_layer("platform", arch);
        let (layer_digest, layer_size) = put(&layer);
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": [format!("ARCH={arch}")]},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        });
        let (config_digest, config_size) = put(config.to_string().as_bytes());
        configs.insert(arch, config_digest.clone());
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
        });
        let (m_digest, m_size) = put(manifest.to_string().as_bytes());
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m_digest, "size": m_size,
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
    let (i_digest, i_size) = put(index.to_string().as_bytes());
    std::fs::write(dir.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": i_digest, "size": i_size,
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(dir.path().join("index.json"), top.to_string()).unwrap();
    let image = format!("{}/multi:1", reg.host);
    run_ok(
        Command::new("skopeo")
            .args(["copy", "-q", "--all", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:multi", dir.path().display()))
            .arg(format!("docker://{image}")),
    );

    let k = kiln();
    let id = k.ok(&["pull", "-q", "--platform", &format!("linux/{other}"), &image]);
    assert_eq!(id.trim(), configs[other], "--platform picks the {other} manifest");
    let id = k.ok(&["pull", "-q", &image]);
    assert_eq!(id.trim(), configs[host], "the host's platform by default");
    let err = k.fails(&["pull", "--platform", "linux/s390x", &image]);
    assert!(
        err.contains("no manifest for platform `linux/s390x`") && err.contains(&format!("linux/{other}")),
        "{err}"
    );
    // A build FROM the index gets the host's image.
    let ctx2 = context(&[("Dockerfile", &format!("FROM {image}\nENV X=1\n"))]);
    let out = tempfile::tempdir().unwrap();
    k.ok(&[
        "build",
        "-q",
        "--pull=always",
        "-o",
        out.path().to_str().unwrap(),
        ctx2.path().to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(out.path().join("platform")).unwrap(), host);
}
