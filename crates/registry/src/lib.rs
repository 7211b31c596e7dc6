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
mod error;
mod limits;
mod push;
mod retry;
mod tls;

pub use error::RegistryError;

pub use limits::{
    BlobCheck, NoCheck, DEFAULT_TIMEOUT, MAX_ARTIFACT_CONFIG_BYTES, MAX_CONFIG_BYTES, MAX_ERROR_BYTES,
    MAX_MANIFEST_BYTES, MAX_TOKEN_BYTES,
};
pub use push::{PushEvent, PushReport};
pub use retry::MAX_RETRY_AFTER;
pub use tls::system_tls_config;

use std::io::{self, Write};
use std::time::Duration;

use kiln_cache::{CacheError, ContentStore};
use kiln_image::{media_types, Descriptor, Digest, Index, Manifest, Platform, Reference};

use auth::Auth;
use limits::{copy_limited, Counting};
use tls::{parse_certs, system_roots};

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
    /// The per-phase deadline (connect, response headers, silence within a body).
    timeout: Duration,
    /// The CA certificates the verifying agent trusts.
    roots: Vec<ureq::tls::Certificate<'static>>,
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
const ATTEMPTS: u32 = 5;

impl Client {
    /// A client; hosts in `insecure` (and loopback hosts) are reached over plain HTTP.
    pub fn new(insecure: Vec<String>) -> Self {
        let system = system_roots();
        let timeout = DEFAULT_TIMEOUT;
        Client {
            agent: Self::agent(Some(Self::tls(&system, false)), timeout),
            unverified: Self::agent(Some(Self::tls(&[], true)), timeout),
            insecure,
            auth: Auth::default(),
            schemes: Default::default(),
            timeout,
            roots: system,
        }
    }

    /// Sets the per-phase deadline (default [`DEFAULT_TIMEOUT`]): connecting, waiting
    /// for response headers, and silence between two reads of a body; manifests,
    /// configs and tokens must also arrive whole within twice it.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.agent = Self::agent(Some(Self::tls(&self.roots, false)), timeout);
        self.unverified = Self::agent(Some(Self::tls(&[], true)), timeout);
        self
    }

    /// The total deadline for a small object (manifest, index, config, token).
    fn small_total(&self) -> Duration {
        self.timeout * 2
    }

    /// The registry host `url` talks to, for errors.
    fn host_of(url: &str) -> &str {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        rest.split('/').next().unwrap_or(rest)
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
        self.agent = Self::agent(Some(Self::tls(&certs, false)), self.timeout);
        self.roots = certs;
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

    fn agent(tls: Option<ureq::tls::TlsConfig>, timeout: Duration) -> ureq::Agent {
        // Every phase is bounded, so a registry that stops talking costs at most
        // `timeout` per request (see docs/cli.md, KILN_REGISTRY_TIMEOUT).
        let t = Some(timeout);
        let mut b = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_resolve(t)
            .timeout_connect(t)
            .timeout_send_request(t)
            .timeout_recv_response(t)
            .timeout_per_read(t)
            .timeout_per_write(t)
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
        total: Option<Duration>,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let mut headers = Vec::new();
        if let Some(a) = accept {
            headers.push(("Accept", a.to_string()));
        }
        if let Some(from) = range {
            headers.push(("Range", format!("bytes={from}-")));
        }
        self.send(r, "GET", url, &headers, Payload::Empty, ATTEMPTS, "pull", total)
    }

    /// The error for a deadline that ran out on `method url`.
    fn timeout_error(
        &self,
        r: &Reference,
        method: &str,
        url: &str,
        t: ureq::Timeout,
        total: Option<Duration>,
    ) -> RegistryError {
        let (what, is_total) = limits::timeout_phase(t);
        let limit = match (is_total, total) {
            (true, Some(total)) => total,
            _ => self.timeout,
        };
        RegistryError::Timeout {
            reference: r.to_string(),
            host: Self::host_of(url).to_string(),
            what: format!("{what} {} ({})", limits::secs(limit), limits::request_line(method, url)),
        }
    }

    /// The error for a body read that failed on `method url`: a deadline (ureq reports
    /// those as `TimedOut`) or a dropped connection.
    fn body_error(&self, r: &Reference, url: &str, e: io::Error, total: Option<Duration>) -> RegistryError {
        let timeout = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
            .and_then(|ue| match ue {
                ureq::Error::Timeout(t) => Some(*t),
                _ => None,
            });
        match timeout {
            Some(t) => self.timeout_error(r, "GET", url, t, total),
            None if e.kind() == io::ErrorKind::TimedOut => {
                self.timeout_error(r, "GET", url, ureq::Timeout::PerRead, total)
            }
            None => RegistryError::Transport {
                reference: r.to_string(),
                message: format!("{}: {e}", limits::request_line("GET", url)),
            },
        }
    }

    fn fail(r: &Reference, resp: &mut ureq::http::Response<ureq::Body>) -> RegistryError {
        let status = resp.status().as_u16();
        let body = limits::read_capped(&mut resp.body_mut().as_reader(), MAX_ERROR_BYTES)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
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
        let total = Some(self.small_total());
        let mut resp = self.get(r, &url, Some(ACCEPT), None, total)?;
        if resp.status().as_u16() != 200 {
            return Err(Self::fail(r, &mut resp));
        }
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
            .unwrap_or_default();
        let too_large = || RegistryError::TooLarge {
            reference: r.to_string(),
            what: format!("manifest `{reference}`"),
            limit: limits::human(MAX_MANIFEST_BYTES),
        };
        let declared = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_MANIFEST_BYTES) {
            return Err(too_large());
        }
        let bytes = limits::read_capped(&mut resp.body_mut().as_reader(), MAX_MANIFEST_BYTES)
            .map_err(|e| self.body_error(r, &url, e, total))?
            .ok_or_else(too_large)?;
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

    /// Resolves the image `r` for `platform`, as [`Self::resolve`], refusing before the
    /// config is fetched what a build could not use (see
    /// [`kiln_image::Manifest::check_image`]).
    pub fn resolve_image(&self, r: &Reference, platform: &Platform) -> Result<Resolved, RegistryError> {
        self.resolve_checked(r, platform, true)
    }

    /// Resolves `r` for `platform`: follows an index to the platform's manifest and
    /// fetches the config (any artifact: kiln's registry cache uses this too).
    pub fn resolve(&self, r: &Reference, platform: &Platform) -> Result<Resolved, RegistryError> {
        self.resolve_checked(r, platform, false)
    }

    fn resolve_checked(&self, r: &Reference, platform: &Platform, image: bool) -> Result<Resolved, RegistryError> {
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
        // Refused before anything else is fetched: what a build could not use.
        if image {
            parsed.check_image().map_err(|problem| RegistryError::Image {
                reference: r.to_string(),
                problem,
            })?;
        }
        // An artifact's config (kiln's cache index) may be larger than an image's.
        let cap = if image {
            MAX_CONFIG_BYTES
        } else {
            MAX_ARTIFACT_CONFIG_BYTES
        };
        if parsed.config.size > cap {
            return Err(RegistryError::TooLarge {
                reference: r.to_string(),
                what: format!("config blob `{}` ({} bytes)", parsed.config.digest, parsed.config.size),
                limit: limits::human(cap),
            });
        }
        let mut config_bytes = Vec::new();
        self.read_blob(r, &parsed.config, &mut config_bytes, 0, Some(self.small_total()))?;
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
    /// resumes with `Range` after a dropped connection. `total` bounds each request
    /// (small objects).
    fn read_blob(
        &self,
        r: &Reference,
        d: &Descriptor,
        out: &mut dyn Write,
        start: u64,
        total: Option<Duration>,
    ) -> Result<(), RegistryError> {
        let url = format!("{}/blobs/{}", self.base_url(r), d.digest);
        let mut hashing = kiln_image::Sha256Writer::new(out);
        let mut resumes = 0;
        loop {
            let offset = start + hashing.written();
            let mut resp = self.get(r, &url, None, (offset > 0).then_some(offset), total)?;
            let status = resp.status().as_u16();
            if !(status == 200 && offset == 0 || status == 206) {
                return Err(Self::fail(r, &mut resp));
            }
            let mut reader = resp.body_mut().as_reader();
            let copied = copy_limited(&mut reader, &mut hashing, d.size - offset);
            match copied {
                Ok(()) => break,
                // A small object's total deadline is spent; retrying cannot help.
                Err(e) if resumes < ATTEMPTS && e.kind() != io::ErrorKind::InvalidData && total.is_none() => {
                    resumes += 1;
                    continue;
                }
                // The bytes are wrong (too many, or refused by a check): the same
                // bytes would come again.
                Err(e) if e.get_ref().is_some_and(|i| i.is::<limits::CheckFailed>()) => {
                    return Err(RegistryError::Refused {
                        reference: r.to_string(),
                        message: e.get_ref().map(|i| i.to_string()).unwrap_or_default(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(RegistryError::Blob {
                        reference: r.to_string(),
                        digest: d.digest.clone(),
                        message: e.to_string(),
                    })
                }
                Err(e) => return Err(self.body_error(r, &url, e, total)),
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
        self.fetch_blob_checked(r, d, store, progress, &mut NoCheck)
    }

    /// [`Self::fetch_blob_progress`], showing the bytes to `check` as they arrive (the
    /// same pass): the blob is stored only if `check` accepts it.
    pub fn fetch_blob_checked(
        &self,
        r: &Reference,
        d: &Descriptor,
        store: &ContentStore,
        progress: &mut dyn FnMut(u64),
        check: &mut dyn BlobCheck,
    ) -> Result<(), RegistryError> {
        if store.has(&d.digest) {
            return Ok(());
        }
        // Continues what a killed or failed pull of this blob left (kiln-cache's ingest).
        let writer = store.resume_writer(&d.digest, d.size)?;
        let start = writer.written();
        if start > 0 {
            // The check sees every byte from the first: the partial's, then the rest.
            let replayed = writer
                .read_written()
                .map_err(RegistryError::from)
                .and_then(|mut partial| {
                    io::copy(&mut partial, &mut *check).map_err(|e| RegistryError::Refused {
                        reference: r.to_string(),
                        message: e.to_string(),
                    })
                });
            if replayed.is_err() {
                writer.discard();
                return self.fetch_again(r, d, store, progress, check);
            }
        }
        let mut counting = Counting {
            // Small, so that a kill loses little of what arrived.
            inner: io::BufWriter::with_capacity(64 << 10, writer),
            n: start,
            last: std::time::Instant::now(),
            progress,
        };
        let read = if start < d.size {
            let mut tee = limits::Tee {
                out: &mut counting,
                check: &mut *check,
            };
            self.read_blob(r, d, &mut tee, start, None)
        } else {
            Ok(())
        };
        let retry_whole = |e: &RegistryError| {
            start > 0 && !matches!(e, RegistryError::Transport { .. } | RegistryError::Unreachable { .. })
        };
        match read {
            // The registry would not resume (no 206): start again from zero.
            Err(e) if retry_whole(&e) => {
                let Ok(w) = counting.inner.into_inner() else {
                    return Err(e);
                };
                w.discard();
                return self.fetch_again(r, d, store, counting.progress, check);
            }
            // The check refused the bytes: they are not kept to be resumed from.
            Err(e @ RegistryError::Refused { .. }) => {
                if let Ok(w) = counting.inner.into_inner() {
                    w.discard();
                }
                return Err(e);
            }
            // Dropping the writer keeps the bytes that arrived for the next pull.
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        if let Err(message) = check.verdict() {
            let Ok(w) = counting.inner.into_inner() else {
                return Err(RegistryError::Refused {
                    reference: r.to_string(),
                    message,
                });
            };
            w.discard();
            if start > 0 {
                // Perhaps the partial resumed from was damaged: once more, whole.
                return self.fetch_again(r, d, store, counting.progress, check);
            }
            return Err(RegistryError::Refused {
                reference: r.to_string(),
                message,
            });
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
                self.fetch_again(r, d, store, counting.progress, check)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Downloads a blob whole after a resumed attempt failed (its partial is gone), with
    /// the check started afresh.
    fn fetch_again(
        &self,
        r: &Reference,
        d: &Descriptor,
        store: &ContentStore,
        progress: &mut dyn FnMut(u64),
        check: &mut dyn BlobCheck,
    ) -> Result<(), RegistryError> {
        check.restart().map_err(|message| RegistryError::Refused {
            reference: r.to_string(),
            message,
        })?;
        self.fetch_blob_checked(r, d, store, progress, check)
    }
}

/// Picks the index entry for `platform` (variant must match when both name one).
pub fn choose<'a>(index: &'a Index, platform: &Platform) -> Option<&'a Descriptor> {
    // Compared normalised, as containerd's matcher: an index may say `arm64/v8`.
    let want = platform.normalized();
    let fits = |d: &&Descriptor| {
        d.platform.as_ref().is_some_and(|p| {
            let p = p.normalized();
            p.os == want.os
                && p.architecture == want.architecture
                && (want.variant.is_none() || p.variant.is_none() || p.variant == want.variant)
        })
    };
    index
        .manifests
        .iter()
        .find(|d| fits(d) && d.platform.as_ref().and_then(|p| p.normalized().variant) == want.variant)
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
