//! `--load` (buildx semantics, `-o type=docker` without `dest=`): the image streamed into
//! the docker daemon at `$DOCKER_HOST` through the Engine API's `POST /images/load`; a
//! missing socket and a daemon's refusal fail with exit status 1 and the real cause.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::Output;

use crate::common::*;
use crate::run::busybox_context;
use kiln_testkit::docker_ok;

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn load_sends_the_image_into_the_docker_daemon() {
    let Some(ctx) = busybox_context() else { return };
    let Some(d) = Dockerd::start() else { return };
    let k = kiln();
    let iid = ctx.path().join("iid");
    let o = run(k
        .cmd()
        .env("DOCKER_HOST", d.host())
        .args(["build", "--progress=plain", "--load", "-t", "loadme:1", "--iidfile"])
        .arg(&iid)
        .arg(ctx.path()));
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Loaded image: loadme:1"), "{err}");
    // The daemon holds the image kiln built (same config digest), and runs it.
    let id = docker_ok(|| {
        let mut c = d.docker();
        c.args(["image", "inspect", "--format", "{{.Id}}", "loadme:1"]);
        c
    });
    assert_eq!(id.trim(), std::fs::read_to_string(&iid).unwrap().trim());
    let out = docker_ok(|| {
        let mut c = d.docker();
        c.args(["run", "--rm", "--network", "none", "loadme:1", "cat", "/etc/issue"]);
        c
    });
    assert_eq!(out, "busybox\n");
    // Like any -o, --load replaces the local-store output (as buildx).
    let images = k.ok(&["images"]);
    assert!(!images.contains("loadme"), "{images}");
    // `-o type=docker` without dest= is the same output.
    let o = run(k
        .cmd()
        .env("DOCKER_HOST", d.host())
        .args(["build", "-q", "-o", "type=docker,name=loadme:2"])
        .arg(ctx.path()));
    assert!(o.status.success(), "{}", text(&o));
    docker_ok(|| {
        let mut c = d.docker();
        c.args(["image", "inspect", "loadme:2"]);
        c
    });
}

#[test]
fn load_without_a_daemon_names_the_socket_and_the_errno() {
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "x\n")]);
    let sock = ctx.path().join("no-such.sock");
    let o = run(kiln()
        .cmd()
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .args(["build", "-q", "--load", "-t", "x:1"])
        .arg(ctx.path()));
    let all = text(&o);
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&format!(
            "cannot connect to the docker daemon at unix://{}",
            sock.display()
        )),
        "{all}"
    );
    assert!(all.contains("No such file or directory (os error 2)"), "{all}");
    let o = run(kiln()
        .cmd()
        .env("DOCKER_HOST", "ssh://me@host")
        .args(["build", "-q", "--load"])
        .arg(ctx.path()));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not `ssh://me@host`"), "{}", text(&o));
}

/// A one-shot daemon on a unix socket: reads the whole chunked request, answers
/// `response`, and hands back what it read.
fn fake_daemon(sock: &std::path::Path, response: &'static str) -> std::thread::JoinHandle<Vec<u8>> {
    let l = UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while !got.ends_with(b"\r\n0\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(response.as_bytes()).unwrap();
        got
    })
}

#[test]
fn load_reports_the_daemons_refusal() {
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "x\n")]);
    let sock = ctx.path().join("d.sock");
    let body = r#"{"message":"write /var/lib/docker/tmp: no space left on device"}"#;
    let resp: &'static str = Box::leak(
        format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    );
    let server = fake_daemon(&sock, resp);
    let o = run(kiln()
        .cmd()
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .args(["build", "-q", "--load", "-t", "x:1"])
        .arg(ctx.path()));
    let request = server.join().unwrap();
    let all = text(&o);
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert!(
        all.contains(
            "refused the image: HTTP 500 Internal Server Error: write /var/lib/docker/tmp: no space left on device"
        ),
        "{all}"
    );
    let head = String::from_utf8_lossy(&request[..request.len().min(400)]).into_owned();
    assert!(head.starts_with("POST /images/load?quiet=1 HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    // The body is the docker-archive: its manifest.json is in there.
    assert!(
        request.windows(13).any(|w| w == b"manifest.json"),
        "no docker-archive sent"
    );

    // A 200 whose JSON stream carries an error (how the Engine reports a bad archive).
    let sock = ctx.path().join("d2.sock");
    let body = "{\"errorDetail\":{\"message\":\"bad layer\"},\"error\":\"bad layer\"}\n";
    let resp: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
        .into_boxed_str(),
    );
    let server = fake_daemon(&sock, resp);
    let o = run(kiln()
        .cmd()
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .args(["build", "-q", "--load"])
        .arg(ctx.path()));
    server.join().unwrap();
    let all = text(&o);
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert!(all.contains("could not load the image: bad layer"), "{all}");
}
