//! Bounds on what a registry can make kiln wait for or hold in memory: request
//! deadlines, size caps on manifests, indexes, configs and token responses (enforced
//! while reading, never after), and checks that judge a blob before it is stored.

use std::io::{self, Read, Write};
use std::time::Duration;

/// The default for every per-phase deadline: connecting (with TLS), waiting for the
/// response headers, and the silence allowed between two reads of a body.
/// `KILN_REGISTRY_TIMEOUT` (seconds) changes it; see docs/cli.md.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest manifest or index kiln reads: containerd's `MaxManifestSize` (4 MB) and
/// the distribution registry's own limit. Real manifests are a few kilobytes.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// The largest image config kiln reads. Real configs are a few kilobytes; the biggest
/// (long histories, many labels) stay well under 1 MiB.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// The largest config of another artifact kiln reads (the index of a registry cache,
/// which grows with the number of cached steps).
pub const MAX_ARTIFACT_CONFIG_BYTES: u64 = 64 << 20;

/// The largest token response kiln reads (a JSON object holding a JWT or two).
pub const MAX_TOKEN_BYTES: u64 = 1 << 20;

/// The largest error body kiln reads to explain a failed request.
pub const MAX_ERROR_BYTES: u64 = 64 << 10;

/// `n` bytes as the limits are written: `8 MiB`, `64 KiB`.
pub fn human(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// BlobCheck judges a blob's bytes as they arrive (in order, exactly once, across
/// resumed requests) and gives its verdict before the blob is stored: a failed check
/// keeps the blob out of the content store.
pub trait BlobCheck: Write {
    /// Called after the last byte; `Err` says what is wrong with the blob.
    fn verdict(&mut self) -> Result<(), String>;

    /// Forgets the bytes seen so far: the download starts again from the first byte.
    fn restart(&mut self) -> Result<(), String>;
}

/// NoCheck accepts every blob.
pub struct NoCheck;

impl Write for NoCheck {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobCheck for NoCheck {
    fn verdict(&mut self) -> Result<(), String> {
        Ok(())
    }

    fn restart(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Tee writes to `out` and shows the same bytes to `check`. A check's error is
/// `InvalidData`: the download stops and is not retried (the bytes will not change).
pub struct Tee<'a, W: Write> {
    pub out: W,
    pub check: &'a mut dyn BlobCheck,
}

/// CheckFailed is a [`BlobCheck`]'s refusal travelling through the download's IO
/// errors, so it is reported as the check's own message.
#[derive(Debug)]
pub struct CheckFailed(pub String);

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckFailed {}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.check
            .write_all(&buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, CheckFailed(e.to_string())))?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Reads all of `from` if it is at most `cap` bytes; `Ok(None)` when it is longer
/// (never more than `cap + 1` bytes are held).
pub fn read_capped(from: &mut dyn Read, cap: u64) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    from.take(cap + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= cap).then_some(bytes))
}

/// What a ureq timeout means, as a sentence about the registry, and which deadline
/// ran out: the per-phase one or the total for small objects.
pub fn timeout_phase(t: ureq::Timeout) -> (&'static str, bool) {
    use ureq::Timeout as T;
    match t {
        T::Resolve | T::Connect => ("did not accept a connection within", false),
        T::SendRequest | T::SendBody | T::PerWrite | T::Await100 => ("did not take the request within", false),
        T::RecvResponse => ("did not answer within", false),
        T::PerRead | T::RecvBody => ("sent nothing for", false),
        T::PerCall | T::Global => ("did not finish the request within", true),
        _ => ("did not answer within", false),
    }
}

/// A duration as the errors show it: whole seconds when it is whole, else with
/// fractions (`2 s`, `0.5 s`).
pub fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} s", d.as_secs_f64())
    }
}

/// The `METHOD /path` of a request URL, for errors.
pub fn request_line(method: &str, url: &str) -> String {
    let path = url
        .split_once("://")
        .map(|(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]))
        .unwrap_or(url);
    let path = path.split('?').next().unwrap_or(path);
    format!("{method} {path}")
}

/// A writer that reports how much went through it.
pub(crate) struct Counting<'a, W: Write> {
    pub inner: W,
    pub n: u64,
    pub last: std::time::Instant,
    pub progress: &'a mut dyn FnMut(u64),
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        if self.last.elapsed() >= std::time::Duration::from_millis(200) {
            self.last = std::time::Instant::now();
            (self.progress)(self.n);
        }
        Ok(k)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies exactly `n` bytes; more or fewer is an error.
pub(crate) fn copy_limited(from: &mut dyn Read, to: &mut dyn Write, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut from.take(n), to)?;
    if copied < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("connection closed after {copied} of {n} bytes"),
        ));
    }
    let mut extra = [0u8; 1];
    if from.read(&mut extra)? > 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "blob is larger than its descriptor says",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_reads_stop_after_the_cap() {
        let mut endless = io::repeat(b' ');
        assert!(read_capped(&mut endless, 1 << 20).unwrap().is_none());
        let mut short: &[u8] = b"{}";
        assert_eq!(read_capped(&mut short, 2).unwrap().unwrap(), b"{}");
    }

    #[test]
    fn messages_name_sizes_durations_and_requests() {
        assert_eq!(human(MAX_CONFIG_BYTES), "8 MiB");
        assert_eq!(human(MAX_ERROR_BYTES), "64 KiB");
        assert_eq!(secs(Duration::from_secs(30)), "30 s");
        assert_eq!(secs(Duration::from_millis(500)), "0.5 s");
        assert_eq!(
            request_line("GET", "http://127.0.0.1:5000/v2/a/b/manifests/1?x=y"),
            "GET /v2/a/b/manifests/1"
        );
    }
}
