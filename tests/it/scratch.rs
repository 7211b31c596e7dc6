//! FROM-scratch builds: image config and history, COPY semantics, determinism.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;

/// The image config of `name` in a kiln store, from `kiln inspect`.
fn inspect(k: &Kiln, name: &str) -> serde_json::Value {
    let v = json(&k.ok(&["inspect", name]));
    v[0].clone()
}

/// Config and history with the times taken out (they are checked separately).
pub fn comparable(config: &serde_json::Value) -> serde_json::Value {
    let mut history = config["history"].clone();
    for h in history.as_array_mut().into_iter().flatten() {
        h.as_object_mut().unwrap().remove("created");
    }
    serde_json::json!({
        "architecture": config["architecture"],
        "os": config["os"],
        "author": config["author"],
        "config": config["config"],
        "history": history,
        "layers": config["rootfs"]["diff_ids"].as_array().map(|a| a.len()),
    })
}

fn golden(path: &Path, actual: &serde_json::Value) {
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var("KILN_UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(path, &pretty).unwrap();
    }
    let want = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("golden {}: {e} (run with KILN_UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(pretty, want, "{} differs from the golden file", path.display());
}

#[test]
fn every_instruction_config_matches_golden() {
    let k = kiln();
    let ctx = fixture("every-instruction");
    k.ok(&["build", "-q", "-t", "every:1", ctx.to_str().unwrap()]);
    let img = inspect(&k, "every:1");
    let config = &img["Config"];
    golden(
        &fixture("every-instruction").join("../../expected/every-instruction.json"),
        &comparable(config),
    );
    // History times: layer entries carry a time, metadata entries the time before them.
    let history = config["history"].as_array().unwrap();
    assert!(
        history.iter().all(|h| h["created"].is_string()),
        "every history entry has a time: {history:?}"
    );
    assert_eq!(config["created"], history.last().unwrap()["created"]);
}

#[test]
fn copy_follows_docker_destination_rules() {
    let k = kiln();
    let ctx = context(&[
        ("one.txt", "1"),
        ("two.txt", "2"),
        ("dir/a", "a"),
        ("dir/sub/b", "b"),
        ("script.sh", "#!/bin/sh\n"),
        (
            "Dockerfile",
            "FROM scratch\n\
            COPY one.txt /file-renamed\n\
            COPY one.txt /into-dir/\n\
            COPY one.txt two.txt /multi/\n\
            COPY dir /contents\n\
            COPY dir/ /contents-slash/\n\
            COPY *.txt /glob/\n\
            WORKDIR /work\n\
            COPY one.txt rel/\n\
            COPY --chmod=640 --chown=7:8 script.sh /bin/\n\
            COPY --chown=1000 dir /owned\n\
            COPY one.txt /file-renamed/../dotdot\n",
        ),
    ]);
    std::fs::set_permissions(ctx.path().join("script.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_out, dest) = build_rootfs_dir(&k, ctx.path());
    assert_eq!(
        tree(&dest),
        [
            "bin/",
            "bin/script.sh",
            "contents/",
            "contents/a",
            "contents/sub/",
            "contents/sub/b",
            "contents-slash/",
            "contents-slash/a",
            "contents-slash/sub/",
            "contents-slash/sub/b",
            "dotdot",
            "file-renamed",
            "glob/",
            "glob/one.txt",
            "glob/two.txt",
            "into-dir/",
            "into-dir/one.txt",
            "multi/",
            "multi/one.txt",
            "multi/two.txt",
            "owned/",
            "owned/a",
            "owned/sub/",
            "owned/sub/b",
            "work/",
            "work/rel/",
            "work/rel/one.txt",
        ]
    );
    assert_eq!(std::fs::read_to_string(dest.join("file-renamed")).unwrap(), "1");
    if kiln_testkit::is_root() {
        assert_eq!(mode_of(&dest.join("bin/script.sh")), 0o640);
        assert_eq!(owner_of(&dest.join("bin/script.sh")), (7, 8));
        assert_eq!(owner_of(&dest.join("owned/sub/b")), (1000, 1000));
        assert_eq!(owner_of(&dest.join("glob/one.txt")), (0, 0));
        assert_eq!(mode_of(&dest.join("work")), 0o755);
    }
}

#[test]
fn rebuilds_are_bit_identical() {
    let k = kiln();
    let ctx = fixture("every-instruction");
    let c = ctx.to_str().unwrap();
    let first = k.ok(&["build", "-q", c]);
    let second = k.ok(&["build", "-q", c]);
    assert_eq!(first, second, "same context, same image id");
    let out = tempfile::tempdir().unwrap();
    let a = out.path().join("a.tar");
    let b = out.path().join("b.tar");
    k.ok(&["build", "-q", "-o", &format!("type=oci,dest={}", a.display()), c]);
    k.ok(&["build", "-q", "-o", &format!("type=oci,dest={}", b.display()), c]);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "archives are byte-identical"
    );

    // A fresh root makes the same layers; with SOURCE_DATE_EPOCH also the same times.
    let other = kiln();
    let x = k.ok(&["build", "-q", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", c]);
    let y = other.ok(&["build", "-q", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", c]);
    assert_eq!(
        x, y,
        "same inputs in two roots with SOURCE_DATE_EPOCH give one image id"
    );
    let cfg = inspect(&other, x.trim());
    assert_eq!(cfg["Config"]["created"], "2023-11-14T22:13:20Z");
}
