//! Where attestations go, as BuildKit writes them: per platform an attestation manifest
//! (platform `unknown/unknown`, annotated `vnd.docker.reference.type:
//! attestation-manifest` and `vnd.docker.reference.digest: <image manifest>`) whose
//! layers are in-toto statements (`application/vnd.in-toto+json`, annotated
//! `in-toto.io/predicate-type`), beside the image manifests in one image index.
//!
//! [`write_index`] is the one place an index of built images is made: it takes the
//! (platform, image manifest) pairs and the attestation manifests to append.

use kiln_cache::ContentStore;
use kiln_image::{media_types, Descriptor, Index, Manifest, Platform, Reference};
use serde_json::json;

use super::provenance::docker_purl;
use super::{Predicates, STATEMENT_TYPE};
use crate::BuildError;

pub const INTOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";
pub const REFERENCE_TYPE_ANNOTATION: &str = "vnd.docker.reference.type";
pub const REFERENCE_DIGEST_ANNOTATION: &str = "vnd.docker.reference.digest";
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";

/// The platform of attestation manifests.
pub fn unknown_platform() -> Platform {
    Platform {
        architecture: "unknown".into(),
        os: "unknown".into(),
        variant: None,
    }
}

/// Whether an index entry is an attestation manifest.
pub fn is_attestation(d: &Descriptor) -> bool {
    d.annotations.get(REFERENCE_TYPE_ANNOTATION).map(String::as_str) == Some(ATTESTATION_MANIFEST)
}

/// Attached is an image index holding an image and its attestations.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The index.
    pub index: Descriptor,
    /// The image manifest as the index lists it.
    pub image: Descriptor,
    /// The attestation manifest, its config and its layers (the statements).
    pub blobs: Vec<Descriptor>,
}

fn store_err(e: kiln_cache::CacheError) -> BuildError {
    BuildError::Message(format!("cannot store the attestations: {e}"))
}

/// Writes an OCI image index of `images` (each with its platform) followed by
/// `attestations`, into `content`; returns its descriptor.
pub fn write_index(
    content: &ContentStore,
    images: &[(Platform, Descriptor)],
    attestations: &[Descriptor],
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<Descriptor, BuildError> {
    let mut index = Index::new();
    index.annotations = annotations.clone();
    for (p, d) in images {
        let mut d = Descriptor::new(d.media_type.clone(), d.digest.clone(), d.size);
        d.platform = Some(p.clone());
        index.manifests.push(d);
    }
    index.manifests.extend(attestations.iter().cloned());
    let bytes = serde_json::to_vec_pretty(&index).expect("serialises");
    content.put_bytes(media_types::OCI_INDEX, &bytes).map_err(store_err)
}

/// Wraps `preds` into in-toto statements about `image` (named `names`, built for
/// `platform`) and writes the attestation manifest; returns its descriptor as an index
/// lists it and the blobs it adds (itself, its config, the statements).
pub fn attestation_manifest(
    content: &ContentStore,
    image: &Descriptor,
    platform: &Platform,
    names: &[Reference],
    preds: &Predicates,
) -> Result<(Descriptor, Vec<Descriptor>), BuildError> {
    let mut subjects: Vec<serde_json::Value> = names
        .iter()
        .map(|n| json!({ "name": docker_purl(n, Some(platform)), "digest": { "sha256": image.digest.hex() } }))
        .collect();
    subjects.dedup();
    if subjects.is_empty() {
        // An unnamed image: in-toto's name for a subject without a meaningful name.
        subjects.push(json!({ "name": "_", "digest": { "sha256": image.digest.hex() } }));
    }
    let mut layers = Vec::new();
    for p in &preds.0 {
        let kind = &p.kind;
        let statement = json!({
            "_type": STATEMENT_TYPE,
            "predicateType": kind,
            "subject": subjects,
            "predicate": p.value,
        });
        let bytes = serde_json::to_vec(&statement).expect("serialises");
        let mut d = content.put_bytes(INTOTO_MEDIA_TYPE, &bytes).map_err(store_err)?;
        d.annotations
            .insert(PREDICATE_TYPE_ANNOTATION.to_string(), kind.clone());
        layers.push(d);
    }
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
    let config_bytes = serde_json::to_vec(&json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .expect("serialises");
    let config = content
        .put_bytes(media_types::OCI_CONFIG, &config_bytes)
        .map_err(store_err)?;
    let manifest = Manifest::oci(config.clone(), layers.clone());
    let mbytes = serde_json::to_vec_pretty(&manifest).expect("serialises");
    let mut att = content
        .put_bytes(media_types::OCI_MANIFEST, &mbytes)
        .map_err(store_err)?;
    att.annotations
        .insert(REFERENCE_DIGEST_ANNOTATION.to_string(), image.digest.to_string());
    att.annotations
        .insert(REFERENCE_TYPE_ANNOTATION.to_string(), ATTESTATION_MANIFEST.to_string());
    att.platform = Some(unknown_platform());
    let mut blobs = vec![att.clone()];
    blobs.push(config);
    blobs.extend(layers);
    Ok((att, blobs))
}

/// Wraps `preds` into in-toto statements about `image` (named `names`, built for
/// `platform`), writes the attestation manifest and an index of the image and it.
pub fn attach(
    content: &ContentStore,
    image: &Descriptor,
    platform: &Platform,
    names: &[Reference],
    preds: &Predicates,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<Attached, BuildError> {
    let (att, blobs) = attestation_manifest(content, image, platform, names, preds)?;
    let image_media = if image.media_type.is_empty() {
        media_types::OCI_MANIFEST.to_string()
    } else {
        image.media_type.clone()
    };
    let image_desc = Descriptor::new(image_media, image.digest.clone(), image.size);
    let index = write_index(
        content,
        &[(platform.clone(), image_desc.clone())],
        std::slice::from_ref(&att),
        annotations,
    )?;
    Ok(Attached {
        index,
        image: image_desc,
        blobs,
    })
}
