#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `ExportError::Write { path }` or name the path in their message"
)]

use std::io::Write;
use std::path::Path;

use kiln_snapshotter::{write_dir_tar, ApplyOptions, Layer, Snapshots, TarOptions};

use crate::ExportError;

/// Writes the image's root filesystem into the directory `dest` (created if missing),
/// applying each layer with the safe applier.
pub fn write_rootfs_dir(snapshots: &Snapshots, layers: &[Layer], dest: &Path) -> Result<Vec<String>, ExportError> {
    std::fs::create_dir_all(dest).map_err(|source| ExportError::Write {
        path: dest.to_path_buf(),
        source,
    })?;
    let opts = ApplyOptions::default();
    let mut warnings = Vec::new();
    for l in layers {
        warnings.extend(snapshots.apply_layer(l, dest, &opts)?);
    }
    Ok(warnings)
}

/// Writes the image's root filesystem as one deterministic tarball.
pub fn write_rootfs_tar<W: Write>(snapshots: &Snapshots, layers: &[Layer], out: W) -> Result<W, ExportError> {
    match snapshots.merged(layers)? {
        Some(tree) => write_dir_tar(&tree, out, &TarOptions::default())
            .map_err(|source| ExportError::Write { path: tree, source }),
        None => kiln_snapshotter::TarWriter::new(out)
            .finish()
            .map_err(|source| ExportError::Write {
                path: "rootfs".into(),
                source,
            }),
    }
}
