use std::path::PathBuf;

/// SnapshotError is a failure to make, apply or store a layer.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{op} `{path}`")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("layer entry `{entry}` rejected: {reason}")]
    BadLayer { entry: String, reason: String },
    /// Applying the layer blob `digest` failed; `source` names the entry.
    #[error("cannot apply layer `{digest}`: {source}")]
    Apply {
        digest: kiln_image::Digest,
        source: Box<SnapshotError>,
    },
    /// The blob's first bytes are not the compression its media type names.
    #[error("layer `{digest}` is {}, but its media type `{media_type}` says {}", .found.name(), .expected.name())]
    Codec {
        digest: kiln_image::Digest,
        media_type: String,
        found: kiln_image::LayerCodec,
        expected: kiln_image::LayerCodec,
    },
    /// The uncompressed tar's sha256 is not the diff id the image config lists.
    #[error(transparent)]
    DiffId(Box<DiffIdMismatch>),
    /// The blob does not decompress as its media type says.
    #[error("layer `{digest}` is not valid {}: {message}", .codec.name())]
    Corrupt {
        digest: kiln_image::Digest,
        codec: kiln_image::LayerCodec,
        message: String,
    },
    #[error("unsupported layer media type `{0}`")]
    MediaType(String),
    #[error(transparent)]
    Store(#[from] kiln_cache::CacheError),
}

/// DiffIdMismatch is a layer whose content is not the diff id the image config lists.
#[derive(Debug, thiserror::Error)]
#[error("layer `{digest}` does not match the image config: its content has diff id `{actual}`, the config says `{expected}`")]
pub struct DiffIdMismatch {
    pub digest: kiln_image::Digest,
    pub expected: kiln_image::Digest,
    pub actual: kiln_image::Digest,
}
