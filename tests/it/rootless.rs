//! Rootless RUN: kiln run by an ordinary user, with and without a subordinate id range.
//!
//! `.ci/run` creates the users: `kilnsub` with `kilnsub:200000:65536` in /etc/subuid and
//! /etc/subgid, and `kilnnosub` with no range. The tests switch to them with `runuser`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;
use crate::run::{busybox_context, step_lines};

pub const SUB_USER: &str = "kilnsub";
pub const NOSUB_USER: &str = "kilnnosub";

/// An ordinary user and a kiln root, build contexts and outputs that belong to them.
pub struct User {
    pub name: &'static str,
    pub uid: u32,
    pub dir: tempfile::TempDir,
}

fn passwd_ids(name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn has_subid_range(name: &str) -> bool {
    ["/etc/subuid", "/etc/subgid"].iter().all(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(':').next() == Some(name))
    })
}

impl User {
    /// The test user `name`, if this machine has it set up as `.ci/run` does.
    pub fn get(name: &'static str, want_range: bool) -> Option<User> {
        if !require(
            kiln_testkit::is_root(),
            "the rootless tests switch users and need root to do so",
        ) || !require_tool("runuser")
        {
            return None;
        }
        let ids = passwd_ids(name);
        if !require(
            ids.is_some(),
            &format!("test user `{name}` does not exist (.ci/run creates it)"),
        ) {
            return None;
        }
        if !require(
            has_subid_range(name) == want_range,
            &format!(
                "test user `{name}` must {}have a range in /etc/subuid and /etc/subgid",
                if want_range { "" } else { "not " }
            ),
        ) {
            return None;
        }
        if want_range
            && !require(
                Path::new("/usr/bin/newuidmap").is_file(),
                "newuidmap (uidmap) is not installed",
            )
        {
            return None;
        }
        let (uid, gid) = ids?;
        let dir = tempfile::Builder::new().prefix("kiln-rootless-").tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        Some(User { name, uid, dir })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Gives `p` (recursively) to the user.
    pub fn own(&self, p: &Path) {
        run_ok(Command::new("chown").arg("-R").arg(self.name).arg(p));
    }

    /// `kiln ARGS` as the user, with a root of their own.
    pub fn kiln(&self, args: &[&str]) -> Output {
        let mut c = Command::new("runuser");
        c.args(["-u", self.name, "--", "env"])
            .arg(format!("KILN_ROOT={}", self.path("root").display()))
            .arg(format!("HOME={}", self.dir.path().display()))
            // As the testkit's Kiln: no default provenance (tests/it/attest.rs tests it).
            .arg("BUILDX_NO_DEFAULT_ATTESTATIONS=1")
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .current_dir(self.dir.path());
        run(&mut c)
    }

    pub fn kiln_ok(&self, args: &[&str]) -> String {
        let out = self.kiln(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kiln {args:?} as {} failed:\n{err}", self.name);
        err
    }

    /// A build context of the user's holding `dockerfile`.
    pub fn context(&self, name: &str, dockerfile: &str) -> PathBuf {
        let d = self.path(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("Dockerfile"), dockerfile).unwrap();
        self.own(&d);
        d
    }

    /// Builds the busybox base as `bb:1` in the user's root.
    pub fn busybox_base(&self) -> Option<&'static str> {
        let ctx = busybox_context()?;
        let mine = self.path("bb-context");
        run_ok(Command::new("cp").arg("-a").arg(ctx.path()).arg(&mine));
        self.own(&mine);
        self.kiln_ok(&["build", "-q", "-t", "bb:1", mine.to_str().unwrap()]);
        Some("bb:1")
    }
}

#[test]
fn rootless_with_a_subuid_range_keeps_every_owner() {
    let Some(u) = User::get(SUB_USER, true) else { return };
    let Some(base) = u.busybox_base() else { return };
    let ctx = u.context(
        "app",
        &format!(
            "FROM {base}\n\
             RUN cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //;s/^/map=/'\n\
             RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1000:' >> /etc/group \\\n\
              && mkdir -p /home/app && chown app:app /home/app && chown nobody /root/.profile\n\
             USER app\n\
             RUN touch /home/app/x && id\n"
        ),
    );
    let layout = u.path("oci");
    let progress = u.kiln_ok(&[
        "build",
        "--progress=plain",
        "-t",
        "app:1",
        "-o",
        &format!("type=oci,dest={},tar=false", layout.display()),
        ctx.to_str().unwrap(),
    ]);
    assert!(!progress.contains("WARN: rootless"), "{progress}");
    let lines = step_lines(&progress);
    // Root is the user; the range follows.
    assert!(lines.contains(&format!("map=0 {} 1", u.uid)), "{progress}");
    assert!(lines.contains(&"map=1 200000 65536".to_string()), "{progress}");
    assert!(
        lines.iter().any(|l| l.starts_with("uid=1000(app) gid=1000(app)")),
        "{progress}"
    );
    let Some((_g, rootfs)) = umoci_unpack(&layout, "1") else {
        return;
    };
    assert_eq!(owner_of(&rootfs.join("home/app/x")), (1000, 1000));
    assert_eq!(owner_of(&rootfs.join("root/.profile")), (65534, 0));
    assert_eq!(owner_of(&rootfs.join("bin/busybox")), (0, 0));
}

#[test]
fn rootless_without_a_range_maps_one_id_and_says_so_once() {
    let Some(u) = User::get(NOSUB_USER, false) else { return };
    let Some(base) = u.busybox_base() else { return };
    let ctx = u.context(
        "ok",
        &format!("FROM {base}\nRUN echo made > /made && id -u\nRUN cat /made\n"),
    );
    let out = u.kiln(&["build", "--progress=plain", ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("WARN: rootless with a single id").count(), 1, "{err}");
    assert!(
        err.contains(&format!("add `{NOSUB_USER}:100000:65536` to /etc/subuid")),
        "{err}"
    );
    let lines = step_lines(&err);
    assert!(
        lines.contains(&"0".to_string()) && lines.contains(&"made".to_string()),
        "{err}"
    );

    // A step that needs another id fails, saying why.
    let ctx = u.context("chown", &format!("FROM {base}\nRUN chown nobody /root/.profile\n"));
    let out = u.kiln(&["build", ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Dockerfile:2") && err.contains("RUN failed (exit code 1)"),
        "{err}"
    );
    let ctx = u.context("user", &format!("FROM {base}\nUSER nobody\nRUN true\n"));
    let out = u.kiln(&["build", ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot switch to group 65534: it is not mapped"), "{err}");
}

#[test]
fn rootless_layers_match_roots_with_both_snapshotters() {
    use crate::run::{assert_changes_layer, assert_same_layers, changes_with_both_snapshotters};
    let Some(u) = User::get(SUB_USER, true) else { return };
    let Some(base) = u.busybox_base() else { return };
    let n = std::cell::Cell::new(0);
    let build = |df: &str, dest: &Path| {
        let kind = if df.starts_with("# copy") { "copy" } else { "overlay" };
        n.set(n.get() + 1);
        let ctx = u.context(&format!("changes-{}", n.get()), df);
        let out = u.path(&format!("out-{}", n.get()));
        std::fs::create_dir(&out).unwrap();
        u.own(&out);
        let tar = out.join("img.tar");
        let progress = u.kiln_ok(&[
            "build",
            "--progress=plain",
            "--no-cache",
            "--snapshotter",
            kind,
            "-o",
            &format!("type=oci,dest={}", tar.display()),
            ctx.to_str().unwrap(),
        ]);
        std::fs::copy(&tar, dest).unwrap();
        progress
    };
    let (overlay, copy) = changes_with_both_snapshotters(&build, base);
    assert_changes_layer(&overlay);
    assert_same_layers(&overlay, &copy);

    // And the same as root makes.
    let k = kiln();
    let Some(root_base) = crate::run::busybox_base(&k) else {
        return;
    };
    let root_build =
        |df: &str, dest: &Path| crate::run::build_plain(&k, df, &["-o", &format!("type=oci,dest={}", dest.display())]);
    let (as_root, _) = changes_with_both_snapshotters(&root_build, root_base);
    assert_same_layers(&as_root, &overlay);
}

/// Under `no_new_privs` (docker `--security-opt no-new-privileges`, Kubernetes
/// `allowPrivilegeEscalation: false`) newuidmap's set-user-id bit or file capabilities
/// count for nothing and it cannot map the range: kiln maps the user's own id alone,
/// says why, and COPY and RUN as that id work (was: `ERROR: rootless: newuidmap failed`
/// even for `--version`-free COPY-only builds, measured in a container first).
#[test]
fn no_new_privs_falls_back_to_the_users_own_id() {
    let Some(u) = User::get(SUB_USER, true) else { return };
    if !require_tool("setpriv") {
        return;
    }
    let Some(base) = u.busybox_base() else { return };
    let ctx = u.context("nnp", &format!("FROM {base}\nRUN id -u > /who\n"));
    let mut c = Command::new("runuser");
    c.args(["-u", u.name, "--", "env"])
        .arg(format!("KILN_ROOT={}", u.path("root").display()))
        .arg(format!("HOME={}", u.dir.path().display()))
        .args(["setpriv", "--no-new-privs", env!("CARGO_BIN_EXE_kiln")])
        .args(["build", "--network=none", "-o", "type=tar,dest=out.tar"])
        .arg(&ctx)
        .current_dir(u.dir.path());
    let o = run(&mut c);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("WARN: rootless with a single id: /usr/bin/newuidmap failed:") && err.contains("no_new_privs"),
        "{err}"
    );
    let tar = std::fs::read(u.path("out.tar")).unwrap();
    let who = tar::Archive::new(tar.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find_map(|mut e| {
            (e.path().unwrap().to_str() == Some("who")).then(|| {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                s
            })
        });
    assert_eq!(who.as_deref(), Some("0\n"), "{err}");
}
