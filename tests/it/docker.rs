//! The oracle: `docker build` (BuildKit inside dockerd) on the same Dockerfile must give
//! the same image config and history as kiln.

use std::process::Command;

use crate::common::*;
use crate::scratch::comparable;

/// The docker CLI that still has the BuildKit client built in (Debian's docker.io).
fn docker_cli() -> Option<&'static str> {
    ["/usr/bin/docker"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
}

#[test]
fn config_and_history_match_docker_build() {
    let Some(dockerd) = Dockerd::start() else { return };
    let Some(cli) = docker_cli() else {
        require(
            false,
            "Debian's docker.io CLI (/usr/bin/docker) is needed for BuildKit builds",
        );
        return;
    };
    let ctx = fixture_copy("every-instruction");
    let sock = dockerd
        .docker()
        .get_args()
        .nth(1)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    run_ok(
        Command::new(cli)
            .env("DOCKER_BUILDKIT", "1")
            .args(["-H", &sock, "build", "-q", "-t", "every:docker"])
            .arg(ctx.path()),
    );
    let d = tempfile::tempdir().unwrap();
    let saved = d.path().join("docker.tar");
    run_ok(
        Command::new(cli)
            .args(["-H", &sock, "save", "-o"])
            .arg(&saved)
            .arg("every:docker"),
    );
    let Some(theirs) = skopeo_inspect(&format!("docker-archive:{}", saved.display()), true) else {
        return;
    };

    let k = kiln();
    let ours_id = k.ok(&["build", "-q", ctx.path().to_str().unwrap()]);
    let ours = json(&k.ok(&["inspect", ours_id.trim()]))[0]["Config"].clone();

    let mut theirs = comparable(&theirs);
    let ours = comparable(&ours);
    // Docker's image JSON writes `"OnBuild": null`; kiln omits the empty field.
    theirs["config"].as_object_mut().unwrap().retain(|_, v| !v.is_null());
    assert_eq!(
        serde_json::to_string_pretty(&ours).unwrap(),
        serde_json::to_string_pretty(&theirs).unwrap(),
        "kiln (left) and docker build (right) disagree"
    );
}
