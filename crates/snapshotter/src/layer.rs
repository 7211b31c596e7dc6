//! Making a layer blob from a directory in one streaming pass:
//! tar → sha256 (diff id) → gzip → sha256 (digest) → content store.

use std::io::{self, Write};
use std::path::Path;

use kiln_cache::ContentStore;
use kiln_image::{media_types, Descriptor, Digest, Sha256Writer};
use serde::{Deserialize, Serialize};

use crate::pgzip::ParGzWriter;
use crate::tarw::{write_dir_tar, TarOptions};
use crate::SnapshotError;

/// Layer is one filesystem change set: its uncompressed digest and its stored blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub diff_id: Digest,
    pub blob: Descriptor,
}

/// Compression of new layer blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Uncompressed,
}

/// Writes the tree under `dir` as a layer blob into `store`.
pub fn write_layer(
    dir: &Path,
    store: &ContentStore,
    opts: &TarOptions,
    compression: Compression,
) -> Result<Layer, SnapshotError> {
    write_layer_from(dir, store, compression, |w| write_dir_tar(dir, w, opts).map(drop))
}

/// Writes the tar stream that `tar` produces as a layer blob into `store`; `dir` names
/// the tree in errors.
pub fn write_layer_from(
    dir: &Path,
    store: &ContentStore,
    compression: Compression,
    tar: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<Layer, SnapshotError> {
    let blob = store.writer()?;
    let ctx = |source: io::Error| SnapshotError::Io {
        op: "cannot archive",
        path: dir.to_path_buf(),
        source,
    };
    let (diff_id, blob, media_type) = match compression {
        Compression::Gzip => {
            // Level 6 like Go's default, compressed on all cores in fixed 1 MiB chunks:
            // the output depends only on the input.
            let gz = ParGzWriter::new(io::BufWriter::with_capacity(1 << 20, blob), 6).map_err(ctx)?;
            let mut hashing = Sha256Writer::new(gz);
            tar(&mut hashing).map_err(ctx)?;
            let (diff_id, _, gz) = hashing.finish();
            let blob = gz
                .finish()
                .map_err(ctx)?
                .into_inner()
                .map_err(|e| ctx(e.into_error()))?;
            (diff_id, blob, media_types::OCI_LAYER_GZIP)
        }
        Compression::Uncompressed => {
            let mut hashing = Sha256Writer::new(io::BufWriter::with_capacity(1 << 20, blob));
            tar(&mut hashing).map_err(ctx)?;
            hashing.flush().map_err(ctx)?;
            let (diff_id, _, w) = hashing.finish();
            (
                diff_id,
                w.into_inner().map_err(|e| ctx(e.into_error()))?,
                media_types::OCI_LAYER_TAR,
            )
        }
    };
    let (digest, size) = blob.commit(None)?;
    Ok(Layer {
        diff_id,
        blob: Descriptor::new(media_type, digest, size),
    })
}
