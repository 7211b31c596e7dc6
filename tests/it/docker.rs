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
    kiln_testkit::docker_ok(|| {
        let mut c = Command::new(cli);
        c.env("DOCKER_BUILDKIT", "1")
            .args(["-H", &sock, "build", "-q", "-t", "every:docker"])
            .arg(ctx.path());
        c
    });
    let d = tempfile::tempdir().unwrap();
    let saved = d.path().join("docker.tar");
    run_ok(
        Command::new(cli)
            .args(["-H", &sock, "save", "-o"])
            .arg(&saved)
            .arg("every:docker"),
    );
    // The raw image config (skopeo would convert it to OCI and drop Healthcheck/Shell).
    let theirs = docker_save_config(&saved);
    let k = kiln();
    let ours_id = k.ok(&["build", "-q", ctx.path().to_str().unwrap()]);
    let ours = json(&k.ok(&["inspect", ours_id.trim()]))[0]["Config"].clone();

    let mut theirs = comparable(&theirs);
    let mut ours = comparable(&ours);
    // Docker's image JSON writes `"OnBuild": null`; kiln omits the empty field.
    theirs["config"].as_object_mut().unwrap().retain(|_, v| !v.is_null());
    // dockerd 20.10 embeds BuildKit 0.8; current BuildKit (what kiln follows) changed
    // three history strings since. Map ours to the old wording, and only these.
    for h in ours["history"].as_array_mut().unwrap() {
        let by = h["created_by"].as_str().unwrap().to_string();
        let old = if let Some(ports) = by.strip_prefix("EXPOSE [") {
            // `EXPOSE [80/tcp]` was `EXPOSE map[80/tcp:{}]` (a Go map of ports).
            let list: Vec<String> = ports
                .trim_end_matches(']')
                .split(' ')
                .map(|p| format!("{p}:{{}}"))
                .collect();
            format!("EXPOSE map[{}]", list.join(" "))
        } else if by.starts_with("HEALTHCHECK &{") {
            // BuildKit 0.8's HealthConfig had no StartInterval field.
            by.replacen("\" \"0s\" '", "\" '", 1)
        } else if let Some(rest) = by.strip_prefix("COPY ") {
            // BuildKit 0.8 did not record --chown/--chmod in COPY history.
            let kept: Vec<&str> = rest
                .split(' ')
                .filter(|w| !w.starts_with("--chown=") && !w.starts_with("--chmod="))
                .collect();
            format!("COPY {}", kept.join(" "))
        } else {
            by
        };
        h["created_by"] = old.into();
    }
    // Value equality ignores key order (Go and serde order struct fields differently).
    assert!(
        ours == theirs,
        "kiln and docker build disagree:\nkiln:\n{}\ndocker build:\n{}",
        serde_json::to_string_pretty(&ours).unwrap(),
        serde_json::to_string_pretty(&theirs).unwrap()
    );
}

/// Reads the image config out of a `docker save` tarball via its manifest.json.
fn docker_save_config(path: &std::path::Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let read = |name: &str| tar_member(&bytes, name);
    let manifest = json(&read("manifest.json").expect("manifest.json in docker save output"));
    let config = manifest[0]["Config"].as_str().unwrap().to_string();
    json(&read(&config).expect("config in docker save output"))
}
