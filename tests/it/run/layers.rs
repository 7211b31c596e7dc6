//! The layers RUN steps make, as listings: an OCI archive's layers read back, the
//! [`CHANGES`] steps touching every kind of change and what their layer must hold,
//! two images' layers compared (used by the snapshotter and rootless tests too).

use std::path::Path;

use crate::common::*;

/// The layer descriptors of the image an OCI archive (its bytes) holds.
pub fn archive_layer_descriptors(bytes: &[u8]) -> Vec<serde_json::Value> {
    let index = json(&tar_member(bytes, "index.json").unwrap());
    let m = index["manifests"][0]["digest"].as_str().unwrap().replace("sha256:", "");
    let manifest = json(&tar_member(bytes, &format!("blobs/sha256/{m}")).unwrap());
    manifest["layers"].as_array().unwrap().clone()
}

/// Every layer of an OCI archive as `name mode uid/gid size` listings (no times).
pub fn layer_listings(archive: &Path) -> Vec<Vec<String>> {
    let bytes = std::fs::read(archive).unwrap();
    archive_layer_descriptors(&bytes)
        .iter()
        .map(|l| {
            let hex = l["digest"].as_str().unwrap().replace("sha256:", "");
            let mut ar = tar::Archive::new(bytes.as_slice());
            let blob = ar
                .entries()
                .unwrap()
                .map(|e| e.unwrap())
                .find_map(|mut e| {
                    (e.path().unwrap().to_str() == Some(&format!("blobs/sha256/{hex}"))).then(|| {
                        let mut v = Vec::new();
                        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&mut e), &mut v).unwrap();
                        v
                    })
                })
                .unwrap();
            let mut inner = tar::Archive::new(blob.as_slice());
            inner
                .entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let h = e.header();
                    format!(
                        "{} {:o} {}/{} {} {:?}",
                        e.path().unwrap().display(),
                        h.mode().unwrap(),
                        h.uid().unwrap(),
                        h.gid().unwrap(),
                        h.size().unwrap(),
                        h.link_name().unwrap()
                    )
                })
                .collect()
        })
        .collect()
}

/// Steps that touch every kind of change: new, modified, chmod-only, chown-only and
/// deleted files, a replaced directory, a symlink, a hard link, a fifo, another user.
pub const CHANGES: &str =
    "RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1000:' >> /etc/group \\
 && mkdir -p /home/app/sub && echo data > /home/app/sub/f && chown -R app:app /home/app \\
 && rm /bin/vi && chmod 600 /etc/motd && chown 1:1 /etc/issue && rm -rf /root && mkdir /root && echo r > /root/new \\
 && ln -s /home/app/sub/f /link && ln /home/app/sub/f /hard && mkfifo /fifo && mkdir -p /tmp/empty
USER app
RUN echo mine > /home/app/mine && rm /home/app/sub/f
";

/// Builds [`CHANGES`] on `base` with each snapshotter and returns the layer listings.
pub fn changes_with_both_snapshotters(
    build: &dyn Fn(&str, &Path) -> String,
    base: &str,
) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let df = format!("FROM {base}\n{CHANGES}");
    let out = tempfile::tempdir().unwrap();
    let (a, b) = (out.path().join("overlay.tar"), out.path().join("copy.tar"));
    build(&df.replace("FROM", "# overlay\nFROM"), &a);
    build(&df.replace("FROM", "# copy\nFROM"), &b);
    (layer_listings(&a), layer_listings(&b))
}

/// What [`CHANGES`]' first RUN layer must hold, whichever snapshotter made it.
pub fn assert_changes_layer(layers: &[Vec<String>]) {
    let l = &layers[1];
    let has = |prefix: &str| l.iter().any(|e| e.starts_with(prefix));
    for want in [
        "bin/.wh.vi 0 0/0 0",
        "root/.wh..wh..opq 0 0/0 0",
        "root/new 644 0/0 2",
        "etc/motd 600 0/0 8",
        "etc/issue 644 1/1 8",
        // Entries are sorted, so `hard` is written first and `f` links to it.
        "hard 644 1000/1000 5 None",
        "home/app/sub/f 644 1000/1000 0 Some(\"hard\")",
        "link 777 0/0 0 Some(\"/home/app/sub/f\")",
        "fifo 644 0/0 0",
        "tmp/empty/ 755 0/0 0",
    ] {
        assert!(has(want), "missing `{want}` in {l:#?}");
    }
    assert!(
        !has("etc/hosts") && !has("etc/resolv.conf") && !has("etc/hostname") && !has("proc/") && !has("dev/"),
        "{l:#?}"
    );
    let last = &layers[2];
    assert!(last.iter().any(|e| e.starts_with("home/app/sub/.wh.f ")), "{last:#?}");
    assert!(
        last.iter().any(|e| e.starts_with("home/app/mine 644 1000/1000")),
        "{last:#?}"
    );
}

/// Fails with only the entries that differ between two images' layers.
pub fn assert_same_layers(a: &[Vec<String>], b: &[Vec<String>]) {
    assert_eq!(a.len(), b.len(), "layer counts differ");
    for (i, (la, lb)) in a.iter().zip(b).enumerate() {
        if la != lb {
            let only_a: Vec<&String> = la.iter().filter(|e| !lb.contains(e)).collect();
            let only_b: Vec<&String> = lb.iter().filter(|e| !la.contains(e)).collect();
            panic!(
                "layer {i} differs:\nonly in the first: {only_a:#?}\nonly in the second: {only_b:#?}\n(or in order)"
            );
        }
    }
}
