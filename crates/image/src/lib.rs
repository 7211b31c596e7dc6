//! kiln-image holds the OCI data model: digests, descriptors, manifests, indexes,
//! image configs, platforms and image references.
//!
//! The types are our own serde structs rather than oci-spec's builders: Docker's config
//! carries fields OCI does not (`Healthcheck`, `Shell`, `OnBuild`, `ArgsEscaped`), and
//! the byte-exact serialisation decides every digest, so we own field order and omission.

mod check;
mod config;
mod digest;
mod manifest;
mod platform;
mod reference;

pub use check::{LayerCodec, ManifestProblem, MAX_LAYERS};
pub use config::{Config, Empty, HealthConfig, History, ImageConfig, RootFs};
pub use digest::{sha256_hex, Digest, DigestError, Sha256Writer};
pub use manifest::{annotations, media_types, Descriptor, Index, Manifest, OciLayout, DOCKER_MANIFEST};
pub use platform::Platform;
pub use reference::{Reference, ReferenceError};
