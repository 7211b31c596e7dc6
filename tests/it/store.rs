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
