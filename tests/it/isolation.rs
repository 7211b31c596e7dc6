//! `--isolation`: each level forced on the host, as root and rootless, with the
//! isolation checks that apply to it; and a RUN layer that is the same under every level.

use crate::common::*;
use crate::rootless::{User, SUB_USER};
use crate::run::{busybox_base, step_lines};

/// What a step reports about itself: one `key=value` line each.
const PROBE: &str = "RUN echo pid=$$; echo procs=$(ps -o pid= | wc -l); echo host=$(hostname); \\\n\
     echo proc=$(test -e /proc/self/status && echo yes || echo no); \\\n\
     grep -h NoNewPrivs /proc/self/status 2>/dev/null | tr -d '\\t'; grep -h CapEff /proc/self/status 2>/dev/null | tr -d '\\t'; \\\n\
     echo timers=$(wc -c < /proc/timer_list 2>/dev/null); \\\n\
     ({ echo x > /proc/sys/kernel/hostname; } 2>/dev/null && echo procsys=writable || echo procsys=readonly); \\\n\
     (cat MARKER 2>/dev/null || echo marker=unreadable); echo uid=$(id -u); \\\n\
     test -c /dev/null && echo devnull=char; echo x > /dev/null && echo devnull=writable; \\\n\
     echo zero=$(head -c 4 /dev/zero | wc -c); echo hosts=$(cat /etc/hosts | head -1)\n";

/// A Dockerfile over `base` whose RUN layer must not depend on the isolation level:
/// the image's own /etc/hosts (replaced for the step under `chroot`) comes back as it was.
fn layer_dockerfile(base: &str) -> String {
    format!(
        "FROM {base}\nCOPY hosts /etc/hosts\n\
         RUN echo hi > /out && mkdir -p /d/e && touch /d/e/f && rm /etc/motd && cat /etc/hosts\n"
    )
}

fn diff_ids(inspect: &str) -> Vec<String> {
    let v = json(inspect);
    v[0]["Config"]["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

fn marker() -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("host-marker");
    std::fs::write(&m, "host secret").unwrap();
    let p = m.display().to_string();
    (d, p)
}

/// Checks a step's report under `level` (as root or rootless: the same).
fn check_probe(level: &str, progress: &str) {
    let lines = step_lines(progress);
    let has = |s: &str| lines.iter().any(|l| l == s);
    assert!(has("marker=unreadable"), "{level}: host file readable:\n{progress}");
    assert!(!progress.contains("host secret"), "{level}:\n{progress}");
    assert!(has("uid=0"), "{level}:\n{progress}");
    assert!(has("devnull=writable"), "{level}:\n{progress}");
    assert!(
        lines.iter().any(|l| l.starts_with("hosts=127.0.0.1 localhost")),
        "{level}: not the build's /etc/hosts:\n{progress}"
    );
    match level {
        "nosandbox-pid" => {
            // kiln's own pid namespace: the step is not pid 1 and sees kiln's processes…
            assert!(!has("pid=1"), "{progress}");
            assert!(!has("procs=2"), "{progress}");
            // …through a read-only, masked /proc, with Docker's capabilities.
            assert!(has("NoNewPrivs:1"), "{progress}");
            assert!(has("CapEff:00000000a80425fb"), "{progress}");
            assert!(has("timers=0"), "{progress}");
            assert!(has("procsys=readonly"), "{progress}");
            assert!(has("host=kilnsandbox"), "{progress}");
            assert!(has("devnull=char") && has("zero=4"), "{progress}");
        }
        "chroot" => {
            // No namespace and no mount: no /proc at all, the container's hostname.
            assert!(has("proc=no"), "{progress}");
            assert!(!has("host=kilnsandbox"), "{progress}");
        }
        _ => unreachable!(),
    }
}

#[test]
fn forced_levels_as_root_isolate_and_give_the_same_layer() {
    if !require(kiln_testkit::is_root(), "the root-mode RUN tests need root") {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let (_m, m) = marker();
    let probe = PROBE.replace("MARKER", &m);
    for level in ["nosandbox-pid", "chroot"] {
        let ctx = context(&[("Dockerfile", &format!("FROM {base}\n{probe}"))]);
        let out = run(k.cmd().args([
            "build",
            "--progress=plain",
            "--no-cache",
            "--isolation",
            level,
            ctx.path().to_str().unwrap(),
        ]));
        let progress = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{level}:\n{progress}");
        check_probe(level, &progress);
        // Forced: no line about the choice.
        assert!(!progress.contains("NOTE: RUN steps use isolation"), "{progress}");
        if level == "chroot" {
            // As root with every device: the nodes are real.
            let lines = step_lines(&progress);
            assert!(lines.iter().any(|l| l == "devnull=char") && lines.iter().any(|l| l == "zero=4"));
        }
    }
    // The same layers under every level (chroot forces the copy snapshotter).
    let ctx = context(&[
        ("Dockerfile", &layer_dockerfile(base)),
        ("hosts", "10.1.2.3 image-hosts\n"),
    ]);
    let mut ids = Vec::new();
    for level in ["namespaces", "nosandbox-pid", "chroot"] {
        let tag = format!("iso-{level}:1");
        let out = run(k
            .cmd()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args([
                "build",
                "--progress=plain",
                "--no-cache",
                "--isolation",
                level,
                "-t",
                &tag,
            ])
            .arg(ctx.path()));
        let progress = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{level}:\n{progress}");
        // The step saw the build's /etc/hosts, not the image's.
        assert!(
            !step_lines(&progress).iter().any(|l| l.contains("image-hosts")),
            "{level}:\n{progress}"
        );
        ids.push((level, diff_ids(&k.ok(&["inspect", &tag]))));
    }
    for (level, d) in &ids[1..] {
        assert_eq!(d, &ids[0].1, "{level} gives other layers than namespaces");
    }
    // `--isolation chroot` with an overlay snapshotter is refused, naming both flags.
    let err = k.fails(&[
        "build",
        "--isolation",
        "chroot",
        "--snapshotter",
        "overlay",
        ctx.path().to_str().unwrap(),
    ]);
    assert!(err.contains("--isolation chroot needs --snapshotter copy"), "{err}");
}

#[test]
fn chroot_refuses_what_needs_a_mount() {
    if !require(kiln_testkit::is_root(), "the root-mode RUN tests need root") {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    for (step, want) in [
        (
            "RUN --mount=type=tmpfs,target=/t true",
            "RUN --mount (target /t) needs a mount",
        ),
        (
            "RUN --network=none true",
            "RUN --network=none needs a network namespace",
        ),
    ] {
        let ctx = context(&[("Dockerfile", &format!("FROM {base}\n{step}\n"))]);
        let out = run(k.cmd().args(["build", "--isolation", "chroot"]).arg(ctx.path()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(want) && err.contains("isolation `chroot` cannot give"),
            "{err}"
        );
    }
}

#[test]
fn forced_levels_rootless_isolate() {
    let Some(u) = User::get(SUB_USER, true) else { return };
    let Some(base) = u.busybox_base() else { return };
    let (_m, m) = marker();
    let probe = PROBE.replace("MARKER", &m);
    let ctx = u.context("probe", &format!("FROM {base}\n{probe}"));
    for level in ["nosandbox-pid", "chroot"] {
        let progress = u.kiln_ok(&[
            "build",
            "--progress=plain",
            "--no-cache",
            "--isolation",
            level,
            ctx.to_str().unwrap(),
        ]);
        check_probe(level, &progress);
    }
    // KILN_ISOLATION is the flag's environment variable.
    let out = {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", u.name, "--", "env", "KILN_ISOLATION=bogus"])
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", ctx.to_str().unwrap()]);
        run(&mut c)
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("nosandbox-pid"), "{err}");
}

#[test]
fn auto_on_a_capable_host_says_nothing() {
    if !require(kiln_testkit::is_root(), "the root-mode RUN tests need root") {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN echo pid=$$\n"))]);
    let out = run(k.cmd().args(["build", "--progress=plain"]).arg(ctx.path()));
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    assert!(step_lines(&progress).contains(&"pid=1".to_string()), "{progress}");
    assert!(!progress.contains("NOTE: RUN steps use isolation"), "{progress}");
}
