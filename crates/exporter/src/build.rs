use kiln_cache::KilnRoot;
use kiln_image::{media_types, Descriptor, Digest, ImageConfig, Manifest};
use kiln_snapshotter::Layer;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::ExportError;

/// BuiltImage is an image whose config and manifest are in the content store.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Layer>,
    pub image: ImageConfig,
    /// `--annotation`s of the image manifest (kept when the layers are recompressed).
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl BuiltImage {
    /// The image id as Docker shows it: the config digest.
    pub fn id(&self) -> &Digest {
        &self.config.digest
    }
}

fn rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// Completes `skeleton` with the layers' diff ids and history times, stores config and
/// manifest, and records each layer's creation time.
///
/// History times come from the layer records (when a layer was first made), and
/// metadata-only entries take the time of the layer before them, so rebuilding the
/// same layers gives the same config digest, as with BuildKit's cache. With `epoch`
/// (SOURCE_DATE_EPOCH) every time is that epoch instead.
pub fn assemble(
    root: &KilnRoot,
    skeleton: &ImageConfig,
    layers: &[Layer],
    epoch: Option<i64>,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<BuiltImage, ExportError> {
    let now = rfc3339(OffsetDateTime::now_utc().unix_timestamp());
    let records = root.layers();
    let mut layer_times = Vec::with_capacity(layers.len());
    for l in layers {
        let rec = records.add(&l.diff_id, l.blob.clone(), &now)?;
        layer_times.push(match epoch {
            Some(e) => rfc3339(e),
            None => rec.created,
        });
    }
    let mut image = skeleton.clone();
    image.rootfs.kind = "layers".to_string();
    image.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    // Entries that already carry a time (inherited from a base) keep it, unless an
    // epoch is set; the others get their layer's time.
    let mut next_layer = 0;
    let mut last: Option<String> = None;
    let first_layer_time = layer_times.first().cloned();
    for h in image.history.iter_mut() {
        let t = if !h.empty_layer {
            let t = layer_times.get(next_layer).cloned();
            next_layer += 1;
            t
        } else {
            last.clone().or_else(|| first_layer_time.clone())
        };
        if epoch.is_some() || h.created.is_none() {
            h.created = t.or_else(|| epoch.map(rfc3339));
        }
        if h.created.is_some() {
            last = h.created.clone();
        }
    }
    image.created = match epoch {
        Some(e) => Some(rfc3339(e)),
        None => last.or_else(|| layer_times.last().cloned()),
    };
    let content = root.content();
    let config_bytes = serde_json::to_vec(&image).expect("image config serialises");
    let config = content.put_bytes(media_types::OCI_CONFIG, &config_bytes)?;
    let mut manifest = Manifest::oci(config.clone(), layers.iter().map(|l| l.blob.clone()).collect());
    manifest.annotations = annotations.clone();
    let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
    let manifest = content.put_bytes(media_types::OCI_MANIFEST, &manifest_bytes)?;
    Ok(BuiltImage {
        manifest,
        config,
        layers: layers.to_vec(),
        image,
        annotations: annotations.clone(),
    })
}
