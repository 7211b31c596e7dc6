//! The kiln image: the repository's `Dockerfile`, holding the static kiln that
//! `.ci/static-kiln` builds (cached under `target/static/`), built by kiln itself
//! (`kiln build --load`) on the loopback registry's Debian base and loaded into the
//! testkit's private dockerd. `isolation_docker` runs its matrix in this image.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;

use crate::common::*;
use kiln_testkit::docker_ok;

/// The image's name in the private dockerd.
pub const IMAGE: &str = "kiln:test";

static STATIC_KILN: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The static kiln: `.ci/static-kiln` builds it once (a release build: minutes) and
/// finds it fresh afterwards (seconds).
pub fn static_kiln() -> PathBuf {
    let mut cached = STATIC_KILN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cached.as_ref() {
        return p.clone();
    }
    let root = kiln_testkit::workspace_root();
    let out = run(Command::new(root.join(".ci/static-kiln")).current_dir(&root));
    assert!(
        out.status.success(),
        ".ci/static-kiln failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    *cached = Some(p.clone());
    p
}

/// Builds the kiln image from the repository's Dockerfile with the host's kiln, its
/// base `FROM` the Debian image in `reg`, and loads it into `d` (`--load`). The build's
/// store persists under `target/kiln-fixtures/` so that a rerun finds the apt step
/// cached. Returns the build's plain progress.
pub fn load_kiln_image(d: &Dockerd, reg: &Registry) -> Option<String> {
    let base = crate::debian::push_debian(reg)?;
    static_kiln();
    let root = kiln_testkit::workspace_root();
    let store = root.join("target/kiln-fixtures/kiln-image-root");
    let o = run(Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_ROOT", &store)
        .env("DOCKER_HOST", d.host())
        .args(["build", "--progress=plain", "--load", "-t", IMAGE, "--build-arg"])
        .arg(format!("BASE={base}"))
        .arg(&root));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "building the kiln image failed:\n{err}");
    Some(err)
}

/// One `docker run --rm --network host` of `sh -c script` in the kiln image; `user` is
/// `root` or `kiln`; `extra` are more `docker run` options; `mounts` are `-v` values.
pub fn in_image(d: &Dockerd, user: &str, extra: &[&str], mounts: &[String], script: &str) -> Output {
    let mut c = d.docker();
    c.args(["run", "--rm", "--network", "host", "--user", user]).args(extra);
    for m in mounts {
        c.arg("-v").arg(m);
    }
    // As the testkit's Kiln: no default provenance, so `-o type=oci` and `--push` give a
    // single manifest the tests compare with the host's (attest.rs tests the default).
    c.args([
        "-e",
        "SOURCE_DATE_EPOCH=1700000000",
        "-e",
        "BUILDX_NO_DEFAULT_ATTESTATIONS=1",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    run(&mut c)
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The context sends one file, whatever else target/ holds.
#[test]
fn dockerignore_keeps_only_the_static_binary() {
    let root = kiln_testkit::workspace_root();
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    let df = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let k = kiln();
    // The same .dockerignore over a context with a target/ of other things.
    let ctx = context(&[
        (".dockerignore", &ignore),
        ("Dockerfile", "FROM scratch\nCOPY . /\n"),
        ("target/static/x86_64-unknown-linux-gnu/release/kiln", "bin"),
        ("target/debug/kiln", "debug"),
        ("target/static/x86_64-unknown-linux-gnu/release/deps/big", "x"),
        ("src/main.rs", "x"),
        ("Cargo.toml", "x"),
    ]);
    let tar = build_rootfs_tar(&k, ctx.path());
    let mut files: Vec<String> = tar::Archive::new(tar.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.header().entry_type().is_file())
        .map(|e| e.path().unwrap().display().to_string())
        .collect();
    files.sort();
    assert_eq!(files, ["target/static/x86_64-unknown-linux-gnu/release/kiln"]);
    assert!(
        df.contains("COPY target/static/x86_64-unknown-linux-gnu/release/kiln /usr/local/bin/kiln"),
        "the Dockerfile copies another path than .dockerignore lets in"
    );
}

/// What the image holds: a static, stripped kiln; newuidmap/newgidmap with file
/// capabilities (not set-user-id); the `kiln` user with a subordinate range; KILN_ROOT
/// on a volume.
#[test]
fn the_kiln_image_built_by_kiln() {
    if !require_tool("skopeo") {
        return;
    }
    let bin = static_kiln();
    let ldd = run(Command::new("ldd").arg(&bin));
    let ldd_text = String::from_utf8_lossy(&ldd.stdout).into_owned() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(
        !ldd_text.contains("=>"),
        "{} is dynamically linked:\n{ldd_text}",
        bin.display()
    );
    // Stripped: no symbol table section named in the section header strings.
    let bytes = std::fs::read(&bin).unwrap();
    assert!(
        !bytes.windows(8).any(|w| w == b".symtab\0"),
        "{} is not stripped",
        bin.display()
    );
    let Some(reg) = Registry::start() else { return };
    let Some(d) = Dockerd::start() else { return };
    let Some(_) = load_kiln_image(&d, &reg) else { return };
    let o = in_image(
        &d,
        "root",
        &[],
        &[],
        "kiln --version && getcap /usr/bin/newuidmap /usr/bin/newgidmap && stat -c '%a %U' /usr/bin/newuidmap \
         && grep '^kiln:' /etc/subuid /etc/subgid && echo root=$KILN_ROOT && stat -c '%U' $KILN_ROOT",
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", text(&o));
    for want in [
        "kiln ",
        "/usr/bin/newuidmap cap_setuid=ep",
        "/usr/bin/newgidmap cap_setgid=ep",
        "755 root",
        "/etc/subuid:kiln:100000:65536",
        "/etc/subgid:kiln:100000:65536",
        "root=/var/lib/kiln",
        "\nkiln\n",
    ] {
        assert!(out.contains(want), "no `{want}` in:\n{out}");
    }
    let volumes = docker_ok(|| {
        let mut c = d.docker();
        c.args(["image", "inspect", "--format", "{{json .Config.Volumes}}", IMAGE]);
        c
    });
    assert!(volumes.contains("/var/lib/kiln"), "{volumes}");
}
