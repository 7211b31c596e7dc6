//! RUN on a real Debian base: `apt-get install` from Debian's mirror, as root and
//! rootless. The base is made once by `debootstrap --variant=minbase bookworm`, packed
//! into an OCI layout by umoci and cached under `target/kiln-fixtures/`, then pushed
//! to a loopback registry by skopeo for each test.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use crate::common::*;
use crate::rootless::{User, SUB_USER};
use crate::run::step_lines;

static FIXTURE: Mutex<()> = Mutex::new(());

const MIRROR: &str = "http://deb.debian.org/debian";

/// The cached OCI layout holding `bookworm`, built on first use.
fn debian_layout() -> Option<PathBuf> {
    if !require(kiln_testkit::is_root(), "debootstrap needs root")
        || !require_tool("debootstrap")
        || !require_tool("umoci")
        || !require_tool("skopeo")
    {
        return None;
    }
    let _turn = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    let fixtures = kiln_testkit::workspace_root().join("target/kiln-fixtures");
    let layout = fixtures.join("debian-bookworm-oci");
    if layout.join("index.json").is_file() {
        return Some(layout);
    }
    std::fs::create_dir_all(&fixtures).unwrap();
    let work = tempfile::Builder::new()
        .prefix("debian-")
        .tempdir_in(&fixtures)
        .unwrap();
    let rootfs = work.path().join("rootfs");
    let mirror = std::env::var("KILN_TEST_DEBIAN_MIRROR").unwrap_or_else(|_| MIRROR.to_string());
    run_ok(
        Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&rootfs)
            .arg(&mirror),
    );
    // Leave the host's resolver and hosts files out of the image, as real bases do.
    for f in ["etc/resolv.conf", "etc/hostname"] {
        let _ = std::fs::remove_file(rootfs.join(f));
    }
    let oci = work.path().join("oci");
    let image = format!("{}:bookworm", oci.display());
    run_ok(Command::new("umoci").args(["init", "--layout"]).arg(&oci));
    run_ok(Command::new("umoci").args(["new", "--image", &image]));
    let bundle = work.path().join("bundle");
    run_ok(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle));
    std::fs::remove_dir_all(bundle.join("rootfs")).unwrap();
    std::fs::rename(&rootfs, bundle.join("rootfs")).unwrap();
    run_ok(Command::new("umoci").args(["repack", "--image", &image]).arg(&bundle));
    run_ok(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--config.cmd",
        "bash",
    ]));
    std::fs::rename(&oci, &layout).unwrap();
    Some(layout)
}

/// Pushes the Debian base to `reg` as `debian:bookworm`; returns its reference.
pub(crate) fn push_debian(reg: &Registry) -> Option<String> {
    let layout = debian_layout()?;
    let dest = format!("{}/debian:bookworm", reg.host);
    run_ok(
        Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:bookworm", layout.display()))
            .arg(format!("docker://{dest}")),
    );
    Some(dest)
}

pub const JQ: &str = "RUN apt-get update && apt-get install -y --no-install-recommends jq\nRUN jq --version\n";

fn assert_jq(progress: &str) {
    let lines = step_lines(progress);
    assert!(
        lines.iter().any(|l| l.starts_with("jq-1.")),
        "jq did not run:\n{progress}"
    );
}

#[test]
fn debian_apt_get_install_as_root() {
    let Some(reg) = Registry::start() else { return };
    let Some(base) = push_debian(&reg) else { return };
    let k = kiln();
    let ctx = context(&[("Dockerfile", &format!("FROM {base}\n{JQ}"))]);
    let out = run(k
        .cmd()
        .args(["build", "--progress=plain", "-t", "jq:1", ctx.path().to_str().unwrap()]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_jq(&err);
}

#[test]
fn debian_apt_get_install_rootless_with_a_subuid_range() {
    let Some(u) = User::get(SUB_USER, true) else { return };
    let Some(reg) = Registry::start() else { return };
    let Some(base) = push_debian(&reg) else { return };
    // apt drops to its own `_apt` user to download: that needs the whole id range.
    let ctx = u.context(
        "jq",
        &format!("FROM {base}\n{JQ}RUN stat -c '%U %u' /var/cache/apt/archives/partial\n"),
    );
    let progress = u.kiln_ok(&["build", "--progress=plain", "-t", "jq:1", ctx.to_str().unwrap()]);
    assert_jq(&progress);
    assert!(
        !progress.contains("unsandboxed as root"),
        "apt could not drop to _apt:\n{progress}"
    );
    assert!(step_lines(&progress).contains(&"_apt 42".to_string()), "{progress}");
}
