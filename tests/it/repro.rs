//! Reproducible images: with SOURCE_DATE_EPOCH, builds of the same inputs in different
//! roots, at different times, with different context mtimes give identical digests.

use std::io::Read;
use std::process::Command;

use crate::common::*;

const EPOCH: i64 = 1_700_000_000;

/// The mtimes of every entry of the layer blob `digest` in the oci-archive `archive`.
fn layer_mtimes(archive: &[u8], digest: &str) -> Vec<(String, u64)> {
    let mut ar = tar::Archive::new(archive);
    let hex = digest.trim_start_matches("sha256:");
    let mut blob = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(&format!("blobs/sha256/{hex}")) {
            e.read_to_end(&mut blob).unwrap();
        }
    }
    assert!(!blob.is_empty(), "layer {digest} is in the archive");
    let mut out = Vec::new();
    let mut layer = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    for e in layer.entries().unwrap() {
        let e = e.unwrap();
        out.push((e.path().unwrap().display().to_string(), e.header().mtime().unwrap()));
    }
    out
}

#[test]
fn source_date_epoch_gives_identical_digests_across_roots_and_days() {
    if !kiln_testkit::is_root() && !require(false, "the reproducibility test runs RUN steps as root") {
        return;
    }
    let Some(bb) = crate::run::busybox_context() else {
        return;
    };
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM bb:1\nCOPY app/ /app/\nRUN echo made > /made && mkdir -p /var/made && touch /var/made/x\n",
        ),
        ("app/main.txt", "main\n"),
        ("app/sub/data.txt", "data\n"),
    ]);
    let d = tempfile::tempdir().unwrap();
    let build = |k: &Kiln, name: &str, how: &str| -> (serde_json::Value, Vec<u8>) {
        k.ok(&[
            "build",
            "-q",
            "--build-arg",
            &format!("SOURCE_DATE_EPOCH={EPOCH}"),
            "-t",
            "bb:1",
            bb.path().to_str().unwrap(),
        ]);
        let (meta, archive) = (
            d.path().join(format!("{name}.json")),
            d.path().join(format!("{name}.tar")),
        );
        let mut c = k.cmd();
        c.args(["build", "-q", "--metadata-file"]).arg(&meta);
        c.arg("-o").arg(format!("type=oci,dest={}", archive.display()));
        if how == "env" {
            c.env("SOURCE_DATE_EPOCH", EPOCH.to_string());
        } else {
            c.args(["--build-arg", &format!("SOURCE_DATE_EPOCH={EPOCH}")]);
        }
        run_ok(c.arg(ctx.path()));
        (
            json(&std::fs::read_to_string(meta).unwrap()),
            std::fs::read(archive).unwrap(),
        )
    };
    let (meta_a, archive_a) = build(&kiln(), "a", "env");
    // A day later: the context's files were touched, the clock moved on.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for f in ["app/main.txt", "app/sub/data.txt", "app/sub", "app"] {
        run_ok(Command::new("touch").args(["-d", "tomorrow"]).arg(ctx.path().join(f)));
    }
    let (meta_b, archive_b) = build(&kiln(), "b", "build-arg");
    assert_eq!(meta_a["containerimage.digest"], meta_b["containerimage.digest"]);
    assert_eq!(
        meta_a["containerimage.config.digest"],
        meta_b["containerimage.config.digest"]
    );
    assert!(archive_a == archive_b, "the two oci-archives are byte-identical");

    // The new layers' times are clamped; the config's times are the epoch.
    let index = json(&tar_member(&archive_a, "index.json").unwrap());
    let manifest_hex = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let manifest = json(&tar_member(&archive_a, &format!("blobs/sha256/{manifest_hex}")).unwrap());
    let layers = manifest["layers"].as_array().unwrap();
    for l in &layers[layers.len() - 2..] {
        let times = layer_mtimes(&archive_a, l["digest"].as_str().unwrap());
        assert!(!times.is_empty());
        for (path, t) in times {
            assert!(t <= EPOCH as u64, "{path} has mtime {t}, after SOURCE_DATE_EPOCH");
        }
    }
    let config_hex = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let config = json(&tar_member(&archive_a, &format!("blobs/sha256/{config_hex}")).unwrap());
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    for h in config["history"].as_array().unwrap() {
        assert_eq!(h["created"], "2023-11-14T22:13:20Z", "{h}");
    }
}
