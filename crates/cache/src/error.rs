use std::path::PathBuf;

use kiln_image::Digest;

/// CacheError is a failure of the on-disk stores.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{op} `{path}`")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob `{expected}` failed verification: content hashes to `{actual}`")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob `{0}` is not in the content store")]
    MissingBlob(Digest),
    #[error("`{path}` is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("no image `{0}` in the local store")]
    NoSuchImage(String),
    #[error("`{reference}` matches {count} images; use a full reference or an image id")]
    Ambiguous { reference: String, count: usize },
    #[error(transparent)]
    Reference(#[from] kiln_image::ReferenceError),
}

impl CacheError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| CacheError::Io { op, path, source }
    }
}
