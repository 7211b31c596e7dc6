//! Which failed registry requests are worth another attempt. As BuildKit's
//! util/resolver/retryhandler (retryError): dropped connections, 5xx and temporary
//! network errors are retried; what another attempt cannot change (a host name that
//! does not resolve, a certificate that does not verify, a refused connection, 401,
//! 403, 404) fails at once. kiln also retries 429 and honours `Retry-After` on 429 and
//! 503, up to [`MAX_RETRY_AFTER`].

use std::io;
use std::time::Duration;

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
        if inner.is::<rustls_error::Error>() {
            return false;
        }
        if let Some(ue) = inner.downcast_ref::<ureq::Error>() {
            return error_is_transient(ue);
        }
    }
    // getaddrinfo: only EAI_AGAIN ("Temporary failure in name resolution") may pass;
    // "Name or service not known", "No address associated with hostname" will not.
    let text = e.to_string();
    if text.contains("failed to lookup address information") || text.contains("lookup address") {
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

/// The rustls error type, as ureq re-exports nothing of it.
mod rustls_error {
    pub use rustls::Error;
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
