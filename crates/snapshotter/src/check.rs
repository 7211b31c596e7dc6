//! Checking unpacked snapshots against what they claim to be, for `kiln fsck`.
//!
//! The cheap check compares a tree's entry count and bytes with its record (a stat walk,
//! no file contents). The deep check unpacks the recorded layer chain again into a temp
//! directory — verifying each layer's uncompressed bytes against its diff id on the way
//! — and compares the two trees entry by entry. Re-applying is the only correct
//! reference: the merged tree of several layers is not the tar of any one of them, and
//! even a one-layer tree written back as a tar would not reproduce a pulled layer's
//! diff id (another tool's entry order and headers).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use kiln_image::Sha256Writer;

use crate::apply::{apply_tar, ApplyOptions};
use crate::clone::tree_stats;
use crate::snapshots::{SnapshotRecord, Snapshots};
use crate::SnapshotError;

/// What is wrong with one snapshot, or `None` when the cheap check passes.
pub fn check_snapshot(tree: &Path, record: &SnapshotRecord) -> Option<String> {
    match tree_stats(tree) {
        Err(e) => Some(format!("cannot be read: {e}")),
        Ok((entries, bytes)) if (entries, bytes) != (record.entries, record.bytes) => Some(format!(
            "is incomplete or altered: it holds {entries} entries and {bytes} bytes, its record says {} and {}",
            record.entries, record.bytes
        )),
        Ok(_) => None,
    }
}

/// Reads a layer's uncompressed tar through, hashing it.
struct Hashing<R> {
    inner: R,
    hash: Sha256Writer<io::Sink>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        io::Write::write_all(&mut self.hash, &buf[..n])?;
        Ok(n)
    }
}

/// Compares `tree` with its layers applied afresh; returns the differences (at most a
/// few, each naming a path or a layer), empty when they agree.
pub fn deep_check(snaps: &Snapshots, tree: &Path, record: &SnapshotRecord) -> Result<Vec<String>, SnapshotError> {
    let work = snaps.temp_dir("fsck-")?;
    let fresh = work.path().join("fs");
    std::fs::create_dir(&fresh).map_err(|source| SnapshotError::Io {
        op: "cannot create",
        path: fresh.clone(),
        source,
    })?;
    let store = snaps.content();
    for layer in &record.layers {
        let named = |e: SnapshotError| SnapshotError::Apply {
            digest: layer.blob.digest.clone(),
            source: Box::new(e),
        };
        let tar = crate::layer::open_layer_tar(store, &layer.blob).map_err(named)?;
        let mut r = Hashing {
            inner: tar,
            hash: Sha256Writer::new(io::sink()),
        };
        apply_tar(&fresh, &mut r, &ApplyOptions::default()).map_err(named)?;
        // The tar's end-of-archive padding is part of the diff id.
        io::copy(&mut r, &mut io::sink()).map_err(|source| SnapshotError::Io {
            op: "cannot read layer",
            path: store.blob_path(&layer.blob.digest),
            source,
        })?;
        let (diff_id, _, _) = r.hash.finish();
        if diff_id != layer.diff_id {
            return Ok(vec![format!(
                "layer {} does not match its diff id {} (it is {diff_id})",
                layer.blob.digest, layer.diff_id
            )]);
        }
    }
    let (want, got) = (listing(&fresh), listing(tree));
    let mut out = Vec::new();
    for (path, w) in &want {
        match got.get(path) {
            None => out.push(format!("`{path}` is missing")),
            Some(g) if g != w => out.push(format!("`{path}` differs: {g}, its layers say {w}")),
            Some(_) => {}
        }
    }
    out.extend(
        got.keys()
            .filter(|p| !want.contains_key(*p))
            .map(|p| format!("`{p}` is not in its layers")),
    );
    let total = out.len();
    out.truncate(5);
    if total > 5 {
        out.push(format!("and {} more differences", total - 5));
    }
    Ok(out)
}

/// Every entry under `root` (relative path → type, mode, owner, size, symlink target or
/// content digest). Times are left out: a snapshot made from a step's own tree keeps
/// the step's times where the layer clamps them.
fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).into_iter().flatten() {
        let rel = e.path().strip_prefix(root).unwrap_or(e.path()).display().to_string();
        let Ok(md) = e.path().symlink_metadata() else {
            out.insert(rel, "unreadable".to_string());
            continue;
        };
        let ft = md.file_type();
        let what = if ft.is_symlink() {
            format!(
                "symlink to {}",
                std::fs::read_link(e.path())
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            )
        } else if ft.is_file() {
            let digest = std::fs::File::open(e.path())
                .and_then(|mut f| {
                    let mut w = Sha256Writer::new(io::sink());
                    io::copy(&mut f, &mut w)?;
                    Ok(w.finish().0.to_string())
                })
                .unwrap_or_else(|e| format!("unreadable ({e})"));
            format!("file of {} bytes {digest}", md.len())
        } else if ft.is_dir() {
            "directory".to_string()
        } else if ft.is_char_device() || ft.is_block_device() {
            format!("device {:x}", md.rdev())
        } else {
            "special file".to_string()
        };
        out.insert(
            rel,
            format!("{what}, mode {:o}, owner {}:{}", md.mode() & 0o7777, md.uid(), md.gid()),
        );
    }
    out
}
