//! kiln-registry pulls images from OCI/Docker registries (distribution API v2):
//! manifests and indexes by tag or digest, the platform's entry of an index, and blobs
//! streamed into the content store with their digest verified, with the bearer-token
//! and basic auth flows and retries with backoff.
//!
//! A blocking client (ureq) rather than oci-client over tokio: the worker is
//! synchronous, every call streams, and retries and resumable `Range` requests stay
//! in our hands (see docs/dev/architecture.md).

mod auth;
pub mod creds;
mod push;

pub use push::{PushEvent, PushReport};

use std::io::{self, Read, Write};
use std::time::Duration;

use kiln_cache::{CacheError, ContentStore};
use kiln_image::{media_types, Descriptor, Digest, Index, Manifest, Platform, Reference};

use auth::Auth;

/// RegistryError is a failed registry operation, naming the reference.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("`{reference}`: {message} (HTTP {status})")]
    Status {
        reference: String,
        status: u16,
        message: String,
    },
    #[error("`{reference}`: cannot reach the registry: {message}")]
    Transport { reference: String, message: String },
    #[error("`{reference}`: no manifest for platform `{platform}` (the image has {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("`{reference}`: malformed {what}: {message}")]
    Malformed {
        reference: String,
        what: &'static str,
        message: String,
    },
    #[error("`{reference}`: unsupported manifest media type `{media_type}`")]
    MediaType { reference: String, media_type: String },
    #[error("`{reference}`: blob `{digest}` failed verification")]
    Digest { reference: String, digest: Digest },
    #[error(transparent)]
    Store(#[from] CacheError),
}

/// Payload is the body of a request, re-read on every attempt.
#[derive(Debug, Clone, Copy)]
enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    File(&'a std::path::Path),
}

/// Resolved is an image manifest chosen for a platform, with its config.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The reference pinned to the manifest digest (the index's, when there is one).
    pub pinned: Reference,
    /// The platform manifest's descriptor.
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub parsed: Manifest,
    pub config_bytes: Vec<u8>,
    /// The index the manifest was chosen from, when the reference named one.
    pub index: Option<(Descriptor, Vec<u8>)>,
}

/// Client talks to registries.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    /// For `--insecure-registry` hosts: TLS without verification, as Docker does for
    /// insecure registries (loopback hosts may use plain HTTP but are verified when
    /// they speak TLS).
    unverified: ureq::Agent,
    insecure: Vec<String>,
    auth: Auth,
    schemes: std::sync::Mutex<std::collections::HashMap<String, &'static str>>,
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
const ATTEMPTS: u32 = 5;

impl Client {
    /// A client; hosts in `insecure` (and loopback hosts) are reached over plain HTTP.
    pub fn new(insecure: Vec<String>) -> Self {
        let system = system_roots();
        Client {
            agent: Self::agent(Some(Self::tls(&system, false))),
            unverified: Self::agent(Some(Self::tls(&[], true))),
            insecure,
            auth: Auth::default(),
            schemes: Default::default(),
        }
    }

    /// The API base of `r`'s repository. HTTPS always; for loopback hosts and
    /// `--insecure-registry` hosts, as Docker does, HTTPS is tried first and plain HTTP
    /// used when the host does not speak TLS (probed once per host).
    fn base_url(&self, r: &Reference) -> String {
        let host = r.domain();
        let may_be_plain = self.is_insecure(host);
        let api_host = if host == "docker.io" {
            "registry-1.docker.io"
        } else {
            host
        };
        let scheme = if may_be_plain {
            self.probe_scheme(api_host)
        } else {
            "https"
        };
        format!("{scheme}://{api_host}/v2/{}", r.path())
    }

    /// Loopback hosts and `--insecure-registry` hosts: plain HTTP allowed, TLS not verified.
    fn is_insecure(&self, host: &str) -> bool {
        let name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        name == "localhost"
            || name.starts_with("127.")
            || name == "[::1]"
            || self.insecure.iter().any(|i| i == host || i == name)
    }

    /// The agent for `r`'s registry.
    fn agent_for(&self, r: &Reference) -> &ureq::Agent {
        let host = r.domain();
        let name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        if self.insecure.iter().any(|i| i == host || i == name) {
            &self.unverified
        } else {
            &self.agent
        }
    }

    fn probe_scheme(&self, host: &str) -> &'static str {
        let mut schemes = self.schemes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = schemes.get(host) {
            return known;
        }
        // Any HTTP answer over TLS (even 401) means the host speaks HTTPS.
        let scheme = match self.unverified.get(&format!("https://{host}/v2/")).call() {
            Ok(_) => "https",
            Err(_) => "http",
        };
        schemes.insert(host.to_string(), scheme);
        scheme
    }

    /// Also trusts the CA certificates in `pem` (besides the system's) for TLS.
    pub fn with_tls_ca(mut self, pem: &[u8]) -> Result<Self, String> {
        let mut certs = parse_certs(pem)?;
        if certs.is_empty() {
            return Err("no certificates in the PEM file".to_string());
        }
        certs.extend(system_roots());
        self.agent = Self::agent(Some(Self::tls(&certs, false)));
        Ok(self)
    }

    /// TLS trusting `roots` (Mozilla's built-in roots when empty), or nothing verified.
    fn tls(roots: &[ureq::tls::Certificate<'static>], unverified: bool) -> ureq::tls::TlsConfig {
        let mut b = ureq::tls::TlsConfig::builder();
        if unverified {
            b = b.disable_verification(true);
        } else if !roots.is_empty() {
            b = b.root_certs(ureq::tls::RootCerts::new_with_certs(roots));
        }
        b.build()
    }

    fn agent(tls: Option<ureq::tls::TlsConfig>) -> ureq::Agent {
        let mut b = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent("kiln");
        if let Some(t) = tls {
            b = b.tls_config(t);
        }
        b.build().into()
    }

    /// Sends a GET with auth and retries; returns the response for any final status.
    fn get(
        &self,
        r: &Reference,
        url: &str,
        accept: Option<&str>,
        range: Option<u64>,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let mut headers = Vec::new();
        if let Some(a) = accept {
            headers.push(("Accept", a.to_string()));
        }
        if let Some(from) = range {
            headers.push(("Range", format!("bytes={from}-")));
        }
        self.send(r, "GET", url, &headers, Payload::Empty, ATTEMPTS, "pull")
    }

    /// Sends one request with auth: a 401 with a challenge is answered once (asking for
    /// `actions`, e.g. `pull,push`), and transport errors, 429 and 5xx are retried with
    /// backoff up to `attempts` times. Returns the response for any other status.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        r: &Reference,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        payload: Payload<'_>,
        attempts: u32,
        actions: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let agent = self.agent_for(r);
        let mut delay = Duration::from_millis(200);
        let mut last = String::new();
        let mut answered = false;
        let mut attempt = 0;
        while attempt < attempts {
            let mut b = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                b = b.header(*k, v.as_str());
            }
            if let Some(h) = self.auth.header(r) {
                b = b.header("Authorization", h);
            }
            let result = match payload {
                Payload::Empty => b.body(()).map_err(|e| e.to_string()).map(|req| agent.run(req)),
                Payload::Bytes(bytes) => b.body(bytes).map_err(|e| e.to_string()).map(|req| agent.run(req)),
                Payload::File(path) => match std::fs::File::open(path) {
                    Ok(f) => b.body(f).map_err(|e| e.to_string()).map(|req| agent.run(req)),
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
                                .login(agent, r, &c, actions)
                                .map_err(|message| RegistryError::Status {
                                    reference: r.to_string(),
                                    status: 401,
                                    message,
                                })?;
                            continue;
                        }
                    }
                    if status == 429 || status >= 500 {
                        last = format!("HTTP {status}");
                    } else {
                        return Ok(resp);
                    }
                }
                Err(e) => last = e.to_string(),
            }
            attempt += 1;
            if attempt < attempts {
                std::thread::sleep(delay);
                delay *= 2;
            }
        }
        Err(RegistryError::Transport {
            reference: r.to_string(),
            message: format!("{last} after {attempts} attempts"),
        })
    }

    fn fail(r: &Reference, resp: &mut ureq::http::Response<ureq::Body>) -> RegistryError {
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        // Registries explain themselves in {"errors":[{"code","message"}]}.
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| match status {
                401 => "unauthorized: authentication required".to_string(),
                403 => "denied".to_string(),
                404 => "not found".to_string(),
                _ => "request failed".to_string(),
            });
        RegistryError::Status {
            reference: r.to_string(),
            status,
            message,
        }
    }

    /// Fetches a manifest or index by tag or digest; returns (media type, bytes, digest).
    fn manifest(&self, r: &Reference, reference: &str) -> Result<(String, Vec<u8>, Digest), RegistryError> {
        let url = format!("{}/manifests/{reference}", self.base_url(r));
        let mut resp = self.get(r, &url, Some(ACCEPT), None)?;
        if resp.status().as_u16() != 200 {
            return Err(Self::fail(r, &mut resp));
        }
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
            .unwrap_or_default();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(8 << 20)
            .read_to_vec()
            .map_err(|e| RegistryError::Transport {
                reference: r.to_string(),
                message: e.to_string(),
            })?;
        let digest = Digest::of(&bytes);
        if let Ok(expected) = reference.parse::<Digest>() {
            if expected != digest {
                return Err(RegistryError::Digest {
                    reference: r.to_string(),
                    digest: expected,
                });
            }
        }
        Ok((media_type, bytes, digest))
    }

    /// Resolves `r` for `platform`: follows an index to the platform's manifest and
    /// fetches the config.
    pub fn resolve(&self, r: &Reference, platform: &Platform) -> Result<Resolved, RegistryError> {
        let first = match r.digest() {
            Some(d) => d.to_string(),
            None => r.tag().unwrap_or("latest").to_string(),
        };
        let (mut media_type, mut bytes, top_digest) = self.manifest(r, &first)?;
        let malformed = |what, e: serde_json::Error| RegistryError::Malformed {
            reference: r.to_string(),
            what,
            message: e.to_string(),
        };
        let sniffed = serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| malformed("manifest", e))?;
        if media_type.is_empty() || media_type == "application/json" {
            media_type = sniffed["mediaType"].as_str().map(str::to_string).unwrap_or_else(|| {
                if sniffed.get("manifests").is_some() {
                    media_types::OCI_INDEX.to_string()
                } else {
                    media_types::OCI_MANIFEST.to_string()
                }
            });
        }
        let mut manifest_digest = top_digest.clone();
        let mut index_blob = None;
        if media_type == media_types::OCI_INDEX || media_type == media_types::DOCKER_MANIFEST_LIST {
            let index: Index = serde_json::from_slice(&bytes).map_err(|e| malformed("index", e))?;
            let chosen = choose(&index, platform).ok_or_else(|| RegistryError::NoPlatform {
                reference: r.to_string(),
                platform: platform.to_string(),
                available: available(&index),
            })?;
            let (mt, b, d) = self.manifest(r, &chosen.digest.to_string())?;
            index_blob = Some((
                Descriptor::new(media_type.clone(), top_digest.clone(), bytes.len() as u64),
                bytes.clone(),
            ));
            media_type = if mt.is_empty() || mt == "application/json" {
                chosen.media_type.clone()
            } else {
                mt
            };
            bytes = b;
            manifest_digest = d;
        }
        if media_type != media_types::OCI_MANIFEST && media_type != media_types::DOCKER_MANIFEST {
            return Err(RegistryError::MediaType {
                reference: r.to_string(),
                media_type,
            });
        }
        let parsed: Manifest = serde_json::from_slice(&bytes).map_err(|e| malformed("manifest", e))?;
        let mut config_bytes = Vec::new();
        self.read_blob(r, &parsed.config, &mut config_bytes, 0)?;
        // Pinned like BuildKit shows it: the tag kept for reading, the digest for meaning.
        let pinned_text = match r.tag() {
            Some(t) => format!("{}:{t}@{top_digest}", r.repository()),
            None => format!("{}@{top_digest}", r.repository()),
        };
        let pinned = Reference::parse(&pinned_text).map_err(|e| RegistryError::Malformed {
            reference: r.to_string(),
            what: "reference",
            message: e.to_string(),
        })?;
        Ok(Resolved {
            pinned,
            manifest: Descriptor::new(media_type, manifest_digest, bytes.len() as u64),
            manifest_bytes: bytes,
            parsed,
            config_bytes,
            index: index_blob,
        })
    }

    /// Streams a blob from byte `start` into `out`, verifying size and digest (the
    /// digest only for a whole blob: after `start`, the caller's writer checks it);
    /// resumes with `Range` after a dropped connection.
    fn read_blob(&self, r: &Reference, d: &Descriptor, out: &mut dyn Write, start: u64) -> Result<(), RegistryError> {
        let url = format!("{}/blobs/{}", self.base_url(r), d.digest);
        let mut hashing = kiln_image::Sha256Writer::new(out);
        let mut resumes = 0;
        loop {
            let offset = start + hashing.written();
            let mut resp = self.get(r, &url, None, (offset > 0).then_some(offset))?;
            let status = resp.status().as_u16();
            if !(status == 200 && offset == 0 || status == 206) {
                return Err(Self::fail(r, &mut resp));
            }
            let mut reader = resp.body_mut().as_reader();
            let copied = copy_limited(&mut reader, &mut hashing, d.size - offset);
            match copied {
                Ok(()) => break,
                Err(e) if resumes < ATTEMPTS && e.kind() != io::ErrorKind::InvalidData => {
                    resumes += 1;
                    continue;
                }
                Err(e) => {
                    return Err(RegistryError::Transport {
                        reference: r.to_string(),
                        message: format!("blob `{}`: {e}", d.digest),
                    })
                }
            }
        }
        let (digest, size, _) = hashing.finish();
        if (start == 0 && digest != d.digest) || start + size != d.size {
            return Err(RegistryError::Digest {
                reference: r.to_string(),
                digest: d.digest.clone(),
            });
        }
        Ok(())
    }

    /// Makes the blob present in `store`, downloading it if missing.
    pub fn fetch_blob(&self, r: &Reference, d: &Descriptor, store: &ContentStore) -> Result<(), RegistryError> {
        self.fetch_blob_progress(r, d, store, &mut |_| {})
    }

    /// [`Self::fetch_blob`], telling `progress` how many bytes have arrived (about
    /// every 200 ms, and at the end).
    pub fn fetch_blob_progress(
        &self,
        r: &Reference,
        d: &Descriptor,
        store: &ContentStore,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), RegistryError> {
        if store.has(&d.digest) {
            return Ok(());
        }
        // Continues what a killed or failed pull of this blob left (kiln-cache's ingest).
        let writer = store.resume_writer(&d.digest, d.size)?;
        let start = writer.written();
        let mut counting = Counting {
            // Small, so that a kill loses little of what arrived.
            inner: io::BufWriter::with_capacity(64 << 10, writer),
            n: start,
            last: std::time::Instant::now(),
            progress,
        };
        let read = if start < d.size {
            self.read_blob(r, d, &mut counting, start)
        } else {
            Ok(())
        };
        let retry_whole = |e: &RegistryError| start > 0 && !matches!(e, RegistryError::Transport { .. });
        match read {
            // The registry would not resume (no 206): start again from zero.
            Err(e) if retry_whole(&e) => {
                let Ok(w) = counting.inner.into_inner() else {
                    return Err(e);
                };
                w.discard();
                return self.fetch_blob_progress(r, d, store, counting.progress);
            }
            // Dropping the writer keeps the bytes that arrived for the next pull.
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        (counting.progress)(counting.n);
        let w = counting.inner;
        let w = w.into_inner().map_err(|e| RegistryError::Transport {
            reference: r.to_string(),
            message: e.to_string(),
        })?;
        // Nothing half-written is stored: a wrong digest removes the partial too.
        match w.commit(Some(&d.digest)) {
            Ok(_) => Ok(()),
            // The partial resumed from was not a prefix of the blob: once more, whole.
            Err(CacheError::DigestMismatch { .. }) if start > 0 => {
                self.fetch_blob_progress(r, d, store, counting.progress)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A writer that reports how much went through it.
struct Counting<'a, W: Write> {
    inner: W,
    n: u64,
    last: std::time::Instant,
    progress: &'a mut dyn FnMut(u64),
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
fn copy_limited(from: &mut dyn Read, to: &mut dyn Write, n: u64) -> io::Result<()> {
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

/// Picks the index entry for `platform` (variant must match when both name one).
pub fn choose<'a>(index: &'a Index, platform: &Platform) -> Option<&'a Descriptor> {
    let fits = |d: &&Descriptor| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == platform.os
                && p.architecture == platform.architecture
                && (platform.variant.is_none() || p.variant.is_none() || p.variant == platform.variant)
        })
    };
    index
        .manifests
        .iter()
        .find(|d| fits(d) && d.platform.as_ref().and_then(|p| p.variant.clone()) == platform.variant)
        .or_else(|| index.manifests.iter().find(fits))
}

fn available(index: &Index) -> String {
    let list: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
        .collect();
    if list.is_empty() {
        "no platform entries".to_string()
    } else {
        list.join(", ")
    }
}

fn parse_certs(pem: &[u8]) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
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
fn system_roots() -> Vec<ureq::tls::Certificate<'static>> {
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
