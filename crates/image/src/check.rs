//! What kiln accepts as a base image: a bounded number of layers, each in a layer media
//! type kiln can unpack, and a config with an image config media type. Checked when the
//! manifest arrives, before anything is downloaded, so a pull refuses what a build
//! would refuse.

use crate::{media_types, Descriptor, Digest, Manifest};

/// The most layers kiln accepts in a base image. Docker refuses more than 125 (its
/// overlay driver's limit); BuildKit and containerd have no fixed cap but overlay mounts
/// stop working well past a few hundred lowers. 500 is far above any real image and
/// keeps a hostile manifest (a 4 MiB manifest holds ~25,000 layers) from costing more
/// than a fraction of a second.
pub const MAX_LAYERS: usize = 500;

/// LayerCodec is the compression a layer media type promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCodec {
    Uncompressed,
    Gzip,
    Zstd,
}

impl LayerCodec {
    /// The codec of a layer media type kiln can unpack; `None` for any other type
    /// (foreign or non-distributable layers, encrypted layers, unknown types).
    pub fn of_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            media_types::OCI_LAYER_TAR | media_types::DOCKER_LAYER_TAR => Some(LayerCodec::Uncompressed),
            media_types::OCI_LAYER_GZIP | media_types::DOCKER_LAYER_GZIP => Some(LayerCodec::Gzip),
            media_types::OCI_LAYER_ZSTD => Some(LayerCodec::Zstd),
            _ => None,
        }
    }

    /// `gzip`, `zstd` or `uncompressed`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            LayerCodec::Uncompressed => "uncompressed",
            LayerCodec::Gzip => "gzip",
            LayerCodec::Zstd => "zstd",
        }
    }
}

/// ManifestProblem says why kiln refuses an image manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestProblem {
    #[error("the image has {count} layers; kiln accepts at most {MAX_LAYERS}")]
    TooManyLayers { count: usize },
    #[error("layer `{digest}` has media type `{media_type}`, which kiln cannot unpack (expected an OCI or Docker tar layer, uncompressed, gzip or zstd)")]
    LayerMediaType { digest: Digest, media_type: String },
    #[error(
        "config `{digest}` has media type `{media_type}`, not an image config (`{}` or `{}`)",
        media_types::OCI_CONFIG,
        media_types::DOCKER_CONFIG
    )]
    ConfigMediaType { digest: Digest, media_type: String },
    #[error("the image has {layers} layers but its config lists {diff_ids} diff ids")]
    DiffIdCount { layers: usize, diff_ids: usize },
}

impl Manifest {
    /// Checks that this manifest describes an image kiln can build on: at most
    /// [`MAX_LAYERS`] layers, each in a layer media type kiln unpacks, and an image
    /// config.
    pub fn check_image(&self) -> Result<(), ManifestProblem> {
        if self.layers.len() > MAX_LAYERS {
            return Err(ManifestProblem::TooManyLayers {
                count: self.layers.len(),
            });
        }
        check_config_descriptor(&self.config)?;
        for l in &self.layers {
            if LayerCodec::of_media_type(&l.media_type).is_none() {
                return Err(ManifestProblem::LayerMediaType {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                });
            }
        }
        Ok(())
    }
}

fn check_config_descriptor(d: &Descriptor) -> Result<(), ManifestProblem> {
    match d.media_type.as_str() {
        media_types::OCI_CONFIG | media_types::DOCKER_CONFIG => Ok(()),
        other => Err(ManifestProblem::ConfigMediaType {
            digest: d.digest.clone(),
            media_type: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config_mt: &str, layer_mts: &[&str]) -> Manifest {
        let d = |mt: &str| Descriptor::new(mt, Digest::of(mt.as_bytes()), 1);
        Manifest::oci(d(config_mt), layer_mts.iter().map(|mt| d(mt)).collect())
    }

    #[test]
    fn images_kiln_can_build_on_pass() {
        let m = manifest(
            media_types::DOCKER_CONFIG,
            &[
                media_types::DOCKER_LAYER_GZIP,
                media_types::OCI_LAYER_ZSTD,
                media_types::OCI_LAYER_TAR,
            ],
        );
        m.check_image().unwrap();
        manifest(media_types::OCI_CONFIG, &[]).check_image().unwrap();
    }

    #[test]
    fn foreign_layers_wrong_configs_and_too_many_layers_are_refused() {
        let foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
        let e = manifest(media_types::OCI_CONFIG, &[foreign]).check_image().unwrap_err();
        assert!(e.to_string().contains(foreign), "{e}");
        let e = manifest("application/octet-stream", &[]).check_image().unwrap_err();
        assert!(e.to_string().contains("not an image config"), "{e}");
        let many = vec![media_types::OCI_LAYER_GZIP; MAX_LAYERS + 1];
        let e = manifest(media_types::OCI_CONFIG, &many).check_image().unwrap_err();
        assert!(e.to_string().contains("501 layers; kiln accepts at most 500"), "{e}");
    }
}
