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
    #[error("unsupported layer media type `{0}`")]
    MediaType(String),
    #[error(transparent)]
    Store(#[from] kiln_cache::CacheError),
}
