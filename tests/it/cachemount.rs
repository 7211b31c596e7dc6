//! `RUN --mount=type=cache` against BuildKit: which mounts share one cache (the id, the
//! `from=`/`source=` seed, `mode`/`uid`/`gid`, the default id) and what `--no-cache`
//! does to them. The oracle is `docker build` in the private dockerd (BuildKit 0.8);
//! where current BuildKit differs from it, the expectation is written here with its source.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::run::busybox_context;

/// Every RUN appends `<letter>$N` to a cache's `log` and keeps what it saw in `/oK`.
/// Each cache is used once per build: BuildKit 0.8 may give a step a fresh cache when
/// the previous step's release of the same cache has not finished (seen once, under
/// load), so reuse is checked across builds (`o1` of N=2 holds `a1 a2`), not within one.
/// `c` is one id used unseeded, seeded from a stage, and with `mode` (which BuildKit
/// makes by a mkdir on scratch: a seeded cache too); `rel` and `/w/rel` are the default
/// ids of a relative and an absolute target (BuildKit: the target as written); `e` is
/// seeded from a stage with `uid` and no `source` (BuildKit mounts the stage's `/cache`
/// after a mkdir with the uid).
const DOCKERFILE: &str = "FROM bb:1 AS seed\n\
RUN mkdir -p /s && echo seeded > /s/marker\n\
FROM bb:1 AS run\n\
ARG N\n\
WORKDIR /w\n\
RUN --mount=type=cache,id=c,target=/c echo a$N >> /c/log; cat /c/log > /o1\n\
RUN --mount=type=cache,id=c,target=/c,from=seed,source=/s echo b$N >> /c/log; cat /c/marker /c/log > /o2\n\
RUN --mount=type=cache,id=c,target=/c,mode=0700 echo c$N >> /c/log; cat /c/log > /o3\n\
RUN --mount=type=cache,target=rel echo d$N >> rel/log; cat rel/log > /o4\n\
RUN --mount=type=cache,target=/w/rel cat /w/rel/log > /o5 2>/dev/null || echo none > /o5\n\
RUN --mount=type=cache,id=e,target=/e,from=seed,uid=7 echo e$N >> /e/log; stat -c '%u %a' /e > /o6; cat /e/log >> /o6\n\
FROM scratch\n\
COPY --from=run /o1 /o2 /o3 /o4 /o5 /o6 /\n";

/// The six outputs, one line each (`o1: a1 a2`).
fn outputs(dir: &Path) -> Vec<String> {
    (1..=6)
        .map(|i| {
            let text = std::fs::read_to_string(dir.join(format!("o{i}"))).unwrap_or_else(|e| format!("({e})"));
            format!("o{i}: {}", text.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect()
}

/// The three builds (N=1, N=2, N=3 with `--no-cache`) by `docker build` in a fresh
/// private dockerd: their outputs, or `Err` with what a failed build printed.
fn docker_outputs(bb: &Path, ctx: &Path, out: &Path) -> Option<Result<Vec<Vec<String>>, String>> {
    let dockerd = Dockerd::start()?;
    let sock = dockerd
        .docker()
        .get_args()
        .nth(1)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let docker = || {
        let mut cmd = Command::new("/usr/bin/docker");
        cmd.env("DOCKER_BUILDKIT", "1")
            .args(["-H", &sock, "build", "--network=none"]);
        cmd
    };
    let base = run(docker().args(["-q", "-t", "bb:1"]).arg(bb));
    if !base.status.success() {
        return Some(Err(String::from_utf8_lossy(&base.stderr).into_owned()));
    }
    let mut theirs = Vec::new();
    for (i, extra) in BUILDS {
        let d = out.join(format!("docker-{i}"));
        let _ = std::fs::remove_dir_all(&d);
        let mut cmd = docker();
        cmd.args(["--build-arg", &format!("N={i}"), "-o"])
            .arg(format!("type=local,dest={}", d.display()));
        cmd.args(extra).arg(ctx);
        let o = run(&mut cmd);
        if !o.status.success() {
            return Some(Err(String::from_utf8_lossy(&o.stderr).into_owned()));
        }
        theirs.push(outputs(&d));
    }
    Some(Ok(theirs))
}

/// Two builds that share the caches, then one with `--no-cache`.
const BUILDS: [(u32, Option<&str>); 3] = [(1, None), (2, None), (3, Some("--no-cache"))];

#[test]
fn cache_mount_keys_and_no_cache_match_docker_build() {
    if !require(kiln_testkit::is_root(), "RUN against dockerd needs root") {
        return;
    }
    if !require(
        Path::new("/usr/bin/docker").is_file(),
        "Debian's docker.io CLI (/usr/bin/docker) is needed for BuildKit builds",
    ) {
        return;
    }
    let Some(bb) = busybox_context() else { return };
    let k = kiln();
    let ctx = context(&[("Dockerfile", DOCKERFILE)]);
    let c = ctx.path().to_str().unwrap();
    k.ok(&["build", "-q", "-t", "bb:1", bb.path().to_str().unwrap()]);
    let out = tempfile::tempdir().unwrap();
    let mut ours = Vec::new();
    for (i, extra) in BUILDS {
        let d = out.path().join(format!("kiln-{i}"));
        let arg = format!("N={i}");
        let mut args = vec!["build", "-q", "--build-arg", &arg, "-o", d.to_str().unwrap()];
        args.extend(extra);
        args.push(c);
        k.ok(&args);
        ours.push(outputs(&d));
    }
    // dockerd 20.10 on vfs, on a loaded machine, fails builds on its own side now and then
    // (seen: `stat /bin/sh: no such file or directory` from runc, `failed to stat
    // …/buildkit-mount…/rootfs/bin/shuf` while sending the base's context, a cache mount
    // found empty within a build). Such an answer is dockerd's, not a result: the whole
    // sequence is run again on a fresh daemon, at most three times, until dockerd
    // completes it with the answer kiln gives; kiln's own answer is also spelled out
    // below, so a dockerd that merely happens to agree cannot hide a change in kiln.
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let Some(answer) = docker_outputs(bb.path(), ctx.path(), out.path()) else {
            return;
        };
        match answer {
            Ok(mut theirs) => {
                // BuildKit 0.8 kept the `mode=` cache (on top of its mkdir) through
                // `--no-cache`; current BuildKit prunes every cache of the id on top of a
                // ref too (moby/buildkit 610affa5f, v0.16.0: detectPrunedCacheID marks the
                // mount nested and PruneCacheMounts drops all `id:` keys; test
                // testCacheMountModeNoCache).
                if theirs.get(2).and_then(|t| t.get(2)).map(String::as_str) == Some("o3: c1 c2 c3") {
                    theirs[2][2] = "o3: c3".to_string();
                }
                if ours == theirs {
                    break;
                }
                attempts.push(format!("docker build answered {theirs:?}"));
            }
            Err(e) => attempts.push(format!("docker build failed:\n{e}")),
        }
        eprintln!(
            "dockerd's answer differs from kiln's; once more on a fresh daemon: {}",
            attempts[attempts.len() - 1]
        );
        assert!(
            attempts.len() < 3,
            "kiln (left) and docker build (right, three fresh daemons) disagree on cache mounts, \
             builds N=1, N=2, N=3 --no-cache:\nkiln: {ours:?}\n{}",
            attempts.join("\n---\n")
        );
    }
    // And the expectation spelled out, so a change of both is seen.
    assert_eq!(
        ours[1],
        [
            "o1: a1 a2",
            "o2: seeded b1 b2",
            "o3: c1 c2",
            "o4: d1 d2",
            "o5: none",
            "o6: 7 755 e1 e2"
        ]
    );
    assert_eq!(
        ours[2],
        [
            "o1: a3",
            "o2: seeded b3",
            "o3: c3",
            "o4: d3",
            "o5: none",
            "o6: 7 755 e3"
        ]
    );
}

/// A `cachemounts-v1/` directory (kiln before seeds were keyed) becomes the id's
/// unseeded cache; `kiln du` counts cache mounts and `kiln prune --all` removes them.
#[test]
fn old_cache_mounts_are_migrated_counted_and_pruned() {
    if !require(kiln_testkit::is_root(), "RUN needs root here") {
        return;
    }
    let k = kiln();
    let Some(base) = crate::run::busybox_base(&k) else {
        return;
    };
    let sha = |s: &str| format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(s.as_bytes()));
    let old = k.root().join("cachemounts-v1").join(sha("pkgs"));
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("log"), "from-v1\n").unwrap();
    std::fs::write(
        k.root().join("cachemounts-v1").join(format!("{}.lock", sha("pkgs"))),
        "",
    )
    .unwrap();
    let df = format!(
        "FROM {base}\n\
         RUN --mount=type=cache,id=pkgs,target=/p echo new >> /p/log; cat /p/log | tr '\\n' ' '; echo\n\
         RUN --mount=type=cache,id=pkgs,target=/p,from={base},source=/etc ls /p/log 2>/dev/null || echo seeded-has-no-log\n"
    );
    let err = crate::run::build_plain(&k, &df, &[]);
    let lines = crate::run::step_lines(&err);
    assert!(lines.iter().any(|l| l.trim() == "from-v1 new"), "{err}");
    assert!(lines.iter().any(|l| l == "seeded-has-no-log"), "{err}");
    assert!(
        !k.root().join("cachemounts-v1").exists(),
        "v1 is moved in, not left behind"
    );
    let du = k.ok(&["du"]);
    let row = du
        .lines()
        .find(|l| l.starts_with("Cache mounts"))
        .unwrap_or_default()
        .to_string();
    assert_eq!(row.split_whitespace().nth(2), Some("2"), "{du}");
    let pruned = k.ok(&["prune", "--all"]);
    let du = k.ok(&["du"]);
    let row = du
        .lines()
        .find(|l| l.starts_with("Cache mounts"))
        .unwrap_or_default()
        .to_string();
    assert_eq!(row.split_whitespace().nth(2), Some("0"), "{pruned}\n{du}");
}

/// `--no-cache-filter STAGE` empties the caches of that stage's RUN steps only (they are
/// the steps it re-runs), as BuildKit prunes the cache mounts of ignore-cache execs.
#[test]
fn no_cache_filter_empties_only_the_named_stages_caches() {
    if !require(kiln_testkit::is_root(), "RUN needs root here") {
        return;
    }
    let k = kiln();
    let Some(base) = crate::run::busybox_base(&k) else {
        return;
    };
    let df = format!(
        "FROM {base} AS a\nARG N\n\
         RUN --mount=type=cache,id=ka,target=/k echo a$N >> /k/log; echo $(cat /k/log)\n\
         FROM {base} AS b\nARG N\n\
         RUN --mount=type=cache,id=kb,target=/k echo b$N >> /k/log; echo $(cat /k/log)\n\
         FROM scratch\nCOPY --from=a /etc/motd /a\nCOPY --from=b /etc/motd /b\n"
    );
    let lines = |extra: &[&str]| crate::run::step_lines(&crate::run::build_plain(&k, &df, extra));
    let first = lines(&["--build-arg", "N=1"]);
    assert!(
        first.iter().any(|l| l == "a1") && first.iter().any(|l| l == "b1"),
        "{first:?}"
    );
    let second = lines(&["--build-arg", "N=2", "--no-cache-filter", "a"]);
    assert!(second.iter().any(|l| l == "a2"), "a's cache starts empty: {second:?}");
    assert!(second.iter().any(|l| l == "b1 b2"), "b's cache is kept: {second:?}");
}
