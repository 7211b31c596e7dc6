//! The parallel solver and the progress display, through the real binary.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::run::busybox_base;

const THREE_STAGES: &str = "FROM bb:1 AS a
RUN sleep 1 && echo a > /a
FROM bb:1 AS b
RUN sleep 1 && echo b > /b
FROM bb:1 AS c
RUN sleep 1 && echo c > /c
FROM bb:1
COPY --from=a /a /a
COPY --from=b /b /b
COPY --from=c /c /c
";

fn root_ok() -> bool {
    require(kiln_testkit::is_root(), "these tests run RUN steps as root")
}

/// Index of the first line of `progress` that satisfies `f`.
fn first(progress: &str, f: impl Fn(&str) -> bool) -> usize {
    progress
        .lines()
        .position(f)
        .unwrap_or_else(|| panic!("no such line in:\n{progress}"))
}

#[test]
fn independent_stages_run_at_the_same_time() {
    if !root_ok() {
        return;
    }
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let ctx = context(&[("Dockerfile", THREE_STAGES)]);
    let out = run(k
        .cmd()
        .args(["build", "--progress=plain", ctx.path().to_str().unwrap()]));
    let p = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{p}");
    // Every stage's RUN starts before any of them is done.
    let starts: Vec<usize> = ["a", "b", "c"]
        .iter()
        .map(|s| first(&p, |l| l.contains(&format!("[{s} 2/2] RUN sleep 1"))))
        .collect();
    let vertex = |i: usize| p.lines().nth(i).unwrap().split(' ').next().unwrap().to_string();
    let dones: Vec<usize> = starts
        .iter()
        .map(|&i| {
            let v = vertex(i);
            first(&p, |l| l.starts_with(&format!("{v} DONE")))
        })
        .collect();
    assert!(
        starts.iter().max() < dones.iter().min(),
        "the stages ran one after another:\n{p}"
    );

    // With --jobs 1 they cannot overlap.
    let out = run(k.cmd().args([
        "build",
        "--no-cache",
        "--jobs",
        "1",
        "--progress=plain",
        ctx.path().to_str().unwrap(),
    ]));
    let p = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{p}");
    let a_done = {
        let v = p
            .lines()
            .nth(first(&p, |l| l.contains("[a 2/2] RUN")))
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        first(&p, |l| l.starts_with(&format!("{v} DONE")))
    };
    assert!(a_done < first(&p, |l| l.contains("[b 2/2] RUN")), "{p}");
    let err = k.fails(&["build", "--jobs", "0", ctx.path().to_str().unwrap()]);
    assert!(err.contains("--jobs"), "{err}");
}

#[test]
fn a_failing_stage_cancels_the_others_and_leaves_nothing_behind() {
    if !root_ok() {
        return;
    }
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let secs = format!("{}", 50_000 + std::process::id() % 10_000);
    // Two different sleeps (identical steps would be one op).
    let df = format!(
        "FROM bb:1 AS a\nRUN sleep 0.5 && exit 7\nFROM bb:1 AS b\nRUN sleep {secs}\nFROM bb:1 AS c\nRUN sleep {secs} || true\n\
         FROM bb:1\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nCOPY --from=c /c /c\n"
    );
    let ctx = context(&[("Dockerfile", &df)]);
    let t0 = Instant::now();
    let out = run(k
        .cmd()
        .args(["build", "--progress=plain", ctx.path().to_str().unwrap()]));
    // Far below the sleepers' time: they were stopped, not waited for.
    assert!(t0.elapsed() < Duration::from_secs(30));
    let p = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{p}");
    assert!(
        p.contains("Dockerfile:2") && p.contains("RUN failed (exit code 7)"),
        "{p}"
    );
    assert_eq!(p.matches(" CANCELED").count(), 2, "{p}");
    let sleepers = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == format!("sleep\0{secs}\0").as_bytes()))
        .count();
    assert_eq!(sleepers, 0, "the canceled steps are still running");
    let root = k.root().display().to_string();
    assert!(std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .all(|l| !l.contains(&root)));
    assert!(k.ok(&["fsck"]).contains(" 0 problems"));
}

/// Plain output with times and digests replaced, so it can be compared.
fn normalise(p: &str) -> String {
    let mut out = String::new();
    for l in p.lines() {
        let mut words: Vec<String> = l.split(' ').map(str::to_string).collect();
        for w in words.iter_mut() {
            if w.len() > 2 && w.ends_with('s') && w[..w.len() - 1].parse::<f64>().is_ok() {
                *w = "<t>s".into();
            } else if w.parse::<f64>().is_ok() && w.contains('.') {
                *w = "<t>".into();
            }
            if let Some(i) = w.find("sha256:") {
                *w = format!("{}sha256:<digest>", &w[..i]);
            }
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

#[test]
fn plain_progress_of_a_multi_stage_build_matches_the_golden_file() {
    if !root_ok() {
        return;
    }
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM bb:1 AS build\nWORKDIR /src\nCOPY hello.txt .\nRUN cat hello.txt && wc -c < hello.txt > size\n\
             FROM bb:1\nCOPY --from=build /src/size /size\nRUN cat /size\nLABEL done=yes\n",
        ),
        ("hello.txt", "hello\n"),
    ]);
    let c = ctx.path().to_str().unwrap();
    let build = || {
        let out = run(k
            .cmd()
            .args(["build", "--jobs", "1", "--progress=plain", "-t", "golden:1", c]));
        let p = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{p}");
        normalise(&p)
    };
    let first_build = build();
    let second_build = build();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/expected/progress-multi-stage.txt");
    let both = format!("{first_build}--- rebuild ---\n{second_build}");
    if std::env::var_os("KILN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &both).unwrap();
    }
    assert_eq!(both, std::fs::read_to_string(&golden).unwrap());
}

#[test]
fn the_tty_view_in_a_real_terminal() {
    if !root_ok() || !require_tool("tmux") {
        return;
    }
    let k = kiln();
    let Some(_) = busybox_base(&k) else { return };
    let ctx = context(&[(
        "Dockerfile",
        "FROM bb:1\nRUN echo one > /one\nRUN for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 0.3; done\n",
    )]);
    let session = format!("kiln-tty-{}", std::process::id());
    let done = ctx.path().join("done");
    // Build once so that the first RUN is CACHED in the screen we look at.
    k.ok(&["build", "-q", ctx.path().to_str().unwrap()]);
    std::fs::write(ctx.path().join("Dockerfile"), "FROM bb:1\nRUN echo one > /one\nRUN for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 0.3; done; echo changed\n").unwrap();
    let script = format!(
        "env -u CI KILN_ROOT={} {} build {} ; touch {}; sleep 60",
        k.root().display(),
        env!("CARGO_BIN_EXE_kiln"),
        ctx.path().display(),
        done.display()
    );
    run_ok(Command::new("tmux").args(["new-session", "-d", "-x", "120", "-y", "40", "-s", &session, &script]));
    let capture = || run_ok(Command::new("tmux").args(["capture-pane", "-p", "-t", &session]));
    // While it runs: the live view with the running step's log lines.
    let t0 = Instant::now();
    let mut live = String::new();
    while t0.elapsed() < Duration::from_secs(30) {
        live = capture();
        if live.contains("=> => # tick") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    while !done.exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let end = capture();
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .stderr(Stdio::null())
        .status();
    assert!(live.contains("[+] Building "), "{live}");
    assert!(live.contains("=> => # tick"), "no live log lines:\n{live}");
    assert!(end.contains("FINISHED"), "{end}");
    assert!(end.contains("=> CACHED [2/3] RUN echo one > /one"), "{end}");
    assert!(end.contains("=> [3/3] RUN for i in"), "{end}");
    assert!(
        !end.contains("=> => # tick"),
        "finished steps keep no log lines:\n{end}"
    );
    // The screen is redrawn in place, not appended: one header.
    assert_eq!(end.matches("[+] Building").count(), 1, "{end}");
}
