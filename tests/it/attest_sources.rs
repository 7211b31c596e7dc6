//! Provenance materials for remote sources: an `ADD` git repository (dumb HTTP from
//! `python3 -m http.server`) is named by the commit the build resolved, an `ADD`
//! download by its body's sha256, in SLSA v0.2 and v1.

use std::path::Path;
use std::process::Command;

use crate::attest::{assert_slsa, attested, build_oci, kiln_image_sha256};
use crate::common::*;

/// A `python3 -m http.server` over `dir` on loopback, stopped on drop.
struct HttpDir {
    child: std::process::Child,
    port: u16,
}

impl HttpDir {
    fn start(dir: &Path) -> Option<HttpDir> {
        if !require_tool("python3") {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = HttpDir { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("python3 -m http.server did not start on port {port}");
    }
}

impl Drop for HttpDir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn provenance_names_git_sources_by_commit_and_http_sources_by_digest() {
    if !require_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), "one\n").unwrap();
    let git = |dir: &Path, args: &[&str]| {
        run_ok(
            Command::new("git")
                .current_dir(dir)
                .args(["-c", "user.name=kiln", "-c", "user.email=kiln@example.invalid"])
                .args(args),
        )
        .trim()
        .to_string()
    };
    git(&src, &["init", "-q", "-b", "main"]);
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "one"]);
    let commit = git(&src, &["rev-parse", "HEAD"]);
    let bare = work.path().join("repo.git");
    run_ok(Command::new("git").args(["clone", "-q", "--bare"]).arg(&src).arg(&bare));
    git(&bare, &["update-server-info"]);
    std::fs::write(work.path().join("data.txt"), "payload\n").unwrap();
    let Some(server) = HttpDir::start(work.path()) else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", server.port);
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM scratch\nADD {base}/repo.git#main /src/\nADD {base}/data.txt /data.txt\n"),
    )]);
    let k = kiln();
    for version in ["v0.2", "v1"] {
        let (archive, _) = build_oci(&k, ctx.path(), &[&format!("--provenance=version={version}")], true);
        let a = attested(&archive);
        let s = &a.statements[0];
        assert_slsa(s);
        let materials = if version == "v1" {
            &s["predicate"]["buildDefinition"]["resolvedDependencies"]
        } else {
            &s["predicate"]["materials"]
        };
        let list = materials.as_array().unwrap();
        let git_material = serde_json::json!({"uri": format!("{base}/repo.git#main"), "digest": {"sha1": commit}});
        assert!(
            list.contains(&git_material),
            "{version}: the git source by commit: {materials:#}"
        );
        let http_material = serde_json::json!({"uri": format!("{base}/data.txt"), "digest": {"sha256": kiln_image_sha256(b"payload\n")}});
        assert!(
            list.contains(&http_material),
            "{version}: the download by digest: {materials:#}"
        );
    }
    drop(server);
}
