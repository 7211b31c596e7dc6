//! Small things a CI user hits (issue 15, item 5): buildx's short cache forms and
//! repeatable `--cache-to`, `--pull=true|false`, archive modes under the umask, `kiln du`
//! with hard links, and `kiln build --help` agreeing with docs/cli.md.

use std::process::Command;

use crate::common::*;
use kiln_testkit::Registry;

/// `kiln ARGS` run through `sh` with `umask MASK` set first.
fn with_umask(k: &Kiln, mask: &str, args: &[&str]) {
    let c = k.cmd();
    let bin = c.get_program().to_owned();
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("umask {mask} && exec \"$0\" \"$@\""))
        .arg(bin)
        .args(args);
    for (key, val) in c.get_envs() {
        match val {
            Some(v) => sh.env(key, v),
            None => sh.env_remove(key),
        };
    }
    run_ok(&mut sh);
}

/// A COPY-only build (no RUN: no sandbox needed) with `extra` flags; the steps that ran.
fn copy_build(k: &Kiln, ctx: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["build", "--progress=plain"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let out = run(k.cmd().args(&args));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let mut steps = crate::cache::ran(&crate::cache::outcomes(&err));
    steps.sort();
    steps
}

#[test]
fn a_bare_cache_reference_is_a_registry_cache_and_cache_to_repeats() {
    let Some(reg) = Registry::start() else { return };
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\n"),
        ("a.txt", "a\n"),
        ("b.txt", "b\n"),
    ]);
    let cache = format!("{}/cache:ci", reg.host);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("cache");
    let local_to = format!("type=local,dest={},mode=max", local.display());
    // As buildx: a value with no `=` is `type=registry,ref=VALUE`; --cache-to repeats.
    let steps = copy_build(&kiln(), ctx.path(), &["--cache-to", &cache, "--cache-to", &local_to]);
    assert_eq!(steps, ["COPY a.txt", "COPY b.txt"]);
    assert!(local.join("index.json").is_file(), "the local cache is written too");

    // Fresh roots: each cache alone makes every step a hit.
    assert!(copy_build(&kiln(), ctx.path(), &["--cache-from", &cache]).is_empty());
    let local_from = format!("type=local,src={}", local.display());
    assert!(copy_build(&kiln(), ctx.path(), &["--cache-from", &local_from]).is_empty());

    // A bare value that is not a reference names the flag and the value.
    let err = kiln().fails(&["build", "--cache-from", "Not A Ref", ctx.path().to_str().unwrap()]);
    assert!(err.contains("--cache-from Not A Ref"), "{err}");
}

#[test]
fn pull_takes_true_and_false_as_buildx() {
    let k = kiln();
    // A base only in the local store, named after a loopback port nothing listens on.
    let base = context(&[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "base\n")]);
    k.ok(&["build", "-q", "-t", "127.0.0.1:1/only:1", base.path().to_str().unwrap()]);
    let app = context(&[("Dockerfile", "FROM 127.0.0.1:1/only:1\nCOPY g /g\n"), ("g", "app\n")]);
    let app = app.path().to_str().unwrap();
    k.ok(&["build", "-q", "--pull=false", app]);
    k.ok(&["build", "-q", "--pull=missing", app]);
    let err = k.fails(&["build", "-q", "--pull=true", app]);
    assert!(err.contains("127.0.0.1:1"), "--pull=true asks the registry: {err}");
    let err = k.fails(&["build", "-q", "--pull", app]);
    assert!(err.contains("127.0.0.1:1"), "bare --pull still means always: {err}");
    let err = k.fails(&["build", "--pull=sometimes", app]);
    assert!(err.contains("sometimes"), "{err}");
}

#[test]
fn archives_are_written_under_the_umask() {
    let k = kiln();
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "x\n")]);
    let c = ctx.path().to_str().unwrap();
    // An `-o` output is not stored; `kiln save` needs the image in the store.
    k.ok(&["build", "-q", "-t", "um:1", c]);
    let out = tempfile::tempdir().unwrap();
    for (mask, want) in [("022", 0o644), ("027", 0o640)] {
        for kind in ["oci", "docker", "tar"] {
            let dest = out.path().join(format!("{kind}-{mask}.tar"));
            let spec = format!("type={kind},dest={}", dest.display());
            with_umask(&k, mask, &["build", "-q", "-t", "um:1", "-o", &spec, c]);
            assert_eq!(mode_of(&dest) & 0o7777, want, "-o {spec} under umask {mask}");
        }
        let saved = out.path().join(format!("save-{mask}.tar"));
        with_umask(&k, mask, &["save", "-o", saved.to_str().unwrap(), "um:1"]);
        assert_eq!(mode_of(&saved) & 0o7777, want, "kiln save under umask {mask}");
    }
}

/// The SIZE column of `kiln du`'s `row`, in bytes.
fn du_bytes(du: &str, row: &str) -> f64 {
    let line = du.lines().find(|l| l.starts_with(row)).unwrap_or_default();
    let size = line[row.len()..].split_whitespace().nth(1).unwrap_or_default();
    let (num, unit) = size.split_at(size.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(size.len()));
    let mult = match unit {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => panic!("no size in `{line}`:\n{du}"),
    };
    num.parse::<f64>().unwrap() * mult
}

#[test]
fn du_counts_a_hard_linked_snapshot_file_once() {
    if !require(kiln_testkit::is_root(), "the du test runs a RUN step as root") {
        return;
    }
    let k = kiln();
    let Some(base) = crate::run::busybox_base(&k) else {
        return;
    };
    let before = du_bytes(&k.ok(&["du"]), "Snapshots");
    // 8 MB under two names, one inode.
    let df = format!("FROM {base}\nRUN head -c 8000000 /dev/urandom > /big && ln /big /big2 && ln /big /big3\n");
    crate::run::build_plain(&k, &df, &["-t", "hl:1"]);
    let du = k.ok(&["du"]);
    let grown = du_bytes(&du, "Snapshots") - before;
    assert!(
        (7.9e6..12e6).contains(&grown),
        "8 MB under three names must count once, grew by {grown} bytes:\n{du}"
    );
}

/// `--flag` → its help text, from `kiln SUB --help`.
fn help_flags(sub: &str) -> std::collections::BTreeMap<String, String> {
    let help = kiln().ok(&[sub, "--help"]);
    let mut flags = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if t.starts_with('-') && indent < 8 {
            let long = t
                .split([',', ' ', '<', '[', '='])
                .find(|w| w.starts_with("--"))
                .unwrap_or_default()
                .to_string();
            // Short help puts the text on the flag's line.
            let rest = t.split_once("  ").map(|x| x.1).unwrap_or_default().trim().to_string();
            flags.insert(long.clone(), rest);
            current = Some(long);
        } else if let Some(f) = &current {
            if !t.is_empty() {
                let e = flags.get_mut(f).unwrap();
                e.push(' ');
                e.push_str(t);
            }
        }
    }
    flags
}

/// The long flags the `## kiln build` table of docs/cli.md names.
fn doc_build_flags() -> std::collections::BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md")).unwrap();
    let start = doc.find("## kiln build").unwrap();
    let section = &doc[start..];
    let section = &section[..section.find("\n### ").unwrap()];
    let mut flags = std::collections::BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `-")) {
        let cell = row.split(" | ").next().unwrap();
        for w in cell.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if w.starts_with("--") {
                flags.insert(w.to_string());
            }
        }
    }
    flags
}

#[test]
fn build_help_and_docs_cli_md_agree() {
    let help = help_flags("build");
    let mut in_help: std::collections::BTreeSet<String> = help.keys().cloned().collect();
    // Every command's own: docs/cli.md gives them once, at the top.
    for common in ["--help", "--version", "--root"] {
        in_help.remove(common);
    }
    assert_eq!(in_help, doc_build_flags(), "`kiln build --help` against docs/cli.md");
    // What the issue found saying otherwise than docs/cli.md, for every command with it.
    for sub in ["build", "pull", "push"] {
        let h = help_flags(sub);
        let ca = h["--tls-ca"].to_lowercase();
        assert!(
            ca.contains("also") && !ca.contains("instead"),
            "kiln {sub}: --tls-ca adds to the system's roots: {ca}"
        );
        let insecure = h["--insecure-registry"].to_lowercase();
        assert!(
            insecure.contains("not verified") && insecure.contains("https"),
            "kiln {sub}: --insecure-registry skips verification, HTTPS first: {insecure}"
        );
    }
    for flag in ["--cache-to", "--cache-from"] {
        let text = &help[flag];
        assert!(
            text.contains("type=registry") && text.contains("repeatable"),
            "{flag}: {text}"
        );
    }
    assert!(help["--output"].contains("registry"), "{}", help["--output"]);
}

#[test]
fn add_host_puts_names_in_the_steps_etc_hosts() {
    if !require(kiln_testkit::is_root(), "the --add-host test runs RUN steps as root") {
        return;
    }
    let k = kiln();
    let Some(base) = crate::run::busybox_base(&k) else {
        return;
    };
    let df = format!("FROM {base}\nRUN cat /etc/hosts\n");
    let hosts = |extra: &[&str]| {
        let err = crate::run::build_plain(&k, &df, extra);
        (
            crate::run::step_lines(&err),
            crate::cache::ran(&crate::cache::outcomes(&err)),
        )
    };
    // docker's `HOST:IP` and buildx's `HOST=IP`; an IPv6 address after the first colon.
    let (lines, ran) = hosts(&["--add-host", "db.internal:10.1.2.3", "--add-host=v6.internal=fd00::1"]);
    assert_eq!(ran, ["RUN cat"]);
    assert!(lines.iter().any(|l| l == "10.1.2.3\tdb.internal"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "fd00::1\tv6.internal"), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("127.0.0.1\tlocalhost")), "{lines:?}");
    // Part of the step's cache key, as BuildKit's ExecOp extra hosts: without it, re-run.
    let (lines, ran) = hosts(&[]);
    assert_eq!(ran, ["RUN cat"], "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("db.internal")), "{lines:?}");
    let (_, ran) = hosts(&["--add-host", "db.internal:10.1.2.3", "--add-host=v6.internal=fd00::1"]);
    assert!(ran.is_empty(), "the same hosts hit the cache");
    // The chroot level puts the same file in; an OCI runtime binds it.
    let (lines, _) = hosts(&["--isolation", "chroot", "--add-host", "c.internal:10.9.9.9"]);
    assert!(lines.iter().any(|l| l == "10.9.9.9\tc.internal"), "chroot: {lines:?}");
    if kiln_testkit::require_tool("runc") {
        let (lines, _) = hosts(&["--runtime", "runc", "--add-host", "r.internal:10.8.8.8"]);
        assert!(lines.iter().any(|l| l == "10.8.8.8\tr.internal"), "runc: {lines:?}");
    }

    let ctx = context(&[("Dockerfile", "FROM scratch\n")]);
    let c = ctx.path().to_str().unwrap();
    for (bad, why) in [
        ("nohost", "HOST:IP"),
        ("db:10.1.2", "10.1.2"),
        (":10.1.2.3", "HOST:IP"),
        ("a b:10.0.0.1", "a b"),
    ] {
        let err = k.fails(&["build", "--add-host", bad, c]);
        assert!(err.contains("--add-host") && err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn shm_size_sets_the_size_of_dev_shm() {
    if !require(kiln_testkit::is_root(), "the --shm-size test runs RUN steps as root") {
        return;
    }
    let k = kiln();
    let Some(base) = crate::run::busybox_base(&k) else {
        return;
    };
    // `df -k` prints the tmpfs size in KiB; --no-cache so each size runs.
    let df = format!("FROM {base}\nRUN df -k /dev/shm | tail -n 1\n");
    let size_kib = |extra: &[&str]| {
        let mut args = vec!["--no-cache"];
        args.extend_from_slice(extra);
        let err = crate::run::build_plain(&k, &df, &args);
        let lines = crate::run::step_lines(&err);
        let line = lines.iter().find(|l| l.starts_with("shm")).cloned().unwrap_or_default();
        line.split_whitespace().nth(1).unwrap_or_default().to_string()
    };
    assert_eq!(size_kib(&[]), "65536", "docker's default: 64 MiB");
    assert_eq!(size_kib(&["--shm-size", "128m"]), "131072");
    assert_eq!(size_kib(&["--shm-size=1g"]), "1048576");
    assert_eq!(size_kib(&["--shm-size", "2097152"]), "2048", "plain bytes");
    if kiln_testkit::require_tool("runc") {
        assert_eq!(size_kib(&["--runtime", "runc", "--shm-size", "96m"]), "98304");
    }

    let ctx = context(&[("Dockerfile", "FROM scratch\n")]);
    for bad in ["0", "12x", "-1m", ""] {
        let flag = format!("--shm-size={bad}");
        let err = k.fails(&["build", &flag, ctx.path().to_str().unwrap()]);
        assert!(err.contains("--shm-size"), "{bad}: {err}");
    }
}

/// The image manifest of the single image in an oci-archive.
fn oci_archive_manifest(path: &std::path::Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let index = json(&tar_member(&bytes, "index.json").expect("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().unwrap().replace(':', "/");
    json(&tar_member(&bytes, &format!("blobs/{digest}")).expect("the manifest blob"))
}

#[test]
fn annotation_goes_into_the_image_manifest() {
    let k = kiln();
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "x\n")]);
    let c = ctx.path().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    // buildx's default type is `manifest`; `manifest:` says it; values keep `=` and `,`.
    let flags = [
        "--annotation",
        "org.opencontainers.image.source=https://example.com/app",
        "--annotation",
        "manifest:com.example.note=a=b,c",
    ];
    for (name, extra) in [
        ("gzip.tar", ""),
        ("zstd.tar", ",compression=zstd,force-compression=true"),
    ] {
        let dest = out.path().join(name);
        let spec = format!("type=oci,dest={}{extra}", dest.display());
        let mut args = vec!["build", "-q", "-o", &spec];
        args.extend_from_slice(&flags);
        args.push(c);
        k.ok(&args);
        let m = oci_archive_manifest(&dest);
        assert_eq!(
            m["annotations"]["org.opencontainers.image.source"], "https://example.com/app",
            "{m}"
        );
        assert_eq!(m["annotations"]["com.example.note"], "a=b,c", "{m}");
    }
    // Without it: no annotations in the manifest.
    let plain = out.path().join("plain.tar");
    k.ok(&["build", "-q", "-o", &format!("type=oci,dest={}", plain.display()), c]);
    assert!(oci_archive_manifest(&plain).get("annotations").is_none());

    for (bad, why) in [
        ("novalue", "KEY=VALUE"),
        ("=v", "KEY=VALUE"),
        ("index-descriptor:k=v", "`index-descriptor` is not supported"),
        ("manifest[linux/amd64]:k=v", "is not supported"),
    ] {
        let err = k.fails(&["build", "--annotation", bad, c]);
        assert!(err.contains("--annotation") && err.contains(why), "{bad}: {err}");
    }

    // `index:` goes into the image index: a single-platform image has one only with
    // attestations (as BuildKit: "index annotations not supported for single platform
    // export" otherwise).
    let err = k.fails(&["build", "--annotation", "index:com.example.i=1", c]);
    assert!(
        err.contains("--annotation index:") && err.contains("the local store gets no image index"),
        "{err}"
    );
    let dest = out.path().join("attested.tar");
    k.ok(&[
        "build",
        "-q",
        "--provenance=true",
        "--annotation",
        "index:com.example.i=1",
        "-o",
        &format!("type=oci,dest={}", dest.display()),
        c,
    ]);
    let bytes = std::fs::read(&dest).unwrap();
    let top = json(&tar_member(&bytes, "index.json").unwrap());
    assert_eq!(
        top["manifests"][0]["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{top}"
    );
    let digest = top["manifests"][0]["digest"].as_str().unwrap().replace(':', "/");
    let index = json(&tar_member(&bytes, &format!("blobs/{digest}")).unwrap());
    assert_eq!(index["annotations"]["com.example.i"], "1", "{index}");
}
