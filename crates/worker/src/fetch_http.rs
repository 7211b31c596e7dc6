//! Downloads for `ADD <url>`, as BuildKit's HTTP source makes them
//! (`source/http/source.go`):
//! - the body is streamed to `<temp dir>/<filename>` (never held in memory) while its
//!   sha256 is computed; the file gets mode 0600 and the response's `Last-Modified` as
//!   its mtime (the Unix epoch without one);
//! - a status outside 200–399 is an error; redirects are followed;
//! - `--checksum` is checked against the body's digest, and a mismatch fails the step
//!   with both digests;
//! - the cache key is the body's digest with the file name and `Last-Modified`, or,
//!   with `--checksum`, the checksum alone (nothing is fetched to compute it);
//! - when the server sends an `ETag`, the body is also kept in the content store and
//!   the next build asks with `If-None-Match`: a `304` (or the same `ETag`) reuses it
//!   without downloading again.
//!
//! The client is ureq, as for registries: it honours `HTTPS_PROXY`/`HTTP_PROXY`/
//! `ALL_PROXY` and `NO_PROXY` from the environment.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `WorkerError::Io { path }` or name the path in their message"
)]

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kiln_cache::KilnRoot;
use kiln_image::Digest;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::WorkerError;

/// Download is a fetched body: a directory holding the one file, and what keys it.
#[derive(Debug, Clone)]
pub(crate) struct Download {
    pub dir: Arc<tempfile::TempDir>,
    pub digest: Digest,
    /// The `Last-Modified` header as sent, when valid.
    pub last_modified: Option<String>,
}

/// What the last download of a URL left behind, for `If-None-Match`.
#[derive(Debug, Serialize, Deserialize)]
struct EtagRecord {
    etag: String,
    digest: Digest,
    #[serde(default)]
    last_modified: Option<String>,
}

fn fail(url: &str, message: impl Into<String>) -> WorkerError {
    WorkerError::Download {
        url: redact(url),
        message: message.into(),
    }
}

/// The URL without a password (BuildKit's `RedactCredentials`).
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:xxxxx@{}", &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

/// An HTTP client for downloads, trusting the system's CA bundle.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .user_agent("kiln")
        .tls_config(kiln_registry::system_tls_config())
        .build()
        .into()
}

fn temp_dir(root: &KilnRoot) -> Result<tempfile::TempDir, WorkerError> {
    let tmp = root.tmp_dir();
    tempfile::Builder::new()
        .prefix("add-http-")
        .tempdir_in(&tmp)
        .map_err(|source| WorkerError::Io { path: tmp, source })
}

fn etag_path(root: &KilnRoot, url: &str, filename: &str) -> PathBuf {
    let key = Digest::of(format!("{url}\0{filename}").as_bytes());
    root.bucket(kiln_cache::Bucket::Http)
        .join(format!("{}.json", key.hex()))
}

/// Fetches `url` into a fresh directory as `filename`, verifying `expect` when given.
pub(crate) fn download(
    root: &KilnRoot,
    url: &str,
    filename: &str,
    expect: Option<&Digest>,
) -> Result<Download, WorkerError> {
    let agent = agent();
    let record_path = etag_path(root, url, filename);
    let content = root.content();
    let known: Option<EtagRecord> = std::fs::read(&record_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|r: &EtagRecord| content.has(&r.digest));
    let mut req = agent.get(url);
    if let Some(r) = &known {
        req = req.header("If-None-Match", &r.etag);
    }
    let mut resp = req.call().map_err(|e| fail(url, e.to_string()))?;
    let status = resp.status().as_u16();
    let etag = header(&resp, "etag").map(|e| e.trim_start_matches("W/").to_string());
    if let Some(r) = known {
        // Unchanged: the server says so, or sends the same ETag (some ignore the
        // condition). A 304 without an ETag refers to the one asked about.
        if status == 304 || (status == 200 && etag.as_deref() == Some(r.etag.as_str())) {
            let dir = temp_dir(root)?;
            let path = dir.path().join(filename);
            let mut from = content.open(&r.digest)?;
            let mut to = create(&path)?;
            std::io::copy(&mut from, &mut to).map_err(io(&path))?;
            drop(to);
            let got = Download {
                dir: Arc::new(dir),
                digest: r.digest,
                last_modified: r.last_modified,
            };
            check(url, expect, &got.digest)?;
            finish(&path, got.last_modified.as_deref())?;
            return Ok(got);
        }
    }
    if !(200..400).contains(&status) || status == 304 {
        return Err(fail(url, format!("invalid response status {status}")));
    }
    let last_modified = header(&resp, "last-modified").filter(|v| parse_http_date(v).is_some());
    let dir = temp_dir(root)?;
    let path = dir.path().join(filename);
    let mut to = create(&path)?;
    let mut hash = sha2::Sha256::new();
    let mut body = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(url, format!("reading the body: {e}"))),
        };
        hash.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(io(&path))?;
    }
    drop(to);
    let digest: Digest = format!("sha256:{}", hex::encode(hash.finalize()))
        .parse()
        .map_err(|e| fail(url, format!("{e}")))?;
    check(url, expect, &digest)?;
    if let Some(etag) = etag.filter(|e| !e.is_empty()) {
        // Best effort: a later build may skip the download.
        if content.import(&path, &digest).is_ok() {
            let rec = EtagRecord {
                etag,
                digest: digest.clone(),
                last_modified: last_modified.clone(),
            };
            if let (Some(dir), Ok(bytes)) = (record_path.parent(), serde_json::to_vec(&rec)) {
                let _ = std::fs::create_dir_all(dir);
                if let Ok(mut f) = tempfile::NamedTempFile::new_in(root.tmp_dir()) {
                    if f.write_all(&bytes).is_ok() {
                        let _ = f.persist(&record_path);
                    }
                }
            }
        }
    }
    finish(&path, last_modified.as_deref())?;
    Ok(Download {
        dir: Arc::new(dir),
        digest,
        last_modified,
    })
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError {
    let path = path.to_path_buf();
    move |source| WorkerError::Io { path, source }
}

fn create(path: &Path) -> Result<std::fs::File, WorkerError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))
}

fn check(url: &str, expect: Option<&Digest>, got: &Digest) -> Result<(), WorkerError> {
    match expect {
        Some(want) if want != got => Err(WorkerError::ChecksumMismatch {
            url: redact(url),
            expected: want.to_string(),
            actual: got.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Mode 0600 and the mtime BuildKit gives a download.
fn finish(path: &Path, last_modified: Option<&str>) -> Result<(), WorkerError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    let mtime = last_modified.and_then(parse_http_date).unwrap_or(0);
    kiln_snapshotter::set_mtime(path, mtime).map_err(io(path))
}

/// Parses an HTTP date (IMF-fixdate, RFC 850 or asctime, as Go's `http.ParseTime`)
/// into Unix seconds.
pub(crate) fn parse_http_date(s: &str) -> Option<i64> {
    let month = |m: &str| {
        [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .iter()
        .position(|x| *x == m)
        .map(|i| i as u32 + 1)
    };
    let hms = |t: &str| -> Option<(u32, u32, u32)> {
        let mut it = t.split(':').map(|p| p.parse::<u32>().ok());
        let (h, m, s) = (it.next()??, it.next()??, it.next()??);
        (it.next().is_none() && h < 24 && m < 60 && s < 61).then_some((h, m, s))
    };
    let parts: Vec<&str> = s.split_whitespace().collect();
    let (y, mo, d, t) = match parts.as_slice() {
        // Sun, 06 Nov 1994 08:49:37 GMT
        [_, d, mo, y, t, "GMT"] => (y.parse::<i64>().ok()?, month(mo)?, d.parse::<u32>().ok()?, hms(t)?),
        // Sunday, 06-Nov-94 08:49:37 GMT
        [_, dmy, t, "GMT"] => {
            let mut it = dmy.split('-');
            let (d, mo, y) = (it.next()?, it.next()?, it.next()?);
            let y = y.parse::<i64>().ok()?;
            let y = if y < 100 {
                if y >= 69 {
                    1900 + y
                } else {
                    2000 + y
                }
            } else {
                y
            };
            (y, month(mo)?, d.parse::<u32>().ok()?, hms(t)?)
        }
        // Sun Nov  6 08:49:37 1994
        [_, mo, d, t, y] => (y.parse::<i64>().ok()?, month(mo)?, d.parse::<u32>().ok()?, hms(t)?),
        _ => return None,
    };
    if !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86400 + i64::from(t.0) * 3600 + i64::from(t.1) * 60 + i64::from(t.2))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784111777));
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(784111777));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"), Some(951825600));
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT"), None);
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact("https://u:secret@h/a?x=1"), "https://u:xxxxx@h/a?x=1");
        assert_eq!(redact("https://h/a@b"), "https://h/a@b");
    }
}
