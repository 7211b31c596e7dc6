//! The local image store: images, tag, rmi, inspect, save, and skopeo reading it.

use crate::common::*;

#[test]
fn store_commands_round_trip() {
    let k = kiln();
    let ctx = fixture("every-instruction");
    let iid = k.ok(&[
        "build",
        "-q",
        "-t",
        "app:1",
        "-t",
        "registry.example:5000/team/app:v2",
        ctx.to_str().unwrap(),
    ]);
    let iid = iid.trim();
    assert!(iid.starts_with("sha256:"), "{iid}");
    let images = k.ok(&["images"]);
    let short = &iid[7..19];
    assert!(images.lines().next().unwrap().starts_with("REPOSITORY"), "{images}");
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("app ") && l.contains(" 1 ") && l.contains(short)),
        "{images}"
    );
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("registry.example:5000/team/app ") && l.contains("v2")),
        "{images}"
    );

    // The store is an OCI layout that skopeo reads as is.
    if let Some(cfg) = skopeo_inspect(
        &format!("oci:{}/store:docker.io/library/app:1", k.root().display()),
        true,
    ) {
        assert_eq!(cfg["config"]["WorkingDir"], "/app");
    }

    k.ok(&["tag", "app:1", "other:latest"]);
    k.ok(&["tag", short, "byid"]);
    let images = k.ok(&["images"]);
    assert!(images.contains("other ") && images.contains("byid "), "{images}");
    let inspect = json(&k.ok(&["inspect", "other"]));
    assert_eq!(inspect[0]["Id"], iid);
    assert_eq!(inspect[0]["Config"]["config"]["User"], "1000:1000");

    let d = tempfile::tempdir().unwrap();
    let docker_tar = d.path().join("save-docker.tar");
    let oci_tar = d.path().join("save-oci.tar");
    k.ok(&["save", "-o", docker_tar.to_str().unwrap(), "app:1"]);
    k.ok(&["save", "--format", "oci", "-o", oci_tar.to_str().unwrap(), "app:1"]);
    if let Some(cfg) = skopeo_inspect(&format!("docker-archive:{}", docker_tar.display()), true) {
        assert_eq!(cfg["config"]["StopSignal"], "SIGINT");
        let direct = skopeo_inspect(&format!("oci-archive:{}", oci_tar.display()), false).unwrap();
        assert_eq!(direct["Layers"].as_array().unwrap().len(), 4);
    }
    // save round-trips: the archive's manifest digest is the stored one.
    let via_store = skopeo_inspect(
        &format!("oci:{}/store:docker.io/library/app:1", k.root().display()),
        false,
    );
    let via_save = skopeo_inspect(&format!("oci-archive:{}", oci_tar.display()), false);
    if let (Some(a), Some(b)) = (via_store, via_save) {
        assert_eq!(a["Digest"], b["Digest"]);
    }

    let out = k.ok(&["rmi", "app:1", "other"]);
    assert!(
        out.contains("Untagged: app:1") && out.contains("Untagged: other:latest"),
        "{out}"
    );
    let images = k.ok(&["images"]);
    assert!(!images.lines().any(|l| l.starts_with("app ")), "{images}");
    k.ok(&["rmi", short]);
    assert_eq!(k.ok(&["images"]).lines().count(), 1, "only the header is left");
    let blobs = std::fs::read_dir(k.root().join("store/blobs/sha256")).unwrap().count();
    assert_eq!(
        blobs, 0,
        "rmi of the last tag removes the image's blobs from the layout"
    );
}

/// Serves `body` with an ETag to every request on a local port, for `ADD <url>`.
fn serve_forever(body: &'static [u8]) -> String {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let mut out = conn;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(head.as_bytes()).and_then(|()| out.write_all(body));
        }
    });
    format!("http://127.0.0.1:{port}/file.txt")
}

/// Every top-level entry of a root that real builds, an export in another compression,
/// `du`, `fsck` and `prune` have used is a `kiln_cache::Bucket` (or a lock file): a
/// directory added to the root as a string literal, outside the enum, fails here.
#[test]
fn every_top_level_entry_of_a_used_root_is_a_known_bucket() {
    if !require(
        kiln_testkit::is_root(),
        "the bucket walk runs RUN steps (cache mounts) as root",
    ) {
        return;
    }
    let k = kiln();
    let Some(bb) = crate::run::busybox_base(&k) else { return };
    let url = serve_forever(b"fetched\n");
    let ctx = context(&[
        (
            "Dockerfile",
            &format!(
                "FROM {bb}\nCOPY hello.txt /hello.txt\nADD {url} /fetched.txt\n\
                 RUN --mount=type=cache,id=pkgs,target=/c echo x >> /c/log && cp /c/log /log\n"
            ),
        ),
        ("hello.txt", "hello\n"),
    ]);
    let ctx = ctx.path().to_str().unwrap();
    k.ok(&["build", "-q", "-t", "app:1", ctx]);
    // Cached layers (gzip) converted for a zstd export.
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=oci,dest={}/app.tar,compression=zstd", out.path().display());
    k.ok(&["build", "-q", "--output", &dest, ctx]);
    k.ok(&["du"]);
    k.ok(&["fsck"]);

    let root = kiln_cache::KilnRoot::open(k.root()).unwrap();
    let present: Vec<String> = std::fs::read_dir(k.root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    use kiln_cache::Bucket;
    for b in [
        Bucket::Content,
        Bucket::Store,
        Bucket::Layers,
        Bucket::Cache,
        Bucket::Snapshots,
        Bucket::LayerDirs,
        Bucket::DiffIds,
        Bucket::Checksums,
        Bucket::Http,
        Bucket::Conversions,
        Bucket::CacheMounts,
        Bucket::Tmp,
    ] {
        assert!(
            present.iter().any(|p| p == b.dir_name()),
            "no {b}/ after the builds: {present:?}"
        );
    }
    assert_eq!(
        root.unknown_entries().unwrap(),
        Vec::<std::path::PathBuf>::new(),
        "{present:?}"
    );
    k.ok(&["prune", "--all"]);
    assert_eq!(root.unknown_entries().unwrap(), Vec::<std::path::PathBuf>::new());

    // The check can fail: a directory the enum does not know is reported.
    std::fs::create_dir(k.root().join("bogus-v1")).unwrap();
    assert_eq!(root.unknown_entries().unwrap(), vec![k.root().join("bogus-v1")]);
}

/// `kiln images | head -0`-style readers that stop early: a closed stdout ends kiln
/// quietly, as `ls` does, never with a panic (Rust's `println!` panics on EPIPE).
#[test]
fn a_reader_that_stops_early_gets_no_panic() {
    use std::process::Stdio;
    let k = kiln();
    let ctx = context(&[("Dockerfile", "FROM scratch\nLABEL a=b\n")]);
    let id = k.ok(&["build", "-q", "-t", "early:1", ctx.path().to_str().unwrap()]);
    for args in [vec!["images"], vec!["inspect", id.trim()], vec!["du"]] {
        let mut child = k
            .cmd()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before kiln writes.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "kiln {args:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "kiln {args:?}: {err}");
    }
}
