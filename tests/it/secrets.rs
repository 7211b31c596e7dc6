//! `--secret` / `--ssh` and `RUN --mount=type=secret|ssh`: what the step sees, and that
//! nothing of it reaches the image or the cache key.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::cache::outcomes;
use crate::common::*;
use crate::rootless::{User, NOSUB_USER, SUB_USER};
use crate::run::{busybox_base, busybox_context, step_lines};

fn root_sandbox() -> bool {
    require(kiln_testkit::is_root(), "the root-mode RUN tests need root")
}

/// `kiln build --progress=plain ARGS CONTEXT` with extra environment variables.
fn build(k: &Kiln, ctx: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = k.cmd();
    c.args(["build", "--progress=plain"]).args(args).arg(ctx);
    for (key, v) in envs {
        c.env(key, v);
    }
    run(&mut c)
}

fn build_ok(k: &Kiln, ctx: &Path, args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = build(k, ctx, args, envs);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{err}");
    err
}

fn has_line(lines: &[String], want: &str, progress: &str) {
    assert!(lines.iter().any(|l| l == want), "missing `{want}`:\n{progress}");
}

/// Every blob of an OCI archive, gzip layers decompressed: (name, bytes, is a layer).
fn archive_blobs(archive: &Path) -> Vec<(String, Vec<u8>, bool)> {
    let bytes = std::fs::read(archive).unwrap();
    let mut ar = tar::Archive::new(bytes.as_slice());
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if data.starts_with(&[0x1f, 0x8b]) {
            let mut plain = Vec::new();
            flate2::read::MultiGzDecoder::new(data.as_slice())
                .read_to_end(&mut plain)
                .unwrap();
            out.push((name, plain, true));
        } else {
            out.push((name, data, false));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Asserts that no blob of the exported image holds any of `values`, and that no
/// layer has an entry under any of `paths`.
fn assert_not_in_image(archive: &Path, values: &[&str], paths: &[&str]) {
    let blobs = archive_blobs(archive);
    assert!(blobs.iter().any(|(_, _, layer)| *layer), "no layer in the archive");
    for (name, data, layer) in &blobs {
        for v in values {
            assert!(!contains(data, v), "secret value `{v}` is in {name}");
        }
        if *layer {
            for entry in tar_listing(data) {
                for p in paths {
                    assert!(!entry.starts_with(p), "{entry} (from {name}) leaked into a layer");
                }
            }
        }
    }
}

#[test]
fn secrets_from_files_and_env_reach_the_step_and_nothing_else() {
    if !root_sandbox() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let df = format!(
        "FROM {base}\n\
         RUN --mount=type=secret,id=tok cat /run/secrets/tok && echo && stat -c 'default=%a %u:%g' /run/secrets/tok\n\
         RUN --mount=type=secret,id=api,target=/etc/api.key,mode=0440,uid=1000,gid=1001 \\\n\
          cat /etc/api.key && echo && stat -c 'custom=%a %u:%g' /etc/api.key \\\n\
          && ({{ echo x > /etc/api.key; }} 2>/dev/null && echo api-writable || echo api-readonly)\n\
         RUN --mount=type=secret,id=api,env=API_TOKEN echo \"env=$API_TOKEN\" && test ! -e /run/secrets/api && echo env-only\n\
         RUN --mount=type=secret,id=tok,env=TOK,target=/s/tok echo \"both=$TOK $(cat /s/tok)\"\n\
         RUN --mount=type=secret,id=KILN_TEST_BARE cat /run/secrets/KILN_TEST_BARE && echo\n\
         RUN --mount=type=secret,source=tok,target=/x/y echo \"source=$(cat /x/y)\"\n\
         RUN --mount=type=secret,id=nope test ! -e /run/secrets/nope && echo optional-left-out\n\
         RUN echo after=$API_TOKEN && (test -e /run/secrets/tok && echo tok-stays || echo tok-gone)\n"
    );
    let ctx = context(&[("Dockerfile", &df)]);
    let files = tempfile::tempdir().unwrap();
    let tok = files.path().join("tok.txt");
    std::fs::write(&tok, "s3cr3t-file-value").unwrap();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("img.tar");
    let tok_flag = format!("id=tok,src={}", tok.display());
    let dest = format!("type=oci,dest={}", archive.display());
    let args = [
        "--secret",
        tok_flag.as_str(),
        "--secret",
        "id=api,env=KILN_TEST_API",
        "--secret",
        "id=KILN_TEST_BARE",
        "-o",
        dest.as_str(),
    ];
    let envs = [
        ("KILN_TEST_API", "s3cr3t-env-value"),
        ("KILN_TEST_BARE", "s3cr3t-bare-value"),
    ];
    let p = build_ok(&k, ctx.path(), &args, &envs);
    let lines = step_lines(&p);
    for want in [
        "s3cr3t-file-value",
        "default=400 0:0",
        "s3cr3t-env-value",
        "custom=440 1000:1001",
        "api-readonly",
        "env=s3cr3t-env-value",
        "env-only",
        "both=s3cr3t-file-value s3cr3t-file-value",
        "s3cr3t-bare-value",
        "source=s3cr3t-file-value",
        "optional-left-out",
        "after=",
        "tok-gone",
    ] {
        has_line(&lines, want, &p);
    }
    // Neither the files, their mount points, nor the values are in the image: not in
    // a layer, not in the config or its history.
    assert_not_in_image(
        &archive,
        &["s3cr3t-file-value", "s3cr3t-env-value", "s3cr3t-bare-value"],
        &["run/secrets", "etc/api.key", "s/", "s ", "x/", "x "],
    );

    // A secret's value is not part of the cache key (as BuildKit): new values, same steps.
    std::fs::write(&tok, "changed-file-value").unwrap();
    let envs = [
        ("KILN_TEST_API", "changed-env-value"),
        ("KILN_TEST_BARE", "changed-bare"),
    ];
    let p = build_ok(&k, ctx.path(), &args, &envs);
    let steps = outcomes(&p);
    let runs: Vec<&(String, bool)> = steps.iter().filter(|(d, _)| d.starts_with("RUN")).collect();
    assert_eq!(runs.len(), 8, "{p}");
    assert!(
        runs.iter().all(|(_, cached)| *cached),
        "a new secret value re-ran a step:\n{p}"
    );
    assert!(!p.contains("changed-"), "{p}");
}

#[test]
fn missing_required_secrets_and_bad_flags_are_named() {
    let k = kiln();
    let ctx = context(&[("Dockerfile", "FROM scratch\n")]);
    let c = ctx.path().to_str().unwrap();
    let files = tempfile::tempdir().unwrap();
    let plain = files.path().join("id_ed25519");
    std::fs::write(&plain, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    let missing = files.path().join("missing.txt");
    let key_flag = format!("default={}", plain.display());
    let missing_flag = format!("id=tok,src={}", missing.display());
    for (args, says) in [
        (vec!["--secret", "src=/etc/hostname"], vec!["--secret", "has no id"]),
        (vec!["--secret", missing_flag.as_str()], vec!["--secret", "missing.txt"]),
        (
            vec!["--secret", "id=a,type=vault"],
            vec!["--secret", "unsupported secret type `vault`"],
        ),
        (
            vec!["--secret", "id=a,target=/x"],
            vec!["--secret", "unexpected key `target`"],
        ),
        (
            vec!["--ssh", "default=/nonexistent/agent.sock"],
            vec!["--ssh", "/nonexistent/agent.sock"],
        ),
        (
            vec!["--ssh", key_flag.as_str()],
            vec!["--ssh", "not a socket", "id_ed25519"],
        ),
        (vec!["--ssh", "default"], vec!["--ssh", "SSH_AUTH_SOCK is not set"]),
    ] {
        let mut cmd = k.cmd();
        cmd.arg("build").args(&args).arg(c).env_remove("SSH_AUTH_SOCK");
        let out = run(&mut cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        for s in says {
            assert!(err.contains(s), "{args:?}: `{s}` not in:\n{err}");
        }
    }

    if !root_sandbox() {
        return;
    }
    let Some(base) = busybox_base(&k) else { return };
    for (mount, says) in [
        ("type=secret,id=tok,required", "secret `tok` is required"),
        ("type=secret,id=tok,required=true,env=TOK", "secret `tok` is required"),
        ("type=ssh,required=true", "SSH agent `default` is required"),
        ("type=ssh,id=gh,required", "SSH agent `gh` is required"),
    ] {
        let bad = context(&[("Dockerfile", &format!("FROM {base}\nRUN --mount={mount} true\n"))]);
        let err = k.fails(&["build", bad.path().to_str().unwrap()]);
        assert!(err.contains("Dockerfile:2") && err.contains(says), "{mount}:\n{err}");
    }
}

/// A running `ssh-agent` holding one fresh ed25519 key (commented `kiln-test-key`);
/// killed when dropped.
struct Agent {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent (as the user with these ids, when given) with its socket in `dir`.
    fn start(ids: Option<(u32, u32)>, dir: tempfile::TempDir) -> Agent {
        use std::os::unix::process::CommandExt;
        let socket = dir.path().join("agent.sock");
        let key = dir.path().join("id_ed25519");
        let as_user = |tool: &str| {
            let mut c = Command::new(tool);
            if let Some((uid, gid)) = ids {
                c.uid(uid).gid(gid);
            }
            c.stdin(Stdio::null());
            c
        };
        run_ok(
            as_user("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test-key", "-f"])
                .arg(&key),
        );
        let child = as_user("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ssh-agent");
        let t0 = std::time::Instant::now();
        while !socket.exists() {
            assert!(
                t0.elapsed().as_secs() < 10,
                "ssh-agent did not create {}",
                socket.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        run_ok(as_user("ssh-add").arg("-q").env("SSH_AUTH_SOCK", &socket).arg(&key));
        Agent {
            child,
            socket,
            _dir: dir,
        }
    }

    fn keys(&self) -> String {
        run_ok(Command::new("ssh-add").arg("-l").env("SSH_AUTH_SOCK", &self.socket))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The busybox build context with `ssh-add` and the libraries it loads added.
fn ssh_context() -> Option<tempfile::TempDir> {
    let ctx = busybox_context()?;
    let rootfs = ctx.path().join("rootfs");
    let ssh_add = which_tool("ssh-add")?;
    let ldd = run_ok(Command::new("ldd").arg(&ssh_add));
    let libs = ldd
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .chain([ssh_add]);
    for lib in libs {
        let to = rootfs.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&lib, &to).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
    }
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib64\n",
    )
    .unwrap();
    Some(ctx)
}

fn which_tool(tool: &str) -> Option<PathBuf> {
    require_tool(tool).then(|| kiln_testkit::which(tool)).flatten()
}

fn ssh_tools() -> bool {
    ["ssh-agent", "ssh-add", "ssh-keygen", "ldd"]
        .iter()
        .all(|t| require_tool(t))
}

const SSH_DOCKERFILE: &str = "RUN --mount=type=ssh stat -c 'sock=%F %a %u:%g' $SSH_AUTH_SOCK && echo \"auth=$SSH_AUTH_SOCK\" \\\n\
      && ssh-add -l | sed 's/^[0-9]* SHA256:[^ ]* /key=/' \\\n\
      && (ssh-add -D >/dev/null 2>&1 && echo removed || echo remove-refused)\n\
     RUN --mount=type=ssh,id=other,target=/tmp/agent.sock,mode=0660,uid=1000,gid=1001 \\\n\
      stat -c 'custom=%F %a %u:%g' /tmp/agent.sock && echo \"auth=$SSH_AUTH_SOCK\" && ssh-add -l | sed 's/^.* /other=/'\n\
     RUN --mount=type=ssh,id=missing echo \"optional=$SSH_AUTH_SOCK\" && (test -e /run/buildkit/ssh_agent.0 || echo no-socket)\n";

fn check_ssh_lines(p: &str) {
    let lines = step_lines(p);
    for want in [
        "sock=socket 600 0:0",
        "auth=/run/buildkit/ssh_agent.0",
        "key=kiln-test-key (ED25519)",
        "remove-refused",
        "custom=socket 660 1000:1001",
        "auth=/tmp/agent.sock",
        "other=(ED25519)",
        "optional=/run/buildkit/ssh_agent.0",
        "no-socket",
    ] {
        has_line(&lines, want, p);
    }
}

#[test]
fn ssh_mounts_forward_the_agent_read_only() {
    if !root_sandbox() || !ssh_tools() {
        return;
    }
    let k = kiln();
    let Some(ctx) = ssh_context() else { return };
    k.ok(&["build", "-q", "-t", "bbssh:1", ctx.path().to_str().unwrap()]);
    let agent = Agent::start(None, tempfile::tempdir().unwrap());
    let app = context(&[("Dockerfile", &format!("FROM bbssh:1\n{SSH_DOCKERFILE}"))]);
    let sock = agent.socket.display().to_string();
    let other = format!("other={sock}");
    // `--ssh default` is $SSH_AUTH_SOCK.
    let p = build_ok(
        &k,
        app.path(),
        &["--ssh", "default", "--ssh", &other],
        &[("SSH_AUTH_SOCK", &sock)],
    );
    check_ssh_lines(&p);
    // The step could not remove the agent's keys.
    assert!(agent.keys().contains("kiln-test-key"), "{}", agent.keys());
}

/// `kiln ARGS` as the test user, with extra environment variables.
fn user_kiln(u: &User, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new("runuser");
    c.args(["-u", u.name, "--", "env"])
        .arg(format!("KILN_ROOT={}", u.path("root").display()))
        .arg(format!("HOME={}", u.dir.path().display()))
        .arg("BUILDX_NO_DEFAULT_ATTESTATIONS=1");
    for (key, v) in envs {
        c.arg(format!("{key}={v}"));
    }
    c.arg(env!("CARGO_BIN_EXE_kiln")).args(args).current_dir(u.dir.path());
    run(&mut c)
}

#[test]
fn rootless_secrets_and_ssh() {
    let Some(u) = User::get(SUB_USER, true) else { return };
    if !ssh_tools() {
        return;
    }
    let Some(ctx) = ssh_context() else { return };
    let mine = u.path("bbssh-context");
    run_ok(Command::new("cp").arg("-a").arg(ctx.path()).arg(&mine));
    u.own(&mine);
    u.kiln_ok(&["build", "-q", "-t", "bbssh:1", mine.to_str().unwrap()]);
    let tok = u.path("tok.txt");
    std::fs::write(&tok, "rootless-file-value").unwrap();
    u.own(&tok);
    run_ok(Command::new("chmod").arg("600").arg(&tok));
    let agent_dir = tempfile::Builder::new().prefix("kiln-agent-").tempdir().unwrap();
    u.own(agent_dir.path());
    let gid: u32 = run_ok(Command::new("id").args(["-g", u.name])).trim().parse().unwrap();
    let agent = Agent::start(Some((u.uid, gid)), agent_dir);
    let app = u.context(
        "app",
        &format!(
            "FROM bbssh:1\n\
             RUN --mount=type=secret,id=tok,uid=1000,mode=0400 stat -c 'tok=%a %u' /run/secrets/tok && cat /run/secrets/tok && echo\n\
             RUN --mount=type=secret,id=api,env=API echo \"api=$API\"\n\
             {SSH_DOCKERFILE}"
        ),
    );
    let out = u.path("img.tar");
    let tok_flag = format!("id=tok,src={}", tok.display());
    let sock = agent.socket.display().to_string();
    let other = format!("other={sock}");
    let dest = format!("type=oci,dest={}", out.display());
    let o = user_kiln(
        &u,
        &[
            "build",
            "--progress=plain",
            "--secret",
            &tok_flag,
            "--secret",
            "id=api,env=KILN_TEST_API",
            "--ssh",
            &format!("default={sock}"),
            "--ssh",
            &other,
            "-o",
            &dest,
            app.to_str().unwrap(),
        ],
        &[("KILN_TEST_API", "rootless-env-value")],
    );
    let p = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{p}");
    let lines = step_lines(&p);
    for want in ["tok=400 1000", "rootless-file-value", "api=rootless-env-value"] {
        has_line(&lines, want, &p);
    }
    check_ssh_lines(&p);
    assert_not_in_image(
        &out,
        &["rootless-file-value", "rootless-env-value"],
        &["run/secrets", "run/buildkit", "tmp/agent.sock"],
    );
}

#[test]
fn secrets_and_ssh_with_the_runc_runtime() {
    if !root_sandbox() || !require_tool("runc") || !ssh_tools() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let agent = Agent::start(None, tempfile::tempdir().unwrap());
    let df = format!(
        "FROM {base}\n\
         RUN --mount=type=secret,id=tok,mode=0444 --mount=type=secret,id=tok,env=TOK,target=/s/t \\\n\
          stat -c 'runc=%a %u:%g' /run/secrets/tok && echo \"file=$(cat /run/secrets/tok) env=$TOK\" \\\n\
          && ({{ echo x > /s/t; }} 2>/dev/null && echo writable || echo readonly)\n\
         RUN --mount=type=ssh,mode=0666 stat -c 'sock=%F %a' $SSH_AUTH_SOCK\n"
    );
    let ctx = context(&[("Dockerfile", &df)]);
    let files = tempfile::tempdir().unwrap();
    let tok = files.path().join("tok");
    std::fs::write(&tok, "runc-secret-value").unwrap();
    let tok_flag = format!("id=tok,src={}", tok.display());
    let ssh_flag = format!("default={}", agent.socket.display());
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("img.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let p = build_ok(
        &k,
        ctx.path(),
        &[
            "--runtime",
            "runc",
            "--secret",
            &tok_flag,
            "--ssh",
            &ssh_flag,
            "-o",
            &dest,
        ],
        &[],
    );
    let lines = step_lines(&p);
    for want in [
        "runc=444 0:0",
        "file=runc-secret-value env=runc-secret-value",
        "readonly",
        "sock=socket 666",
    ] {
        has_line(&lines, want, &p);
    }
    assert_not_in_image(
        &archive,
        &["runc-secret-value"],
        &["run/secrets", "run/buildkit", "s/", "s "],
    );
}

#[test]
fn rootless_with_a_single_id_gives_root_owned_secrets_only() {
    let Some(u) = User::get(NOSUB_USER, false) else { return };
    let Some(base) = u.busybox_base() else { return };
    let tok = u.path("tok.txt");
    std::fs::write(&tok, "single-id-value").unwrap();
    u.own(&tok);
    let tok_flag = format!("id=tok,src={}", tok.display());
    let ok = u.context(
        "ok",
        &format!(
            "FROM {base}\n\
             RUN --mount=type=secret,id=tok,env=TOK,target=/run/secrets/tok \\\n\
              stat -c 'tok=%a %u' /run/secrets/tok && echo \"env=$TOK\"\n"
        ),
    );
    let o = user_kiln(
        &u,
        &["build", "--progress=plain", "--secret", &tok_flag, ok.to_str().unwrap()],
        &[],
    );
    let p = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{p}");
    let lines = step_lines(&p);
    has_line(&lines, "tok=400 0", &p);
    has_line(&lines, "env=single-id-value", &p);
    let bad = u.context(
        "bad",
        &format!("FROM {base}\nRUN --mount=type=secret,id=tok,uid=1000 true\n"),
    );
    let o = user_kiln(&u, &["build", "--secret", &tok_flag, bad.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("Dockerfile:2") && err.contains("secret `tok`") && err.contains("maps only root"),
        "{err}"
    );
}
