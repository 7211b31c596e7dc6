//! The CA roots registries are verified against.

#![allow(
    clippy::disallowed_methods,
    reason = "every call's error names the path in its message, or is dropped (an optional file)"
)]

use crate::Client;

pub(crate) fn parse_certs(pem: &[u8]) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        if let ureq::tls::PemItem::Certificate(c) = item.map_err(|e| format!("bad PEM: {e}"))? {
            certs.push(c.to_owned());
        }
    }
    Ok(certs)
}

/// TLS trusting the system's CA bundle, as registries are reached: for kiln's other
/// HTTPS clients (`ADD <url>` downloads).
pub fn system_tls_config() -> ureq::tls::TlsConfig {
    Client::tls(&system_roots(), false)
}

/// The system's CA bundle (`$SSL_CERT_FILE`, else the usual distribution paths), as
/// Docker and Buildah trust it; empty when there is none (Mozilla's roots are used).
pub(crate) fn system_roots() -> Vec<ureq::tls::Certificate<'static>> {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(std::path::PathBuf::from),
        );
    for path in candidates {
        if let Ok(pem) = std::fs::read(&path) {
            if let Ok(certs) = parse_certs(&pem) {
                if !certs.is_empty() {
                    return certs;
                }
            }
        }
    }
    Vec::new()
}
