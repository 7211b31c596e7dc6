//! Exporting in another layer compression (`-o …,compression=zstd`): each layer of the
//! built image is stored again in the asked compression (same tar, so the same diff
//! ids and config), remembered in `conversions-v1/` so the next export reuses the blob.
//! Base image layers keep their compression unless `force-compression=true`, as with
//! BuildKit.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `ExportError::Write { path }` or name the path in their message"
)]

use std::collections::BTreeSet;

use kiln_cache::KilnRoot;
use kiln_image::{media_types, Digest, Manifest};
use kiln_snapshotter::{convert_layer, Compression, Layer};

use crate::{BuiltImage, ExportError};

/// `layer` in `to`, from the conversion records or converted now.
fn converted(root: &KilnRoot, layer: &Layer, to: Compression) -> Result<Layer, ExportError> {
    let dir = root.bucket(kiln_cache::Bucket::Conversions);
    let record = dir.join(format!("{}.{}", layer.blob.digest.hex(), to.tag()));
    let content = root.content();
    if let Some(known) = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice::<Layer>(&b).ok())
        .filter(|l| content.has(&l.blob.digest))
    {
        return Ok(known);
    }
    let out = convert_layer(&content, layer, to)?;
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let tmp = root
            .tmp_dir()
            .join(format!("conversion-{}-{}", std::process::id(), layer.blob.digest.hex()));
        std::fs::write(&tmp, serde_json::to_vec(&out).expect("layer serialises"))?;
        std::fs::rename(&tmp, &record)
    };
    // The record only saves time next export; failing to write it loses nothing.
    let _ = write();
    Ok(out)
}

/// `built` with its layers in `to`: layers in another compression are converted,
/// except those in `keep` (base image layers) unless `force`. Returns `built` itself
/// when nothing changes.
pub fn recompress(
    root: &KilnRoot,
    built: &BuiltImage,
    to: Compression,
    force: bool,
    keep: &BTreeSet<Digest>,
) -> Result<BuiltImage, ExportError> {
    let mut layers = Vec::with_capacity(built.layers.len());
    let mut changed = false;
    for l in &built.layers {
        if to.matches(&l.blob.media_type) || (!force && keep.contains(&l.blob.digest)) {
            layers.push(l.clone());
        } else {
            layers.push(converted(root, l, to)?);
            changed = true;
        }
    }
    if !changed {
        return Ok(built.clone());
    }
    let mut manifest = Manifest::oci(built.config.clone(), layers.iter().map(|l| l.blob.clone()).collect());
    manifest.annotations = built.annotations.clone();
    let bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
    let manifest = root.content().put_bytes(media_types::OCI_MANIFEST, &bytes)?;
    Ok(BuiltImage {
        manifest,
        config: built.config.clone(),
        layers,
        image: built.image.clone(),
        annotations: built.annotations.clone(),
    })
}
