//! Which failed registry requests are worth another attempt. As BuildKit's
//! util/resolver/retryhandler (retryError): dropped connections, 5xx and temporary
//! network errors are retried; what another attempt cannot change (a host name that
//! does not resolve, a certificate that does not verify, a refused connection, 401,
//! 403, 404) fails at once. kiln also retries 429 and honours `Retry-After` on 429 and
//! 503, up to [`MAX_RETRY_AFTER`]. [`Client::send`], every request's loop, lives here.

#![allow(
    clippy::disallowed_methods,
    reason = "every call's error names the path in its message, or is dropped (an optional file)"
)]

use std::io;
use std::time::Duration;

use kiln_image::Reference;

use crate::{limits, Client, Payload, RegistryError};

/// The longest `Retry-After` kiln waits for; a registry asking for more is waited on
/// this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Whether a response with this status is retried (429 and 5xx).
pub(crate) fn status_is_transient(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// How long a 429 or 503 asks to wait (`Retry-After: SECONDS`), capped at
/// [`MAX_RETRY_AFTER`]; `None` for other statuses, an absent header or an HTTP date
/// (then the usual backoff applies).
pub(crate) fn retry_after(status: u16, value: Option<&str>) -> Option<Duration> {
    if status != 429 && status != 503 {
        return None;
    }
    let secs: u64 = value?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Whether a request that failed with `e` (no HTTP answer) may succeed if tried again.
/// Deadlines are handled by the caller.
pub(crate) fn error_is_transient(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => io_is_transient(io),
        // Name resolution found no address.
        ureq::Error::HostNotFound => false,
        // TLS setup and certificates, a bad URL, plain HTTP refused: the same again.
        ureq::Error::Tls(_)
        | ureq::Error::Rustls(_)
        | ureq::Error::Pem(_)
        | ureq::Error::BadUri(_)
        | ureq::Error::Http(_)
        | ureq::Error::RequireHttpsOnly(_)
        | ureq::Error::TlsRequired
        | ureq::Error::InvalidProxyUrl => false,
        // A garbled or cut answer, a stalled body and the rest: perhaps not next time.
        _ => true,
    }
}

/// [`error_is_transient`] for an I/O error.
fn io_is_transient(e: &io::Error) -> bool {
    // A certificate that does not verify, a handshake the peer refuses (rustls reports
    // them through the stream as InvalidData).
    if let Some(inner) = e.get_ref() {
        if inner.is::<rustls::Error>() {
            return false;
        }
        if let Some(ue) = inner.downcast_ref::<ureq::Error>() {
            return error_is_transient(ue);
        }
    }
    // getaddrinfo: only EAI_AGAIN ("Temporary failure in name resolution") may pass;
    // "Name or service not known", "No address associated with hostname" will not.
    let text = e.to_string();
    if text.contains("failed to lookup address information") {
        return text.contains("Temporary failure");
    }
    !matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::InvalidData
            | io::ErrorKind::Unsupported
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::NotFound
    )
}

impl Client {
    /// Sends one request with auth: a 401 with a challenge is answered once (asking for
    /// `actions`, e.g. `pull,push`), and transient failures (dropped connections, 429,
    /// 5xx: see retry.rs) are retried with backoff (or a 429/503's `Retry-After`) up to
    /// `attempts` times. Returns the response for any other status (401, 403, 404 at
    /// once). A failure no retry can fix (DNS "name not known", a certificate that does
    /// not verify, a refused connection) is [`RegistryError::Unreachable`] at once. A
    /// deadline is tried once more, then is the error. `total` bounds the whole
    /// exchange, body included (small objects).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send(
        &self,
        r: &Reference,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        payload: Payload<'_>,
        attempts: u32,
        actions: &str,
        total: Option<Duration>,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let agent = self.agent_for(r);
        let mut delay = Duration::from_millis(200);
        let mut last = String::new();
        let mut answered = false;
        let mut timed_out = false;
        let mut wait: Option<Duration> = None;
        let mut attempt = 0;
        while attempt < attempts {
            let mut b = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                b = b.header(*k, v.as_str());
            }
            if let Some(h) = self.auth.header(r) {
                b = b.header("Authorization", h);
            }
            let run = |req| agent.run(agent.configure_request(req).timeout_per_call(total).build());
            let result = match payload {
                Payload::Empty => b.body(()).map_err(|e| e.to_string()).map(run),
                Payload::Bytes(bytes) => b
                    .body(bytes)
                    .map_err(|e| e.to_string())
                    .map(|req| agent.run(agent.configure_request(req).timeout_per_call(total).build())),
                Payload::File(path) => match std::fs::File::open(path) {
                    Ok(f) => b
                        .body(f)
                        .map_err(|e| e.to_string())
                        .map(|req| agent.run(agent.configure_request(req).timeout_per_call(total).build())),
                    Err(e) => {
                        return Err(RegistryError::Transport {
                            reference: r.to_string(),
                            message: format!("cannot read {}: {e}", path.display()),
                        })
                    }
                },
            };
            let result = result.map_err(|message| RegistryError::Transport {
                reference: r.to_string(),
                message,
            })?;
            match result {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if status == 401 && !answered {
                        let challenge = resp
                            .headers()
                            .get("www-authenticate")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        if let Some(c) = challenge {
                            answered = true;
                            self.auth
                                .login(agent, r, &c, actions, self.small_total())
                                .map_err(|message| RegistryError::Status {
                                    reference: r.to_string(),
                                    status: 401,
                                    message,
                                })?;
                            continue;
                        }
                    }
                    if !status_is_transient(status) {
                        return Ok(resp);
                    }
                    last = format!("HTTP {status}");
                    let asked = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    wait = retry_after(status, asked.as_deref());
                }
                // One more try after a deadline, then its error: a registry that stops
                // answering costs at most two deadlines per request.
                Err(ureq::Error::Timeout(t)) if timed_out || attempt + 1 >= attempts => {
                    return Err(self.timeout_error(r, method, url, t, total))
                }
                Err(ureq::Error::Timeout(t)) => {
                    timed_out = true;
                    last = self.timeout_error(r, method, url, t, total).to_string();
                }
                // What another attempt cannot change fails at once, with its cause.
                Err(e) if !error_is_transient(&e) => {
                    return Err(RegistryError::Unreachable {
                        reference: r.to_string(),
                        message: format!("`{}`: {e} ({})", Self::host_of(url), limits::request_line(method, url)),
                    })
                }
                Err(e) => last = e.to_string(),
            }
            attempt += 1;
            if attempt < attempts {
                std::thread::sleep(wait.take().unwrap_or(delay));
                delay *= 2;
            }
        }
        Err(RegistryError::Transport {
            reference: r.to_string(),
            message: format!("{last} after {attempts} attempts"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for s in [429, 500, 502, 503, 504, 599] {
            assert!(status_is_transient(s), "{s}");
        }
        for s in [200, 301, 400, 401, 403, 404, 405, 409, 416] {
            assert!(!status_is_transient(s), "{s}");
        }
    }

    #[test]
    fn retry_after_is_capped_and_only_for_429_and_503() {
        assert_eq!(retry_after(429, Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(503, Some(" 0 ")), Some(Duration::ZERO));
        assert_eq!(retry_after(503, Some("3600")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(500, Some("2")), None);
        assert_eq!(retry_after(429, Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(429, None), None);
    }

    #[test]
    fn errors() {
        let io = |kind, msg: &str| ureq::Error::Io(io::Error::new(kind, msg.to_string()));
        // Permanent: retrying cannot help.
        for e in [
            ureq::Error::HostNotFound,
            io(
                io::ErrorKind::Other,
                "failed to lookup address information: Name or service not known",
            ),
            io(
                io::ErrorKind::Other,
                "failed to lookup address information: No address associated with hostname",
            ),
            io(io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)"),
            ureq::Error::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            )),
            ureq::Error::Rustls(rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)),
            ureq::Error::Tls("Rustls invalid dns name error"),
            ureq::Error::BadUri("x".into()),
        ] {
            assert!(!error_is_transient(&e), "{e:?}");
        }
        // Transient: another attempt may succeed.
        for e in [
            io(
                io::ErrorKind::ConnectionReset,
                "Connection reset by peer (os error 104)",
            ),
            io(io::ErrorKind::ConnectionAborted, "aborted"),
            io(io::ErrorKind::BrokenPipe, "Broken pipe (os error 32)"),
            io(io::ErrorKind::UnexpectedEof, "eof"),
            io(
                io::ErrorKind::Other,
                "failed to lookup address information: Temporary failure in name resolution",
            ),
            ureq::Error::ConnectionFailed,
        ] {
            assert!(error_is_transient(&e), "{e:?}");
        }
    }
}
