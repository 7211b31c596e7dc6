use kiln_cache::CacheError;
use kiln_image::{Digest, ManifestProblem};

/// RegistryError is a failed registry operation, naming the reference.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("`{reference}`: {message} (HTTP {status})")]
    Status {
        reference: String,
        status: u16,
        message: String,
    },
    #[error("`{reference}`: cannot reach the registry: {message}")]
    Transport { reference: String, message: String },
    /// A failure another attempt cannot fix (a host name that does not resolve, a
    /// certificate that does not verify, a refused connection): reported at once.
    #[error("`{reference}`: cannot reach the registry: {message}")]
    Unreachable { reference: String, message: String },
    #[error("`{reference}`: no manifest for platform `{platform}` (the image has {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("`{reference}`: malformed {what}: {message}")]
    Malformed {
        reference: String,
        what: &'static str,
        message: String,
    },
    #[error("`{reference}`: unsupported manifest media type `{media_type}`")]
    MediaType { reference: String, media_type: String },
    #[error("`{reference}`: blob `{digest}` failed verification")]
    Digest { reference: String, digest: Digest },
    /// A deadline ran out: `what` says which and for which request (`did not answer
    /// within 30 s (GET /v2/…/manifests/1)`).
    #[error("`{reference}`: registry `{host}` {what}")]
    Timeout {
        reference: String,
        host: String,
        what: String,
    },
    /// A manifest, index, config or token response is larger than kiln reads.
    #[error("`{reference}`: {what} exceeds {limit}")]
    TooLarge {
        reference: String,
        what: String,
        limit: String,
    },
    /// A blob arrived but is not what its descriptor or the image says.
    #[error("`{reference}`: blob `{digest}`: {message}")]
    Blob {
        reference: String,
        digest: Digest,
        message: String,
    },
    /// A blob's check (its compression, its diff id) refused it; `message` names it.
    #[error("`{reference}`: {message}")]
    Refused { reference: String, message: String },
    /// The manifest describes an image kiln cannot build on.
    #[error("`{reference}`: {problem}")]
    Image {
        reference: String,
        #[source]
        problem: ManifestProblem,
    },
    #[error(transparent)]
    Store(#[from] CacheError),
}
