#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `CacheError::Io { op, path }` or name the path in their message"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kiln_image::{annotations, media_types, Descriptor, Digest, Index, Manifest, OciLayout, Reference};

use crate::lock::{LockKind, RootLock};
use crate::store::write_atomic;
use crate::{CacheError, ContentStore};

/// ImageStore is the local image store: an OCI image layout whose `index.json` lists one
/// manifest descriptor per tag, named by the `org.opencontainers.image.ref.name`
/// annotation holding the full normalised reference (`docker.io/library/app:1`), so
/// `skopeo inspect oci:$KILN_ROOT/store:docker.io/library/app:1` reads it as is.
/// Untagged images have an entry with no name.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
    blobs: ContentStore,
    content: ContentStore,
    tmp: PathBuf,
}

/// StoredImage is one entry of the image store.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub name: Option<Reference>,
    pub manifest: Descriptor,
}

impl ImageStore {
    pub(crate) fn new(dir: PathBuf, content: ContentStore, tmp: PathBuf) -> Self {
        let blobs = ContentStore::new(dir.clone(), tmp.clone());
        ImageStore {
            dir,
            blobs,
            content,
            tmp,
        }
    }

    /// The layout directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The layout's own blobs (a subset of the content store, hard-linked).
    pub fn blobs(&self) -> &ContentStore {
        &self.blobs
    }

    pub(crate) fn init(&self) -> Result<(), CacheError> {
        fs_err::create_dir_all(self.dir.join("blobs/sha256")).map_err(|e| CacheError::Io {
            op: "cannot create directory",
            path: self.dir.join("blobs/sha256"),
            source: e,
        })?;
        let layout = self.dir.join("oci-layout");
        if !layout.is_file() {
            let bytes = serde_json::to_vec(&OciLayout::default()).expect("serialises");
            write_atomic(&self.tmp, &layout, &bytes)?;
        }
        if !self.index_path().is_file() {
            let bytes = serde_json::to_vec(&Index::new()).expect("serialises");
            write_atomic(&self.tmp, &self.index_path(), &bytes)?;
        }
        Ok(())
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    fn lock(&self) -> Result<RootLock, CacheError> {
        RootLock::acquire(&self.dir.with_extension("lock"), LockKind::Exclusive)
    }

    fn read_index(&self) -> Result<Index, CacheError> {
        let p = self.index_path();
        let bytes = std::fs::read(&p).map_err(CacheError::io("cannot read", &p))?;
        serde_json::from_slice(&bytes).map_err(|e| CacheError::Corrupt {
            path: p,
            reason: e.to_string(),
        })
    }

    fn write_index(&self, index: &Index) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec_pretty(index).expect("serialises");
        write_atomic(&self.tmp, &self.index_path(), &bytes)
    }

    /// Every image in the store, in index order.
    pub fn list(&self) -> Result<Vec<StoredImage>, CacheError> {
        Ok(self.read_index()?.manifests.into_iter().map(to_stored).collect())
    }

    /// Adds an image whose blobs are in the content store, tagged with `names` (an empty
    /// list stores it untagged). Blobs are linked in before `index.json` names them, so a
    /// crash never leaves a tag pointing at missing blobs. Tags move from older images.
    pub fn add(&self, manifest: &Descriptor, names: &[Reference]) -> Result<(), CacheError> {
        // Linking happens under the store lock too: another build's garbage collection
        // must not see these blobs before the index names them.
        let _l = self.lock()?;
        self.import_blobs(manifest)?;
        let mut index = self.read_index()?;
        let wanted: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        index
            .manifests
            .retain(|d| match d.annotations.get(annotations::REF_NAME) {
                Some(n) => !wanted.contains(n),
                // An untagged entry of the same manifest is superseded by this one.
                None => d.digest != manifest.digest,
            });
        if names.is_empty() {
            index.manifests.push(plain(manifest));
        }
        for n in names {
            let mut d = plain(manifest);
            d.annotations.insert(annotations::REF_NAME.to_string(), n.to_string());
            index.manifests.push(d);
        }
        self.write_index(&index)?;
        self.collect_garbage_locked()
    }

    /// Links the manifest, its config and layers from the content store into the layout;
    /// for an image index, each of its manifests the content store holds first.
    fn import_blobs(&self, manifest: &Descriptor) -> Result<(), CacheError> {
        let bytes = self.content.read_all(&manifest.digest)?;
        if is_index(manifest) {
            let index: Index = serde_json::from_slice(&bytes).map_err(|e| CacheError::Corrupt {
                path: self.content.blob_path(&manifest.digest),
                reason: e.to_string(),
            })?;
            for child in &index.manifests {
                if self.content.has(&child.digest) {
                    self.import_blobs(child)?;
                }
            }
            return self.content.link_into(&manifest.digest, &self.blobs);
        }
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| CacheError::Corrupt {
            path: self.content.blob_path(&manifest.digest),
            reason: e.to_string(),
        })?;
        for d in m.layers.iter().chain(std::iter::once(&m.config)) {
            self.content.link_into(&d.digest, &self.blobs)?;
        }
        self.content.link_into(&manifest.digest, &self.blobs)
    }

    /// The blobs an index entry holds besides the entry itself: every manifest of its
    /// index the layout has (each platform's image, attestation manifests) with its
    /// config and layers; empty for a plain manifest entry. A pulled index may name
    /// platforms never fetched: those are left out.
    pub fn index_blobs(&self, img: &StoredImage) -> Result<Vec<Descriptor>, CacheError> {
        let Some(index) = self.index(img)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for child in index
            .manifests
            .iter()
            .filter(|d| !is_index(d) && self.blobs.has(&d.digest))
        {
            let m = self.read_manifest(&child.digest)?;
            out.push(Descriptor::new(
                child.media_type.clone(),
                child.digest.clone(),
                child.size,
            ));
            out.push(m.config);
            out.extend(m.layers);
        }
        Ok(out)
    }

    /// The image index an entry names, or `None` when it names a single manifest.
    pub fn index(&self, img: &StoredImage) -> Result<Option<Index>, CacheError> {
        if !is_index(&img.manifest) {
            return Ok(None);
        }
        let bytes = self.blobs.read_all(&img.manifest.digest)?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CacheError::Corrupt {
                path: self.blobs.blob_path(&img.manifest.digest),
                reason: e.to_string(),
            })
    }

    /// The manifest an entry stands for on this machine: the entry itself, or for a
    /// multi-platform image the host platform's manifest (else the first one).
    pub fn manifest_descriptor(&self, img: &StoredImage) -> Result<Descriptor, CacheError> {
        let Some(index) = self.index(img)? else {
            return Ok(img.manifest.clone());
        };
        let host = kiln_image::Platform::host();
        // A pulled index may list platforms never fetched.
        let images: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| is_image(d) && self.blobs.has(&d.digest))
            .collect();
        images
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.same(&host)))
            .or_else(|| images.first())
            .map(|d| (*d).clone())
            .ok_or_else(|| CacheError::Corrupt {
                path: self.blobs.blob_path(&img.manifest.digest),
                reason: "the image index lists no manifest".to_string(),
            })
    }

    /// Finds an image by reference (`app`, `app:1`, full), image id (config digest, or a
    /// unique prefix of at least 4 hex characters), or manifest digest.
    pub fn resolve(&self, name: &str) -> Result<StoredImage, CacheError> {
        let images = self.list()?;
        if let Ok(r) = Reference::parse(name) {
            if let Some(img) = images.iter().find(|i| i.name.as_ref() == Some(&r)) {
                return Ok(img.clone());
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut found: BTreeMap<Digest, StoredImage> = BTreeMap::new();
            for img in &images {
                if img.manifest.digest.hex().starts_with(hex) {
                    found.insert(img.manifest.digest.clone(), img.clone());
                    continue;
                }
                if let Ok(config) = self.config_digest(img) {
                    if config.hex().starts_with(hex) {
                        found.insert(img.manifest.digest.clone(), img.clone());
                    }
                }
            }
            match found.len() {
                1 => return Ok(found.into_values().next().expect("one")),
                0 => {}
                count => {
                    return Err(CacheError::Ambiguous {
                        reference: name.to_string(),
                        count,
                    })
                }
            }
        }
        Err(CacheError::NoSuchImage(name.to_string()))
    }

    /// Reads an image's manifest (for a multi-platform image, the one
    /// [`Self::manifest_descriptor`] picks).
    pub fn manifest(&self, img: &StoredImage) -> Result<Manifest, CacheError> {
        let d = self.manifest_descriptor(img)?;
        self.read_manifest(&d.digest)
    }

    /// Every manifest an entry holds: itself, or each manifest of its index that the
    /// layout has (a pulled index may name platforms never fetched).
    pub fn manifests(&self, img: &StoredImage) -> Result<Vec<(Descriptor, Manifest)>, CacheError> {
        let Some(index) = self.index(img)? else {
            return Ok(vec![(img.manifest.clone(), self.read_manifest(&img.manifest.digest)?)]);
        };
        let mut out = Vec::new();
        for d in index
            .manifests
            .iter()
            .filter(|d| is_image(d) && self.blobs.has(&d.digest))
        {
            out.push((d.clone(), self.read_manifest(&d.digest)?));
        }
        Ok(out)
    }

    fn read_manifest(&self, digest: &Digest) -> Result<Manifest, CacheError> {
        let bytes = self.blobs.read_all(digest)?;
        serde_json::from_slice(&bytes).map_err(|e| CacheError::Corrupt {
            path: self.blobs.blob_path(digest),
            reason: e.to_string(),
        })
    }

    /// The image id: the config digest, as Docker shows it.
    pub fn config_digest(&self, img: &StoredImage) -> Result<Digest, CacheError> {
        Ok(self.manifest(img)?.config.digest)
    }

    /// Adds a tag to an existing image.
    pub fn tag(&self, source: &str, target: &Reference) -> Result<(), CacheError> {
        let img = self.resolve(source)?;
        self.add(&img.manifest, std::slice::from_ref(target))
    }

    /// Removes a tag, or every tag of an image given by id; returns what was removed.
    /// Blobs no longer referenced by any entry leave the layout (they stay in the
    /// content store as cache until pruned).
    pub fn remove(&self, name: &str) -> Result<Vec<String>, CacheError> {
        let img = self.resolve(name)?;
        let by_name = Reference::parse(name).ok().filter(|r| img.name.as_ref() == Some(r));
        let _l = self.lock()?;
        let mut index = self.read_index()?;
        let mut removed = Vec::new();
        index.manifests.retain(|d| {
            let n = d.annotations.get(annotations::REF_NAME);
            let hit = match &by_name {
                Some(r) => n == Some(&r.to_string()),
                None => d.digest == img.manifest.digest,
            };
            if hit {
                removed.push(n.cloned().unwrap_or_else(|| d.digest.to_string()));
            }
            !hit
        });
        self.write_index(&index)?;
        self.collect_garbage_locked()?;
        Ok(removed)
    }

    /// Deletes layout blobs that no index entry references.
    pub fn collect_garbage(&self) -> Result<(), CacheError> {
        let _l = self.lock()?;
        self.collect_garbage_locked()
    }

    /// [`Self::collect_garbage`] for a caller that holds the store lock.
    fn collect_garbage_locked(&self) -> Result<(), CacheError> {
        let index = self.read_index()?;
        let mut keep = BTreeSet::new();
        for d in &index.manifests {
            keep.insert(d.digest.clone());
            let img = to_stored(d.clone());
            let children = match self.index(&img) {
                Ok(Some(i)) => i.manifests,
                _ => vec![d.clone()],
            };
            for c in children {
                keep.insert(c.digest.clone());
                if let Ok(m) = self.read_manifest(&c.digest) {
                    keep.insert(m.config.digest.clone());
                    keep.extend(m.layers.iter().map(|l| l.digest.clone()));
                }
            }
        }
        for d in self.blobs.list()? {
            if !keep.contains(&d) {
                let p = self.blobs.blob_path(&d);
                std::fs::remove_file(&p).map_err(CacheError::io("cannot remove", &p))?;
            }
        }
        Ok(())
    }
}

fn plain(d: &Descriptor) -> Descriptor {
    Descriptor::new(
        d.media_type.clone().if_empty(media_types::OCI_MANIFEST),
        d.digest.clone(),
        d.size,
    )
}

/// Whether a descriptor names an image index (OCI) or manifest list (Docker).
pub fn is_index(d: &Descriptor) -> bool {
    d.media_type == media_types::OCI_INDEX || d.media_type == media_types::DOCKER_MANIFEST_LIST
}

/// Whether an index entry is a platform's image manifest: not a nested index, and not
/// an attestation manifest (platform `unknown/unknown`, as BuildKit marks them).
pub fn is_image(d: &Descriptor) -> bool {
    !is_index(d) && d.platform.as_ref().is_none_or(|p| p.os != "unknown")
}

fn to_stored(d: Descriptor) -> StoredImage {
    let name = d
        .annotations
        .get(annotations::REF_NAME)
        .and_then(|n| Reference::parse(n).ok());
    StoredImage { name, manifest: d }
}

trait IfEmpty {
    fn if_empty(self, default: &str) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, default: &str) -> String {
        if self.is_empty() {
            default.to_string()
        } else {
            self
        }
    }
}
