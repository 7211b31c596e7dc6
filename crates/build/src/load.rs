//! `--load` (`-o type=docker` without `dest=`), as buildx: the image, written as a
//! docker-archive, streamed into the Docker Engine at `$DOCKER_HOST` (default
//! `unix:///var/run/docker.sock`; Podman's API socket speaks the same API) by
//! `POST /images/load`, with chunked transfer encoding so nothing is staged on disk.
//!
//! The daemon's answer is read whole (capped) and checked twice: an HTTP status other
//! than 200 fails with the daemon's `message`, and a 200 whose JSON stream carries an
//! `error` (how the Engine reports a bad archive) fails with that error.

use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::error::{bail, Ctx};
use crate::BuildError;

type Result<T> = std::result::Result<T, BuildError>;

/// Where `$DOCKER_HOST` unset or empty points, as the docker CLI.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The daemon's answer is small (a few JSON lines); more is not an answer.
const MAX_RESPONSE: u64 = 4 << 20;

/// Bytes per HTTP chunk of the archive.
const CHUNK: usize = 256 << 10;

/// The daemon address `$DOCKER_HOST` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerHost {
    Unix(String),
    Tcp(String),
}

impl std::fmt::Display for DockerHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DockerHost::Unix(p) => write!(f, "unix://{p}"),
            DockerHost::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Parses a `$DOCKER_HOST` value (`None` or empty: the default socket).
pub fn parse_docker_host(value: Option<&str>) -> Result<DockerHost> {
    let v = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or(DEFAULT_DOCKER_HOST);
    if let Some(p) = v.strip_prefix("unix://") {
        if p.is_empty() {
            bail!("invalid DOCKER_HOST `{v}`: no socket path after unix://");
        }
        return Ok(DockerHost::Unix(p.to_string()));
    }
    if let Some(a) = v.strip_prefix("tcp://") {
        let a = a.trim_end_matches('/');
        if a.is_empty() || !a.contains(':') {
            bail!("invalid DOCKER_HOST `{v}`: expected tcp://HOST:PORT");
        }
        if std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|t| !t.is_empty()) {
            bail!("--load cannot talk TLS to the docker daemon (DOCKER_TLS_VERIFY is set): use its unix socket, or `-o type=docker,dest=FILE` and `docker load -i FILE`");
        }
        return Ok(DockerHost::Tcp(a.to_string()));
    }
    bail!("--load supports DOCKER_HOST unix://PATH and tcp://HOST:PORT, not `{v}`: use `-o type=docker,dest=FILE` and `docker load -i FILE`")
}

trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

fn connect(host: &DockerHost) -> std::io::Result<Box<dyn Conn>> {
    Ok(match host {
        DockerHost::Unix(p) => Box::new(UnixStream::connect(p)?),
        DockerHost::Tcp(a) => {
            use std::net::ToSocketAddrs;
            let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolves to no address");
            for addr in a.to_socket_addrs()? {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(30)) {
                    Ok(s) => return Ok(Box::new(s)),
                    Err(e) => last = e,
                }
            }
            return Err(last);
        }
    })
}

/// One HTTP/1.1 chunk per write.
struct Chunked<'a>(&'a mut dyn Write);

impl Write for Chunked<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        write!(self.0, "{:x}\r\n", buf.len())?;
        self.0.write_all(buf)?;
        self.0.write_all(b"\r\n")?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Sends the archive `write` produces to the daemon at `host`; returns the daemon's
/// lines (`Loaded image: app:1`).
pub fn load(host: &DockerHost, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<Vec<String>> {
    let mut conn = connect(host).ctx(|| {
        format!("cannot load the image into docker: cannot connect to the docker daemon at {host} (set DOCKER_HOST to its socket)")
    })?;
    let head = format!(
        "POST /images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\nUser-Agent: kiln/{}\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let sent: Result<()> = (|| {
        conn.write_all(head.as_bytes())?;
        {
            let mut body = BufWriter::with_capacity(CHUNK, Chunked(&mut conn));
            write(&mut body)?;
            body.flush()?;
        }
        conn.write_all(b"0\r\n\r\n")?;
        conn.flush()?;
        Ok(())
    })();
    // A daemon that refuses the archive may answer and close before reading it all:
    // its answer says more than the broken pipe.
    let mut raw = Vec::new();
    let read = conn.take(MAX_RESPONSE).read_to_end(&mut raw);
    let answer = parse_response(&raw);
    match (sent, answer) {
        (_, Some((status, reason, body))) => check(host, status, &reason, &body),
        (Err(e), None) => Err(BuildError::Context {
            what: format!("cannot send the image to the docker daemon at {host}"),
            source: Box::new(e),
        }),
        (Ok(()), None) => match read {
            Err(e) => Err(e).ctx(|| format!("cannot read the docker daemon's answer at {host}")),
            Ok(_) => {
                bail!("the docker daemon at {host} closed the connection without an HTTP answer to POST /images/load")
            }
        },
    }
}

/// The status, reason and (de-chunked) body of an HTTP response, if `raw` holds one.
fn parse_response(raw: &[u8]) -> Option<(u16, String, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next()?.splitn(3, ' ');
    if !status_line.next()?.starts_with("HTTP/") {
        return None;
    }
    let status: u16 = status_line.next()?.parse().ok()?;
    let reason = status_line.next().unwrap_or("").to_string();
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = &raw[end + 4..];
    Some((status, reason, if chunked { dechunk(body) } else { body.to_vec() }))
}

/// The data of a chunked body; a truncated one gives what arrived.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size.filter(|s| *s > 0) else { break };
        let data = &b[eol + 2..];
        let take = size.min(data.len());
        out.extend_from_slice(&data[..take]);
        b = data.get(take + 2..).unwrap_or(&[]);
    }
    out
}

fn check(host: &DockerHost, status: u16, reason: &str, body: &[u8]) -> Result<Vec<String>> {
    let values: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(body)
        .into_iter::<serde_json::Value>()
        .map_while(|v| v.ok())
        .collect();
    if status != 200 {
        let message = values
            .iter()
            .find_map(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
        bail!("the docker daemon at {host} refused the image: HTTP {status} {reason}: {message}");
    }
    let mut lines = Vec::new();
    for v in &values {
        let error = v["errorDetail"]["message"].as_str().or_else(|| v["error"].as_str());
        if let Some(e) = error {
            bail!("the docker daemon at {host} could not load the image: {e}");
        }
        if let Some(s) = v["stream"].as_str() {
            lines.extend(s.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_values() {
        assert_eq!(
            parse_docker_host(None).unwrap(),
            DockerHost::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            parse_docker_host(Some("")).unwrap(),
            DockerHost::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            parse_docker_host(Some("unix:///run/user/1000/podman/podman.sock")).unwrap(),
            DockerHost::Unix("/run/user/1000/podman/podman.sock".into())
        );
        assert_eq!(
            parse_docker_host(Some("tcp://127.0.0.1:2375")).unwrap(),
            DockerHost::Tcp("127.0.0.1:2375".into())
        );
        let e = parse_docker_host(Some("ssh://me@host")).unwrap_err().to_string();
        assert!(e.contains("not `ssh://me@host`"), "{e}");
        assert!(parse_docker_host(Some("unix://")).is_err());
        assert!(parse_docker_host(Some("tcp://host")).is_err());
    }

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n22\r\n{\"stream\":\"Loaded image: a:1\\n\"}\n\r\n0\r\n\r\n";
        let (s, _, body) = parse_response(ok).unwrap();
        assert_eq!(s, 200);
        let host = DockerHost::Unix("/s".into());
        assert_eq!(check(&host, s, "OK", &body).unwrap(), vec!["Loaded image: a:1"]);
        let bad = br#"{"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"}"#;
        let e = check(&host, 200, "OK", bad).unwrap_err().to_string();
        assert_eq!(
            e,
            "the docker daemon at unix:///s could not load the image: unexpected EOF"
        );
        let e = check(&host, 500, "Internal Server Error", br#"{"message":"no space"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("HTTP 500 Internal Server Error: no space"), "{e}");
        assert!(parse_response(b"garbage").is_none());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_none());
    }
}
