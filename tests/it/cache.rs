//! The build cache: a step re-runs if and only if something it depends on changed.

use std::path::Path;

use crate::common::*;
use crate::run::busybox_base;

/// (step description, whether it was CACHED) for every `[stage n/m]` step.
pub(crate) fn outcomes(progress: &str) -> Vec<(String, bool)> {
    let mut names: Vec<(String, String)> = Vec::new();
    let mut cached = std::collections::HashSet::new();
    for line in progress.lines() {
        let Some((num, rest)) = line.split_once(' ') else {
            continue;
        };
        if !num.starts_with('#') {
            continue;
        }
        if rest.starts_with('[') && !rest.starts_with("[internal]") {
            names.push((
                num.to_string(),
                rest.split_once("] ").map(|x| x.1).unwrap_or(rest).to_string(),
            ));
        } else if rest == "CACHED" {
            cached.insert(num.to_string());
        }
    }
    names.into_iter().map(|(n, d)| (d, cached.contains(&n))).collect()
}

struct Project {
    k: Kiln,
    ctx: tempfile::TempDir,
}

impl Project {
    fn build(&self, extra: &[&str]) -> Vec<(String, bool)> {
        let mut args = vec!["build", "--progress=plain"];
        args.extend_from_slice(extra);
        args.push(self.ctx.path().to_str().unwrap());
        let out = run(self.k.cmd().args(&args));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        outcomes(&err)
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.ctx.path().join(rel), text).unwrap();
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.ctx.path().join(rel)
    }
}

/// Which steps ran (not CACHED), by the start of their description.
pub(crate) fn ran(steps: &[(String, bool)]) -> Vec<String> {
    steps
        .iter()
        .filter(|(d, c)| !c && !d.starts_with("FROM"))
        .map(|(d, _)| d.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

const DOCKERFILE: &str = "FROM bb:1
RUN echo base-step > /base
COPY app/ /app/
ARG MODE=dev
RUN echo mode=$MODE > /mode
ENV UNRELATED=1
RUN cat /app/main.txt
";

#[test]
fn invalidation_matrix() {
    if !kiln_testkit::is_root() && !require(false, "the cache tests run RUN steps as root") {
        return;
    }
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let ctx = context(&[
        ("Dockerfile", DOCKERFILE),
        (".dockerignore", "app/ignored.txt\n"),
        ("app/main.txt", "main v1\n"),
        ("app/ignored.txt", "ignored v1\n"),
        ("other.txt", "not selected\n"),
    ]);
    let p = Project { k, ctx };
    let all = ["RUN echo", "COPY app/", "RUN echo", "RUN cat"];

    assert_eq!(ran(&p.build(&[])), all, "first build runs everything");
    assert_eq!(ran(&p.build(&[])), Vec::<String>::new(), "a rebuild is all CACHED");

    p.write("app/main.txt", "main v2\n");
    assert_eq!(
        ran(&p.build(&[])),
        ["COPY app/", "RUN echo", "RUN cat"],
        "a selected file changed"
    );

    p.write("app/ignored.txt", "ignored v2\n");
    p.write("other.txt", "still not selected\n");
    assert!(
        ran(&p.build(&[])).is_empty(),
        "ignored and unselected files do not count"
    );

    // Same contents, new times: still cached.
    let f = std::fs::File::options()
        .append(true)
        .open(p.path("app/main.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    drop(f);
    assert!(ran(&p.build(&[])).is_empty(), "touching a file changes nothing");

    // A mode change reaches the layer: the COPY runs again.
    run_ok(
        std::process::Command::new("chmod")
            .arg("600")
            .arg(p.path("app/main.txt")),
    );
    assert_eq!(ran(&p.build(&[])), ["COPY app/", "RUN echo", "RUN cat"], "mode changed");

    assert_eq!(
        ran(&p.build(&["--build-arg", "MODE=prod"])),
        ["RUN echo", "RUN cat"],
        "a build arg used by one RUN"
    );
    assert!(ran(&p.build(&["--build-arg", "MODE=prod"])).is_empty());

    p.write("Dockerfile", &DOCKERFILE.replace("UNRELATED=1", "UNRELATED=2"));
    assert_eq!(
        ran(&p.build(&["--build-arg", "MODE=prod"])),
        ["RUN cat"],
        "an ENV after the steps"
    );

    assert_eq!(
        ran(&p.build(&["--build-arg", "MODE=prod", "--no-cache"])),
        all,
        "--no-cache"
    );

    // A new base image under the same tag: everything runs again, and so does a COPY
    // from it by name.
    let base = context(&[("Dockerfile", "FROM bb:1\nRUN echo new > /new-base-file\n")]);
    p.k.ok(&["build", "-q", "-t", "bb:1", base.path().to_str().unwrap()]);
    assert_eq!(ran(&p.build(&["--build-arg", "MODE=prod"])), all, "the base moved");
}

#[test]
fn cache_hits_survive_a_lost_snapshot_and_miss_on_a_lost_blob() {
    if !kiln_testkit::is_root() && !require(false, "the cache tests run RUN steps as root") {
        return;
    }
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let ctx = context(&[("Dockerfile", "FROM bb:1\nRUN echo one > /one\nRUN cat /one\n")]);
    let p = Project { k, ctx };
    assert_eq!(ran(&p.build(&[])), ["RUN echo", "RUN cat"]);
    // Unpacked trees are a cache of the blobs: without them the build is still a hit.
    std::fs::remove_dir_all(p.k.root().join("snapshots-v1")).unwrap();
    assert!(ran(&p.build(&[])).is_empty());
    // Without a layer blob the record is useless: the step runs again.
    let records: Vec<_> = std::fs::read_dir(p.k.root().join("cache-v1"))
        .unwrap()
        .flatten()
        .collect();
    assert!(!records.is_empty());
    for r in records {
        let layers: serde_json::Value = json(&std::fs::read_to_string(r.path()).unwrap());
        // The step's own layer is the last of its chain; one-layer chains are the base
        // image's own build (COPY into scratch).
        let chain = layers.as_array().unwrap();
        if let Some(l) = chain.last().filter(|_| chain.len() > 1) {
            let d = l["blob"]["digest"].as_str().unwrap().replace("sha256:", "");
            let _ = std::fs::remove_file(p.k.root().join("content-v1/blobs/sha256").join(&d));
            let _ = std::fs::remove_file(p.k.root().join("store/blobs/sha256").join(&d));
        }
    }
    let steps = p.build(&[]);
    assert_eq!(ran(&steps), ["RUN echo", "RUN cat"], "{steps:?}");
    assert!(Path::new(&p.k.root().join("cache-v1")).is_dir());
}

#[test]
fn prune_drops_what_no_tagged_image_needs() {
    if !kiln_testkit::is_root() && !require(false, "the cache tests run RUN steps as root") {
        return;
    }
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let a = Project {
        ctx: context(&[("Dockerfile", "FROM bb:1\nRUN echo a > /a\n")]),
        k,
    };
    let b_ctx = context(&[("Dockerfile", "FROM bb:1\nRUN echo b > /b\n")]);
    assert_eq!(ran(&a.build(&["-t", "a:1"])), ["RUN echo"]);
    let b = |extra: &[&str]| {
        let mut args = vec!["build", "--progress=plain"];
        args.extend_from_slice(extra);
        args.push(b_ctx.path().to_str().unwrap());
        let out = run(a.k.cmd().args(&args));
        assert!(out.status.success());
        outcomes(&String::from_utf8_lossy(&out.stderr))
    };
    assert_eq!(ran(&b(&["-t", "b:1"])), ["RUN echo"]);
    a.k.ok(&["rmi", "b:1"]);
    let du = a.k.ok(&["du"]);
    assert!(
        du.lines()
            .any(|l| l.starts_with("Build cache") && l.split_whitespace().nth(2) == Some("3")),
        "{du}"
    );

    // Not used for an hour yet: nothing goes.
    let out = a.k.ok(&["prune", "--filter", "until=1h"]);
    assert!(out.contains("Deleted 0 cache records"), "{out}");
    let out = a.k.ok(&["prune"]);
    assert!(out.contains("Deleted 1 cache records"), "{out}");
    assert!(ran(&a.build(&["-t", "a:1"])).is_empty(), "a's cache is kept");
    assert_eq!(ran(&b(&[])), ["RUN echo"], "b's cache is gone");
    assert!(a.k.ok(&["fsck"]).contains(" 0 problems"));

    let out = a.k.ok(&["prune", "--all"]);
    assert!(!out.contains("Deleted 0 cache records"), "{out}");
    assert_eq!(ran(&a.build(&["-t", "a:1"])), ["RUN echo"], "--all drops every record");
    assert!(a.k.ok(&["fsck"]).contains(" 0 problems"));
    let err = a.k.fails(&["prune", "--filter", "since=1h"]);
    assert!(err.contains("unknown filter"), "{err}");
}

#[test]
fn fsck_finds_and_repairs_a_corrupt_blob() {
    if !kiln_testkit::is_root() && !require(false, "the cache tests run RUN steps as root") {
        return;
    }
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let p = Project {
        ctx: context(&[("Dockerfile", "FROM bb:1\nRUN echo one > /one\nRUN cat /one\n")]),
        k,
    };
    assert_eq!(ran(&p.build(&["-t", "app:1"])), ["RUN echo", "RUN cat"]);
    assert!(p.k.ok(&["fsck"]).contains(" 0 problems"));
    // Flip a byte in the first RUN's layer.
    let rec = std::fs::read_dir(p.k.root().join("cache-v1"))
        .unwrap()
        .flatten()
        .map(|e| json(&std::fs::read_to_string(e.path()).unwrap()))
        .find(|r| r.as_array().unwrap().len() == 2)
        .unwrap();
    let hex = rec[1]["blob"]["digest"].as_str().unwrap().replace("sha256:", "");
    let blob = p.k.root().join("content-v1/blobs/sha256").join(&hex);
    let mut bytes = std::fs::read(&blob).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 0xff;
    // The store's copy is a hard link: both see the damage.
    std::fs::write(&blob, &bytes).unwrap();

    let err = p.k.fails(&["fsck"]);
    let out = run(p.k.cmd().arg("fsck"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("blob sha256:{hex} does not match its digest")),
        "{stdout}"
    );
    assert!(err.contains("kiln fsck --repair"), "{err}");
    let repaired = p.k.ok(&["fsck", "--repair"]);
    assert!(
        repaired.contains("REPAIRED: untagged docker.io/library/app:1"),
        "{repaired}"
    );
    assert!(p.k.root().join("quarantine-v1").read_dir().unwrap().count() > 0);
    assert!(p.k.ok(&["fsck"]).contains(" 0 problems"));
    // The next build recomputes what was lost.
    assert_eq!(ran(&p.build(&["-t", "app:1"])), ["RUN echo", "RUN cat"]);
    assert!(p.k.ok(&["fsck"]).contains(" 0 problems"));
}

/// A small xorshift generator: the torture test's moments come from a printed seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn kill_9_at_random_moments_leaves_a_sound_root() {
    if !kiln_testkit::is_root() && !require(false, "the cache tests run RUN steps as root") {
        return;
    }
    let seed: u64 = std::env::var("KILN_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("torture seed: {seed} (KILN_TORTURE_SEED={seed} repeats this run)");
    let mut rng = Rng(seed);
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let mut files = vec![("Dockerfile", String::new())];
    for i in 0..50 {
        files.push((
            Box::leak(format!("src/f{i}.txt").into_boxed_str()),
            format!("file {i}\n").repeat(200),
        ));
    }
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let ctx = context(&borrowed);
    let mut total = 0;
    for round in 0..20 {
        // Each round changes the Dockerfile so that the steps really run.
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!(
                "FROM bb:1\nCOPY src/ /src/\nRUN echo round {round} > /r && cp -r /src /copy\n\
                 RUN dd if=/dev/urandom of=/blob bs=64k count=16 2>/dev/null\nRUN sleep 0.1 && ls /copy | wc -l\n"
            ),
        )
        .unwrap();
        let delay = std::time::Duration::from_millis(rng.next() % 900);
        let mut child = p_cmd(&k, ctx.path()).spawn().unwrap();
        std::thread::sleep(delay);
        kiln_testkit::kill(child.id(), libc::SIGKILL);
        let _ = child.wait();
        let out = run(k.cmd().arg("fsck"));
        assert!(
            out.status.success(),
            "seed {seed}, round {round}, killed after {delay:?}: fsck failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(p_cmd(&k, ctx.path()).arg("-q"));
        assert!(
            out.status.success(),
            "seed {seed}, round {round}: the build after the kill failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        total += 1;
    }
    assert_eq!(total, 20);
    assert!(k.ok(&["fsck"]).contains(" 0 problems"));
}

fn p_cmd(k: &Kiln, ctx: &Path) -> std::process::Command {
    let mut c = k.cmd();
    c.args(["build", "-t", "torture:1"])
        .arg(ctx)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    c
}

#[test]
fn concurrent_builds_and_a_prune_share_one_root() {
    if !kiln_testkit::is_root() && !require(false, "the cache tests run RUN steps as root") {
        return;
    }
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let same = "FROM bb:1\nCOPY . /ctx\nRUN sleep 0.3 && echo same > /same\nRUN ls /ctx > /list\n";
    let ctxs: Vec<tempfile::TempDir> = vec![
        context(&[("Dockerfile", same), ("a.txt", "a\n")]),
        context(&[("Dockerfile", same), ("a.txt", "a\n")]),
        context(&[("Dockerfile", "FROM bb:1\nRUN sleep 0.2 && echo two > /two\n")]),
        context(&[("Dockerfile", "FROM bb:1\nRUN echo three > /three && sleep 0.3\n")]),
    ];
    let children: Vec<_> = ctxs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            // SOURCE_DATE_EPOCH: the two identical builds run their RUN steps at the same
            // time but not always in the same second (a loaded machine); the epoch makes
            // their layers and configs independent of the clock, so equal ids mean equal work.
            k.cmd()
                .args(["build", "-q", "-t", &format!("conc:{i}")])
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .arg(c.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // A prune in the middle waits for the builds instead of pulling blobs from under them.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let prune = k
        .cmd()
        .args(["prune", "--all"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ids: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect();
    assert!(prune.wait_with_output().unwrap().status.success());
    assert_eq!(ids[0], ids[1], "identical builds make one image");
    assert!(k.ok(&["fsck"]).contains(" 0 problems"));
    for (i, c) in ctxs.iter().enumerate() {
        let out = k.ok(&["build", "-q", "-t", &format!("conc:{i}"), c.path().to_str().unwrap()]);
        assert!(!out.trim().is_empty());
    }
    let images = k.ok(&["images"]);
    assert_eq!(images.lines().filter(|l| l.starts_with("conc")).count(), 4, "{images}");
}

#[test]
fn no_cache_filter_reruns_only_the_named_stage() {
    if !kiln_testkit::is_root() && !require(false, "the cache tests run RUN steps as root") {
        return;
    }
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let p = Project {
        ctx: context(&[(
            "Dockerfile",
            "FROM bb:1 AS Deps\nRUN echo deps > /deps\nFROM bb:1\nCOPY --from=deps /deps /deps\nRUN cat /deps\n",
        )]),
        k,
    };
    assert_eq!(ran(&p.build(&[])), ["RUN echo", "COPY --from=deps", "RUN cat"]);
    // The stage's own step runs; what follows is a hit again (same result).
    assert_eq!(ran(&p.build(&["--no-cache-filter", "DEPS"])), ["RUN echo"]);
    let out = run(p
        .k
        .cmd()
        .args(["build", "--no-cache-filter", "nope", p.ctx.path().to_str().unwrap()]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARN: --no-cache-filter nope: no stage"));
}

#[test]
fn cache_exported_to_a_directory_gives_hits_in_a_fresh_root() {
    if !kiln_testkit::is_root() && !require(false, "the cache tests run RUN steps as root") {
        return;
    }
    let Some(bb) = crate::run::busybox_context() else {
        return;
    };
    let (a, b) = (kiln(), kiln());
    // The same base image in both roots (fixed times make one image id).
    for k in [&a, &b] {
        k.ok(&[
            "build",
            "-q",
            "--build-arg",
            "SOURCE_DATE_EPOCH=1700000000",
            "-t",
            "bb:1",
            bb.path().to_str().unwrap(),
        ]);
    }
    let df = "FROM bb:1 AS deps\nRUN echo deps > /deps\nFROM bb:1\nCOPY app.txt /app.txt\nCOPY --from=deps /deps /deps\nRUN cat /deps /app.txt > /both\n";
    let ctx = context(&[("Dockerfile", df), ("app.txt", "app\n")]);
    let c = ctx.path().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (max, min) = (dir.path().join("max"), dir.path().join("min"));
    let build = |k: &Kiln, extra: &[&str]| {
        let mut args = vec!["build", "--progress=plain", "--iidfile"];
        let iid = dir.path().join("iid");
        let iid_s = iid.to_str().unwrap().to_string();
        args.push(&iid_s);
        args.extend_from_slice(extra);
        args.push(c);
        let out = run(k.cmd().args(&args));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        let mut steps = ran(&outcomes(&err));
        steps.sort();
        (steps, std::fs::read_to_string(&iid).unwrap(), err)
    };
    let (steps, id_a, _) = build(
        &a,
        &["--cache-to", &format!("type=local,dest={},mode=max", max.display())],
    );
    assert_eq!(steps, ["COPY --from=deps", "COPY app.txt", "RUN cat", "RUN echo"]);
    build(&a, &["--cache-to", &format!("type=local,dest={}", min.display())]);
    assert!(max.join("index.json").is_file() && max.join("oci-layout").is_file());

    // min: the final stage's steps only; the deps stage runs again.
    let fresh = kiln();
    fresh.ok(&[
        "build",
        "-q",
        "--build-arg",
        "SOURCE_DATE_EPOCH=1700000000",
        "-t",
        "bb:1",
        bb.path().to_str().unwrap(),
    ]);
    let (steps, _, _) = build(&fresh, &["--cache-from", &format!("type=local,src={}", min.display())]);
    assert_eq!(steps, ["RUN echo"], "min mode");

    // max: everything is a hit, and the image is the same one.
    let (steps, id_b, progress) = build(&b, &["--cache-from", &format!("type=local,src={}", max.display())]);
    assert!(steps.is_empty(), "{progress}");
    assert_eq!(id_a, id_b);
    assert!(b.ok(&["fsck"]).contains(" 0 problems"));

    // Bad specs are named; an unreadable cache is only a warning.
    let err = a.fails(&["build", "--cache-to", "type=inline", c]);
    assert!(err.contains("type `inline` is not supported"), "{err}");
    let err = a.fails(&["build", "--cache-to", "type=registry,mode=max", c]);
    assert!(err.contains("ref=HOST/REPO[:TAG] is required"), "{err}");
    let (_, _, progress) = build(&a, &["--cache-from", "type=local,src=/nonexistent-kiln-cache"]);
    assert!(
        progress.contains("WARN: --cache-from /nonexistent-kiln-cache"),
        "{progress}"
    );
}

#[test]
fn a_rebuild_reads_only_the_changed_context_files() {
    if !kiln_testkit::is_root() && !require(false, "the cache tests run RUN steps as root") {
        return;
    }
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let mut files: Vec<(String, String)> = (0..300)
        .map(|i| (format!("src/{}/f{i}", i % 7), format!("{i}\n")))
        .collect();
    files.push((
        "Dockerfile".into(),
        "FROM bb:1\nCOPY src /src\nRUN ls -R /src | wc -l\n".into(),
    ));
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let p = Project {
        ctx: context(&borrowed),
        k,
    };
    let line = |extra: &[&str]| {
        let mut args = vec!["build", "--progress=plain"];
        args.extend_from_slice(extra);
        args.push(p.ctx.path().to_str().unwrap());
        let out = run(p.k.cmd().args(&args));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        err.lines()
            .find(|l| l.contains("files checked"))
            .map(|l| l.split_once(' ').unwrap().1.to_string())
    };
    assert_eq!(line(&[]).as_deref(), Some("300 files checked, 300 read"));
    assert_eq!(line(&[]).as_deref(), Some("300 files checked, 0 read"));
    p.write("src/3/f3", "changed\n");
    assert_eq!(line(&[]).as_deref(), Some("300 files checked, 1 read"));
    assert_eq!(line(&[]).as_deref(), Some("300 files checked, 0 read"));
}

#[test]
fn copy_from_an_image_by_tag_follows_the_tag() {
    if !kiln_testkit::is_root() && !require(false, "the cache tests run RUN steps as root") {
        return;
    }
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let src = context(&[("Dockerfile", "FROM bb:1\nRUN echo v1 > /version\n")]);
    k.ok(&["build", "-q", "-t", "src:1", src.path().to_str().unwrap()]);
    let p = Project {
        ctx: context(&[(
            "Dockerfile",
            "FROM bb:1\nCOPY --from=src:1 /version /version\nRUN cat /version\n",
        )]),
        k,
    };
    assert_eq!(ran(&p.build(&[])), ["COPY --from=src:1", "RUN cat"]);
    assert!(ran(&p.build(&[])).is_empty());
    std::fs::write(src.path().join("Dockerfile"), "FROM bb:1\nRUN echo v2 > /version\n").unwrap();
    p.k.ok(&["build", "-q", "-t", "src:1", src.path().to_str().unwrap()]);
    let out = run(p
        .k
        .cmd()
        .args(["build", "--progress=plain", p.ctx.path().to_str().unwrap()]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(ran(&outcomes(&err)), ["COPY --from=src:1", "RUN cat"], "{err}");
    assert!(err.contains(" v2"), "{err}");
}
