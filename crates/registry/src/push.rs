//! Pushing an image: every blob the registry lacks is uploaded (or mounted from another
//! repository of the same registry), in parallel, streamed from the content store;
//! the manifest goes last, so a failed push never publishes a tag whose blobs are
//! missing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use kiln_cache::ContentStore;
use kiln_image::{Descriptor, Digest, Reference};

use crate::{Client, Payload, RegistryError, ATTEMPTS};

/// What happened to one blob of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushEvent {
    /// The registry had it already (HEAD).
    Exists,
    /// Mounted from another repository of the same registry, nothing uploaded.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// PushReport counts what a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    pub existed: usize,
    pub mounted: usize,
    pub uploaded: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// The digest of the pushed manifest.
    pub digest: Option<Digest>,
}

/// How many blobs upload at once (skopeo and containerd use a handful too).
const PARALLEL_UPLOADS: usize = 4;

impl Client {
    /// Pushes the manifest `manifest` (stored in `store`, as are `blobs`) to `dest`,
    /// tagged with its tag (or by digest when it names none). `mount_from` lists other
    /// repositories that may hold a blob; `on_blob` hears about each blob as it is done.
    pub fn push(
        &self,
        dest: &Reference,
        store: &ContentStore,
        manifest: &Descriptor,
        blobs: &[Descriptor],
        mount_from: &(dyn Fn(&Digest) -> Vec<Reference> + Sync),
        on_blob: &(dyn Fn(&Descriptor, PushEvent) + Sync),
    ) -> Result<PushReport, RegistryError> {
        if let Some(d) = dest.digest() {
            if *d != manifest.digest {
                return Err(RegistryError::Malformed {
                    reference: dest.to_string(),
                    what: "destination",
                    message: format!("the image's manifest is `{}`, not `{d}`", manifest.digest),
                });
            }
        }
        let mut unique: Vec<&Descriptor> = Vec::new();
        for b in blobs {
            if !unique.iter().any(|u| u.digest == b.digest) {
                unique.push(b);
            }
        }
        let report = Mutex::new(PushReport::default());
        let failed: Mutex<Option<RegistryError>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..PARALLEL_UPLOADS.min(unique.len()) {
                s.spawn(|| loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(d) = unique.get(i) else { return };
                    match self.push_blob(dest, store, d, &mount_from(&d.digest)) {
                        Ok(event) => {
                            {
                                let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                                match event {
                                    PushEvent::Exists => r.existed += 1,
                                    PushEvent::Mounted => r.mounted += 1,
                                    PushEvent::Uploaded => {
                                        r.uploaded += 1;
                                        r.bytes += d.size;
                                    }
                                }
                            }
                            on_blob(d, event);
                        }
                        Err(e) => {
                            stop.store(true, Ordering::SeqCst);
                            failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let bytes = store.read_all(&manifest.digest)?;
        let reference = match dest.tag() {
            Some(t) => t.to_string(),
            None => manifest.digest.to_string(),
        };
        let url = format!("{}/manifests/{reference}", self.base_url(dest));
        let headers = [("Content-Type", manifest.media_type.clone())];
        let mut resp = self.send(
            dest,
            "PUT",
            &url,
            &headers,
            Payload::Bytes(&bytes),
            ATTEMPTS,
            "pull,push",
            None,
        )?;
        if resp.status().as_u16() != 201 && resp.status().as_u16() != 200 {
            return Err(Self::fail(dest, &mut resp));
        }
        let mut report = report.into_inner().unwrap_or_else(|p| p.into_inner());
        report.digest = Some(manifest.digest.clone());
        Ok(report)
    }

    /// Makes one blob present in `dest`'s repository.
    fn push_blob(
        &self,
        dest: &Reference,
        store: &ContentStore,
        d: &Descriptor,
        mount_from: &[Reference],
    ) -> Result<PushEvent, RegistryError> {
        let base = self.base_url(dest);
        let blob_url = format!("{base}/blobs/{}", d.digest);
        let mut resp = self.send(
            dest,
            "HEAD",
            &blob_url,
            &[],
            Payload::Empty,
            ATTEMPTS,
            "pull,push",
            None,
        )?;
        match resp.status().as_u16() {
            200 => return Ok(PushEvent::Exists),
            404 => {}
            _ => return Err(Self::fail(dest, &mut resp)),
        }
        let path = store.blob_path(&d.digest);
        if !path.is_file() {
            return Err(RegistryError::Store(kiln_cache::CacheError::MissingBlob(
                d.digest.clone(),
            )));
        }
        let mut location = None;
        for from in mount_from {
            if from.domain() != dest.domain() || from.path() == dest.path() {
                continue;
            }
            let url = format!("{base}/blobs/uploads/?mount={}&from={}", d.digest, from.path());
            let mut resp = self.send(dest, "POST", &url, &[], Payload::Empty, ATTEMPTS, "pull,push", None)?;
            match resp.status().as_u16() {
                201 => return Ok(PushEvent::Mounted),
                // Not mountable: the registry started a plain upload instead.
                202 => {
                    location = upload_location(&base, &resp);
                    break;
                }
                _ => return Err(Self::fail(dest, &mut resp)),
            }
        }
        let mut delay = Duration::from_millis(200);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(delay);
                delay *= 2;
            }
            let start = match location.take() {
                Some(l) => l,
                None => {
                    let url = format!("{base}/blobs/uploads/");
                    let mut resp = self.send(dest, "POST", &url, &[], Payload::Empty, ATTEMPTS, "pull,push", None)?;
                    if resp.status().as_u16() != 202 {
                        return Err(Self::fail(dest, &mut resp));
                    }
                    match upload_location(&base, &resp) {
                        Some(l) => l,
                        None => {
                            return Err(RegistryError::Malformed {
                                reference: dest.to_string(),
                                what: "upload response",
                                message: "no Location header".to_string(),
                            })
                        }
                    }
                }
            };
            let sep = if start.contains('?') { '&' } else { '?' };
            let url = format!("{start}{sep}digest={}", d.digest);
            let headers = [("Content-Type", "application/octet-stream".to_string())];
            // One attempt per upload session: after a failure the session may be gone,
            // so the retry starts a new one.
            match self.send(dest, "PUT", &url, &headers, Payload::File(&path), 1, "pull,push", None) {
                Ok(mut resp) => match resp.status().as_u16() {
                    201 | 204 => return Ok(PushEvent::Uploaded),
                    // The upload session expired or was lost: start again.
                    404 => last = "upload session lost (HTTP 404)".to_string(),
                    _ => return Err(Self::fail(dest, &mut resp)),
                },
                Err(RegistryError::Transport { message, .. }) => last = message,
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Transport {
            reference: dest.to_string(),
            message: format!("blob `{}`: {last}; gave up after {ATTEMPTS} attempts", d.digest),
        })
    }
}

/// The absolute upload URL from a 202's `Location` (registries may send a path).
fn upload_location(base: &str, resp: &ureq::http::Response<ureq::Body>) -> Option<String> {
    let loc = resp.headers().get("location")?.to_str().ok()?;
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return Some(loc.to_string());
    }
    let origin = base.find("/v2/").map_or(base, |i| &base[..i]);
    Some(format!("{origin}{}", if loc.starts_with('/') { "" } else { "/" }) + loc)
}
