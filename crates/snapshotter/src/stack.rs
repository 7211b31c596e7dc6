//! Stacked snapshots: a RUN step's upper directory, once its layer is written, is kept
//! as that layer's own directory under `$KILN_ROOT/layerdirs-v1/<chain id>/` (overlayfs
//! format: whiteouts are 0/0 character devices, opaque directories carry the
//! `trusted.overlay.opaque` or, rootless, `user.overlay.opaque` xattr), with a record
//! beside it as a merged snapshot has one. A later step on that chain mounts the layer
//! directories of the chain's top layers as overlay lower directories over the nearest
//! merged tree (`snapshots-v1/`), as containerd's overlay snapshotter does: preparing a
//! step costs nothing per file, and no file is hard-linked (link counts a step sees stay
//! those of the image).
//!
//! The stack is bounded: the kernel reads the mount options from one page, so when the
//! `lowerdir=` list would not fit in [`MOUNT_DATA_MAX`] bytes (or would pass
//! [`MAX_DEPTH`] directories) the parent chain is flattened into a merged tree once,
//! and the next steps stack on that.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use kiln_image::{Digest, Sha256Writer};

use crate::layer::Layer;
use crate::snapshots::{chain_ids, SnapshotRecord, Snapshots};
use crate::tarw::{write_dir_tar, TarOptions};
use crate::SnapshotError;

/// The most bytes of mount options the kernel takes (one page, with its NUL).
pub const MOUNT_DATA_MAX: usize = 4096;

/// The most lower directories a stack gets. The page bound stops a stack first for
/// any root path longer than ~10 bytes; this bounds the per-lookup cost of a stack
/// (mount-point checks walk it) and stays far below overlayfs' own limit of 500.
pub const MAX_DEPTH: usize = 100;

impl Snapshots {
    /// The layer directories, as a [`Snapshots`] over `layerdirs-v1/`: the same record,
    /// listing and removal rules as merged trees (a directory without its record is never
    /// used).
    pub fn layer_dirs(&self) -> Snapshots {
        let mut s = self.clone();
        s.set_dir(self.layer_dirs.clone());
        s
    }

    /// The lower directories, topmost first, a step on `parent` mounts: the layer
    /// directories of the chain's top layers over the nearest merged tree, the whole
    /// `lowerdir=` list at most `budget` bytes. Empty for no parent. When the chain's
    /// top layer has no directory, or the stack would not fit, the parent's merged tree
    /// alone (made now if needed).
    pub fn stack(&self, parent: &[Layer], budget: usize) -> Result<Vec<PathBuf>, SnapshotError> {
        let ids: Vec<Digest> = parent.iter().map(|l| l.diff_id.clone()).collect();
        let chains = chain_ids(&ids);
        let dirs = self.layer_dirs();
        let mut out: Vec<PathBuf> = Vec::new();
        let mut used = 0;
        for chain in chains.iter().rev() {
            let merged = self.dir().join(chain.hex());
            let len = merged.as_os_str().len() + 1;
            if self.is_complete(&merged) && used + len <= budget {
                out.push(merged);
                return Ok(out);
            }
            let dir = dirs.dir().join(chain.hex());
            // Room for this directory and, below it, a merged tree's path (same length).
            if out.len() + 1 >= MAX_DEPTH || used + 2 * len > budget || !dirs.is_complete(&dir) {
                break;
            }
            used += len;
            out.push(dir);
        }
        // Flatten: the whole parent as one tree; the next steps stack on it.
        Ok(self.merged(parent)?.into_iter().collect())
    }

    /// Keeps the step's `upper` (in overlayfs format, `layer` written from it with
    /// `clamp_mtime`) as the layer directory of `parent + layer`, by renaming it. On
    /// failure (or when another build kept the same chain first) the upper is removed.
    pub fn adopt_layer_dir(&self, parent: &[Layer], layer: &Layer, upper: &Path, clamp_mtime: Option<i64>) {
        let dirs = self.layer_dirs();
        let target = dirs.chain_dir(parent, layer);
        let _ = dirs.install_with(&Self::chain_layers(parent, layer), upper, &target, clamp_mtime);
        if upper.symlink_metadata().is_ok() {
            let _ = kiln_cache::remove_via_tmp(self.tmp(), upper);
        }
    }
}

/// Whether `md` is an overlayfs whiteout (a 0/0 character device).
fn is_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Whether the directory `p` is marked opaque (its lower directories' entries hidden).
pub(crate) fn is_opaque(p: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"].iter().any(|name| {
        let mut buf = [0u8; 4];
        matches!(rustix::fs::lgetxattr(p, *name, &mut buf), Ok(n) if buf[..n] == *b"y")
    })
}

/// Where `rel` (relative, no `..`) is in the overlay of `lowers` (topmost first), if it
/// exists there: the path in the topmost directory holding it. Whiteouts and opaque
/// directories hide what is below them, as in the mounted overlay; a symlink is never
/// followed (a path through one is not found), so nothing outside the stack is read.
pub fn find_in_stack(lowers: &[PathBuf], rel: &Path) -> Option<PathBuf> {
    let parts: Vec<&std::ffi::OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect::<Option<_>>()?;
    if parts.is_empty() {
        return lowers.first().cloned();
    }
    for lower in lowers {
        let mut p = lower.clone();
        let mut hidden_below = false;
        for (i, part) in parts.iter().enumerate() {
            p.push(part);
            let Ok(md) = p.symlink_metadata() else { break };
            if is_whiteout(&md) {
                return None;
            }
            if i + 1 == parts.len() {
                return Some(p);
            }
            if !md.is_dir() {
                // A file or symlink here hides the directory of the lower layers.
                return None;
            }
            hidden_below |= is_opaque(&p);
        }
        if hidden_below {
            return None;
        }
    }
    None
}

/// fsck `--deep` of a layer directory: its tar, written again as the step wrote it,
/// must have the diff id of the chain's top layer. `None` when it does; otherwise the
/// entries that differ from the layer blob's (when the blob is there to compare).
pub fn deep_check_layer_dir(
    snaps: &Snapshots,
    dir: &Path,
    record: &SnapshotRecord,
) -> Result<Option<String>, SnapshotError> {
    let Some(top) = record.layers.last() else {
        return Ok(Some("its record names no layer".into()));
    };
    let opts = TarOptions {
        clamp_mtime: record.clamp_mtime,
        overlay_upper: true,
        ..TarOptions::default()
    };
    let io_err = |source| SnapshotError::Io {
        op: "cannot read layer directory",
        path: dir.to_path_buf(),
        source,
    };
    let (got, _, _) = write_dir_tar(dir, Sha256Writer::new(io::sink()), &opts)
        .map_err(io_err)?
        .finish();
    if got == top.diff_id {
        return Ok(None);
    }
    let mut why = format!("has diff id {got}, its layer {}", top.diff_id);
    if snaps.content().has(&top.blob.digest) {
        let work = snaps.temp_dir("fsck-")?;
        let ours = work.path().join("dir.tar");
        let f = std::fs::File::create(&ours).map_err(io_err)?;
        write_dir_tar(dir, io::BufWriter::new(f), &opts).map_err(io_err)?;
        let mine = tar_entries(std::fs::File::open(&ours).map_err(io_err)?).map_err(io_err)?;
        let theirs = tar_entries(crate::layer::open_layer_tar(snaps.content(), &top.blob)?).map_err(io_err)?;
        let names: std::collections::BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
        let differ: Vec<&str> = names
            .into_iter()
            .filter(|n| mine.get(*n) != theirs.get(*n))
            .take(5)
            .map(String::as_str)
            .collect();
        if !differ.is_empty() {
            why.push_str(&format!("; entries that differ: {}", differ.join(", ")));
        }
    }
    Ok(Some(why))
}

/// Each entry of a tar by name: its type, mode, owner, size, link and content digest.
fn tar_entries<R: io::Read>(r: R) -> io::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(r);
    for e in ar.entries()? {
        let mut e = e?;
        let name = e.path()?.to_string_lossy().into_owned();
        let h = e.header();
        let meta = format!(
            "{:?} {:o} {}/{} {} {:?}",
            h.entry_type(),
            h.mode()?,
            h.uid()?,
            h.gid()?,
            h.size()?,
            e.link_name()?
        );
        let mut hash = Sha256Writer::new(io::sink());
        io::copy(&mut e, &mut hash)?;
        out.insert(name, format!("{meta} {}", hash.finish().0));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_in_stack_sees_what_the_overlay_shows() {
        let d = tempfile::tempdir().unwrap();
        let (top, mid, low) = (d.path().join("top"), d.path().join("mid"), d.path().join("low"));
        for l in [&top, &mid, &low] {
            std::fs::create_dir(l).unwrap();
        }
        // low: a/x, a/y, b/z, s -> /etc, keep
        std::fs::create_dir_all(low.join("a")).unwrap();
        std::fs::create_dir_all(low.join("b")).unwrap();
        for f in ["a/x", "a/y", "b/z", "keep"] {
            std::fs::write(low.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("/etc", low.join("s")).unwrap();
        // mid: `a` opaque with a/new; `b` replaced by a file.
        std::fs::create_dir(mid.join("a")).unwrap();
        std::fs::write(mid.join("a/new"), "new").unwrap();
        let opaque = rustix::fs::lsetxattr(
            mid.join("a"),
            "user.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        );
        std::fs::write(mid.join("b"), "file").unwrap();
        // top: `keep` overwritten.
        std::fs::write(top.join("keep"), "top").unwrap();
        let stack = vec![top.clone(), mid.clone(), low.clone()];
        let find = |p: &str| find_in_stack(&stack, Path::new(p));
        assert_eq!(find("keep"), Some(top.join("keep")));
        assert_eq!(find("a/new"), Some(mid.join("a/new")));
        assert_eq!(find("a"), Some(mid.join("a")));
        if opaque.is_ok() {
            assert_eq!(find("a/x"), None, "hidden by the opaque directory");
        }
        assert_eq!(find("b"), Some(mid.join("b")));
        assert_eq!(find("b/z"), None, "hidden by the file over the directory");
        assert_eq!(find("s"), Some(low.join("s")));
        assert_eq!(find("s/passwd"), None, "symlinks are not followed");
        assert_eq!(find("../etc/passwd"), None);
        assert_eq!(find("/etc/passwd"), None);
        assert_eq!(find("nothing"), None);
        // A whiteout (needs mknod) hides the lower entry.
        if rustix::fs::mknodat(
            rustix::fs::CWD,
            top.join("keep2"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .is_ok()
        {
            std::fs::write(low.join("keep2"), "low").unwrap();
            assert_eq!(find("keep2"), None);
        }
    }
}
