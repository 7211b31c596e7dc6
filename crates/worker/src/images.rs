//! Base images: resolved from the content store, the local image store, or a registry
//! according to the pull policy, and kept in the local store once pulled.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `WorkerError::Io { path }` or name the path in their message"
)]

use std::sync::Arc;

use kiln_cache::KilnRoot;
use kiln_image::{media_types, Descriptor, Digest, ImageConfig, Index, Manifest, Platform, Reference};
use kiln_registry::{BlobCheck, Client, RegistryError};
use kiln_snapshotter::{DiffIdWriter, Layer, SnapshotError};

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
    /// The reference pinned to a digest (`repo:tag@sha256:…`); for an OCI layout a
    /// placeholder never sent to a registry (its blobs are imported on resolve).
    pub pinned: Reference,
    /// What the build shows and keys the cache by: the pinned reference, or
    /// `oci-layout://DIR@sha256:…`.
    pub shown: String,
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
        if let Some(spec) = reference.strip_prefix("oci-layout://") {
            return self.resolve_layout(spec, platform);
        }
        let r = Reference::parse(reference).map_err(|e| WorkerError::Malformed(e.to_string()))?;
        // Pinned by digest and already held: nothing to ask anyone.
        if let Some(d) = r.digest() {
            if let Some(img) = self.local(&r, d, platform, false)? {
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
                        if let Some(img) = self.local(&name, &stored.manifest.digest, platform, false)? {
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
        let resolved = client.resolve_image(&r, platform)?;
        let content = self.root.content();
        if let Some((desc, bytes)) = &resolved.index {
            content.put_bytes(&desc.media_type, bytes)?;
        }
        content.put_bytes(&resolved.manifest.media_type, &resolved.manifest_bytes)?;
        content.put_bytes(&resolved.parsed.config.media_type, &resolved.config_bytes)?;
        let config = parse_config(&r, &resolved.config_bytes)?;
        Ok(BaseImage {
            shown: resolved.pinned.to_string(),
            pinned: resolved.pinned,
            manifest: resolved.manifest,
            parsed: resolved.parsed,
            config,
        })
    }

    /// An image whose manifest (or index) `digest` is in the content store.
    /// With `any_platform` a single manifest is taken whatever its platform (an OCI
    /// layout's image, named by the user).
    fn local(
        &self,
        r: &Reference,
        digest: &Digest,
        platform: &Platform,
        any_platform: bool,
    ) -> Result<Option<BaseImage>, WorkerError> {
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
        // A tag holds one platform's manifest (the last pulled): for another platform
        // the registry's index is asked again.
        let made_for = Platform {
            architecture: config.architecture.clone(),
            os: config.os.clone(),
            variant: config.variant.clone(),
        };
        let (made_for, want) = (made_for.normalized(), platform.normalized());
        if !any_platform
            && !made_for.architecture.is_empty()
            && (made_for.architecture, made_for.os) != (want.architecture, want.os)
        {
            return Ok(None);
        }
        let pinned_text = match r.tag() {
            Some(t) => format!("{}:{t}@{digest}", r.repository()),
            None => format!("{}@{digest}", r.repository()),
        };
        let pinned = Reference::parse(&pinned_text).map_err(|e| WorkerError::Malformed(e.to_string()))?;
        Ok(Some(BaseImage {
            shown: pinned.to_string(),
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
        let shown = img.shown.clone();
        let refused = |problem| {
            WorkerError::Registry(RegistryError::Image {
                reference: shown.clone(),
                problem,
            })
        };
        // The registry client checked this already; images from the local store or an
        // OCI layout are held to the same rules.
        m.check_image().map_err(refused)?;
        if img.config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(refused(kiln_image::ManifestProblem::DiffIdCount {
                layers: m.layers.len(),
                diff_ids: img.config.rootfs.diff_ids.len(),
            }));
        }
        let content = self.root.content();
        let verified = VerifiedDiffIds::new(&self.root);
        let mut layers = Vec::with_capacity(m.layers.len());
        for (desc, diff_id) in m.layers.iter().zip(&img.config.rootfs.diff_ids) {
            let pulled = Layer {
                diff_id: diff_id.clone(),
                blob: desc.clone(),
            };
            // Every layer's diff id is checked once before the image is used: while it
            // downloads (same pass), or by reading a blob that is already stored but was
            // never checked against a diff id. Blobs are content-addressed, so a
            // blob's diff id never changes once known.
            if !content.has(&desc.digest) {
                match (&self.client, self.policy) {
                    (Some(c), PullPolicy::Missing | PullPolicy::Always) => {
                        let mut check = DiffIdCheck::new(&pulled).map_err(|e| WorkerError::BaseLayer {
                            reference: img.shown.clone(),
                            source: Box::new(e),
                        })?;
                        c.fetch_blob_checked(
                            &img.pinned,
                            desc,
                            &content,
                            &mut |n| progress(desc, n, desc.size),
                            &mut check,
                        )?
                    }
                    _ => return Err(WorkerError::NotLocal(img.pinned.to_string())),
                }
            } else if verified.get(&desc.digest).as_ref() != Some(diff_id) {
                kiln_snapshotter::verify_layer(&content, &pulled).map_err(|e| WorkerError::BaseLayer {
                    reference: img.shown.clone(),
                    source: Box::new(e),
                })?;
            }
            verified.put(&desc.digest, diff_id);
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
        if let (Some(tag), false) = (img.pinned.tag(), img.shown.starts_with("oci-layout://")) {
            let name = Reference::parse(&format!("{}:{tag}", img.pinned.repository()))
                .map_err(|e| WorkerError::Malformed(e.to_string()))?;
            if let Some(d) = self.to_tag(&img, &name)? {
                self.root.images().add(&d, &[name])?;
            }
        }
        Ok((img, layers))
    }
}

impl ImageSource {
    /// What a pull tags `name` with: the platform's manifest, as always; but when the
    /// tag already names the image's index (or this manifest) it stays, and when it
    /// names another platform's manifest of the same index the index is tagged, so a
    /// multi-platform build's FROM finds every platform it pulled in the store.
    fn to_tag(&self, img: &BaseImage, name: &Reference) -> Result<Option<Descriptor>, WorkerError> {
        let store = self.root.images();
        let current = store
            .resolve(&name.to_string())
            .ok()
            .filter(|s| s.name.as_ref() == Some(name));
        let top = img.pinned.digest().filter(|d| **d != img.manifest.digest);
        let Some(current) = current else {
            return Ok(Some(img.manifest.clone()));
        };
        if current.manifest.digest == img.manifest.digest || Some(&current.manifest.digest) == top {
            return Ok(None);
        }
        let content = self.root.content();
        match top {
            Some(index) if !kiln_cache::is_index(&current.manifest) && content.has(index) => {
                let bytes = content.read_all(index)?;
                let listed: Index = serde_json::from_slice(&bytes)
                    .map_err(|e| WorkerError::Malformed(format!("index `{index}`: {e}")))?;
                if !listed.manifests.iter().any(|m| m.digest == current.manifest.digest) {
                    return Ok(Some(img.manifest.clone()));
                }
                let media_type = listed.media_type.unwrap_or_else(|| media_types::OCI_INDEX.to_string());
                Ok(Some(Descriptor::new(media_type, index.clone(), bytes.len() as u64)))
            }
            _ => Ok(Some(img.manifest.clone())),
        }
    }

    /// An image in an OCI layout directory (`DIR`, `DIR:TAG`, `DIR@sha256:…`): its
    /// manifest, config and layers are copied into the content store, each verified
    /// against its digest; the index entry is chosen by tag (`ref.name` annotation), by
    /// digest, or as the only one.
    fn resolve_layout(&self, spec: &str, platform: &Platform) -> Result<BaseImage, WorkerError> {
        let bad = |m: String| WorkerError::Malformed(format!("oci-layout://{spec}: {m}"));
        let (dir, tag, digest) = match spec.split_once('@') {
            Some((d, dg)) => (d, None, Some(dg.parse::<Digest>().map_err(|e| bad(e.to_string()))?)),
            None => match spec.rsplit_once(':') {
                Some((d, t)) if !t.contains('/') && !t.is_empty() => (d, Some(t), None),
                _ => (spec, None, None),
            },
        };
        let dir = std::path::Path::new(dir);
        let index_path = dir.join("index.json");
        let index: Index = std::fs::read(&index_path)
            .map_err(|e| bad(format!("cannot read {}: {e}", index_path.display())))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| bad(format!("{}: {e}", index_path.display()))))?;
        let tag_of = |d: &Descriptor| {
            d.annotations.get(kiln_image::annotations::REF_NAME).map(|n| {
                // BuildKit writes the tag; some tools the whole name.
                n.rsplit_once(':')
                    .filter(|(_, t)| !t.contains('/'))
                    .map_or(n.as_str(), |(_, t)| t)
                    .to_string()
            })
        };
        let entry = match (&digest, tag) {
            (Some(d), _) => index.manifests.iter().find(|m| &m.digest == d),
            (None, Some(t)) => index.manifests.iter().find(|m| tag_of(m).as_deref() == Some(t)),
            (None, None) if index.manifests.len() == 1 => index.manifests.first(),
            (None, None) => {
                return Err(bad(format!(
                    "the layout holds {} images; name one with :TAG or @DIGEST",
                    index.manifests.len()
                )))
            }
        }
        .ok_or_else(|| {
            let tags: Vec<String> = index.manifests.iter().filter_map(tag_of).collect();
            bad(format!("no such image in the layout (tags: {})", tags.join(", ")))
        })?
        .clone();
        let content = self.root.content();
        let import = |d: &Digest| -> Result<(), WorkerError> {
            content
                .import(&dir.join("blobs/sha256").join(d.hex()), d)
                .map_err(|e| bad(format!("blob `{d}`: {e}")))
        };
        import(&entry.digest)?;
        let top = content.read_all(&entry.digest)?;
        let v: serde_json::Value = serde_json::from_slice(&top).map_err(|e| bad(format!("manifest: {e}")))?;
        let manifest_digest = if v.get("manifests").is_some() {
            let inner: Index = serde_json::from_value(v).map_err(|e| bad(format!("index: {e}")))?;
            let chosen = kiln_registry::choose(&inner, platform)
                .ok_or_else(|| bad(format!("no manifest for platform `{platform}`")))?;
            import(&chosen.digest)?;
            chosen.digest.clone()
        } else {
            entry.digest.clone()
        };
        let m: Manifest =
            serde_json::from_slice(&content.read_all(&manifest_digest)?).map_err(|e| bad(format!("manifest: {e}")))?;
        // Checked before the layers are copied: a layout is as untrusted as a registry.
        m.check_image().map_err(|e| bad(e.to_string()))?;
        import(&m.config.digest)?;
        for l in &m.layers {
            import(&l.digest)?;
        }
        let pinned = Reference::parse(&format!("localhost/oci-layout@{}", entry.digest))
            .map_err(|e| WorkerError::Malformed(e.to_string()))?;
        let mut img = self
            .local(&pinned, &entry.digest, platform, true)?
            .ok_or_else(|| bad("incomplete layout".to_string()))?;
        img.shown = format!("oci-layout://{}@{}", dir.display(), entry.digest);
        Ok(img)
    }
}

/// VerifiedDiffIds remembers, per layer blob, the diff id kiln computed from its bytes
/// (`$KILN_ROOT/diffids-v1/<blob hex>`), so a stored blob is checked against an image's
/// diff id without being read again. A missing or unreadable entry only costs a read.
pub(crate) struct VerifiedDiffIds {
    dir: std::path::PathBuf,
    tmp: std::path::PathBuf,
}

impl VerifiedDiffIds {
    pub(crate) fn new(root: &KilnRoot) -> Self {
        VerifiedDiffIds {
            dir: root.bucket(kiln_cache::Bucket::DiffIds),
            tmp: root.tmp_dir(),
        }
    }

    pub(crate) fn get(&self, blob: &Digest) -> Option<Digest> {
        std::fs::read_to_string(self.dir.join(blob.hex()))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Best effort: a record that cannot be written is recomputed next time.
    pub(crate) fn put(&self, blob: &Digest, diff_id: &Digest) {
        if self.get(blob).as_ref() == Some(diff_id) || std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let Ok(mut f) = tempfile::Builder::new().prefix("diffid-").tempfile_in(&self.tmp) else {
            return;
        };
        if std::io::Write::write_all(&mut f, diff_id.to_string().as_bytes()).is_ok() {
            let _ = f.persist(self.dir.join(blob.hex()));
        }
    }
}

/// DiffIdCheck checks a layer as it downloads: its compression by its first bytes and
/// its diff id, so a layer that is not what the image config says is never stored.
pub(crate) struct DiffIdCheck {
    writer: Option<DiffIdWriter>,
    blob: Descriptor,
    diff_id: Digest,
}

impl DiffIdCheck {
    pub(crate) fn new(layer: &Layer) -> Result<Self, SnapshotError> {
        Ok(DiffIdCheck {
            writer: Some(DiffIdWriter::new(&layer.blob)?),
            blob: layer.blob.clone(),
            diff_id: layer.diff_id.clone(),
        })
    }
}

impl std::io::Write for DiffIdCheck {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.writer {
            Some(w) => w.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl BlobCheck for DiffIdCheck {
    fn verdict(&mut self) -> Result<(), String> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        w.check(&self.diff_id).map_err(|e| e.to_string())
    }

    fn restart(&mut self) -> Result<(), String> {
        self.writer = Some(DiffIdWriter::new(&self.blob).map_err(|e| e.to_string())?);
        Ok(())
    }
}

fn parse_config(r: &Reference, bytes: &[u8]) -> Result<ImageConfig, WorkerError> {
    serde_json::from_slice(bytes).map_err(|e| WorkerError::Malformed(format!("image config of `{r}`: {e}")))
}
