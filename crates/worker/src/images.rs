//! Base images: resolved from the content store, the local image store, or a registry
//! according to the pull policy, and kept in the local store once pulled.

use std::sync::Arc;

use kiln_cache::KilnRoot;
use kiln_image::{media_types, Descriptor, Digest, ImageConfig, Index, Manifest, Platform, Reference};
use kiln_registry::Client;
use kiln_snapshotter::Layer;

use crate::WorkerError;

/// PullPolicy is `--pull`: when to ask the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Use the local store when it has the image (the default).
    #[default]
    Missing,
    /// Always resolve the reference at the registry (blobs already held are not fetched).
    Always,
    /// Never contact a registry.
    Never,
}

/// A base image as the build uses it.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// The reference pinned to a digest (`repo:tag@sha256:…`).
    pub pinned: Reference,
    pub manifest: Descriptor,
    pub parsed: Manifest,
    pub config: ImageConfig,
}

/// ImageSource finds base images.
#[derive(Debug)]
pub struct ImageSource {
    root: KilnRoot,
    client: Option<Arc<Client>>,
    policy: PullPolicy,
}

impl ImageSource {
    pub fn new(root: KilnRoot, client: Option<Arc<Client>>, policy: PullPolicy) -> Self {
        ImageSource { root, client, policy }
    }

    /// Resolves `reference` for `platform` without fetching layers.
    pub fn resolve(&self, reference: &str, platform: &Platform) -> Result<BaseImage, WorkerError> {
        let r = Reference::parse(reference).map_err(|e| WorkerError::Malformed(e.to_string()))?;
        // Pinned by digest and already held: nothing to ask anyone.
        if let Some(d) = r.digest() {
            if let Some(img) = self.local(&r, d, platform)? {
                return Ok(img);
            }
        }
        if self.policy != PullPolicy::Always {
            let name = r
                .tag()
                .map(|_| Reference::parse(&format!("{}:{}", r.repository(), r.tag().unwrap_or("latest"))));
            if let Some(Ok(name)) = name {
                if let Ok(stored) = self.root.images().resolve(&name.to_string()) {
                    if stored.name.as_ref() == Some(&name) {
                        if let Some(img) = self.local(&name, &stored.manifest.digest, platform)? {
                            return Ok(img);
                        }
                    }
                }
            }
        }
        if self.policy == PullPolicy::Never {
            return Err(WorkerError::NotLocal(r.to_string()));
        }
        let Some(client) = &self.client else {
            return Err(WorkerError::NotLocal(r.to_string()));
        };
        let resolved = client.resolve(&r, platform)?;
        let content = self.root.content();
        if let Some((desc, bytes)) = &resolved.index {
            content.put_bytes(&desc.media_type, bytes)?;
        }
        content.put_bytes(&resolved.manifest.media_type, &resolved.manifest_bytes)?;
        content.put_bytes(&resolved.parsed.config.media_type, &resolved.config_bytes)?;
        let config = parse_config(&r, &resolved.config_bytes)?;
        Ok(BaseImage {
            pinned: resolved.pinned,
            manifest: resolved.manifest,
            parsed: resolved.parsed,
            config,
        })
    }

    /// An image whose manifest (or index) `digest` is in the content store.
    fn local(&self, r: &Reference, digest: &Digest, platform: &Platform) -> Result<Option<BaseImage>, WorkerError> {
        let content = self.root.content();
        if !content.has(digest) {
            return Ok(None);
        }
        let bytes = content.read_all(digest)?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| WorkerError::Malformed(format!("manifest `{digest}`: {e}")))?;
        let (desc, bytes) = if v.get("manifests").is_some() {
            let index: Index =
                serde_json::from_value(v).map_err(|e| WorkerError::Malformed(format!("index `{digest}`: {e}")))?;
            let Some(chosen) = kiln_registry::choose(&index, platform) else {
                return Ok(None);
            };
            if !content.has(&chosen.digest) {
                return Ok(None);
            }
            (chosen.clone(), content.read_all(&chosen.digest)?)
        } else {
            let mt = v["mediaType"].as_str().unwrap_or(media_types::OCI_MANIFEST).to_string();
            (Descriptor::new(mt, digest.clone(), bytes.len() as u64), bytes)
        };
        let parsed: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| WorkerError::Malformed(format!("manifest `{}`: {e}", desc.digest)))?;
        if !content.has(&parsed.config.digest) {
            return Ok(None);
        }
        let config = parse_config(r, &content.read_all(&parsed.config.digest)?)?;
        let pinned_text = match r.tag() {
            Some(t) => format!("{}:{t}@{digest}", r.repository()),
            None => format!("{}@{digest}", r.repository()),
        };
        let pinned = Reference::parse(&pinned_text).map_err(|e| WorkerError::Malformed(e.to_string()))?;
        Ok(Some(BaseImage {
            pinned,
            manifest: desc,
            parsed,
            config,
        }))
    }

    /// Resolves and fetches every missing layer; tags the image in the local store
    /// under its tag (so the next build, or `--pull=never`, finds it there).
    pub fn pull(&self, reference: &str, platform: &Platform) -> Result<(BaseImage, Vec<Layer>), WorkerError> {
        self.pull_progress(reference, platform, &mut |_, _, _| {})
    }

    /// [`Self::pull`], telling `progress` (blob, bytes so far, size) as layers arrive.
    pub fn pull_progress(
        &self,
        reference: &str,
        platform: &Platform,
        progress: &mut dyn FnMut(&Descriptor, u64, u64),
    ) -> Result<(BaseImage, Vec<Layer>), WorkerError> {
        let img = self.resolve(reference, platform)?;
        let m = &img.parsed;
        if img.config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(WorkerError::Malformed(format!(
                "`{reference}` has {} layers but its config lists {} diff ids",
                m.layers.len(),
                img.config.rootfs.diff_ids.len()
            )));
        }
        let content = self.root.content();
        let mut layers = Vec::with_capacity(m.layers.len());
        for (desc, diff_id) in m.layers.iter().zip(&img.config.rootfs.diff_ids) {
            if !content.has(&desc.digest) {
                match (&self.client, self.policy) {
                    (Some(c), PullPolicy::Missing | PullPolicy::Always) => {
                        c.fetch_blob_progress(&img.pinned, desc, &content, &mut |n| progress(desc, n, desc.size))?
                    }
                    _ => return Err(WorkerError::NotLocal(img.pinned.to_string())),
                }
            }
            // Same bytes, OCI name: the images kiln writes are OCI manifests.
            let media_type = match desc.media_type.as_str() {
                media_types::DOCKER_LAYER_GZIP => media_types::OCI_LAYER_GZIP,
                media_types::DOCKER_LAYER_TAR => media_types::OCI_LAYER_TAR,
                other => other,
            };
            layers.push(Layer {
                diff_id: diff_id.clone(),
                blob: Descriptor::new(media_type, desc.digest.clone(), desc.size),
            });
        }
        if let Some(tag) = img.pinned.tag() {
            let name = Reference::parse(&format!("{}:{tag}", img.pinned.repository()))
                .map_err(|e| WorkerError::Malformed(e.to_string()))?;
            self.root.images().add(&img.manifest, &[name])?;
        }
        Ok((img, layers))
    }
}

fn parse_config(r: &Reference, bytes: &[u8]) -> Result<ImageConfig, WorkerError> {
    serde_json::from_slice(bytes).map_err(|e| WorkerError::Malformed(format!("image config of `{r}`: {e}")))
}
