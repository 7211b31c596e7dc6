//! Hostile registries and base images (issue 18, items 10–13). A fake registry written
//! here (a std TcpListener speaking just enough HTTP/1.1) serves crafted manifests,
//! configs and blobs: diff ids that do not match the layers, a manifest request that is
//! never answered, a config served endlessly, 10,000 layers, unknown layer media types,
//! layers that are not the compression their media type says, a config with a wrong
//! media type. kiln must refuse each with one error naming the reference, within a
//! bounded time and memory, storing nothing for it.
//!
//! Every server thread stops by itself (after [`SERVER_LIFETIME`], or when the test
//! drops the server), and every kiln run is bounded by the test: a hang fails the test.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// How long any fake-registry thread lives at most.
const SERVER_LIFETIME: Duration = Duration::from_secs(180);

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What the fake registry answers on one path.
#[derive(Clone)]
enum Reply {
    Body {
        content_type: String,
        body: Arc<Vec<u8>>,
    },
    /// Reads the request and never answers (until the server stops).
    Stall,
    /// `200 OK` with no length and a body that never ends.
    Endless,
}

/// FakeRegistry serves fixed replies by path on a loopback port; `GET /v2/` answers `{}`,
/// anything else unknown 404. It records every request as `METHOD /path`.
struct FakeRegistry {
    host: String,
    stop: Arc<AtomicBool>,
    hits: Arc<Mutex<Vec<String>>>,
}

impl FakeRegistry {
    fn start(routes: HashMap<String, Reply>) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let routes = Arc::new(routes);
        let deadline = Instant::now() + SERVER_LIFETIME;
        let (s, h) = (stop.clone(), hits.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (routes, s, h) = (routes.clone(), s.clone(), h.clone());
                        std::thread::spawn(move || serve(conn, &routes, &s, deadline, &h));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeRegistry { host, stop, hits }
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Answers the requests of one connection (keep-alive) until it closes, idles for 5 s,
/// or the server stops.
fn serve(
    mut conn: TcpStream,
    routes: &HashMap<String, Reply>,
    stop: &AtomicBool,
    deadline: Instant,
    hits: &Mutex<Vec<String>>,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let live = || !stop.load(Ordering::SeqCst) && Instant::now() < deadline;
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match conn.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
            // Not HTTP (kiln probes loopback hosts with TLS first): hang up at once.
            if head.len() == 1 && !head[0].is_ascii_uppercase() || head.len() > 64 << 10 {
                return;
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut words = text.split_whitespace();
        let method = words.next().unwrap_or("").to_string();
        let path = words.next().unwrap_or("").split('?').next().unwrap_or("").to_string();
        hits.lock().unwrap().push(format!("{method} {path}"));
        let reply = match routes.get(&path) {
            Some(r) => r.clone(),
            None if path == "/v2/" => Reply::Body {
                content_type: "application/json".into(),
                body: Arc::new(b"{}".to_vec()),
            },
            None => {
                let body = r#"{"errors":[{"code":"NOT_FOUND","message":"not here"}]}"#;
                let _ = write!(
                    conn,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                continue;
            }
        };
        match reply {
            Reply::Body { content_type, body } => {
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                if method != "HEAD" && conn.write_all(&body).is_err() {
                    return;
                }
            }
            Reply::Stall => {
                while live() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            Reply::Endless => {
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
                );
                let chunk = vec![b' '; 64 << 10];
                while live() && conn.write_all(&chunk).is_ok() {}
                return;
            }
        }
    }
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)))
}

fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, text) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, name, text.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap()
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(raw).unwrap();
    gz.finish().unwrap()
}

fn config_json(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// An image served at `/v2/REPO/manifests/1`: a config (with its media type and the
/// size its descriptor claims) and layers given as (media type, blob). Returns the
/// routes (blobs served unless `serve_blobs` is false) and the manifest's bytes.
struct Image {
    repo: &'static str,
    config: Vec<u8>,
    config_media_type: &'static str,
    config_size: Option<u64>,
    layers: Vec<(String, Vec<u8>)>,
}

impl Image {
    fn new(repo: &'static str, config: Vec<u8>, layers: Vec<(String, Vec<u8>)>) -> Self {
        Image {
            repo,
            config,
            config_media_type: OCI_CONFIG,
            config_size: None,
            layers,
        }
    }

    fn routes(&self) -> HashMap<String, Reply> {
        let mut routes = HashMap::new();
        let mut blob = |bytes: &[u8]| {
            routes.insert(
                format!("/v2/{}/blobs/{}", self.repo, sha(bytes)),
                Reply::Body {
                    content_type: "application/octet-stream".into(),
                    body: Arc::new(bytes.to_vec()),
                },
            );
        };
        blob(&self.config);
        for (_, b) in &self.layers {
            blob(b);
        }
        let layers: Vec<_> = self
            .layers
            .iter()
            .map(|(mt, b)| serde_json::json!({"mediaType": mt, "digest": sha(b), "size": b.len()}))
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": self.config_media_type,
                "digest": sha(&self.config),
                "size": self.config_size.unwrap_or(self.config.len() as u64),
            },
            "layers": layers,
        }))
        .unwrap();
        routes.insert(
            format!("/v2/{}/manifests/1", self.repo),
            Reply::Body {
                content_type: OCI_MANIFEST.into(),
                body: Arc::new(manifest),
            },
        );
        routes
    }
}

/// The outcome of a bounded kiln run.
struct Bounded {
    /// `None` when the test had to kill kiln at its bound.
    output: Option<Output>,
    took: Duration,
    /// The highest `VmHWM` (peak resident set, KiB) seen while kiln ran.
    peak_kib: u64,
}

impl Bounded {
    fn stderr(&self) -> String {
        self.output
            .as_ref()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default()
    }

    /// Asserts kiln finished within its bound and failed; returns stderr.
    fn failed(&self, what: &str) -> String {
        let out = self
            .output
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: kiln still ran after {:?}; killed", self.took));
        assert!(!out.status.success(), "{what}: kiln should fail but succeeded");
        let err = self.stderr();
        eprintln!(
            "{what} failed after {:?} (peak {} KiB): {err}",
            self.took, self.peak_kib
        );
        err
    }
}

/// Runs `cmd`, killing it after `limit`; samples its peak memory as it runs.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Bounded {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    Bounded {
        output: status.map(|status| Output { status, stdout, stderr }),
        took,
        peak_kib,
    }
}

/// `kiln pull REF` with the registry timeout at `timeout` seconds, bounded by `limit`.
fn pull(k: &Kiln, reference: &str, timeout: &str, limit: Duration) -> Bounded {
    run_bounded(
        k.cmd()
            .env("KILN_REGISTRY_TIMEOUT", timeout)
            .args(["pull", "-q", reference]),
        limit,
    )
}

/// Nothing was kept: no image, no blob of `absent`, and `kiln fsck` is clean.
fn assert_nothing_stored(k: &Kiln, absent: &[&[u8]]) {
    assert_eq!(k.ok(&["images"]).lines().count(), 1, "no image was stored");
    for blob in absent {
        let hex = sha(blob);
        let path = k.root().join("content-v1/blobs/sha256").join(&hex["sha256:".len()..]);
        assert!(!path.exists(), "{hex} must not be stored");
        // Nor kept as a partial download to resume: refused bytes stay refused.
        let partial = k.root().join("content-v1/ingest").join(&hex["sha256:".len()..]);
        assert!(!partial.exists(), "{hex} must not be kept as a partial download");
    }
    k.ok(&["fsck"]);
}

#[test]
fn diff_ids_that_do_not_match_the_layers_are_refused() {
    let raw = tar_of(&[("hello", "hi\n")]);
    let layer = gzip(&raw);
    let claimed = sha(&tar_of(&[("other", "no\n")]));
    let img = Image::new(
        "bad/diffid",
        config_json(std::slice::from_ref(&claimed)),
        vec![(OCI_GZIP.into(), layer.clone())],
    );
    let reg = FakeRegistry::start(img.routes());
    let reference = format!("{}/bad/diffid:1", reg.host);
    let k = kiln();
    let err = pull(&k, &reference, "10", Duration::from_secs(60)).failed("pull");
    for part in [&reference, &sha(&layer), &claimed, &sha(&raw)] {
        assert!(err.contains(part.as_str()), "the error names `{part}`:\n{err}");
    }
    assert_eq!(err.trim().lines().count(), 1, "one error:\n{err}");
    assert_nothing_stored(&k, &[&layer]);

    // A build that exports the base without unpacking it is refused the same way, and
    // writes nothing.
    let ctx = context(&[("Dockerfile", &format!("FROM {reference}\nENV A=1\n"))]);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("image.tar");
    let built = run_bounded(
        k.cmd().args([
            "build",
            "-q",
            "-o",
            &format!("type=oci,dest={}", dest.display()),
            ctx.path().to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    let err = built.failed("build");
    assert!(err.contains(&claimed) && err.contains(&sha(&layer)), "{err}");
    assert!(!dest.exists(), "no image was written");
    assert_nothing_stored(&k, &[&layer]);
}

#[test]
fn a_manifest_request_that_is_never_answered_times_out() {
    let mut routes = HashMap::new();
    routes.insert("/v2/slow/img/manifests/1".to_string(), Reply::Stall);
    let reg = FakeRegistry::start(routes);
    let reference = format!("{}/slow/img:1", reg.host);
    let k = kiln();
    let run = pull(&k, &reference, "2", Duration::from_secs(30));
    let err = run.failed("pull");
    assert!(
        run.took < Duration::from_secs(12),
        "a 2 s deadline, tried twice, took {:?}",
        run.took
    );
    assert!(
        err.contains(&reference)
            && err.contains("did not answer within 2 s")
            && err.contains("GET /v2/slow/img/manifests/1"),
        "{err}"
    );
    // A deadline is tried once more (issue 17 item 6), not five times.
    let asked = reg
        .hits()
        .iter()
        .filter(|h| *h == "GET /v2/slow/img/manifests/1")
        .count();
    assert_eq!(asked, 2, "{:?}", reg.hits());
}

#[test]
fn an_endless_config_is_refused_with_bounded_memory() {
    // The descriptor claims a huge config and the registry sends one without end.
    let config = config_json(&[]);
    let mut img = Image::new("endless/config", config.clone(), Vec::new());
    img.config_size = Some(1 << 40);
    let mut routes = img.routes();
    routes.insert(format!("/v2/endless/config/blobs/{}", sha(&config)), Reply::Endless);
    let reg = FakeRegistry::start(routes);
    let reference = format!("{}/endless/config:1", reg.host);
    let k = kiln();
    let run = pull(&k, &reference, "5", Duration::from_secs(30));
    let err = run.failed("pull");
    assert!(run.took < Duration::from_secs(10), "took {:?}", run.took);
    assert!(run.peak_kib < 200 << 10, "peak RSS {} KiB", run.peak_kib);
    assert!(
        err.contains(&reference) && err.contains(&sha(&config)) && err.contains("exceeds 8 MiB"),
        "{err}"
    );

    // The descriptor is modest but the body never ends: cut at the descriptor's size.
    let mut img = Image::new("endless/body", config.clone(), Vec::new());
    img.config_size = Some(4 << 20);
    let mut routes = img.routes();
    routes.insert(format!("/v2/endless/body/blobs/{}", sha(&config)), Reply::Endless);
    let reg = FakeRegistry::start(routes);
    let reference = format!("{}/endless/body:1", reg.host);
    let run = pull(&k, &reference, "5", Duration::from_secs(30));
    let err = run.failed("pull");
    assert!(run.took < Duration::from_secs(10), "took {:?}", run.took);
    assert!(run.peak_kib < 200 << 10, "peak RSS {} KiB", run.peak_kib);
    assert!(err.contains(&reference) && err.contains(&sha(&config)), "{err}");
    assert_nothing_stored(&k, &[]);
}

/// An image of `n` layers: the same one-file layer `n` times (so the registry serves
/// one blob), or `n` different one-file layers.
fn many_layers(repo: &'static str, n: usize, distinct: bool) -> Image {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..n {
        let name = if distinct { format!("f{i}") } else { "f".to_string() };
        let raw = tar_of(&[(&name, &format!("{i}\n"))]);
        diff_ids.push(sha(&raw));
        layers.push((OCI_GZIP.to_string(), gzip(&raw)));
        if !distinct {
            let one = layers[0].clone();
            let id = diff_ids[0].clone();
            layers = vec![one; n];
            diff_ids = vec![id; n];
            break;
        }
    }
    Image::new(repo, config_json(&diff_ids), layers)
}

#[test]
fn ten_thousand_layers_are_refused_at_the_documented_cap() {
    let img = many_layers("many/layers", 10_000, false);
    let reg = FakeRegistry::start(img.routes());
    let reference = format!("{}/many/layers:1", reg.host);
    let k = kiln();
    let ctx = context(&[("Dockerfile", &format!("FROM {reference}\nENV A=1\n"))]);
    let run = run_bounded(
        k.cmd().args(["build", "-q", ctx.path().to_str().unwrap()]),
        Duration::from_secs(60),
    );
    let err = run.failed("build");
    assert!(run.took < Duration::from_secs(20), "took {:?}", run.took);
    assert!(
        err.contains(&reference) && err.contains("10000 layers") && err.contains("at most 500"),
        "{err}"
    );
    assert!(
        !reg.hits().iter().any(|h| h.contains("/blobs/")),
        "refused before any download: {:?}",
        reg.hits()
    );
}

#[test]
fn five_hundred_layers_build_in_reasonable_time() {
    let img = many_layers("five/hundred", 500, true);
    let reg = FakeRegistry::start(img.routes());
    let reference = format!("{}/five/hundred:1", reg.host);
    let k = kiln();
    let ctx = context(&[("Dockerfile", &format!("FROM {reference}\nENV A=1\n"))]);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs.tar");
    let run = run_bounded(
        k.cmd().args([
            "build",
            "-q",
            "-o",
            &format!("type=tar,dest={}", dest.display()),
            ctx.path().to_str().unwrap(),
        ]),
        Duration::from_secs(120),
    );
    let out_ok = run.output.as_ref().is_some_and(|o| o.status.success());
    assert!(out_ok, "took {:?}: {}", run.took, run.stderr());
    let listing = tar_listing(&std::fs::read(&dest).unwrap());
    for i in [0, 250, 499] {
        assert!(
            listing
                .iter()
                .any(|l| l.split(' ').next() == Some(format!("f{i}").as_str())),
            "f{i} in {listing:?}"
        );
    }
}

/// Pulls an image whose single layer is `layer` with `media_type` (or whose config has
/// `config_media_type`) and expects a refusal naming the reference and `names`.
fn refused_at_pull(
    repo: &'static str,
    media_type: &str,
    layer: Vec<u8>,
    diff_id: String,
    config_media_type: &'static str,
    names: &[&str],
) {
    let mut img = Image::new(
        repo,
        config_json(&[diff_id]),
        vec![(media_type.to_string(), layer.clone())],
    );
    img.config_media_type = config_media_type;
    let reg = FakeRegistry::start(img.routes());
    let reference = format!("{}/{repo}:1", reg.host);
    let k = kiln();
    let err = pull(&k, &reference, "10", Duration::from_secs(60)).failed(repo);
    assert!(err.contains(&reference), "the error names the reference:\n{err}");
    for part in names {
        assert!(err.contains(part), "the error names `{part}`:\n{err}");
    }
    assert_nothing_stored(&k, &[&layer]);
}

#[test]
fn an_unknown_layer_media_type_is_refused_at_pull() {
    let raw = tar_of(&[("a", "a\n")]);
    let layer = gzip(&raw);
    let mt = "application/vnd.example.layer.v1.tar+lz4";
    refused_at_pull(
        "unknown/layer",
        mt,
        layer.clone(),
        sha(&raw),
        OCI_CONFIG,
        &[mt, &sha(&layer)],
    );
}

#[test]
fn a_layer_that_is_not_its_media_types_compression_is_refused_at_pull() {
    let raw = tar_of(&[("a", "a\n")]);
    let zst = zstd::encode_all(&raw[..], 3).unwrap();
    refused_at_pull(
        "zstd/asgzip",
        OCI_GZIP,
        zst.clone(),
        sha(&raw),
        OCI_CONFIG,
        &[&sha(&zst), "zstd", "gzip"],
    );
    refused_at_pull(
        "plain/asgzip",
        OCI_GZIP,
        raw.clone(),
        sha(&raw),
        OCI_CONFIG,
        &[&sha(&raw), "gzip"],
    );
}

#[test]
fn a_config_with_a_wrong_media_type_is_refused_at_pull() {
    let raw = tar_of(&[("a", "a\n")]);
    let layer = gzip(&raw);
    refused_at_pull(
        "wrong/config",
        OCI_GZIP,
        layer,
        sha(&raw),
        "application/octet-stream",
        &["application/octet-stream", "config"],
    );
}

/// The diff id of the only layer of the OCI archive `tar` (index → manifest → config).
fn archive_diff_ids(archive: &[u8]) -> Vec<String> {
    let blob = |d: &serde_json::Value| {
        let hex = d["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
        json(&tar_member(archive, &format!("blobs/sha256/{hex}")).unwrap())
    };
    let index = json(&tar_member(archive, "index.json").unwrap());
    let manifest = blob(&index["manifests"][0]);
    let config = blob(&manifest["config"]);
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_imported_cache_whose_diff_ids_lie_is_a_miss() {
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n"), ("a.txt", "a\n")]);
    let c = ctx.path().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = |name: &str| dir.path().join(name);
    let a = kiln();
    a.ok(&[
        "build",
        "-q",
        "--cache-to",
        &format!("type=local,dest={}", cache.display()),
        "-o",
        &format!("type=oci,dest={}", out("a.tar").display()),
        c,
    ]);
    let real = archive_diff_ids(&std::fs::read(out("a.tar")).unwrap());
    assert_eq!(real.len(), 1);

    // Rewrite the cache index so the COPY layer claims another diff id.
    let bogus = sha(b"not the layer");
    let index_path = cache.join("index.json");
    let mut index = json(&std::fs::read_to_string(&index_path).unwrap());
    let old_hex = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let old = std::fs::read_to_string(cache.join("blobs/sha256").join(&old_hex)).unwrap();
    assert!(old.contains(&real[0]), "the cache index names the layer's diff id");
    let forged = old.replace(&real[0], &bogus);
    let hex = sha(forged.as_bytes()).trim_start_matches("sha256:").to_string();
    std::fs::write(cache.join("blobs/sha256").join(&hex), &forged).unwrap();
    index["manifests"][0]["digest"] = format!("sha256:{hex}").into();
    index["manifests"][0]["size"] = forged.len().into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

    // A fresh root importing that cache runs the step instead of taking the lie.
    let b = kiln();
    b.ok(&[
        "build",
        "-q",
        "--cache-from",
        &format!("type=local,src={}", cache.display()),
        "-o",
        &format!("type=oci,dest={}", out("b.tar").display()),
        c,
    ]);
    assert_eq!(archive_diff_ids(&std::fs::read(out("b.tar")).unwrap()), real);
    b.ok(&["fsck"]);
}
