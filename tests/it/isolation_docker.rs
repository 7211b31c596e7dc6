//! kiln inside `docker run` (no `--privileged`), where CI runs it, in kiln's own image
//! (`kiln_image`): the matrix. (a) root, default seccomp: RUN steps are
//! chrooted, and a busybox RUN+COPY build and the Debian `apt-get install jq` build give
//! the layers the host's kiln gives; (b) the non-root `kiln` user, default seccomp:
//! `--version` and COPY-only builds work, a RUN build fails with exit status 1, the errno
//! and the fix; (c) `kiln`, seccomp and AppArmor unconfined: everything works, with the
//! whole subordinate range (newuidmap's file capabilities); (d) a build pushed from the
//! container, with a registry cache a fresh container uses, pulled back by skopeo.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::kiln_image::{in_image, load_kiln_image, text};
use crate::run::{busybox_context, step_lines};

const EPOCH: &str = "1700000000";

fn notes(err: &str) -> Vec<&str> {
    err.lines()
        .filter(|l| l.starts_with("NOTE: RUN steps use isolation"))
        .collect()
}

fn diff_ids(inspect: &[u8]) -> Vec<String> {
    let v = json(&String::from_utf8_lossy(inspect));
    v[0]["Config"]["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

/// The entries of each layer of an OCI archive after the first `skip` (the base's,
/// compared by digest instead), as `name mode uid/gid size link`, without what apt and
/// dpkg stamp with the time of the run (logs, caches, the apt lists).
fn built_layers(archive: &Path, skip: usize) -> Vec<BTreeSet<String>> {
    const STAMPED: [&str; 4] = [
        "var/log/",
        "var/cache/ldconfig/",
        "var/cache/debconf/",
        "var/lib/apt/lists/",
    ];
    crate::run::layer_listings(archive)
        .into_iter()
        .skip(skip)
        .map(|layer| {
            layer
                .into_iter()
                .filter(|e| !STAMPED.iter().any(|p| e.starts_with(p)))
                .collect()
        })
        .collect()
}

fn assert_same(a: &[BTreeSet<String>], b: &[BTreeSet<String>]) {
    assert_eq!(a.len(), b.len(), "layer counts differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let only_a: Vec<&String> = x.difference(y).collect();
        let only_b: Vec<&String> = y.difference(x).collect();
        assert!(
            only_a.is_empty() && only_b.is_empty(),
            "built layer {i} differs:\nonly in the container's: {only_a:#?}\nonly in the host's: {only_b:#?}"
        );
    }
}

/// The host's kiln builds `dir` into an OCI archive at `out`, with the copy snapshotter
/// that `chroot` isolation forces (the overlay snapshotter's layers of an apt install
/// differ: opaque markers on new directories, and files apt only opened, such as
/// `var/lib/dpkg/lock-frontend`, copied up); returns its built layers.
fn host_build(k: &Kiln, dir: &Path, out: &Path) -> Vec<BTreeSet<String>> {
    let o = run(k
        .cmd()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["build", "-q", "--snapshotter", "copy", "-o"])
        .arg(format!("type=oci,dest={}", out.display()))
        .arg(dir));
    assert!(o.status.success(), "{}", text(&o));
    built_layers(out, 1)
}

#[test]
fn the_kiln_image_in_unprivileged_containers() {
    if !require_tool("skopeo") {
        return;
    }
    let Some(bb) = busybox_context() else { return };
    let Some(reg) = Registry::start() else { return };
    let Some(d) = Dockerd::start() else { return };
    let Some(_) = load_kiln_image(&d, &reg) else { return };
    let k = kiln();
    // Bases in the loopback registry: the busybox image and Debian (pushed by the above).
    let bb_ref = format!("{}/bb:1", reg.host);
    k.ok(&["build", "-q", "--push", "-t", &bb_ref, bb.path().to_str().unwrap()]);
    let deb = format!("{}/debian:bookworm", reg.host);

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let write = |rel: &str, s: &str| {
        std::fs::create_dir_all(w.join(rel).parent().unwrap()).unwrap();
        std::fs::write(w.join(rel), s).unwrap();
    };
    write(
        "run/Dockerfile",
        &format!("FROM {bb_ref}\nCOPY f /f\nRUN echo pid=$$ && echo hi > /out && rm /etc/motd && cat /f\n"),
    );
    write("run/f", "from the context\n");
    write("copy/Dockerfile", &format!("FROM {bb_ref}\nCOPY f /f\n"));
    write("copy/f", "copied\n");
    write("jq/Dockerfile", &format!("FROM {deb}\n{}", crate::debian::JQ));
    write(
        "jq-sub/Dockerfile",
        &format!(
            "FROM {deb}\n{}RUN stat -c '%U %u' /var/cache/apt/archives/partial\n",
            crate::debian::JQ
        ),
    );
    std::fs::create_dir(w.join("out")).unwrap();
    run_ok(Command::new("chmod").args(["-R", "a+rwX"]).arg(w));
    let mounts = [
        format!("{}:/w:ro", w.display()),
        format!("{}:/out", w.join("out").display()),
    ];

    // (a) root, default seccomp: no namespace can be made; steps are chrooted.
    let o = in_image(
        &d,
        "root",
        &[],
        &mounts,
        "kiln build --progress=plain -t app:1 -o type=image -o type=oci,dest=/out/run-a.tar /w/run >/dev/null && kiln inspect app:1",
    );
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    let err = String::from_utf8_lossy(&o.stderr);
    let n = notes(&err);
    assert_eq!(n.len(), 1, "one line about the choice:\n{all}");
    assert!(
        n[0].contains("`chroot`") && n[0].contains("Operation not permitted (os error 1)"),
        "{all}"
    );
    assert!(step_lines(&err).contains(&"from the context".to_string()), "{all}");
    let inside = diff_ids(&o.stdout);
    let host_run = host_build(&k, &w.join("run"), &w.join("run-host.tar"));
    let host_ids = {
        let o = run(k
            .cmd()
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["build", "-q", "-t", "app:1"])
            .arg(w.join("run")));
        assert!(o.status.success(), "{}", text(&o));
        diff_ids(k.ok(&["inspect", "app:1"]).as_bytes())
    };
    assert_eq!(inside, host_ids, "a chrooted RUN gives other layers than the host's");
    assert_same(&built_layers(&w.join("out/run-a.tar"), 1), &host_run);

    let o = in_image(
        &d,
        "root",
        &[],
        &mounts,
        "kiln build --progress=plain -o type=oci,dest=/out/jq-a.tar /w/jq",
    );
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(step_lines(&err).iter().any(|l| l.starts_with("jq-1.")), "{all}");
    let host_jq = host_build(&k, &w.join("jq"), &w.join("jq-host.tar"));
    assert_same(&built_layers(&w.join("out/jq-a.tar"), 1), &host_jq);

    // (b) non-root, default seccomp: no user namespace. --version and COPY-only builds
    // work; a RUN build fails with exit status 1, the errno and the fix.
    let o = in_image(&d, "kiln", &[], &mounts, "kiln --version && kiln images >/dev/null");
    assert!(o.status.success(), "{}", text(&o));
    let o = in_image(
        &d,
        "kiln",
        &[],
        &mounts,
        "kiln build -q -o type=tar,dest=/tmp/o.tar /w/copy >/dev/null && tar -xOf /tmp/o.tar f",
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "copied\n", "{}", text(&o));
    let o = in_image(&d, "kiln", &[], &mounts, "kiln build -q /w/run");
    let all = text(&o);
    assert_eq!(o.status.code(), Some(1), "{all}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no isolation for RUN steps can be set up here; tried:"),
        "{all}"
    );
    assert!(
        err.contains("cannot create a user namespace (unshare): Operation not permitted (os error 1)"),
        "{all}"
    );
    assert!(err.contains("--security-opt seccomp=unconfined"), "{all}");
    assert!(!err.contains("did not start"), "{all}");

    // (c) non-root, seccomp and AppArmor unconfined: a user namespace with the whole
    // subordinate range (newuidmap and newgidmap by their file capabilities), but
    // Docker's masked /proc forbids a fresh one: the outer pid namespace. RUN's private
    // network is slirp4netns on the container's /dev/net/tun.
    let unconfined = [
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "--device",
        "/dev/net/tun",
    ];
    let o = in_image(&d, "kiln", &unconfined, &mounts, "kiln build --progress=plain /w/run");
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    let err = String::from_utf8_lossy(&o.stderr);
    let n = notes(&err);
    assert_eq!(n.len(), 1, "{all}");
    assert!(
        n[0].contains("`nosandbox-pid`") && n[0].contains("cannot mount a fresh /proc"),
        "{all}"
    );
    assert!(step_lines(&err).contains(&"from the context".to_string()), "{all}");
    let o = in_image(
        &d,
        "kiln",
        &unconfined,
        &mounts,
        "kiln build --progress=plain /w/jq-sub",
    );
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    let err = String::from_utf8_lossy(&o.stderr);
    let lines = step_lines(&err);
    assert!(lines.iter().any(|l| l.starts_with("jq-1.")), "{all}");
    // apt dropped to its own user: the range is mapped, not just the user's own id.
    assert!(lines.contains(&"_apt 42".to_string()), "{all}");

    // ... and with `no-new-privileges` newuidmap's file capabilities do not count: kiln
    // maps the user's own id alone, says why, and still builds (was: exit 1 even for a
    // COPY-only build).
    let mut nnp = unconfined.to_vec();
    nnp.extend(["--security-opt", "no-new-privileges"]);
    let o = in_image(&d, "kiln", &nnp, &mounts, "kiln build --progress=plain /w/run");
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    assert!(
        all.contains("WARN: rootless with a single id: /usr/bin/newuidmap failed"),
        "{all}"
    );
    assert!(step_lines(&all).contains(&"from the context".to_string()), "{all}");

    // The last row, root with CAP_SYS_ADMIN and seccomp unconfined (and the tun
    // device slirp4netns needs): namespaces can be made, so `auto` picks them silently;
    // Docker left out CAP_NET_ADMIN, so the step's network namespace is made in a user
    // namespace root owns (was: `cannot bring up lo …: Operation not permitted`).
    let sys_admin = [
        "--cap-add",
        "SYS_ADMIN",
        "--security-opt",
        "seccomp=unconfined",
        "--device",
        "/dev/net/tun",
    ];
    let o = in_image(&d, "root", &sys_admin, &mounts, "kiln build --progress=plain /w/run");
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(notes(&err).is_empty(), "namespaces, chosen silently:\n{all}");
    let lines = step_lines(&err);
    assert!(lines.contains(&"from the context".to_string()), "{all}");
    assert!(
        lines.contains(&"pid=1".to_string()),
        "a pid namespace of its own:\n{all}"
    );

    // Root with CAP_SYS_ADMIN under Docker's default profile: namespaces can be made but
    // pivot_root is refused; the probe finds it and `auto` falls back to `chroot` (was:
    // `sandbox: pivot_root: Operation not permitted` at the first RUN).
    let o = in_image(
        &d,
        "root",
        &["--cap-add", "SYS_ADMIN"],
        &mounts,
        "kiln build --progress=plain /w/run",
    );
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    let err = String::from_utf8_lossy(&o.stderr);
    let n = notes(&err);
    assert_eq!(n.len(), 1, "{all}");
    assert!(
        n[0].contains("`chroot`") && n[0].contains("cannot pivot_root: Operation not permitted"),
        "{all}"
    );
    assert!(step_lines(&err).contains(&"from the context".to_string()), "{all}");

    // (d) pushed from the container with a registry cache; a fresh container (a new
    // KILN_ROOT volume) uses the cache; skopeo pulls the image back.
    let pushed = format!("{}/app:pushed", reg.host);
    let cache = format!("{}/app:cache", reg.host);
    let o = in_image(
        &d,
        "root",
        &[],
        &mounts,
        &format!("kiln build --progress=plain --push -t {pushed} --cache-to type=registry,ref={cache},mode=max /w/run"),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = in_image(
        &d,
        "root",
        &[],
        &mounts,
        &format!("kiln build --progress=plain -t again:1 --cache-from {cache} /w/run"),
    );
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    // `#5 [3/3] RUN echo …` followed by `#5 CACHED`.
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    let run_step = lines.iter().position(|l| l.contains("] RUN echo"));
    assert!(
        run_step.is_some_and(|i| lines.get(i + 1).is_some_and(|n| n.ends_with(" CACHED"))),
        "the registry cache was not used:\n{all}"
    );
    let pulled = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{pushed}"))
            .arg(format!("oci:{}:pulled", pulled.path().display())),
    );
    let config = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci:{}:pulled", pulled.path().display())),
    );
    let ids: Vec<String> = json(&config)["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, inside, "the pulled image is not the one built");
}
