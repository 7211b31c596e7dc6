//! kiln-exporter turns a solved filesystem and a config skeleton into an image, and
//! writes it out: the local store, OCI and Docker archives, an OCI layout directory,
//! the root filesystem as a directory or a tarball.

mod archive;
mod build;
mod compress;
mod index;
mod rootfs;

pub use archive::{write_docker_archive, write_oci_archive, write_oci_layout, ArchiveImage};
pub use build::{assemble, BuiltImage};
pub use compress::recompress;
pub use index::{archive_index, write_index, PlatformImage};
pub use rootfs::{write_rootfs_dir, write_rootfs_tar, write_rootfs_tar_with, ExtraFile};

use std::path::PathBuf;

/// ExportError is a failure to assemble or write an image.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("destination `{path}` {reason}")]
    Destination { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] kiln_cache::CacheError),
    #[error(transparent)]
    Snapshot(#[from] kiln_snapshotter::SnapshotError),
}
