#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `ExportError::Write { path }` or name the path in their message"
)]

use std::io::Write;
use std::path::Path;

use kiln_snapshotter::{append_dir_tree, ApplyOptions, Layer, Snapshots, TarOptions};

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
    write_rootfs_tar_with(snapshots, layers, out, &[])
}

/// ExtraFile is a file added at the top of a root filesystem tarball, after the tree
/// (attestations, as BuildKit's tar exporter adds them), owned by 0:0.
#[derive(Debug, Clone)]
pub struct ExtraFile {
    pub name: String,
    pub mode: u32,
    pub mtime: i64,
    pub bytes: Vec<u8>,
}

/// [`write_rootfs_tar`] with `extra` files appended.
pub fn write_rootfs_tar_with<W: Write>(
    snapshots: &Snapshots,
    layers: &[Layer],
    out: W,
    extra: &[ExtraFile],
) -> Result<W, ExportError> {
    let err = |path: std::path::PathBuf| move |source| ExportError::Write { path, source };
    let mut tw = kiln_snapshotter::TarWriter::new(out);
    if let Some(tree) = snapshots.merged(layers)? {
        append_dir_tree(&mut tw, &tree, &TarOptions::default()).map_err(err(tree.clone()))?;
    }
    for f in extra {
        tw.append_file(&f.name, f.mode, f.mtime, f.bytes.len() as u64, &mut f.bytes.as_slice())
            .map_err(err(f.name.clone().into()))?;
    }
    tw.finish().map_err(err("rootfs".into()))
}
