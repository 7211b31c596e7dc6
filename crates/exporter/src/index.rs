//! Multi-platform images: the OCI image index that lists one manifest per platform.
//! One place builds it, so the local store, the archives and pushes write the same
//! index; more descriptors (attestation manifests) can be appended to the list
//! before [`write_index`] stores it.

use std::collections::BTreeMap;

use kiln_cache::ContentStore;
use kiln_image::{media_types, Descriptor, Index, Platform};

use crate::{ArchiveImage, BuiltImage, ExportError};

/// PlatformImage is one target platform's image of a build.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub platform: Platform,
    pub image: BuiltImage,
}

impl PlatformImage {
    /// The descriptor an index lists for this image: its manifest with `platform` set
    /// (from the config, as BuildKit takes it, so `arm64` never says `v8`).
    pub fn descriptor(&self) -> Descriptor {
        let mut d = self.image.manifest.clone();
        d.annotations.clear();
        let c = &self.image.image;
        d.platform = Some(Platform {
            architecture: c.architecture.clone(),
            os: c.os.clone(),
            variant: c.variant.clone(),
        });
        d
    }
}

/// Stores an OCI image index listing `manifests` in order (each carrying its
/// platform), with `annotations`, and returns its descriptor.
pub fn write_index(
    content: &ContentStore,
    manifests: Vec<Descriptor>,
    annotations: &BTreeMap<String, String>,
) -> Result<Descriptor, ExportError> {
    let mut index = Index::new();
    index.manifests = manifests;
    index.annotations = annotations.clone();
    let bytes = serde_json::to_vec(&index).expect("index serialises");
    Ok(content.put_bytes(media_types::OCI_INDEX, &bytes)?)
}

/// What an archive holds for a multi-platform image: the index as its entry, every
/// platform's blobs, and for `docker load` (which reads `manifest.json`, one image per
/// tag) the host platform's image, else the first.
pub fn archive_index(index: &Descriptor, images: &[PlatformImage], names: &[kiln_image::Reference]) -> ArchiveImage {
    let host = Platform::host();
    let shown = images
        .iter()
        .find(|i| i.platform.same(&host))
        .or_else(|| images.first())
        .map(|i| &i.image);
    let mut extra = Vec::new();
    for i in images {
        extra.push(i.image.manifest.clone());
        extra.push(i.image.config.clone());
        extra.extend(i.image.layers.iter().map(|l| l.blob.clone()));
    }
    ArchiveImage {
        manifest: index.clone(),
        config: shown.map(|s| s.config.clone()).unwrap_or_else(|| index.clone()),
        layers: shown
            .map(|s| s.layers.iter().map(|l| l.blob.clone()).collect())
            .unwrap_or_default(),
        names: names.to_vec(),
        extra,
    }
}
