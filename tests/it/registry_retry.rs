//! Which registry failures kiln retries (issue 17 item 6), as BuildKit's retry handler:
//! 401/403/404 and a host name that does not resolve fail at once; 5xx, 429 and a reset
//! connection are retried. A fake registry (std TcpListener) answers the manifest
//! request with a script of failures and then the image, and counts the requests.
//! Every server thread ends by itself; assertions are on counts, never on times.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// How long any server thread lives at most.
const LIFETIME: Duration = Duration::from_secs(120);

/// One scripted answer to the manifest request.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// This status with an error body (and `Retry-After: 0` on 429/503).
    Status(u16),
    /// Reads the request line and closes: the unread headers make the kernel send RST.
    Reset,
}

struct Fake {
    host: String,
    stop: Arc<AtomicBool>,
    manifest_hits: Arc<AtomicUsize>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{:x}", <sha2::Sha256 as sha2::Digest>::digest(b))
}

/// Serves `img:1` (an image without layers) after answering its manifest request with
/// `script`, one step per request.
fn start(script: Vec<Step>) -> Fake {
    let config =
        br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
        sha(&config),
        config.len()
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(Mutex::new(script.into_iter()));
    let routes = Arc::new(vec![
        ("/v2/img/manifests/1".to_string(), manifest.into_bytes()),
        (format!("/v2/img/blobs/{}", sha(&config)), config),
    ]);
    let deadline = Instant::now() + LIFETIME;
    let (s, h) = (stop.clone(), hits.clone());
    std::thread::spawn(move || {
        while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
            match listener.accept() {
                Ok((conn, _)) => {
                    let (routes, script, h) = (routes.clone(), script.clone(), h.clone());
                    std::thread::spawn(move || serve(conn, &routes, &script, &h));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    Fake {
        host,
        stop,
        manifest_hits: hits,
    }
}

/// Answers one connection's requests (keep-alive) until it closes or idles 5 s.
fn serve(
    mut conn: TcpStream,
    routes: &[(String, Vec<u8>)],
    script: &Mutex<std::vec::IntoIter<Step>>,
    hits: &AtomicUsize,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    loop {
        let mut first = [0u8; 4];
        if conn.read_exact(&mut first).is_err() || !first[0].is_ascii_uppercase() {
            return; // closed, or a TLS probe: hang up
        }
        // The request line first; the headers stay unread until the step is known.
        let mut head = first.to_vec();
        let mut byte = [0u8; 1];
        let mut read_until = |head: &mut Vec<u8>, end: &[u8]| {
            while !head.ends_with(end) && head.len() < 64 << 10 {
                match conn.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => return false,
                }
            }
            true
        };
        if !read_until(&mut head, b"\r\n") {
            return;
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
        let is_manifest = path == "/v2/img/manifests/1";
        let step = if is_manifest {
            hits.fetch_add(1, Ordering::SeqCst);
            script.lock().unwrap().next()
        } else {
            None
        };
        if let Some(Step::Reset) = step {
            // The headers are still unread: closing now makes the kernel send RST.
            return;
        }
        if !read_until(&mut head, b"\r\n\r\n") {
            return;
        }
        match step {
            Some(Step::Reset) => return,
            Some(Step::Status(code)) => {
                let body = format!(r#"{{"errors":[{{"code":"X","message":"scripted {code}"}}]}}"#);
                let extra = if code == 429 || code == 503 {
                    "Retry-After: 0\r\n"
                } else {
                    ""
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {code} Scripted\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                continue;
            }
            None => {}
        }
        let found = routes.iter().find(|(p, _)| *p == path).map(|(_, b)| b.clone());
        let (status, ctype, body) = match (path.as_str(), found) {
            ("/v2/", _) => ("200 OK", "application/json", b"{}".to_vec()),
            (_, Some(b)) if is_manifest => ("200 OK", "application/vnd.oci.image.manifest.v1+json", b),
            (_, Some(b)) => ("200 OK", "application/octet-stream", b),
            (_, None) => ("404 Not Found", "application/json", br#"{"errors":[]}"#.to_vec()),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nDocker-Content-Digest: {}\r\nContent-Length: {}\r\n\r\n",
            sha(&body),
            body.len()
        );
        if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&body).is_err() {
            return;
        }
    }
}

#[test]
fn permanent_statuses_fail_at_once_and_name_reference_and_status() {
    for code in [401u16, 403, 404] {
        let fake = start(vec![Step::Status(code)]);
        let reference = format!("{}/img:1", fake.host);
        let err = kiln().fails(&["pull", "-q", &reference]);
        assert_eq!(
            fake.manifest_hits.load(Ordering::SeqCst),
            1,
            "HTTP {code} must not be retried:\n{err}"
        );
        assert!(
            err.contains(&reference) && err.contains(&code.to_string()) && err.contains(&format!("scripted {code}")),
            "{err}"
        );
    }
}

#[test]
fn transient_failures_are_retried_until_the_image_comes() {
    for script in [
        vec![Step::Status(500)],
        vec![Step::Status(503), Step::Status(502)],
        vec![Step::Status(429)],
        vec![Step::Reset],
    ] {
        let n = script.len();
        let fake = start(script.clone());
        let reference = format!("{}/img:1", fake.host);
        let out = run(kiln().cmd().args(["pull", "-q", &reference]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{script:?}: {err}");
        assert_eq!(fake.manifest_hits.load(Ordering::SeqCst), n + 1, "{script:?}: {err}");
    }
    // Always 500: the retries end in one error naming the reference and the status.
    let fake = start(vec![Step::Status(500); 20]);
    let reference = format!("{}/img:1", fake.host);
    let err = kiln().fails(&["pull", "-q", &reference]);
    assert_eq!(fake.manifest_hits.load(Ordering::SeqCst), 5, "{err}");
    assert!(err.contains(&reference) && err.contains("HTTP 500"), "{err}");
    // Always reset: likewise, with the real cause.
    let fake = start(vec![Step::Reset; 20]);
    let reference = format!("{}/img:1", fake.host);
    let err = kiln().fails(&["pull", "-q", &reference]);
    assert_eq!(fake.manifest_hits.load(Ordering::SeqCst), 5, "{err}");
    assert!(err.contains(&reference) && err.contains("reset"), "{err}");
}

#[test]
fn an_unresolvable_host_fails_without_retries() {
    let reference = "nonexistent.invalid/img:1";
    let err = kiln().fails(&["pull", "-q", reference]);
    assert!(
        err.contains(reference) && err.contains("cannot reach the registry") && !err.contains("attempts"),
        "{err}"
    );
    // The real cause, as the resolver said it.
    assert!(
        err.contains("lookup") || err.contains("not known") || err.contains("host not found"),
        "{err}"
    );
}
